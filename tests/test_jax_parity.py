"""The two backends compute the same thing: the same weights give the same logits under TensorFlow and JAX, and
.keras files cross between them; the forms a GPU takes (GroupedConv2D's dense block-diagonal conv, shifted axial
convs), forced on a CPU under JAX, give the CPU forms' logits and gradients; the on-device augmentation (JAX) makes
the tf.data pipeline's batches. One JAX script (no TensorFlow in its process) computes the JAX side of all of them.
And a run moves between the backends with its whole state (tests/handover.py: a CPU session and a GPU lease take
turns at one run).
"""

from __future__ import annotations

import inspect
import json
import textwrap

import numpy as np
import pytest
from jax_processes import AUGMENTS, REFERENCE_LIKE, ok, without_tf  # tests/ (conftest puts it on sys.path)

tf = pytest.importorskip("tensorflow")  # this process is the TensorFlow side of the comparisons
pytest.importorskip("jax")
pytestmark = pytest.mark.jax


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
# notebook 05's effective receptive fields (input gradients) of its first and last stage, here through jax.grad
from tinyconv.study import analysis

stages = analysis.stage_outputs(model)
np.save(folder / "jax_erfs_of_tf_model.npy",
        np.stack([analysis.effective_receptive_field(model, x[:2], stages[s]) for s in (1, max(stages))]))
# notebook 07's maps: CAM and each stage's Grad-CAM, here through jax.vjp over the model cut at the stages
from tinyconv.study import localize

maps, _ = localize.layer_maps(model, x[:2], [None, *localize.stage_layers(model).values()])
np.savez(folder / "jax_maps_of_tf_model.npz", *maps)

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
    completed = ok(without_tf("jax_side", folder, extra_path=folder))
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


def test_effective_receptive_fields_are_the_same_on_both_backends(jax_side):
    """Notebook 05's input gradients: through GradientTape here, through jax.grad on a GPU machine (no TensorFlow
    there; before 2026-12-06 the notebook failed on JAX). The same model file, the same images."""
    import keras

    import tinyconv.deploy.inference  # noqa: F401
    from tinyconv.study import analysis

    folder, _ = jax_side
    model = keras.saving.load_model(folder / "tf_model.keras")
    x = np.load(folder / "x.npy")[:2]
    stages = analysis.stage_outputs(model)
    here = np.stack([analysis.effective_receptive_field(model, x, stages[s]) for s in (1, max(stages))])
    there = np.load(folder / "jax_erfs_of_tf_model.npy")
    assert here.shape == there.shape == (2, 64, 64) and np.allclose(here.sum(axis=(1, 2)), 1.0)
    assert not np.allclose(here[0], here[1])  # two different fields: the comparison can fail
    assert _max_relative_difference(there, here) <= 1e-4


def test_grad_cam_of_every_stage_and_cam_are_the_same_on_both_backends(jax_side):
    """Notebook 07's maps: through TensorFlow's tape here, through jax.vjp over the model cut at each stage on a GPU
    machine (before 2026-12-06 notebook 07 scored CAM only on JAX). The same model file, the same images."""
    import keras

    import tinyconv.deploy.inference  # noqa: F401
    from tinyconv.study import localize

    folder, _ = jax_side
    model = keras.saving.load_model(folder / "tf_model.keras")
    x = np.load(folder / "x.npy")[:2]
    here, _ = localize.layer_maps(model, x, [None, *localize.stage_layers(model).values()])
    there = np.load(folder / "jax_maps_of_tf_model.npz")
    assert len(here) == len(there.files) == 4  # CAM and three stages
    for mine, theirs in zip(here, (there[name] for name in there.files)):
        assert mine.shape == theirs.shape and mine.std() > 0
        assert _max_relative_difference(theirs, mine) <= 1e-4


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


# ------------------------------------------------- one run, trained on both backends in turn


def _same_restored_state(jax_file, tf_values: dict) -> int:
    """Both backends restored the run's checkpoint into the same variables, bit for bit: (how many variables)."""
    with np.load(jax_file) as values:
        jax_values = dict(values)
    assert sorted(jax_values) == sorted(tf_values)
    for path, value in tf_values.items():
        # the one dtype that differs is Keras' own choice: a random generator's state is int64 on TensorFlow and
        # uint32 on JAX; the values are the same
        kinds = {jax_values[path].dtype.kind, value.dtype.kind}
        same_kind = jax_values[path].dtype == value.dtype or kinds <= {"i", "u"}
        assert same_kind and np.array_equal(jax_values[path], value), path
    return len(tf_values)


@pytest.mark.kill
def test_a_run_moves_between_tensorflow_and_jax_with_its_whole_state(synthetic_data_dir, tmp_path):
    """A run may start on a CPU (TensorFlow, float32) and go on on a GPU lease (JAX, bf16) and back, so the reference
    run advances on whichever machine a session has. At each hand-over (the state packed and restored as a lease does) both
    backends restore the checkpoint into the same weights, BatchNorm statistics, DropPath random states, step count
    and Adam slots, keyed by variable path, bit for bit: Keras restores an optimizer's slots by their order, so a
    backend that ordered its variables otherwise would put one weight's moments on another. The run then ends with
    every epoch once, its history carried over row for row, and a session line per backend."""
    from handover import dump, hand_over  # tests/

    from tinyconv.training.history import read_history
    from tinyconv.training.overrides import parse_overrides
    from tinyconv.training.train import train

    flags = [*REFERENCE_LIKE, "--set", "epochs=3"]
    overrides = parse_overrides(flags[1::2])
    assert overrides["model_overrides"] == {"drop_path": 0.2} and overrides["epochs"] == 3
    started = tmp_path / "tf-1"
    progress = train(profile="ci", data_dir=synthetic_data_dir, out=started, overrides=overrides, time_limit=1e-6)
    assert progress["complete"] is False and progress["epochs"] == 1

    on_jax = hand_over(started, tmp_path, "jax-2")
    to_jax = dump(on_jax, synthetic_data_dir, overrides, tmp_path / "to-jax-tf.npz")
    # the JAX leg, one process, in bf16 as on a GPU: dump the state as JAX restores it, train epoch 2, hand the run
    # back (tf-3), dump that
    leg = ok(without_tf("handover", on_jax, synthetic_data_dir, json.dumps(overrides), tmp_path))
    assert "jax leg done" in leg.stdout and f"resuming {on_jax} from epoch 2 of 3" in leg.stdout
    count = _same_restored_state(tmp_path / "to-jax-jax.npz", to_jax)

    back = tmp_path / "tf-3"
    assert _same_restored_state(tmp_path / "to-tf-jax.npz", dump(back, synthetic_data_dir, overrides,
                                                                  tmp_path / "to-tf-tf.npz")) == count
    metrics = train(profile="ci", data_dir=synthetic_data_dir, out=back, overrides=overrides)

    rows = read_history(back / "history.csv")
    assert [row["epoch"] for row in rows] == [0, 1, 2] and metrics["epochs"] == 3
    assert rows[0] == read_history(started / "history.csv")[0]
    assert rows[1] == read_history(on_jax / "history.csv")[1]
    sessions = [json.loads(line) for line in (back / "sessions.jsonl").read_text().splitlines()]
    assert [(s["backend"], s["dtype_policy"], s["from_epoch"]) for s in sessions] == [
        ("tensorflow", "float32", 0), ("jax", "mixed_bfloat16", 1), ("tensorflow", "float32", 2)]
    # what the comparison covers: the optimizer's state and DropPath's random state are among the variables
    with np.load(tmp_path / "to-tf-tf.npz") as values:
        paths = list(values)
    assert any(path.endswith("_momentum") for path in paths) and any(path.endswith("_velocity") for path in paths)
    assert any("seed_generator" in path for path in paths) and any(path.endswith("iteration") for path in paths)
