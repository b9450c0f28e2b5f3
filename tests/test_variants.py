"""Issue 18's architectural variants: the lossless stems and down-samplings (exact inverses, the reference's
SpatialShuffle), each variant preset's shapes, parameters, MACs, receptive field and save/load round trip, and
the same logits under JAX from a file saved under TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.model.layers import (  # noqa: E402
    HAAR_MATRIX,
    HaarDWT,
    ResidualBlock,
    SpaceToDepth,
    SpatialShuffle,
    channel_shuffle,
    depth_to_space,
    haar_dwt,
    haar_idwt,
    space_to_depth,
    spatial_shuffle,
    spatial_unshuffle,
)
from tinyconv.model.build import build_model, model_info
from tinyconv.model.config import PRESETS, VARIANTS, get_config, stage_plan  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NEW_PRESETS = ["resnet-small", "resnet-tiny", *(f"tiny-{variant}" for variant in VARIANTS)]
SMALL = dict(widths=(16, 32, 64), depths=(1, 1, 1), num_classes=5)  # fast versions of every variant


def _integers(shape, seed=0):
    """Small integers as float32: every sum and halving in the transforms is exact, so inverses are bit-exact."""
    return np.random.default_rng(seed).integers(-64, 64, shape).astype("float32")


# ------------------------------------------------------------------------- lossless rearrangements


def test_space_to_depth_matches_tensorflow_and_inverts_exactly():
    x = _integers((2, 8, 12, 3))
    for b in (2, 4):
        y = np.asarray(space_to_depth(x, b))
        np.testing.assert_array_equal(y, tf.nn.space_to_depth(x, b).numpy())
        np.testing.assert_array_equal(np.asarray(depth_to_space(y, b)), x)
    layer = SpaceToDepth(2)
    assert layer.compute_output_shape((None, 8, 12, 3)) == (None, 4, 6, 12)
    np.testing.assert_array_equal(np.asarray(layer.inverse(layer(x))), x)


def _reference_spatial_shuffle(x):
    """peterniederl/ConvMixer-TinyImageNet utils.py, spatial_shuffle + channel_shuffle + SpatialShuffle.call,
    transcribed (tf.unstack of the dynamic shape and all)."""
    b, h, w, c = tf.unstack(tf.shape(x))
    s = tf.reshape(x, [b, h // 2, 2, w // 2, 2, c])
    s = tf.transpose(s, [0, 2, 4, 1, 3, 5])
    s = tf.reshape(s, [b, h, w, c])
    y = tf.concat([x, s], axis=-1)
    b, h, w, c = tf.unstack(tf.shape(y))
    y = tf.reshape(y, [b, h, w, 2, c // 2])
    y = tf.transpose(y, [0, 1, 2, 4, 3])
    return tf.reshape(y, [b, h, w, c])


def test_spatial_shuffle_is_the_reference_one_and_inverts_exactly():
    x = np.random.default_rng(0).standard_normal((3, 8, 6, 2)).astype("float32")
    layer = SpatialShuffle()
    y = np.asarray(layer(x))
    assert y.shape == (3, 8, 6, 4)
    np.testing.assert_array_equal(y, _reference_spatial_shuffle(tf.constant(x)).numpy())
    # per image: the batch does not mix
    np.testing.assert_array_equal(np.asarray(layer(x[1:2])), y[1:2])
    # channel 2c is x's channel c; 2c + 1 the shuffled copy's
    np.testing.assert_array_equal(y[..., 0::2], x)
    # the shuffled copy is a permutation of each image's pixels: the top-left parity sub-image comes first
    shuffled = np.asarray(spatial_shuffle(x))
    np.testing.assert_array_equal(shuffled.reshape(3, -1, 2)[:, :12], x[:, 0::2, 0::2].reshape(3, -1, 2))
    np.testing.assert_array_equal(np.asarray(spatial_unshuffle(shuffled)), x)
    direct, recovered = layer.inverse(y)
    np.testing.assert_array_equal(np.asarray(direct), x)
    np.testing.assert_array_equal(np.asarray(recovered), x)


def test_channel_shuffle_interleaves_groups():
    x = np.arange(6, dtype="float32").reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(np.asarray(channel_shuffle(x, 2))[0, 0, 0], [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(np.asarray(channel_shuffle(x, 3))[0, 0, 0], [0, 2, 4, 1, 3, 5])


def test_haar_is_orthonormal_lossless_and_the_textbook_filters():
    np.testing.assert_array_equal(HAAR_MATRIX @ HAAR_MATRIX.T, np.eye(4, dtype="float32"))
    x = _integers((2, 6, 8, 3))
    bands = np.asarray(haar_dwt(x))
    assert bands.shape == (2, 3, 4, 12)
    a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]  # top-left, top-right of each 2x2 block
    c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]  # bottom-left, bottom-right
    expected = np.concatenate([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d], axis=-1) / 2
    np.testing.assert_array_equal(bands, expected)
    np.testing.assert_array_equal(np.asarray(haar_idwt(bands)), x)  # exact: integers and halves
    np.testing.assert_allclose((bands**2).sum(), (x**2).sum(), rtol=1e-6)  # energy preserved
    layer = HaarDWT()
    assert layer.compute_output_shape((None, 6, 8, 3)) == (None, 3, 4, 12)
    np.testing.assert_array_equal(np.asarray(layer.inverse(layer(x))), x)
    # a smooth (constant) image has all its energy in LL
    flat = np.asarray(haar_dwt(np.ones((1, 4, 4, 1), "float32")))
    np.testing.assert_array_equal(flat[..., 0], 2.0)
    np.testing.assert_array_equal(flat[..., 1:], 0.0)


def test_residual_block_computes_resnets_basic_block():
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 4)).astype("float32")
    block = ResidualBlock(kernel_size=3)
    block.build(x.shape)
    rng = np.random.default_rng(1)
    for w in block.weights:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path or "gamma" in w.path
                 else rng.standard_normal(w.shape).astype("float32") * 0.3)

    def bn(layer, y):
        gamma, beta, mean, var = (np.asarray(v) for v in (layer.gamma, layer.beta, layer.moving_mean,
                                                            layer.moving_variance))
        return gamma * (y - mean) / np.sqrt(var + layer.epsilon) + beta

    def conv(layer, y):
        return tf.nn.conv2d(y, np.asarray(layer.kernel), 1, "SAME").numpy()

    y = np.maximum(bn(block.bn1, conv(block.conv1, x)), 0)
    expected = np.maximum(x + bn(block.bn2, conv(block.conv2, y)), 0)
    np.testing.assert_allclose(np.asarray(block(x, training=False)), expected, rtol=1e-4, atol=1e-4)
    assert ResidualBlock.from_config(block.get_config()).get_config() == block.get_config()


# ------------------------------------------------------------------------------------ the presets


def _macs_from_layers(model, prefixes) -> int:
    """MACs of the stem/down layers counted from the built layers' kernels and output shapes."""
    from tinyconv.model.layers import GroupedConv2D

    total = 0
    for layer in model.layers:
        if not layer.name.startswith(prefixes):
            continue
        out = layer.output.shape
        if isinstance(layer, (keras.layers.Conv2D, GroupedConv2D)):
            total += out[1] * out[2] * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, HaarDWT):
            total += out[1] * out[2] * out[3] * 4  # each sub-band value: a 4-tap filter
    return total


# The counts docs/architecture.md quotes; each ResNet matches the ConvMixer it stands beside within 2%.
PARAMS = {
    "resnet-small": 2_609_800,  # seed: 2,644,712
    "resnet-tiny": 426_664,  # tiny: 422,612
    "tiny-stem-s2d": 424_196,
    "tiny-stem-shuffle": 426_212,
    "tiny-stem-unfold": 419_588,
    "tiny-down-haar": 442_772,
    "tiny-down-maxpool": 373_652,
    "tiny-down-s2d": 442_772,
}


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_variant_preset_parameters_macs_and_field(name):
    config = get_config(name)
    info = model_info(name)
    model = build_model(name)
    assert info["params_total"] == int(sum(np.prod(w.shape) for w in model.weights)) == PARAMS[name]
    if name.startswith("resnet"):
        matched = {"resnet-small": "seed", "resnet-tiny": "tiny"}[name]
        assert abs(PARAMS[name] / model_info(matched)["params_total"] - 1) < 0.02
    stages = {stage["name"]: stage for stage in info["stages"]}
    c1, c2 = config.widths[0], config.widths[1]
    k = config.stem_kernel
    # the stem's and first down-sampling's parameters from their definitions (BN: 4 per channel)
    stem_params = {
        "conv": k * k * 3 * c1,
        "space_to_depth": k * k * 12 * c1,
        "shuffle": k * k * 6 * c1,
        "unfold": 2 * 2 * 3 * c1,
    }[config.stem]
    down_params = {
        "grouped_conv": config.down_kernel**2 * (c1 // config.down_groups) * c2,
        "haar": 4 * c1 * c2,
        "space_to_depth": 4 * c1 * c2,
        "maxpool": c1 * c2,
    }[config.down]
    assert stages["stem"]["params"] == stem_params + 4 * c1
    assert stages["down1"]["params"] == down_params + 4 * c2
    # MACs of the stem and downs agree with a count from the built layers; rearrangements count none
    for entry in stage_plan(config):
        if entry["kind"] in ("stem", "down"):
            assert entry["macs"] == _macs_from_layers(model, entry["prefixes"]), entry["name"]
    names = [f"{entry['name']}_{entry['rearrange']}" for entry in stage_plan(config) if entry.get("rearrange")]
    assert len(names) == (config.stem != "conv") + (config.down != "grouped_conv") * (config.num_stages - 1)
    assert all(not model.get_layer(name).weights for name in names)  # the rearrangements have no weights
    rfs = [stage["receptive_field"] for stage in info["stages"]]
    assert rfs == sorted(rfs)
    if config.stem == "shuffle":  # the shuffled copy puts pixels from across the image under one kernel
        assert stages["stem"]["receptive_field"] == config.image_size
    if config.stem in ("space_to_depth", "unfold"):  # p x p pixels, then the conv on the p-strided grid
        assert stages["stem"]["receptive_field"] == 2 + (config.stem_kernel - 1) * 2 * (config.stem == "space_to_depth")


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_variant_backpropagates_and_round_trips(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(name, **SMALL)
    x = np.random.default_rng(0).standard_normal((4, 64, 64, 3)).astype("float32")
    stem = model.get_layer("stem_conv").kernel
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)  # moves the BN statistics too
    grad = tape.gradient(loss, stem)  # reaches the stem conv through every rearrangement after it
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    logits = np.asarray(model(x, training=False))
    assert logits.shape == (4, 5) and np.all(np.isfinite(logits))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), logits)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_variants_under_mixed_float16():
    """The Haar filters are cast to the compute dtype; float16 sub-bands and blocks give finite float32 logits."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model("resnet-tiny", stem="shuffle", down="haar", **SMALL)
        assert model.get_layer("down1_haar").compute_dtype == "float16"
        x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")
        logits = model(x, training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        assert np.all(np.isfinite(np.asarray(logits)))
        bands = HaarDWT(dtype="mixed_float16")(x)
        assert keras.backend.standardize_dtype(bands.dtype) == "float16"
        np.testing.assert_allclose(np.asarray(bands, "float32"), np.asarray(haar_dwt(x)), atol=1e-2)
    finally:
        keras.config.set_dtype_policy(policy)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (dict(stem="patchify"), "'stem'"),
        (dict(down="avgpool"), "'down'"),
        (dict(block="vit"), "'block'"),
        (dict(stem="unfold", stem_stride=3), "multiple of stem_stride"),
        (dict(down="haar", image_size=56, stem_stride=4), "even feature maps"),
        (dict(block="basic", se_reductions=8), "squeeze-excite"),
    ],
)
def test_bad_variant_fields_raise_tinyconv_error(overrides, needle):
    with pytest.raises(TinyconvError, match=needle):
        get_config("tiny", **overrides)


def test_grouped_down_fields_only_constrain_the_grouped_conv():
    get_config("tiny", down="maxpool", widths=(12, 20, 40))  # widths need not divide by down_groups
    with pytest.raises(TinyconvError, match="down_groups"):
        get_config("tiny", widths=(12, 20, 40))


def test_variants_through_the_cli_overrides_and_run_configs(capsys):
    import json

    from tinyconv.cli import main
    from tinyconv.model.config import ModelConfig
    from tinyconv.training.overrides import parse_overrides

    assert main(["info", "tiny-down-haar", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["down"] == "haar" and info["params_total"] == PARAMS["tiny-down-haar"]
    overrides = parse_overrides(["model.stem=shuffle", "model.down=maxpool"])["model_overrides"]
    config = get_config("tiny", **overrides)
    assert (config.stem, config.down) == ("shuffle", "maxpool")
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # a run's config.json


def test_presets_are_regularly_named():
    assert {name for name in PRESETS if name.startswith("tiny-")} == {f"tiny-{v}" for v in VARIANTS}
    for name in NEW_PRESETS:
        assert PRESETS[name].name == name


# --------------------------------------------------------------------------------------------- JAX

JAX_SIDE = """
import sys
from pathlib import Path

import keras
import numpy as np

assert keras.backend.backend() == "jax"
import tinyconv.model.layers  # noqa: F401  (registers tinyconv's layers for loading)

folder = Path(sys.argv[1])
x = np.load(folder / "x.npy")
for path in sorted(folder.glob("*.keras")):
    model = keras.saving.load_model(path, safe_mode=True)
    np.save(folder / f"{path.stem}.jax.npy", np.asarray(model(x, training=False)))
print("ok")
"""


@pytest.mark.jax
def test_variants_give_the_same_logits_under_jax(tmp_path):
    """A .keras file of each new layer saved under TensorFlow loads and predicts the same under JAX (in a
    process where TensorFlow cannot be imported); two small ResNets hold the four new layers between them
    (building a model under JAX on a shared 2-core CPU takes ~20 s, so only these two)."""
    pytest.importorskip("jax")
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = {}
    models = {
        "shuffle-haar-basic": build_model("resnet-tiny", stem="shuffle", down="haar", **SMALL),
        "unfold-s2d-basic": build_model("resnet-tiny", stem="unfold", down="space_to_depth", **SMALL),
    }
    for name, model in models.items():
        model(x, training=True)  # BN statistics away from their initial values
        model.save(tmp_path / f"{name}.keras")
        expected[name] = np.asarray(model(x, training=False))
    (tmp_path / "jax_side.py").write_text(textwrap.dedent(JAX_SIDE))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    completed = subprocess.run([sys.executable, str(REPO / "tests" / "no_tensorflow.py"), "jax_side", str(tmp_path)],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    for name, logits in expected.items():
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.jax.npy"), logits, rtol=1e-4, atol=1e-4)
