"""The JAX backend, on CPU, in subprocesses with KERAS_BACKEND=jax where `import tensorflow` fails
(tests/no_tensorflow.py): the `ci` profile end to end (train, evaluate, predict, bench) on the synthetic and
the real dataset, resume after a real SIGKILL, data parallel over two forced host devices, the same logits from the same weights on both backends with
.keras files crossing between them, and the on-device augmentation making the tf.data pipeline's batches.

Each JAX process costs ~10 s to start and ~25 s to compile on a CPU, so the checks share few processes:
one ci run serves the train/evaluate/predict test, one script serves the cross-backend and augmentation tests,
and every JAX process of this module shares one persistent XLA compilation cache (a temporary folder, removed
at exit): they compile the same ci-profile steps again and again (a ci run: 44 s without it, 16 s with it).
What runs is the same compiled code, keyed by JAX on the computation, its devices and its flags.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from killing import kill_after_first_backup  # tests/ (conftest puts it on sys.path)

tf = pytest.importorskip("tensorflow")  # this process is the TensorFlow side of the comparisons
pytest.importorskip("jax")
pytestmark = pytest.mark.jax

REPO = Path(__file__).resolve().parents[1]
BLOCKER = REPO / "tests" / "no_tensorflow.py"
COMPILE_CACHE = tempfile.mkdtemp(prefix="tinyconv-jax-cache-")
atexit.register(shutil.rmtree, COMPILE_CACHE, ignore_errors=True)


def _jax_env(extra_path: Path | None = None) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_COMPILATION_CACHE_DIR": COMPILE_CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _without_tf(module: str, *args, extra_path: Path | None = None, timeout: int = 300):
    """`python tests/no_tensorflow.py module args...` under JAX: TensorFlow cannot be imported in that process."""
    return subprocess.run(
        [sys.executable, str(BLOCKER), module, *map(str, args)],
        cwd=REPO, env=_jax_env(extra_path), capture_output=True, text=True, timeout=timeout,
    )


def _ok(completed) -> subprocess.CompletedProcess:
    output = f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    assert completed.returncode == 0, f"exit {completed.returncode}\n{output}"
    return completed


def _json_out(completed) -> dict:
    """The JSON object a command printed last (train prints progress lines before it)."""
    text = "\n" + _ok(completed).stdout
    return json.loads(text[text.rindex("\n{\n") + 1:])


# ------------------------------------------------------------------------ ci profile, synthetic data


@pytest.fixture(scope="module")
def jax_ci_run(synthetic_data_dir, tmp_path_factory):
    """A 2-epoch ci run under JAX without TensorFlow: (run_dir, metrics, train stdout)."""
    run_dir = tmp_path_factory.mktemp("jax-runs") / "ci"
    train = _without_tf("tinyconv", "train", "--profile", "ci", "--epochs", 2, "--data-dir", synthetic_data_dir,
                        "--out", run_dir, "--json")
    return run_dir, _json_out(train), train.stdout


def test_ci_train_evaluate_predict_under_jax_without_tensorflow(jax_ci_run, synthetic_data_dir, tmp_path):
    from PIL import Image

    from tinyconv.training.callbacks import read_history
    from tinyconv.deploy.inference import evaluate

    run_dir, metrics, _ = jax_ci_run
    for name in ("config.json", "history.csv", "model.keras", "best.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"] == "jax" and config["dtype_policy"] == "float32"
    assert config["devices"] == 1 and config["global_batch"] == 16
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["epochs"] == 2 and on_disk["backend"] == "jax" and on_disk == metrics
    assert on_disk["train_images"] == 64 and on_disk["val_images"] == 24
    rows = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(np.isfinite(row["loss"]) and 0.0 <= row["val_top1"] <= 1.0 for row in rows)

    evaluated = _json_out(_without_tf("tinyconv", "evaluate", run_dir, "--json", "--data-dir", synthetic_data_dir))
    assert evaluated["classes"] == 4 and evaluated["images"] == 24
    assert evaluated["top1"] == pytest.approx(metrics["top1"], abs=1e-6)  # same weights, same images
    assert [c["wnid"] for c in evaluated["per_class"]] == config["wnids"]
    assert evaluated["tta"] is not None and 0.0 <= evaluated["tta"]["top1"] <= 1.0

    # the model saved under JAX, evaluated here under TensorFlow: the same answers
    here = evaluate(run_dir, data_dir=synthetic_data_dir, tta=True)
    assert here["top1"] == pytest.approx(evaluated["top1"], abs=1e-6)
    assert [c["top1"] for c in here["per_class"]] == pytest.approx([c["top1"] for c in evaluated["per_class"]])

    image = tmp_path / "odd size.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(image)
    predicted = _ok(_without_tf("tinyconv", "predict", run_dir, image, "--top", 4)).stdout
    assert str(image) in predicted and "%" in predicted
    for name, wnid in zip(config["names"], config["wnids"]):  # 4 classes, top 4: every name is printed
        assert f"{name} ({wnid})" in predicted
    as_json = json.loads(_ok(_without_tf("tinyconv", "predict", run_dir / "best.keras", image, "--json")).stdout)
    probabilities = [guess["probability"] for guess in as_json[0]["top"]]
    assert len(probabilities) == 4 and sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_bench_under_jax_without_tensorflow():
    result = _json_out(_without_tf("tinyconv", "bench", "--preset", "tiny", "--batch-size", 8, "--steps", 2, "--json"))
    assert result["backend"] == "jax" and result["preset"] == "tiny" and result["batch_size"] == 8
    assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0


@pytest.mark.slow
def test_ci_profile_on_real_data_under_jax(real_data_dir, tmp_path):
    from tinyconv.training.callbacks import read_history

    run_dir = tmp_path / "real-ci-jax"
    metrics = _json_out(_without_tf("tinyconv", "train", "--profile", "ci", "--data-dir", real_data_dir,
                                    "--out", run_dir, "--json"))
    for name in ("config.json", "history.csv", "model.keras", "best.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"] == "jax"
    assert config["names"] == ["Egyptian cat", "reel", "volleyball", "rocking chair"]
    assert metrics["backend"] == "jax" and metrics["epochs"] == 1
    assert metrics["train_images"] == 4 * 16 and metrics["val_images"] == 4 * 8
    assert 0.0 <= metrics["top1"] <= 1.0 and np.isfinite(metrics["val_loss"])
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0]


# ------------------------------------------------------------------------------- resume after SIGKILL




@pytest.mark.kill
def test_resume_after_sigkill_under_jax_ends_with_each_epoch_once(synthetic_data_dir, tmp_path):
    from tinyconv.training.callbacks import read_history

    epochs = 3
    run_dir = tmp_path / "killed"
    command = ["train", "--profile", "ci", "--epochs", epochs, "--data-dir", synthetic_data_dir, "--out", run_dir]
    argv = [sys.executable, BLOCKER, "sleepy_cli", *command]
    killed_at = kill_after_first_backup(argv, run_dir, cwd=REPO, env=_jax_env(tmp_path), timeout=240)
    assert 1 <= killed_at < epochs
    history = run_dir / "history.csv"

    second = _ok(_without_tf("tinyconv", *command))
    assert f"resuming {run_dir} from epoch {killed_at + 1} of {epochs}" in second.stdout
    assert "Epoch 1/3" not in second.stdout  # the completed epochs were not trained again

    assert [row["epoch"] for row in read_history(history)] == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and metrics["backend"] == "jax"
    assert not (run_dir / "backup").exists()

    import keras

    import tinyconv.deploy.inference  # noqa: F401  (registers the custom objects)

    model = keras.saving.load_model(run_dir / "model.keras")  # saved under JAX, loaded here under TensorFlow
    steps = json.loads((run_dir / "config.json").read_text())["steps_per_epoch"]
    assert int(model.optimizer.iterations.numpy()) == epochs * steps  # schedule position carried over


# ------------------------------------------------------- data parallel over two (forced) host devices

TWO_DEVICES = "--xla_force_host_platform_device_count=2"  # XLA's CPU client shows two devices, as two GPUs would


def test_data_parallel_on_two_devices_matches_one_device_and_resumes(jax_ci_run, synthetic_data_dir, tmp_path):
    """keras.distribution.DataParallel over 2 devices: the same global batches give the one-device run's
    history (each epoch's loss is the mean over its 4 steps, the first step's among them, so a first step
    that differed would show), and a run SIGKILLed after its first epoch resumes to the end."""
    from tinyconv.training.callbacks import read_history

    one_dir, _, _ = jax_ci_run  # 2 ci epochs on one device, same recipe
    run_dir = tmp_path / "two-devices"
    command = ["train", "--profile", "ci", "--epochs", 2, "--data-dir", synthetic_data_dir, "--out", run_dir]
    env = {**_jax_env(tmp_path), "XLA_FLAGS": TWO_DEVICES}
    killed_at = kill_after_first_backup([sys.executable, BLOCKER, "sleepy_cli", *command], run_dir, cwd=REPO,
                                        env=env, timeout=400)
    assert killed_at == 1
    resumed = subprocess.run([sys.executable, str(BLOCKER), "tinyconv", *map(str, command)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=400)
    assert f"resuming {run_dir} from epoch 2 of 2" in _ok(resumed).stdout

    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"] == "jax" and config["devices"] == 2 and config["global_batch"] == 16
    assert config["dtype_policy"] == "float32" and config["jit_compile"] is True
    assert config["device"].startswith("2 JAX CPU devices")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["epochs"] == 2 and not (run_dir / "backup").exists()

    two, one = read_history(run_dir / "history.csv"), read_history(one_dir / "history.csv")
    assert [row["epoch"] for row in two] == [0, 1]
    for name in ("loss", "val_loss", "top1", "val_top1"):  # sums over two devices instead of one: rounding only
        assert [row[name] for row in two] == pytest.approx([row[name] for row in one], rel=1e-5, abs=1e-6), name
    assert two[1]["loss"] < two[0]["loss"]  # it learned: the comparison is between runs that moved


_SPLIT_BATCHES = """
import json, sys

import jax
import keras
import numpy as np

from tinyconv.data.device_input import DeviceEvalBatches, DeviceTrainBatches
from tinyconv.data.augment_config import AugmentConfig

assert jax.device_count() == 2
distribution = keras.distribution.DataParallel(devices=jax.devices())
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8), rng.integers(0, 5, 40).astype(np.int32)
for values in json.loads(sys.argv[1]).values():
    augment = AugmentConfig.from_dict(values)
    one = DeviceTrainBatches(images, labels, 5, 8, augment, seed=11, start_epoch=3)
    two = DeviceTrainBatches(images, labels, 5, 8, augment, seed=11, start_epoch=3, distribution=distribution)
    for step in range(4):
        for single, split in zip(one[step], two[step]):
            assert np.array_equal(np.asarray(single), np.asarray(split))  # the same batch, bit for bit
            layout = distribution.get_data_layout(split.shape).backend_layout
            assert split.sharding == layout and len(split.addressable_shards) == 2
            assert split.addressable_shards[0].data.shape[0] == 4  # each device made its half
            # what Keras does with each batch under a distribution: here it returns the array as it is (no copy)
            assert jax.make_array_from_process_local_data(layout, split) is split
evaluation = DeviceEvalBatches(images, labels, 5, 16, distribution)
assert [int(x.shape[0]) for x, _ in (evaluation[i] for i in range(len(evaluation)))] == [16, 16, 8]
print("split batches equal")
"""


def test_data_parallel_batches_are_the_one_device_batches_made_in_halves(tmp_path):
    (tmp_path / "split_batches.py").write_text(_SPLIT_BATCHES)
    completed = subprocess.run(
        [sys.executable, str(BLOCKER), "split_batches", json.dumps(AUGMENTS)], cwd=REPO,
        env={**_jax_env(tmp_path), "XLA_FLAGS": TWO_DEVICES}, capture_output=True, text=True, timeout=300,
    )
    assert "split batches equal" in _ok(completed).stdout


def test_data_parallel_refuses_a_batch_that_does_not_split(synthetic_data_dir, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(BLOCKER), "tinyconv", "train", "--profile", "ci", "--set", "batch_size=15",
         "--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "odd")],
        cwd=REPO, env={**_jax_env(), "XLA_FLAGS": TWO_DEVICES}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "tinyconv: error: the global batch_size of 15 does not split evenly over 2 devices" in completed.stderr
    assert "Traceback" not in completed.stderr


# ------------------------------------------------- one JAX script: cross-backend logits, augmentation


def randomize(model, seed: int) -> None:
    """Random weights and non-trivial BatchNorm statistics (moving mean/variance, gamma, beta), in place."""
    rng = np.random.default_rng(seed)
    seen = set()
    for variable in model.variables:
        path, shape = variable.path, tuple(variable.shape)
        kind = path.rsplit("/", 1)[-1]
        if kind == "moving_mean":
            value = rng.normal(0.0, 0.5, shape)
        elif kind == "moving_variance":
            value = rng.uniform(0.3, 3.0, shape)
        elif kind == "gamma":  # BN scale and layer scale
            value = rng.uniform(0.5, 1.5, shape)
        elif kind in ("beta", "bias"):
            value = rng.normal(0.0, 0.2, shape)
        else:  # kernels: redrawn with the initializer's scale
            value = rng.normal(0.0, float(np.std(np.asarray(variable))) or 0.05, shape)
        seen.add(kind)
        variable.assign(value.astype("float32"))
    assert {"moving_mean", "moving_variance"} <= seen


AUGMENTS = {
    # the reference: one crop offset and one set of jitter factors per batch, black cutout, every batch mixed
    "reference": {"pad": 4, "crop_offset": "batch", "flip": True, "jitter_prob": 0.8, "jitter_factors": "batch",
                  "cutout_prob": 0.7, "cutout_half": 16, "cutout_fill": "zero", "mix_prob": 1.0,
                  "cutmix_share": 0.5, "mix_alpha": 0.2},
    # the per-example variants, mean-colour cutout, half the batches mixed
    "per_example": {"pad": 4, "crop_offset": "example", "flip": True, "jitter_prob": 0.6, "jitter_factors": "example",
                    "cutout_prob": 0.5, "cutout_half": 12, "cutout_fill": "mean", "mix_prob": 0.6,
                    "cutmix_share": 0.5, "mix_alpha": 0.4},
}
AUG_CLASSES, AUG_BATCH, AUG_SEED, AUG_EPOCH, AUG_STEPS = 5, 8, 11, 3, 4

_JAX_SIDE = """
import json, sys
from pathlib import Path

import keras
import numpy as np

import tinyconv.deploy.inference  # noqa: F401  (registers the custom objects)
from tinyconv.data.device_input import DeviceTrainBatches
from tinyconv.model.build import build_model
from tinyconv.data.augment_config import AugmentConfig

assert keras.config.backend() == "jax"
folder = Path(sys.argv[1])
x = np.load(folder / "x.npy")

{randomize}

# a model saved under TensorFlow, run here
model = keras.saving.load_model(folder / "tf_model.keras")
np.save(folder / "jax_logits_of_tf_model.npy", np.asarray(model(x, training=False)))

# a model built and saved here, to be run under TensorFlow
keras.utils.set_random_seed(1)  # imports TensorFlow when installed: the blocker makes that fail harmlessly
model = build_model("seed")
randomize(model, seed=2)
model.save(folder / "jax_model.keras")
np.save(folder / "jax_logits.npy", np.asarray(model(x, training=False)))

# the GPU forms (GroupedConv2D "dense", shifted axial convs), forced here on a CPU, with the same weights:
# the same logits, and the same gradients in a training-mode step, as the forms a CPU runs
import jax
import tinyconv.model.fast_path
from tinyconv.model.layers import AxialDepthwiseConv2D

tinyconv.model.fast_path.has_gpu = lambda: True
gpu_model = build_model("seed")
gpu_model.set_weights(model.get_weights())
paths = [getattr(layer, "_path", None) for layer in gpu_model._flatten_layers()]
assert paths.count("dense") == 2 and all(
    layer._path == "shifted" for layer in gpu_model._flatten_layers() if isinstance(layer, AxialDepthwiseConv2D)
)
np.save(folder / "jax_gpu_forms_logits.npy", np.asarray(gpu_model(x, training=False)))


from jax_gradients import gradients  # tests/jax_gradients.py

pairs = list(zip(gradients(gpu_model, x), gradients(model, x)))
# |a - b| / |b| per weight, and over all weights at once. Weights with near-zero gradients (the betas of BNs that
# another BN follows: their gradient cancels in exact arithmetic) carry float32 rounding of ~1e-4 of their tiny norm
worst = max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)) for a, b in pairs)
total = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in pairs) / sum(np.sum(b ** 2) for _, b in pairs)))
(folder / "jax_gpu_forms_gradients.json").write_text(
    json.dumps({{"worst_weight": worst, "all_weights": total, "weights": len(pairs)}})
)

# the on-device augmentation
images, labels = np.load(folder / "images.npy"), np.load(folder / "labels.npy")
args = json.loads((folder / "augment.json").read_text())
for name, values in args["augments"].items():
    batches = DeviceTrainBatches(images, labels, args["classes"], args["batch"], AugmentConfig.from_dict(values),
                                 seed=args["seed"], start_epoch=args["epoch"])
    assert batches.epoch == args["epoch"]
    made = [batches[step] for step in range(args["steps"])]  # __getitem__: the start epoch's batches
    np.save(folder / f"aug_{{name}}_x.npy", np.stack([np.asarray(x_) for x_, _ in made]))
    np.save(folder / f"aug_{{name}}_y.npy", np.stack([np.asarray(y_) for _, y_ in made]))
    again = batches.batch(args["epoch"], 1)
    assert np.array_equal(np.asarray(again[0]), np.asarray(made[1][0]))
print("jax side done")
"""


def _logits(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def jax_side(tmp_path_factory):
    """Inputs written here (TensorFlow), the JAX script run on them without TensorFlow: (folder, tf logits)."""
    import keras

    import tinyconv.deploy.inference  # noqa: F401
    from tinyconv.model.build import build_model

    folder = tmp_path_factory.mktemp("cross-backend")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 64, 3)).astype("float32")
    np.save(folder / "x.npy", x)
    keras.utils.set_random_seed(0)
    model = build_model("seed")
    randomize(model, seed=1)
    model.save(folder / "tf_model.keras")
    tf_logits = _logits(model, x)

    images = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, AUG_CLASSES, 40).astype(np.int32)
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", labels)
    from tinyconv.data.augment_config import AugmentConfig

    augments = {name: AugmentConfig.from_dict(values).to_dict() for name, values in AUGMENTS.items()}
    (folder / "augment.json").write_text(json.dumps({
        "augments": augments, "classes": AUG_CLASSES, "batch": AUG_BATCH, "seed": AUG_SEED,
        "epoch": AUG_EPOCH, "steps": AUG_STEPS,
    }))
    source = textwrap.dedent(inspect.getsource(randomize))
    (folder / "jax_side.py").write_text(_JAX_SIDE.format(randomize=source))
    completed = _ok(_without_tf("jax_side", folder, extra_path=folder))
    assert "jax side done" in completed.stdout
    return folder, tf_logits


def test_same_weights_same_logits_on_both_backends_and_keras_files_cross(jax_side):
    import keras

    import tinyconv.deploy.inference  # noqa: F401

    folder, tf_logits = jax_side
    x = np.load(folder / "x.npy")
    assert tf_logits.shape == (4, 200) and np.all(np.isfinite(tf_logits))
    assert np.std(tf_logits) > 1e-2 * np.max(np.abs(tf_logits))  # not a degenerate output

    # saved under TensorFlow, run under JAX
    jax_of_tf = np.load(folder / "jax_logits_of_tf_model.npy")
    assert _max_relative_difference(jax_of_tf, tf_logits) <= 1e-4

    # saved under JAX, run under TensorFlow
    jax_logits = np.load(folder / "jax_logits.npy")
    model = keras.saving.load_model(folder / "jax_model.keras")
    here = _logits(model, x)
    assert _max_relative_difference(here, jax_logits) <= 1e-4
    moving = [v for v in model.variables if v.path.endswith("moving_variance")]
    assert moving and all(not np.allclose(np.asarray(v), 1.0) for v in moving)  # the statistics travelled
    assert not np.allclose(jax_logits, tf_logits, atol=1e-3)  # two different models: the comparison can fail


def test_gpu_forms_compute_what_the_cpu_forms_compute(jax_side):
    """GroupedConv2D's block-diagonal dense conv and the shifted axial convs, which a GPU takes, forced on a CPU:
    the seed's logits and every weight's gradient match the grouped and depthwise convs."""
    folder, _ = jax_side
    jax_logits = np.load(folder / "jax_logits.npy")
    assert _max_relative_difference(np.load(folder / "jax_gpu_forms_logits.npy"), jax_logits) <= 1e-4
    gradients = json.loads((folder / "jax_gpu_forms_gradients.json").read_text())
    assert gradients["weights"] > 100
    assert gradients["all_weights"] <= 1e-5 and gradients["worst_weight"] <= 1e-3


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_device_augmentation_makes_the_tf_data_batches(jax_side, name):
    from tinyconv.data.augment import normalize
    from tinyconv.data.pipeline import train_dataset
    from tinyconv.data.augment_config import AugmentConfig

    folder, _ = jax_side
    images, labels = np.load(folder / "images.npy"), np.load(folder / "labels.npy")
    augment = AugmentConfig.from_dict(AUGMENTS[name])
    ds = train_dataset(images, labels, AUG_CLASSES, AUG_BATCH, augment=augment, seed=AUG_SEED, deterministic=True,
                       start_epoch=AUG_EPOCH)
    made = [(x.numpy(), y.numpy()) for x, y in ds.take(AUG_STEPS)]
    tf_x, tf_y = np.stack([x for x, _ in made]), np.stack([y for _, y in made])
    jax_x, jax_y = np.load(folder / f"aug_{name}_x.npy"), np.load(folder / f"aug_{name}_y.npy")
    assert jax_x.shape == tf_x.shape == (AUG_STEPS, AUG_BATCH, 64, 64, 3)
    assert jax_y.shape == tf_y.shape == (AUG_STEPS, AUG_BATCH, AUG_CLASSES)
    np.testing.assert_allclose(jax_x, tf_x, atol=1e-4, rtol=0)
    np.testing.assert_allclose(jax_y, tf_y, atol=1e-6, rtol=0)

    # the comparison has teeth: the batches are augmented and mixed, and another epoch differs
    plain = np.asarray(normalize(images))
    assert not any(np.allclose(batch, plain[: AUG_BATCH], atol=1e-3) for batch in tf_x)
    assert np.any(np.max(tf_y, axis=-1) < 1.0)  # some labels are mixed
    np.testing.assert_allclose(tf_y.sum(-1), 1.0, atol=1e-5)
    other = train_dataset(images, labels, AUG_CLASSES, AUG_BATCH, augment=augment, seed=AUG_SEED,
                          deterministic=True, start_epoch=AUG_EPOCH + 1)
    x_other, _ = next(iter(other))
    assert not np.allclose(x_other.numpy(), tf_x[0], atol=1e-3)


# ------------------------------------------------------------- no host round trip per training step


def test_steps_run_without_waiting_for_the_host_and_a_nan_still_stops_the_run(synthetic_data_dir, tmp_path):
    """Under JAX the run's own callbacks leave Keras free to run the batch-end hooks in worker threads (so no step
    waits for its loss to reach Python), and NonFiniteLoss, read there, still stops a diverged epoch before the
    history, best.keras or the backup take it in."""
    from tinyconv.training.callbacks import read_history

    run_dir = tmp_path / "nan"
    completed = _ok(_without_tf("jax_async_steps", synthetic_data_dir, run_dir, extra_path=REPO / "tests"))
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["hooks"] > 0 and out["on_main_thread"] == 0, out  # every batch-end hook ran off the training loop
    assert "throughput:" in completed.stdout  # ThroughputEstimate measured the steps from the worker threads
    assert out["error"] is not None
    assert "training diverged" in out["error"] and "loss became nan at epoch 2, step" in out["error"], out["error"]
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0]
    meta = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
