"""Throughput benchmarks behind `tinyconv bench-data` and `tinyconv bench`.

Speed is measured here and in benchmarks/, never in timed tests; compare figures as ratios within one run.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import PIL

from tinyconv.data.dataset import default_workers, prepare, require_root
from tinyconv.errors import TinyconvError
from tinyconv.fileio import check_writable, os_error_advice, os_error_reason
from tinyconv.model.build import build_model
from tinyconv.model.config import get_config
from tinyconv.data.augment_config import AugmentConfig
from tinyconv.runtime import default_jit_compile, describe_device


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


# Longer than 60 lines with its docstring: prepare, pipeline and baseline around one temporary cache.
def bench_data(
    data_dir: Path,
    *,
    batch_size: int = 128,
    seconds: float = 10.0,
    workers: int | None = None,
    compare_keras: bool = False,
) -> dict:
    """Time a fresh prepare of the full dataset and the cached, augmented train pipeline.

    The prepare decodes every JPEG of the extracted tiny-imagenet-200/ into a temporary cache folder
    beside it (never reusing or touching data_dir/cache/); the pipeline then reads that cache through
    pipeline.train_dataset with crop + flip, as training does.

    Args:
        data_dir: folder holding tiny-imagenet-200/.
        batch_size: B of the train pipeline.
        seconds: how long the pipeline (and the Keras baseline) is timed, after 3 warm-up batches.
        workers: decoding processes of prepare (default: every core, dataset.default_workers()).
        compare_keras: also time keras.utils.image_dataset_from_directory on train/ (decode per epoch).

    Returns a dict: prepare_s, prepare_cpu_s, prepare_images_per_s, images (decoded), train_pipeline_images_per_s,
    [keras_from_directory_images_per_s], batch_size and machine details (cpus, load average, versions).
    """
    data_dir = Path(data_dir)
    root = require_root(data_dir)  # before the temporary cache is made inside data_dir
    # the temporary cache goes into data_dir: a read-only one is one line now, not an OSError after TensorFlow's import
    what = "bench-data's temporary cache"
    check_writable(data_dir, what, folder=True)

    # tf.data: the TensorFlow backend's pipeline; imported here so that `bench` (the model) runs without TensorFlow
    import tensorflow as tf

    from tinyconv.data.pipeline import measure_throughput, train_dataset

    workers = default_workers() if workers is None else workers
    result: dict = {"data_dir": str(data_dir), "batch_size": batch_size}
    try:
        cache = Path(tempfile.mkdtemp(prefix=".bench-data-cache-", dir=data_dir))
    except OSError as exc:  # what check_writable's probe file did not meet (no room for a folder, a quota)
        raise TinyconvError(f"{data_dir}: cannot write {what}: {os_error_reason(exc)}{os_error_advice(exc)}") from None
    try:
        manifest = _time_prepare(data_dir, cache, workers, result)
        images = np.load(cache / "train_images.npy", mmap_mode="r")  # [N, 64, 64, 3] uint8
        labels = np.load(cache / "train_labels.npy")  # [N] int32
        dataset = train_dataset(
            images, labels, num_classes=len(manifest["wnids"]), batch_size=batch_size,
            augment=AugmentConfig(pad=4, flip=True),
        )
        measured = measure_throughput(dataset, seconds=seconds)
        result["train_pipeline_images_per_s"] = round(measured["images_per_s"])
        del dataset, images

        if compare_keras:
            baseline = keras.utils.image_dataset_from_directory(
                root / "train", labels="inferred", label_mode="int",
                image_size=(64, 64), batch_size=batch_size, shuffle=True, seed=0, verbose=False,
            )
            measured = measure_throughput(baseline, seconds=seconds)
            result["keras_from_directory_images_per_s"] = round(measured["images_per_s"])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    result.update(
        {
            "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),  # the machine is shared: context for the figures
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "tensorflow": tf.__version__,
        }
    )
    return result


def _time_prepare(data_dir: Path, cache: Path, workers: int, result: dict) -> dict:
    """Run a forced prepare into `cache`, record its wall and CPU time in `result`; returns the manifest."""
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    manifest = prepare(data_dir, force=True, workers=workers, progress=False, cache=cache)
    result["prepare_s"] = round(time.perf_counter() - start, 2)
    # CPU seconds of this process and its (finished) decode workers: steadier than wall time on a shared machine
    result["prepare_cpu_s"] = round(_cpu_seconds() - cpu_before, 2)
    decoded = sum(entry["count"] for entry in manifest["splits"].values())
    result["images"] = decoded
    result["prepare_images_per_s"] = round(decoded / result["prepare_s"])
    result["prepare_workers"] = workers
    return manifest


def _jit_setting(jit_compile) -> bool:
    if jit_compile in ("auto", None):
        return default_jit_compile()
    if jit_compile in ("on", True):
        return True
    if jit_compile in ("off", False):
        return False
    raise TinyconvError(f"bench: jit_compile must be auto, on or off, got {jit_compile!r}")


def _backend_version() -> str:
    module = __import__(keras.config.backend())  # tensorflow or jax, already imported by Keras
    return getattr(module, "__version__", "?")


def _seconds_per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        out = fn()
    np.asarray(out)  # wait for the last step
    return (time.perf_counter() - start) / n


# Longer than 60 lines with its docstring: build, compile and time under one dtype policy.
def bench_model(
    *,
    preset: str = "seed",
    batch_size: int = 64,
    steps: int = 10,
    jit_compile="auto",
    warmup_steps: int = 2,
    mixed_precision: str | None = None,
    seed: int = 0,
    **overrides,
) -> dict:
    """Training and inference images/s of a preset on random data, after warm-up.

    Args:
        preset: a model preset name (or a ModelConfig); `overrides` change its fields (see models.get_config).
        batch_size, steps: images per step and timed steps (after `warmup_steps` untimed ones, which also
            trace and compile).
        jit_compile: "auto" (runtime.default_jit_compile()), "on"/"off" or a bool: XLA for the train and
            predict functions.
        mixed_precision: None (float32) or a Keras dtype policy name such as "mixed_bfloat16".

    Returns a dict: train_images_per_s, infer_images_per_s, train_step_s, infer_step_s and the configuration
    (preset, batch_size, steps, jit_compile, dtype policy, parameters, TensorFlow/Keras versions, threads).
    One train step is a forward and backward pass and an AdamW update with categorical cross-entropy.
    """
    jit = _jit_setting(jit_compile)
    if batch_size < 1 or steps < 1:
        raise TinyconvError(f"bench: batch_size and steps must be positive, got {batch_size} and {steps}")

    config = get_config(preset, **overrides)
    previous_policy = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy(mixed_precision)
    try:
        keras.utils.set_random_seed(seed)
        model = build_model(config)
        model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.05),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        rng = np.random.default_rng(seed)
        x = keras.ops.convert_to_tensor(
            rng.standard_normal((batch_size, config.image_size, config.image_size, 3), dtype=np.float32)
        )
        labels = rng.integers(0, config.num_classes, size=batch_size)
        y = keras.ops.convert_to_tensor(np.eye(config.num_classes, dtype=np.float32)[labels])

        train = lambda: model.train_on_batch(x, y, return_dict=False)  # noqa: E731
        infer = lambda: model.predict_on_batch(x)  # noqa: E731
        _seconds_per_call(train, warmup_steps)
        train_step_s = _seconds_per_call(train, steps)
        _seconds_per_call(infer, warmup_steps)
        infer_step_s = _seconds_per_call(infer, steps)
        params = model.count_params()
        policy = keras.config.dtype_policy().name
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return {
        "preset": config.name,
        "train_images_per_s": round(batch_size / train_step_s, 2),
        "infer_images_per_s": round(batch_size / infer_step_s, 2),
        "train_step_s": round(train_step_s, 4),
        "infer_step_s": round(infer_step_s, 4),
        "batch_size": batch_size,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "jit_compile": jit,
        "dtype_policy": policy,
        "params_total": params,
        "overrides": dict(overrides),
        "backend": keras.config.backend(),
        "backend_version": _backend_version(),
        "device": describe_device(),
        "keras": keras.__version__,
        "cpu_threads": os.cpu_count(),
        # oneDNN's CPU kernels or TensorFlow's Eigen ones, which differ widely on AVX2 CPUs (runtime.prefer_onednn)
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS") if keras.config.backend() == "tensorflow" else None,
    }
