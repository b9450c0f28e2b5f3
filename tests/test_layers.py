"""The layers: numerics against reference computations, config round trips, mixed precision."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tinyconv.model.kernels import FusedBatchNormalization as BatchNormalization  # noqa: E402
from tinyconv.model.kernels import gelu  # noqa: E402
from tinyconv.model.layers import (  # noqa: E402
    AxialDepthwiseConv2D,
    ConvMixerBlock,
    DropPath,
    GroupedConv2D,
    HaarDWT,
    LayerScale,
    ResidualBlock,
    SpaceToDepth,
    SpatialShuffle,
    SqueezeExcite,
)


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _randomize_weights(layer, seed=1):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.trainable:
            w.assign(rng.standard_normal(w.shape).astype("float32") * 0.3)


def test_axial_equals_depthwise_with_outer_product_kernel():
    x = _random((2, 11, 13, 4))
    layer = AxialDepthwiseConv2D(5)
    layer.build(x.shape)
    _randomize_weights(layer)
    effective = layer.effective_kernel()  # [5, 5, 4]
    assert effective.shape == (5, 5, 4)
    row, col = layer.axial_kernels()
    np.testing.assert_allclose(effective[:, :, 2], np.outer(col[:, 2], row[:, 2]), rtol=1e-6)
    reference = tf.nn.depthwise_conv2d(x, effective[:, :, :, None], strides=[1, 1, 1, 1], padding="SAME")
    np.testing.assert_allclose(np.asarray(layer(x)), reference.numpy(), rtol=1e-4, atol=1e-4)


def test_axial_kernels_start_independent_and_reproducible():
    """The reference's two 1-D kernels are separate DepthwiseConv2D layers with their own draws. One Keras 3
    initializer instance used twice gave kernel_col the very numbers of kernel_row (the same seed, the same size):
    every axial kernel started as a symmetric r r^T (until 2026-12-06)."""

    def kernels(**kwargs):
        layer = AxialDepthwiseConv2D(7, **kwargs)
        layer.build((None, 8, 8, 64))
        return layer.axial_kernels()

    keras.utils.set_random_seed(0)
    row, col = kernels()
    assert not np.allclose(row, col) and abs(np.corrcoef(row.ravel(), col.ravel())[0, 1]) < 0.15  # 448 pairs
    assert row.std() == pytest.approx(col.std(), rel=0.15)  # the same initializer's scale for both
    keras.utils.set_random_seed(0)
    again = kernels()
    assert np.array_equal(again[0], row) and np.array_equal(again[1], col)  # a seeded run stays reproducible
    seeded = kernels(kernel_initializer=keras.initializers.GlorotUniform(seed=3))
    assert not np.allclose(*seeded)
    assert all(np.array_equal(a, b) for a, b in zip(seeded, kernels(
        kernel_initializer=keras.initializers.GlorotUniform(seed=3))))


def test_axial_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        AxialDepthwiseConv2D(4)


def _reference_grouped_conv(x, kernel, strides, groups):
    """A grouped conv from first principles: one tf.nn.conv2d per group on its channel slices."""
    c_in, filters = x.shape[-1] // groups, kernel.shape[-1] // groups
    outputs = [
        tf.nn.conv2d(
            x[..., g * c_in : (g + 1) * c_in],
            kernel[..., g * filters : (g + 1) * filters],
            strides=strides,
            padding="SAME",
        )
        for g in range(groups)
    ]
    return np.concatenate([o.numpy() for o in outputs], axis=-1)


@pytest.mark.parametrize("implementation", ["split", "native", "dense", "auto"])
@pytest.mark.parametrize("strides", [1, 2])
def test_grouped_conv_matches_reference(implementation, strides):
    x = _random((2, 9, 8, 8))
    layer = GroupedConv2D(12, 3, strides=strides, groups=4, use_bias=True, implementation=implementation)
    layer.build(x.shape)
    _randomize_weights(layer)
    expected = _reference_grouped_conv(x, layer.kernel.numpy(), strides, 4) + layer.bias.numpy()
    assert layer.kernel.shape == (3, 3, 2, 12)  # Keras Conv2D(groups=...) layout
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-4, atol=1e-4)
    assert layer.compute_output_shape(x.shape) == expected.shape


def test_grouped_conv_split_and_native_share_weights():
    """A model saved with one implementation loads into the other: same weights, same outputs."""
    x = _random((1, 8, 8, 8))
    split = GroupedConv2D(8, 5, strides=2, groups=8, implementation="split")
    native = GroupedConv2D(8, 5, strides=2, groups=8, implementation="native")
    split.build(x.shape)
    native.build(x.shape)
    _randomize_weights(split)
    native.set_weights(split.get_weights())
    np.testing.assert_allclose(np.asarray(split(x)), np.asarray(native(x)), rtol=1e-4, atol=1e-4)


def test_grouped_conv_dense_has_the_grouped_gradients():
    """The block-diagonal dense conv: the same input and kernel gradients as the per-group convs (the zero blocks'
    gradient is dropped, not learned)."""
    x = tf.constant(_random((2, 9, 9, 8)))
    layers = {name: GroupedConv2D(12, 3, strides=2, groups=4, use_bias=True, implementation=name) for name in ("split", "dense")}
    for layer in layers.values():
        layer.build(x.shape)
    _randomize_weights(layers["split"])
    layers["dense"].set_weights(layers["split"].get_weights())
    grads = {}
    for name, layer in layers.items():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * tf.cos(tf.range(12, dtype=tf.float32)))
        grads[name] = tape.gradient(loss, [x, layer.kernel, layer.bias])
    assert layers["dense"].block_diagonal(layers["dense"].kernel).shape == (3, 3, 8, 12)
    for got, want in zip(grads["dense"], grads["split"]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_gpu_takes_the_dense_grouped_conv_and_shifted_axial_convs(monkeypatch):
    from tinyconv.model import fast_path

    x = _random((1, 8, 8, 8))
    for gpu, grouped_path, axial_path in ((False, "split", "depthwise"), (True, "dense", "shifted")):
        monkeypatch.setattr(fast_path, "has_gpu", lambda gpu=gpu: gpu)
        grouped, axial, single = GroupedConv2D(8, 3, groups=4), AxialDepthwiseConv2D(5), GroupedConv2D(8, 3, groups=1)
        for layer in (grouped, axial, single):
            layer.build(x.shape)
        assert (grouped._path, axial._path, single._path) == (grouped_path, axial_path, "native")
        assert grouped.get_config()["implementation"] == "auto"  # the saved config is the same either way


def test_axial_shifted_form_has_the_depthwise_outputs_and_gradients():
    x = tf.constant(_random((2, 11, 13, 4)))
    layers = [AxialDepthwiseConv2D(7) for _ in range(2)]
    for layer in layers:
        layer.build(x.shape)
    _randomize_weights(layers[0])
    layers[1].set_weights(layers[0].get_weights())
    layers[1]._path = "shifted"
    results = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.sin(y))
        results.append([y, *tape.gradient(loss, [x, layer.kernel_row, layer.kernel_col])])
    assert layers[0]._path == "depthwise"
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_squeeze_excite_matches_numpy():
    x = _random((2, 4, 4, 16))
    layer = SqueezeExcite(4)
    layer.build(x.shape)
    _randomize_weights(layer)
    w1, b1 = layer.reduce.kernel.numpy()[0, 0], layer.reduce.bias.numpy()
    w2, b2 = layer.expand.kernel.numpy()[0, 0], layer.expand.bias.numpy()
    assert w1.shape == (16, 4)
    context = x.mean(axis=(1, 2))  # [B, C]
    hidden = context @ w1 + b1
    hidden = 0.5 * hidden * (1 + np.vectorize(__import__("math").erf)(hidden / np.sqrt(2)))  # exact GELU
    gate = 1 / (1 + np.exp(-(hidden @ w2 + b2)))
    np.testing.assert_allclose(np.asarray(layer(x)), x * gate[:, None, None, :], rtol=1e-4, atol=1e-5)


def test_drop_path_identity_at_inference_and_drops_whole_samples_in_training():
    x = np.ones((64, 3, 3, 2), "float32")
    layer = DropPath(0.5, seed=3)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))  # whole samples kept or dropped
    assert 10 < (per_sample[:, 0] == 0).sum() < 54
    np.testing.assert_array_equal(np.asarray(DropPath(0.0)(x, training=True)), x)


def test_layer_scale_init_value():
    layer = LayerScale(0.1)
    y = np.asarray(layer(np.ones((1, 2, 2, 3), "float32")))
    np.testing.assert_allclose(y, 0.1)


@pytest.mark.parametrize("mode", ["depthwise", "axial", "mixed"])
def test_block_sublayers_by_mode(mode):
    block = ConvMixerBlock(mode, kernel_size=3, axial_kernel_size=5, se_reduction=4, name="b")
    y = block(_random((2, 8, 8, 16)))
    assert y.shape == (2, 8, 8, 16)
    assert (block.depthwise is not None) == (mode == "depthwise")
    assert (block.axial is not None) == (mode in ("axial", "mixed"))
    assert (block.local_depthwise is not None) == (mode == "mixed")
    assert block.se.name == "se" and block.layer_scale.gamma.shape == (16,)
    assert block.spatial_bn.epsilon == pytest.approx(1e-5) and block.spatial_bn.momentum == pytest.approx(0.9)


def test_block_without_scale_or_se_is_plain_residual():
    """With gamma-free residual and no SE, the block is BN(GELU(W (x + BN(GELU(dw(x))))))."""
    x = _random((1, 6, 6, 4))
    block = ConvMixerBlock("depthwise", kernel_size=3, layer_scale_init=None)
    block.build(x.shape)
    _randomize_weights(block)
    assert block.se is None and block.layer_scale is None
    y = block.depthwise(x)
    y = block.spatial_bn(keras.activations.gelu(y), training=False)
    z = block.channel_bn(keras.activations.gelu(block.pointwise(x + y)), training=False)
    np.testing.assert_allclose(np.asarray(block(x, training=False)), np.asarray(z), rtol=1e-5, atol=1e-5)


LAYER_CASES = [
    (BatchNormalization, dict(momentum=0.8, epsilon=1e-3)),
    (AxialDepthwiseConv2D, dict(kernel_size=3)),
    (GroupedConv2D, dict(filters=8, kernel_size=3, strides=2, groups=2, use_bias=True, implementation="split")),
    (SqueezeExcite, dict(reduction=2, gelu_approximate=True)),
    (LayerScale, dict(init_value=0.5)),
    (DropPath, dict(rate=0.2, seed=7)),
    (
        ConvMixerBlock,
        dict(mode="mixed", kernel_size=3, axial_kernel_size=5, se_reduction=2, drop_path=0.1,
             layer_scale_init=0.5, gelu_approximate=True, bn_momentum=0.8, bn_epsilon=1e-3),
    ),
    # issue 18's variants (their numerics and inverses: tests/test_variants.py)
    (SpaceToDepth, dict(block_size=3)),
    (SpatialShuffle, dict()),
    (HaarDWT, dict()),
    (ResidualBlock, dict(kernel_size=5, drop_path=0.1, bn_momentum=0.8, bn_epsilon=1e-3)),
]


@pytest.mark.parametrize("cls,kwargs", LAYER_CASES, ids=[c[0].__name__ for c in LAYER_CASES])
def test_get_config_round_trip(cls, kwargs):
    x = _random((2, 6, 6, 4))
    layer = cls(name="original", **kwargs)
    layer.build(x.shape)
    _randomize_weights(layer)
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), rtol=1e-6)


def test_block_runs_in_mixed_float16():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        block = ConvMixerBlock("mixed", kernel_size=3, axial_kernel_size=5, se_reduction=2)
        y = block(_random((2, 6, 6, 8)), training=True)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        assert keras.backend.standardize_dtype(block.axial.kernel_row.dtype) == "float32"  # variables stay float32
        assert np.all(np.isfinite(np.asarray(y, dtype="float32")))
    finally:
        keras.config.set_dtype_policy(policy)


def test_depthwise_fft_gradient_matches_keras():
    """tinyconv's DepthwiseConv2D (FFT kernel gradient on CPU) == keras.layers.DepthwiseConv2D, values and grads."""
    from tinyconv.model.kernels import FFTGradDepthwiseConv2D as DepthwiseConv2D

    x = tf.constant(_random((3, 10, 12, 5)))
    fast = DepthwiseConv2D(7, padding="same", use_bias=False)
    plain = keras.layers.DepthwiseConv2D(7, padding="same", use_bias=False)
    fast.build(x.shape)
    plain.build(x.shape)
    assert fast._path == "fft"  # the path under test is the FFT one (CPU, stride 1, k >= 5)
    _randomize_weights(fast)
    plain.set_weights(fast.get_weights())
    dy = tf.constant(_random((3, 10, 12, 5), seed=4))
    grads = []
    for layer in (fast, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * dy)
        grads.append(tape.gradient(loss, [x, layer.kernel.value]))
    np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0][0].numpy(), grads[1][0].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads[0][1].numpy(), grads[1][1].numpy(), rtol=1e-4, atol=1e-3)
    assert fast.get_config() == {**plain.get_config(), "name": fast.name}


def test_fused_batch_norm_matches_keras_in_training_and_inference():
    x = _random((4, 5, 5, 6)) * 3.0 + 1.0
    ours = BatchNormalization(momentum=0.8, epsilon=1e-5)
    theirs = keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-5)
    for layer in (ours, theirs):
        layer.build(x.shape)
    _randomize_weights(theirs)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(np.asarray(ours(x, training=True)), np.asarray(theirs(x, training=True)), atol=1e-4)
    # the fused kernel updates the moving variance with the Bessel-corrected batch variance (n = 4*5*5)
    n = 4 * 5 * 5
    var = x.reshape(-1, 6).var(axis=0)
    np.testing.assert_allclose(np.asarray(ours.moving_mean), np.asarray(theirs.moving_mean), rtol=1e-5, atol=1e-6)
    expected_var = 0.8 * np.ones(6) + 0.2 * var * n / (n - 1)
    np.testing.assert_allclose(np.asarray(ours.moving_variance), expected_var, rtol=1e-5)
    theirs.moving_variance.assign(ours.moving_variance)
    np.testing.assert_allclose(np.asarray(ours(x, training=False)), np.asarray(theirs(x, training=False)), atol=1e-5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x_t := tf.constant(x))
        loss_ours = tf.reduce_sum(ours(x_t, training=True) ** 2 * tf.range(6.0))
        loss_theirs = tf.reduce_sum(theirs(x_t, training=True) ** 2 * tf.range(6.0))
    for a, b in zip(tape.gradient(loss_ours, [x_t, *ours.trainable_weights]),
                    tape.gradient(loss_theirs, [x_t, *theirs.trainable_weights])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)


def test_gelu_matches_exact_gelu_and_its_gradient():
    x = tf.constant(np.linspace(-6, 6, 97, dtype="float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = gelu(x)
        reference = tf.nn.gelu(x, approximate=False)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), atol=1e-6)
    np.testing.assert_allclose(np.asarray(tape.gradient(ours, x)), np.asarray(tape.gradient(reference, x)), atol=1e-5)


def test_drop_path_masks_continue_after_a_resume_from_saved_weights(tmp_path):
    """Keras saves weights without random generators' states: a run resumed from its backup would draw its first
    steps' stochastic-depth masks again. DropPath saves its generator's state with its weights (and loads a file
    without one, from before)."""
    from tinyconv.model.layers import DropPath

    def make(compiled=True):
        inputs = keras.Input((4,))
        x = DropPath(0.5, seed=3)(keras.layers.Dense(4)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        if compiled:
            model.compile("adam", "mse")
            model.optimizer.build(model.trainable_variables)  # as a resumed run's: the saved slots load into it
        return model

    model = make()
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 4), dtype=np.float32), rng.random((32, 2), dtype=np.float32), batch_size=8, verbose=0)
    state = keras.ops.convert_to_numpy(model.layers[2].seed_generator.state)
    assert not np.array_equal(state, keras.ops.convert_to_numpy(make(False).layers[2].seed_generator.state))  # moved
    model.save_weights(tmp_path / "run.weights.h5")
    resumed = make()
    resumed.load_weights(tmp_path / "run.weights.h5")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(resumed.layers[2].seed_generator.state), state)
    masks = [keras.ops.convert_to_numpy(m.layers[2](np.ones((64, 4), np.float32), training=True)) for m in (model, resumed)]
    np.testing.assert_array_equal(masks[0], masks[1])  # the same next draw

    class OldDropPath(DropPath):  # as saved before: the weights alone
        def save_own_variables(self, store):
            keras.layers.Layer.save_own_variables(self, store)

    inputs = keras.Input((4,))
    old = keras.Model(inputs, keras.layers.Dense(2)(OldDropPath(0.5, seed=3)(keras.layers.Dense(4)(inputs))))
    old.save_weights(tmp_path / "old.weights.h5")
    make(compiled=False).load_weights(tmp_path / "old.weights.h5")
