"""Importing TensorFlow quietly, and the one device policy (GPU present, mixed precision, XLA, strategy).

TensorFlow 2.21's C++ runtime prints several lines to stderr while it loads and when it first looks for a
GPU ("oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit", ...). They
are written before absl's logging is set up, so TF_CPP_MIN_LOG_LEVEL does not reach them, and on a CPU-only
machine they read like errors. `quiet_tensorflow()` does the import and the first device query with the
process's stderr pointed at /dev/null; Python exceptions are unaffected. Set TINYCONV_TF_LOGS=1 to see them.

Every question about the device goes through this module: `has_gpu()` (the layers' fast-path choice, the
notebooks' `auto` profile, XLA), `use_mixed_precision`, `use_jit` / `default_jit_compile`,
`distribution_strategy` and `describe_device`.

Keras and TensorFlow are imported inside the functions, not at the top: this module must load before
TensorFlow so that `quiet_tensorflow` can hide its start-up, and `tinyconv --help` imports it.
"""

from __future__ import annotations

import contextlib
import os
import sys

from tinyconv.errors import TinyconvError

_done = False


@contextlib.contextmanager
def _native_stderr_silenced():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow():
    """Import TensorFlow (and list its devices once) with native start-up logs hidden; returns the module."""
    global _done
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _done or os.environ.get("TINYCONV_TF_LOGS") == "1":
        import tensorflow as tf

        return tf
    with _native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    _done = True
    return tf


def _tensorflow_backend() -> bool:
    """Whether Keras runs on TensorFlow; asks Keras' config without importing TensorFlow for other backends."""
    import keras  # with another backend this does not import TensorFlow

    return keras.config.backend() == "tensorflow"


def has_gpu() -> bool:
    """Whether TensorFlow (the Keras backend) places ops on a GPU; False without importing it on other backends."""
    if not _tensorflow_backend():
        return False
    return bool(quiet_tensorflow().config.list_logical_devices("GPU"))


def gpu_capabilities() -> list[tuple[str, tuple[int, int] | None]]:
    """(device name, CUDA compute capability or None) of each GPU TensorFlow sees."""
    if not _tensorflow_backend():
        return []
    tf = quiet_tensorflow()
    result = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        result.append((details.get("device_name", gpu.name), details.get("compute_capability")))
    return result


def describe_device() -> str:
    """A short description of where training runs, e.g. 'CPU (2 cores)' or '1x NVIDIA H100 80GB HBM3'."""
    gpus = gpu_capabilities()
    if gpus:
        names = sorted({name for name, _ in gpus})
        return f"{len(gpus)}x {', '.join(names)}"
    return f"CPU ({os.cpu_count()} cores)"


def use_mixed_precision(setting: str) -> bool:
    """The recipe's mixed_precision setting ("auto" | "on" | "off") for this machine.

    auto: mixed_float16 when every GPU has compute capability >= 7 (tensor cores), else float32.
    """
    gpus = gpu_capabilities()
    capable = bool(gpus) and all(cc is not None and tuple(cc) >= (7, 0) for _, cc in gpus)
    if setting == "on" and not capable:
        raise TinyconvError("mixed_precision=on needs a GPU with compute capability >= 7; use auto or off")
    return capable if setting == "auto" else setting == "on"


def default_jit_compile() -> bool:
    """The XLA setting for `model.compile(jit_compile=...)`: False on CPU, True on GPU.

    On CPU XLA compiles depthwise and grouped convolutions into slow generic loops: the seed model trained
    at 3.3 img/s with XLA against 50 img/s without (docs/performance.md). On GPU XLA is the usual win for
    these element-wise-heavy blocks (not measured here: no GPU in development).
    """
    return has_gpu()


def use_jit(setting: str) -> bool:
    """The recipe's jit_compile setting ("auto" | "on" | "off") for this machine."""
    return default_jit_compile() if setting == "auto" else setting == "on"


def distribution_strategy():
    """MirroredStrategy over the GPUs when there are several, else TensorFlow's default strategy."""
    tf = quiet_tensorflow()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
