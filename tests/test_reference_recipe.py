"""The reference notebook's recipe, the parts in the model and optimizer (issue 11): per-step weight decay
independent of the lr (TensorFlow and, in a subprocess, JAX), the once-per-epoch schedule, the seed preset's
BatchNorm settings and per-group down-conv init, and the reference's published curve and its plot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tinyconv.model.build import build_model

from tinyconv.model.config import PRESETS, ModelConfig, get_config  # noqa: E402
from tinyconv.training.recipe import make_config  # noqa: E402
from tinyconv.training.reference import (  # noqa: E402
    REFERENCE_PARAMS,
    REFERENCE_TOP1,
    comparable_with_reference,
    read_reference_curve,
    reference_curve_for,
)
from tinyconv.training.schedule import (  # noqa: E402
    AdamWPerStepDecay,
    EpochWarmupCosine,
    WarmupCosine,
    build_optimizer,
    build_schedule,
    lr_at_epoch_end,
)

ROOT = Path(__file__).resolve().parent.parent
STEPS = 50
WD = 1e-5


def _zero_grad_steps(optimizer, w0: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """Apply `steps` all-zero gradients to [w0, ones(4)] and return the first weight afterwards."""
    variables = [keras.Variable(w0), keras.Variable(np.ones(4, w0.dtype))]
    optimizer.build(variables)
    for _ in range(steps):
        optimizer.apply([np.zeros(v.shape, w0.dtype) for v in variables], variables)
    return keras.ops.convert_to_numpy(variables[0])


def _float32_recurrence(w0: np.ndarray, factor: float, steps: int = STEPS) -> np.ndarray:
    """w <- w - w * factor in float32, step by step (the rounding the optimizer also does)."""
    w, f = w0.astype(np.float32), np.float32(factor)
    for _ in range(steps):
        w = w - w * f
    return w


W0 = np.random.default_rng(0).standard_normal((3, 5)).astype("float32")


# ----------------------------------------------------------------------------------------- weight decay


@pytest.mark.parametrize("lr", [3e-3, 0.5])
def test_per_step_decay_ignores_the_learning_rate(lr):
    w = _zero_grad_steps(AdamWPerStepDecay(learning_rate=lr, weight_decay=WD), W0)
    np.testing.assert_allclose(w, _float32_recurrence(W0, WD), rtol=1e-6)
    # the closed form; float32 rounding over 50 steps accumulates ~2e-6, hence float64 below for rtol 1e-6
    np.testing.assert_allclose(w, W0 * (1 - WD) ** STEPS, rtol=1e-5)
    w64 = _zero_grad_steps(AdamWPerStepDecay(learning_rate=lr, weight_decay=WD), W0.astype("float64"))
    np.testing.assert_allclose(w64, W0.astype("float64") * (1 - WD) ** STEPS, rtol=1e-6)
    # and not Keras' lr-scaled decay: (1 - lr * wd)^50 is at least 2.5e-4 away
    assert not np.allclose(w, W0 * (1 - lr * WD) ** STEPS, rtol=1e-5)


@pytest.mark.parametrize("lr", [3e-3, 0.5])
def test_lr_scaled_decay_is_keras_adamw(lr):
    w = _zero_grad_steps(keras.optimizers.AdamW(learning_rate=lr, weight_decay=WD), W0.astype("float64"))
    np.testing.assert_allclose(w, W0.astype("float64") * (1 - lr * WD) ** STEPS, rtol=1e-6)


def test_build_optimizer_honours_weight_decay_mode():
    steps_per_epoch = 1000  # all 50 steps in epoch 0: lr = peak / 5 under the epoch schedule
    reference = build_optimizer(make_config("reference"), steps_per_epoch)
    assert type(reference) is AdamWPerStepDecay
    assert reference.epsilon == pytest.approx(1e-7) and reference.weight_decay == pytest.approx(1e-5)
    assert reference.beta_1 == pytest.approx(0.9) and reference.beta_2 == pytest.approx(0.999)
    assert reference.clipnorm is None and reference.global_clipnorm is None and reference.clipvalue is None
    assert isinstance(reference._learning_rate, EpochWarmupCosine)
    np.testing.assert_allclose(_zero_grad_steps(reference, W0), _float32_recurrence(W0, 1e-5), rtol=1e-6)

    config = make_config("reference", weight_decay_mode="lr_scaled", weight_decay=1e-2)
    scaled = build_optimizer(config, steps_per_epoch)
    assert type(scaled) is keras.optimizers.AdamW
    lr = float(scaled.learning_rate)
    assert lr == pytest.approx(3e-3 / 5)
    np.testing.assert_allclose(_zero_grad_steps(scaled, W0), _float32_recurrence(W0, np.float32(lr) * np.float32(1e-2)),
                               rtol=1e-6)

    quick = build_optimizer(make_config("quick"), 100)
    assert type(quick) is keras.optimizers.AdamW and isinstance(quick._learning_rate, WarmupCosine)


def test_per_step_optimizer_round_trips_through_its_config():
    optimizer = build_optimizer(make_config("reference"), 781)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is AdamWPerStepDecay
    assert isinstance(restored._learning_rate, EpochWarmupCosine)
    assert restored._learning_rate.get_config() == optimizer._learning_rate.get_config()


JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras
    from tinyconv.training.schedule import AdamWPerStepDecay
    w0 = np.asarray(json.loads(sys.argv[1]), "float32")
    out = {"backend": keras.backend.backend()}
    for name, cls in (("per_step", AdamWPerStepDecay), ("lr_scaled", keras.optimizers.AdamW)):
        for lr in (3e-3, 0.5):
            variables = [keras.Variable(w0), keras.Variable(np.ones(4, "float32"))]
            opt = cls(learning_rate=lr, weight_decay=1e-5)
            opt.build(variables)
            # the JAX trainer's path: stateless_apply on values
            values, opt_values = [v.value for v in variables], [v.value for v in opt.variables]
            for _ in range(50):
                values, opt_values = opt.stateless_apply(opt_values, [keras.ops.zeros_like(v) for v in values], values)
            out[f"{name}_stateless_{lr}"] = np.asarray(values[0]).tolist()
            # and the stateful apply
            for _ in range(50):
                opt.apply([np.zeros(v.shape, "float32") for v in variables], variables)
            out[f"{name}_apply_{lr}"] = keras.ops.convert_to_numpy(variables[0]).tolist()
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.jax
def test_per_step_decay_under_jax_in_a_subprocess():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(W0.tolist())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out["backend"] == "jax"
    for lr in (3e-3, 0.5):
        per_step = np.asarray(out[f"per_step_stateless_{lr}"], "float32")
        np.testing.assert_allclose(per_step, _float32_recurrence(W0, WD), rtol=1e-6)
        np.testing.assert_allclose(per_step, W0 * (1 - WD) ** STEPS, rtol=1e-5)
        # apply (stateful) started from the stateless run's untouched variables: the same 50 steps
        np.testing.assert_allclose(np.asarray(out[f"per_step_apply_{lr}"], "float32"), per_step, rtol=1e-6)
        scaled = np.asarray(out[f"lr_scaled_stateless_{lr}"], "float32")
        np.testing.assert_allclose(scaled, _float32_recurrence(W0, np.float32(lr) * np.float32(WD)), rtol=1e-6)
        assert not np.allclose(scaled, per_step, rtol=1e-5)


# --------------------------------------------------------------------------------------------- schedule


def _reference_lr(epoch: int, peak=3e-3, low=1e-5, warmup=5, epochs=100) -> float:
    """The notebook's callback, for a 0-based epoch."""
    if epoch < warmup:
        return peak * (epoch + 1) / warmup
    p = (epoch - warmup) / (epochs - warmup - 1)
    return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * p))


def test_epoch_schedule_gives_the_reference_values():
    spe = 781
    schedule = build_schedule(make_config("reference"), spe)
    assert isinstance(schedule, EpochWarmupCosine)
    expected = {1: 6e-4, 2: 1.2e-3, 3: 1.8e-3, 4: 2.4e-3, 5: 3e-3, 6: 3e-3, 50: _reference_lr(49), 100: 1e-5}
    for epoch, value in expected.items():  # 1-based
        first, last = (epoch - 1) * spe, epoch * spe - 1
        assert float(schedule(first)) == pytest.approx(value, rel=1e-5), epoch
        assert float(schedule(last)) == float(schedule(first)), f"epoch {epoch} not constant"
        assert float(schedule(first)) == pytest.approx(_reference_lr(epoch - 1), rel=1e-5)
        assert lr_at_epoch_end(schedule, spe, epoch - 1) == float(schedule(first))
    assert _reference_lr(49) == pytest.approx(1.65464e-3, rel=1e-5)  # p = 44/94 down the cosine
    # the next epoch starts on the next value
    assert float(schedule(spe)) == pytest.approx(1.2e-3, rel=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, EpochWarmupCosine) and restored.get_config() == schedule.get_config()


def test_step_schedule_is_unchanged_per_step():
    config = make_config("reference", lr_update="step")
    schedule = build_schedule(config, 781)
    assert isinstance(schedule, WarmupCosine)
    assert schedule.get_config() == {"peak_lr": 3e-3, "warmup_steps": 5 * 781, "total_steps": 100 * 781,
                                     "min_lr": 1e-5}
    assert float(schedule(0)) == pytest.approx(3e-3 / 3905, rel=1e-5)
    assert float(schedule(780)) != float(schedule(0))  # a new lr every step


# ------------------------------------------------------------------------------------------------ model


def _batch_norms(model):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.fixture(scope="module")
def seed_model():
    keras.utils.set_random_seed(42)
    return build_model("seed")


def test_seed_batch_norms_use_keras_defaults(seed_model):
    norms = _batch_norms(seed_model)
    assert len(norms) == 1 + 2 + 2 * 10  # stem, two down convs, two per block
    for layer in norms:
        assert layer.momentum == pytest.approx(0.99) and layer.epsilon == pytest.approx(1e-3), layer.path
    assert seed_model.count_params() == REFERENCE_PARAMS == 2_644_712


def test_tiny_and_convmixer_keep_their_batch_norms():
    for name in ("tiny", "convmixer"):
        assert PRESETS[name].bn_momentum == 0.9 and PRESETS[name].bn_epsilon == 1e-5
        assert PRESETS[name].down_init == "whole"
    model = build_model("tiny", widths=(16, 32, 64), depths=(1, 1, 1))
    for layer in _batch_norms(model):
        assert layer.momentum == pytest.approx(0.9) and layer.epsilon == pytest.approx(1e-5)


def _group_bound(kernel_shape, groups):
    k, _, cin_g, filters = kernel_shape
    return math.sqrt(6.0 / (k * k * cin_g + k * k * filters / groups))


def test_seed_down_convs_are_glorot_per_group(seed_model):
    for name in ("down1_conv", "down2_conv"):
        kernel = keras.ops.convert_to_numpy(seed_model.get_layer(name).kernel)
        groups = seed_model.get_layer(name).groups
        assert groups == 8
        bound = _group_bound(kernel.shape, groups)
        whole = math.sqrt(6.0 / (kernel.shape[0] ** 2 * (kernel.shape[2] + kernel.shape[3])))
        assert whole < 0.5 * bound  # the whole-kernel bound is ~2.4x smaller, so this test can tell them apart
        per_group = np.split(kernel, groups, axis=-1)
        for g, part in enumerate(per_group):
            peak = float(np.abs(part).max())
            assert 0.9 * bound < peak <= bound, (name, g, peak, bound)


def test_down_init_whole_keeps_the_old_bound():
    keras.utils.set_random_seed(0)
    model = build_model("seed", down_init="whole", widths=(64, 128, 256), depths=(1, 1, 1))
    kernel = keras.ops.convert_to_numpy(model.get_layer("down1_conv").kernel)
    whole = math.sqrt(6.0 / (kernel.shape[0] ** 2 * (kernel.shape[2] + kernel.shape[3])))
    assert float(np.abs(kernel).max()) <= whole < 0.9 * _group_bound(kernel.shape, 8)


def test_per_group_init_is_seeded_and_saved(tmp_path):
    def down_kernel():
        keras.utils.set_random_seed(7)
        model = build_model("seed", widths=(64, 128, 256), depths=(1, 1, 1))
        return model, keras.ops.convert_to_numpy(model.get_layer("down1_conv").kernel)

    model, first = down_kernel()
    _, second = down_kernel()
    np.testing.assert_array_equal(first, second)
    path = tmp_path / "seed_small.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.get_layer("down1_conv").kernel), first)
    init = loaded.get_layer("down1_conv").kernel_initializer
    assert type(init).__name__ == "GroupedGlorotUniform" and init.groups == 8


def test_model_config_recorded_before_down_init_reads_as_whole():
    old = get_config("seed", bn_momentum=0.9, bn_epsilon=1e-5).to_dict()
    del old["down_init"]
    config = ModelConfig.from_dict(old)
    assert config.down_init == "whole" and config.bn_momentum == 0.9
    assert ModelConfig.from_dict(PRESETS["seed"].to_dict()) == PRESETS["seed"]


# ------------------------------------------------------------------------------------ reference curve


def test_reference_curve_reads_like_a_history():
    rows = read_reference_curve()
    assert len(rows) == 100
    assert [row["epoch"] for row in rows] == list(range(100))
    assert set(rows[0]) == {"epoch", "loss", "top1", "val_loss", "val_top1", "epoch_s"}
    assert rows[-1]["val_top1"] == REFERENCE_TOP1 == 0.6303
    for epoch, top1 in {5: 0.309, 10: 0.432, 20: 0.521, 50: 0.589}.items():  # 1-based, the numbers
        assert rows[epoch - 1]["val_top1"] == pytest.approx(top1, abs=5e-4)


def test_reference_curve_only_for_comparable_runs():
    # the reference's data, schedule length and score: the reference and full profiles on all 200 classes
    assert comparable_with_reference("reference", 200) and comparable_with_reference("full", 200)
    for profile, classes in [("reference", 10), ("full", 199), ("quick", 200), ("ci", 10), ("Reference", 200)]:
        assert not comparable_with_reference(profile, classes)
        assert reference_curve_for(profile, classes) is None
    assert reference_curve_for("full", 200) == reference_curve_for("reference", 200) == read_reference_curve()


def test_plot_history_overlays_the_reference():
    from tinyconv.training.plots import plot_history

    rows = [dict(epoch=e, loss=3.0 - e, top1=0.1 * e, val_loss=3.1 - e, val_top1=0.1 * e) for e in range(3)]
    plain = plot_history(rows)
    assert [len(ax.get_lines()) for ax in plain.axes] == [2, 2]
    overlaid = plot_history(rows, title="full", reference=read_reference_curve())
    for ax in overlaid.axes:
        lines = ax.get_lines()
        assert len(lines) == 3
        assert lines[-1].get_label() == "reference (val)" and lines[-1].get_linestyle() == "--"
        assert len(lines[-1].get_xdata()) == 100
    assert list(overlaid.axes[1].get_lines()[-1].get_ydata())[-1] == REFERENCE_TOP1
