"""Presets, the builder, model_info, saving and a few training steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.model.build import build_model, format_info, model_info  # noqa: E402
from tinyconv.model.config import PRESETS, ModelConfig, get_config  # noqa: E402
from tinyconv.runtime import default_jit_compile  # noqa: E402


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


@pytest.fixture(scope="module")
def seed_model():
    return build_model("seed")


def test_seed_parameter_counts_are_exact(seed_model):
    assert _count(seed_model.weights) == 2_644_712
    assert _count(seed_model.trainable_weights) == 2_628_584


def test_seed_model_info(seed_model):
    info = model_info("seed")
    assert info["params_total"] == 2_644_712
    assert info["params_trainable"] == 2_628_584
    assert info["macs_per_image"] == pytest.approx(0.26e9, rel=0.03)
    names = [stage["name"] for stage in info["stages"]]
    assert names == ["stem", "stage1", "down1", "stage2", "down2", "stage3", "head"]
    assert sum(stage["params"] for stage in info["stages"]) == info["params_total"]
    assert [stage["output_shape"] for stage in info["stages"][:-1:2]] == [[32, 32, 128], [16, 16, 256], [8, 8, 512]]
    # receptive field: stem 5; each 9x9 depthwise at stride 2 adds 16
    assert info["stages"][0]["receptive_field"] == 5 and info["stages"][1]["receptive_field"] == 37
    rfs = [stage["receptive_field"] for stage in info["stages"]]
    assert rfs == sorted(rfs)
    json.dumps(info)  # the CLI prints it as JSON
    table = format_info(info)
    assert "2,644,712" in table and "stage3" in table


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_output_shapes(name):
    model = build_model(name, num_classes=7)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")
    logits = model(x, training=False)
    assert logits.shape == (2, 7)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_tiny_is_small():
    assert model_info("tiny")["params_total"] < 500_000
    assert model_info("tiny", num_classes=10)["params_total"] < 400_000


def test_overrides_field_by_field():
    config = get_config("seed", kernel_sizes=7, depths=(1, 1, 2), se_reductions=0, drop_path=0.1)
    assert config.kernel_sizes == (7, 7, 7) and config.depths == (1, 1, 2) and config.se_reductions == (0, 0, 0)
    assert PRESETS["seed"].kernel_sizes == (9, 3, 3)  # presets are not modified
    model = build_model(config)
    assert len([layer for layer in model.layers if "_block" in layer.name]) == 4
    assert model.get_layer("stage1_block1").depthwise.kernel.shape == (7, 7, 128, 1)
    assert model.get_layer("stage3_block2").drop_path.rate == pytest.approx(0.1)  # rises to drop_path at the end
    assert model.get_layer("stage1_block1").drop_path.rate == 0.0


def test_config_dict_round_trip():
    config = get_config("tiny", widths=(16, 32, 64), gelu_approximate=True)
    data = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(data) == config
    assert get_config(data) == config


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (dict(width=3), "'width'"),
        (dict(kernel_sizes=(3, 5)), "'kernel_sizes'"),
        (dict(kernel_sizes=4), "odd"),
        (dict(modes="spiral"), "spiral"),
        (dict(widths=(12, 20, 40)), "down_groups"),
    ],
)
def test_bad_overrides_raise_tinyconv_error(overrides, needle):
    with pytest.raises(TinyconvError, match=needle):
        get_config("seed", **overrides)


def test_unknown_preset():
    with pytest.raises(TinyconvError, match="nope"):
        build_model("nope")


def test_default_jit_compile_is_bool():
    assert isinstance(default_jit_compile(), bool)


def test_keras_save_load_round_trip_tiny(tmp_path):
    model = build_model("tiny", num_classes=10, drop_path=0.1, se_reductions=4)
    x = np.random.default_rng(0).standard_normal((4, 64, 64, 3)).astype("float32")
    model(x, training=True)  # move BN statistics away from their initial values
    expected = np.asarray(model(x, training=False))
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    assert loaded.get_layer("stage2_block1").se.reduction == 4


def test_keras_save_load_round_trip_seed(tmp_path, seed_model):
    x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype("float32")
    expected = np.asarray(seed_model(x, training=False))
    path = tmp_path / "seed.keras"
    seed_model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)
    assert _count(loaded.weights) == 2_644_712


def test_a_few_training_steps_reduce_the_loss():
    keras.utils.set_random_seed(0)
    model = build_model("tiny", num_classes=4, widths=(16, 32, 64), depths=(1, 1, 1))
    model.compile(
        optimizer=keras.optimizers.AdamW(3e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 64, 64, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 4, 4).astype("float32")
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.slow  # builds and trains under mixed_float16
def test_mixed_float16_forward_gives_float32_logits_and_trains():
    keras.utils.set_random_seed(0)  # deterministic: the first loss-scaled step must not overflow and be skipped
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model("tiny", num_classes=5)
        assert model.get_layer("stage1_block1").compute_dtype == "float16"
        logits = model(np.zeros((2, 64, 64, 3), "float32"), training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32" and logits.shape == (2, 5)
        assert np.all(np.isfinite(np.asarray(logits)))
        # one training step: the float16 path through the FFT depthwise gradient and the split grouped conv
        model.compile(optimizer="adamw", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        y = keras.utils.to_categorical(np.arange(4) % 5, 5)
        x = np.random.default_rng(0).standard_normal((4, 64, 64, 3)).astype("float32")
        before = model.get_layer("stage1_block1").depthwise.kernel.numpy().copy()
        loss = model.train_on_batch(x, y)
        assert np.isfinite(loss)
        assert not np.allclose(model.get_layer("stage1_block1").depthwise.kernel.numpy(), before)
    finally:
        keras.config.set_dtype_policy(policy)


def test_cli_info_json(capsys):
    from tinyconv.cli import main

    assert main(["info", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "tiny" and info["params_total"] == model_info("tiny")["params_total"]
    assert main(["info", "resnet"]) == 1
    assert "unknown model preset 'resnet'" in capsys.readouterr().err


def test_bench_model_reports_throughput():
    from tinyconv.bench import bench_model

    result = bench_model(preset="tiny", batch_size=4, steps=1, warmup_steps=1, jit_compile="off", depths=1)
    assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0
    assert result["jit_compile"] is False and result["batch_size"] == 4
    with pytest.raises(TinyconvError, match="jit_compile"):
        bench_model(preset="tiny", jit_compile="maybe")
