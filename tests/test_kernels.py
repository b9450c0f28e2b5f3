"""The fused CPU inference path of ConvMixerBlock (tinyconv.model.kernels.convmixer_block_inference): it must compute
what the block's own call computes, be taken only where it is meant to (TensorFlow on a CPU, a Keras call for
inference, no export being traced), and leave training alone."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinyconv.model.layers as tl
from tinyconv.model import fast_path, kernels
from tinyconv.model.build import build_model

from weights import randomize_statistics


def plain_and_fused(layer, x, monkeypatch):
    """(output of the layer's plain call, output of the fused path, number of fused block calls) at inference."""
    calls = []
    fused = kernels.convmixer_block_inference
    monkeypatch.setattr(tl, "convmixer_block_inference", lambda block, v: calls.append(1) or fused(block, v))
    want = tf.function(lambda v: layer(v, training=False))
    with monkeypatch.context() as patch:
        patch.setattr(fast_path, "convmixer_block", lambda dtype: "layers")  # the block's sub-layers one by one
        plain = want(x).numpy()
    got = tf.function(lambda v: layer(v, training=False))(x).numpy()
    return plain, got, len(calls)


@pytest.mark.parametrize("kernel", [(1, 7), (7, 1), (3, 3), (1, 4), (5, 2)])
def test_depthwise_conv_shifted_equals_keras_depthwise_conv(kernel):
    """The keras.ops form the axial convs take on a GPU: Keras' "same" depthwise conv, float32 accumulation,
    the input's dtype out."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 9, 10, 6)).astype("float32")
    w = rng.normal(size=(*kernel, 6, 1)).astype("float32")
    want = keras.ops.convert_to_numpy(keras.ops.depthwise_conv(x, w, strides=1, padding="same"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernels.depthwise_conv_shifted(x, w)), want, rtol=1e-5, atol=1e-5)
    half = kernels.depthwise_conv_shifted(keras.ops.cast(x, "bfloat16"), keras.ops.cast(w, "bfloat16"))
    assert keras.backend.standardize_dtype(half.dtype) == "bfloat16"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(half, "float32")), want, rtol=0.05, atol=0.1)


@pytest.mark.parametrize(
    "config",
    [
        dict(mode="depthwise", kernel_size=9),
        dict(mode="depthwise", kernel_size=3, layer_scale_init=None),
        dict(mode="mixed", kernel_size=3, axial_kernel_size=7, se_reduction=8),
        dict(mode="mixed", kernel_size=5, axial_kernel_size=3),
        dict(mode="axial", axial_kernel_size=5, se_reduction=4),
        dict(mode="axial", axial_kernel_size=5, se_reduction=4, gelu_approximate=True, drop_path=0.3),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_fused_block_computes_what_the_block_computes(config, monkeypatch):
    block = tl.ConvMixerBlock(**config)
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 10, 10, 16)).astype("float32"))
    block.build(x.shape)
    randomize_statistics(block)
    plain, got, calls = plain_and_fused(block, x, monkeypatch)
    assert calls == 1  # the fused path was taken
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())


def test_fused_model_logits_equal_the_plain_model(monkeypatch):
    model = build_model("tiny", num_classes=7)
    randomize_statistics(model)
    x = tf.constant(np.random.default_rng(3).normal(size=(4, 64, 64, 3)).astype("float32"))
    plain, got, calls = plain_and_fused(model, x, monkeypatch)
    assert calls == sum(isinstance(layer, tl.ConvMixerBlock) for layer in model.layers) > 0
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())
    assert (got.argmax(1) == plain.argmax(1)).all()


def test_fused_path_only_at_inference_outside_export_and_not_in_training(monkeypatch):
    block = tl.ConvMixerBlock(mode="mixed", kernel_size=3, axial_kernel_size=3, se_reduction=4)
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 8, 8, 8)).astype("float32"))
    block.build(x.shape)
    calls = []
    fused = kernels.convmixer_block_inference
    monkeypatch.setattr(tl, "convmixer_block_inference", lambda b, v: calls.append(1) or fused(b, v))

    with tf.GradientTape() as tape:  # training: the plain path, whose gradients reach every weight
        loss = tf.reduce_sum(block(x, training=True) ** 2)
    grads = tape.gradient(loss, block.trainable_weights)
    assert calls == [] and all(g is not None for g in grads)

    with fast_path.inference_graph("erf"):  # an export traces plain ops for the converters
        block(x, training=False)
    assert calls == []

    block(x, training=False)
    assert calls == [1]


def test_fused_path_keeps_training_statistics_untouched():
    """Inference must not update BN's moving statistics (the fused path reads them, never writes)."""
    block = tl.ConvMixerBlock(mode="axial", axial_kernel_size=3, se_reduction=4)
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 8, 8, 8)).astype("float32"))
    block.build(x.shape)
    before = [w.numpy().copy() for w in block.non_trainable_weights]
    block(x, training=False)
    after = [w.numpy() for w in block.non_trainable_weights]
    assert all((a == b).all() for a, b in zip(after, before))


def test_fused_functions_serve_many_shapes_and_kernel_sizes(monkeypatch):
    """The compiled functions are shared by all blocks of one structure; after a few shapes TensorFlow traces
    them with unknown dimensions, and the kernel's size must stay known (it unrolls the taps)."""
    rng = np.random.default_rng(6)
    for size, channels, kernel_size in [(8, 8, 3), (6, 4, 5), (10, 12, 3), (7, 6, 7), (9, 5, 5), (5, 3, 3)]:
        block = tl.ConvMixerBlock(mode="depthwise", kernel_size=kernel_size)
        x = tf.constant(rng.normal(size=(2, size, size, channels)).astype("float32"))
        block.build(x.shape)
        randomize_statistics(block)
        plain, got, calls = plain_and_fused(block, x, monkeypatch)
        assert calls == 1
        np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())


@pytest.mark.parametrize("setting", [None, "0"])
def test_tensorflow_takes_onednn_convolutions_unless_the_environment_says_otherwise(setting):
    """tinyconv asks TensorFlow for oneDNN's CPU kernels (runtime.prefer_onednn); on AVX2 machines TensorFlow
    would otherwise run its convolutions on slower Eigen kernels. A user's TF_ENABLE_ONEDNN_OPTS=0 stands."""
    import subprocess
    import sys

    code = (
        "import numpy as np, tinyconv.model.layers, keras\n"
        "conv = keras.layers.DepthwiseConv2D(3, padding='same')\n"
        "print(float(keras.ops.sum(conv(np.ones((1, 8, 8, 4), 'float32')))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(ONEDNN_VERBOSE="1", KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    onednn_convolutions = [line for line in out.stdout.splitlines() if ",convolution," in line]
    assert bool(onednn_convolutions) == (setting is None), out.stdout[-2000:]


def test_keras_call_context_private_api_is_where_fast_path_reads_it():
    """fast_path.keras_training_phase reads Keras' private call context (keras.src.backend.common.global_state,
    "current_call_ctx", .get_value("training"); Keras 3.15) and answers None on any error, which would quietly
    turn every CPU inference fast path off. This fails, naming what moved, when a Keras upgrade changes it."""
    where = "keras.src.backend.common.global_state"
    try:
        from keras.src.backend.common import global_state
    except ImportError as exc:
        pytest.fail(f"Keras {keras.__version__} has no {where} ({exc}): update fast_path.keras_training_phase")
    assert callable(getattr(global_state, "get_global_attribute", None)), (
        f"Keras {keras.__version__}: {where}.get_global_attribute is gone; update fast_path.keras_training_phase")
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, inputs, training=None):
            context = global_state.get_global_attribute("current_call_ctx")
            assert context is not None and callable(getattr(context, "get_value", None)), (
                f"Keras {keras.__version__}: {where} 'current_call_ctx' is not a call context with get_value; "
                "update fast_path.keras_training_phase")
            seen.append((training, context.get_value("training"), fast_path.keras_training_phase()))
            return inputs

    probe, x = Probe(), np.ones((1, 2), "float32")
    model = keras.Sequential([keras.Input((2,)), probe])
    seen.clear()  # building the model called it symbolically
    probe(x, training=False)
    probe(x, training=True)
    model.predict_on_batch(x)  # Keras resolves training=False itself
    assert seen == [(False, False, False), (True, True, True), (False, False, False)], seen
    assert fast_path.keras_training_phase() is None  # outside a layer call
