"""TensorFlow fast paths behind the layers: same weights, same configs, same results as the Keras layers
they stand in for, measured faster on CPU for training and inference (docs/performance.md). Which one a call
takes is decided in tinyconv.model.fast_path, never here.

    FusedBatchNormalization  keras.layers.BatchNormalization trained on TensorFlow's fused kernel
    FFTGradDepthwiseConv2D   keras.layers.DepthwiseConv2D whose kernel gradient is computed by FFT on CPU; on JAX
                             optionally a block-diagonal dense conv, shifted multiply-adds or the Pallas kernels
                             (TINYCONV_DEPTHWISE)
    gelu                     exact GELU whose gradient reuses the forward's normal CDF; one XLA-fused kernel at
                             inference on CPU
    gelu_exact, gelu_tanh    GELU as serializable activations for keras.layers.Activation
    depthwise_conv_dense     a stride-1 depthwise conv as one ordinary conv with a block-diagonal kernel
    depthwise_conv_shifted   a stride-1 depthwise conv as shifted multiply-adds (the axial convs on a GPU)
    depthwise_conv_pallas    a stride-1 depthwise conv in Pallas (tinyconv.model.pallas_depthwise, JAX only)
    convmixer_block_inference  ConvMixerBlock's call at inference on a CPU: GELU, BN, SE, layer scale and the
                             residual sum in one XLA kernel after TensorFlow's (oneDNN's) depthwise conv

Each falls back to the plain Keras computation on other backends or inputs. Models saved before these classes
were renamed load through the two legacy classes at the end of this module.

TensorFlow is imported inside the TensorFlow-only branches: on another Keras backend these layers are the
plain Keras ones and must not pay TensorFlow's import.
"""

from __future__ import annotations

import keras
from keras import ops

from tinyconv.model import fast_path


def gelu(x, approximate: bool = False):
    """GELU; exact (erf) by default, as PyTorch's nn.GELU(), in the form fast_path.gelu chooses.

    On TensorFlow: in training, the closed-form gradient (`_gelu_exact_tf`); in an inference call on a CPU
    (a Keras call whose resolved `training` is False: predict, evaluate), one XLA-fused elementwise kernel
    (`gelu_fused`); for export, the forms `fast_path.inference_graph` names.
    """
    form = fast_path.gelu(approximate)
    if form == "fused":
        return gelu_fused(x)
    if form == "closed_form_gradient":
        return _gelu_exact_tf(x)
    if form == "erf":
        return x * 0.5 * (1.0 + ops.erf(x / 1.4142135623730951))
    return ops.gelu(x, approximate=approximate)  # "keras"


def gelu_fused(x, approximate: bool = False):
    """GELU (exact: x * (0.5 + 0.5 * erf(x / sqrt 2)); or the tanh form) as one XLA-compiled elementwise
    kernel (TensorFlow).

    Without XLA, TensorFlow runs GELU as five passes over the tensor (multiply, erf, add, two multiplies), and
    elementwise work is a large share of the seed's CPU inference time (docs/performance.md, "Where the seed's
    inference time goes"). XLA is kept off the
    whole model on CPU (its depthwise convolutions are slow), so only this elementwise cluster is compiled,
    once per input shape. Differentiable (TensorFlow differentiates the function), outputs equal to float32
    rounding.
    """
    import tensorflow as tf

    def make():
        @tf.function(jit_compile=True, reduce_retracing=True)
        def fused(v):
            return _gelu_tf(v, approximate)

        return fused

    return _fused(("gelu", approximate), make)(x)


def depthwise_conv_dense(x, kernel):
    """Stride-1 "same" depthwise conv [B, H, W, C] * [kh, kw, C, 1] as one ordinary convolution whose [kh, kw, C, C]
    kernel holds each channel's taps on its diagonal and zeros elsewhere, in keras.ops (any backend).

    C times the multiply-adds, but on a GPU's matrix units in cuDNN's dense kernels, the same trade GroupedConv2D's
    "dense" form makes for the down-sampling convs. For the seed's 9x9 at 32x32x128 (batch 128, bf16) the forward and
    both gradients are ~1 TFLOP per block, a few ms at the H100's dense conv rate, where cuDNN's depthwise kernels
    and their layout transforms took 6.5 ms per block (docs/performance.md, "What limits the step"); whether it wins
    in the whole step is measured by the GPU lease (benchmarks/gpu_profile.py --choose). The zeros add exact zeros,
    so the result is the depthwise conv's up to the order of the sum; the kernel's gradient is the dense gradient's
    diagonal (the product with the identity's derivative).
    """
    channels = int(kernel.shape[2])
    diagonal = kernel * ops.eye(channels, dtype=kernel.dtype)[None, None]  # [kh, kw, C, 1] * [1, 1, C, C]
    return ops.conv(x, diagonal, strides=1, padding="same")


def depthwise_conv_shifted(x, kernel):
    """Stride-1 "same" depthwise conv [B, H, W, C] * [kh, kw, C, 1] as kh * kw shifted multiply-adds, in
    keras.ops (any backend), accumulated in float32 and returned in x's dtype.

    For the 1-D kernels of the axial convs on a GPU: XLA fuses the taps into one elementwise kernel and
    differentiates it into a few more, faster than cuDNN's grouped convolution at the seed's shapes in bf16.
    Not for large square kernels: at 9x9 the k*k-term gradient is slower than cuDNN's in the whole train step
    (both measured on an H100: docs/performance.md, "What limits the step: a profile").
    Needs static H and W; falls back to ops.depthwise_conv without them.
    """
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        return ops.depthwise_conv(x, kernel, strides=1, padding="same")
    top, left = (kh - 1) // 2, (kw - 1) // 2  # TensorFlow's and XLA's "SAME" split for stride 1
    padded = ops.pad(ops.cast(x, "float32"), [[0, 0], [top, kh - 1 - top], [left, kw - 1 - left], [0, 0]])
    taps = ops.cast(kernel, "float32")
    total = None
    for i in range(kh):
        for j in range(kw):
            term = padded[:, i : i + height, j : j + width, :] * taps[i, j, :, 0]
            total = term if total is None else total + term
    return ops.cast(total, x.dtype)


def depthwise_conv_pallas(x, kernel):
    """Stride-1 "same" depthwise conv [B, H, W, C] * [kh, kw, C, 1] (odd kh, kw) by the Pallas kernels of
    tinyconv.model.pallas_depthwise (JAX only, imported here on first use): Triton on a GPU, Pallas' interpreter
    elsewhere (fast_path.pallas_interpret). Tiles are chosen from the shape; returned in x's dtype."""
    from tinyconv.model import pallas_depthwise

    return pallas_depthwise.depthwise_conv(x, kernel, interpret=fast_path.pallas_interpret())


def batchnorm_affine(layer):
    """A BatchNormalization layer at inference as (scale, shift) [C]: y = x * scale + shift."""
    import tensorflow as tf

    scale = tf.math.rsqrt(tf.convert_to_tensor(layer.moving_variance) + layer.epsilon)
    if layer.scale:
        scale = scale * layer.gamma
    shift = -tf.convert_to_tensor(layer.moving_mean) * scale
    if layer.center:
        shift = shift + layer.beta
    return scale, shift


def _gelu_tf(x, approximate: bool):
    """GELU in plain TensorFlow ops, for XLA functions (XLA fuses it; no custom gradient needed)."""
    import tensorflow as tf

    if approximate:
        return tf.nn.gelu(x, approximate=True)
    return x * (0.5 + 0.5 * tf.math.erf(x * 0.7071067811865476))


_FUSED_BLOCK: dict = {}  # XLA-compiled block pieces, one per structure (TensorFlow is imported lazily)


def _fused(key, make):
    if key not in _FUSED_BLOCK:
        _FUSED_BLOCK[key] = make()
    return _FUSED_BLOCK[key]


def residual_branch_fused(inputs, branch, scale, shift, se=None, gamma=None, post_gelu=True, approximate=False):
    """x + gamma * SE(BN(GELU(branch))) as one XLA-compiled function (inference only):

        y = GELU(branch)                          when post_gelu (else y = branch)
        y = y * scale + shift                     BN at inference
        y = y * sigmoid(W2 GELU(W1 mean_hw(y) + b1) + b2)   squeeze-excite, when se = (W1, b1, W2, b2)
        return inputs + gamma * y                 layer scale, when gamma is given

    The depthwise conv that makes `branch` stays TensorFlow's op, outside XLA: with oneDNN on
    (runtime.prefer_onednn) it is oneDNN's depthwise kernel, faster on CPU than a sum of shifted copies in XLA
    and than TensorFlow's own (Eigen) kernel (docs/performance.md, "Inference on CPU"). Shapes: inputs, branch [B, H, W, C]; scale, shift, gamma, b2 [C]; W1 [C, C/r];
    b1 [C/r]; W2 [C/r, C] -> [B, H, W, C].
    """
    import tensorflow as tf

    key = ("branch", post_gelu, se is not None, gamma is not None, approximate)

    def make():
        @tf.function(jit_compile=True, reduce_retracing=True)
        def fused(inputs, branch, scale, shift, se, gamma):
            y = _gelu_tf(branch, approximate) if post_gelu else branch
            y = y * scale + shift
            if se is not None:
                w1, b1, w2, b2 = se
                context = tf.reduce_mean(y, axis=(1, 2))  # [B, C]
                gate = tf.sigmoid(_gelu_tf(context @ w1 + b1, approximate) @ w2 + b2)  # [B, C]
                y = y * gate[:, None, None, :]
            if gamma is not None:
                y = y * gamma
            return inputs + y

        return fused

    return _fused(key, make)(inputs, branch, scale, shift, se, gamma)


def gelu_affine_fused(x, scale, shift, approximate: bool = False):
    """GELU(x) * scale + shift (a GELU, then BN at inference) as one XLA-compiled elementwise kernel: one pass
    over the tensor instead of the GELU kernel's and BN's (measured in docs/performance.md, "Inference on CPU")."""
    import tensorflow as tf

    def make():
        @tf.function(jit_compile=True, reduce_retracing=True)
        def fused(x, scale, shift):
            return _gelu_tf(x, approximate) * scale + shift

        return fused

    return _fused(("gelu_affine", approximate), make)(x, scale, shift)


def convmixer_block_inference(block, inputs):
    """`ConvMixerBlock.call` at inference on a CPU (TensorFlow): the same arithmetic in a few kernels instead of
    ~15 ops, each of which passes over the whole [B, H, W, C] tensor:

        depthwise mode:  dw_kxk -> XLA[x + gamma * BN(GELU(.))]                  -> 1x1 conv -> XLA[BN(GELU(.))]
        mixed mode:      axial convs -> XLA[GELU] -> dw_kxk -> XLA[x + gamma * SE(BN(.))] -> 1x1 conv -> XLA[..]
        axial mode:      axial convs -> XLA[x + gamma * SE(BN(GELU(.)))]         -> 1x1 conv -> XLA[BN(GELU(.))]

    The convolutions are the block's own layers (TensorFlow's ops: oneDNN's kernels when runtime.prefer_onednn
    is in effect); what XLA fuses is the elementwise work between them. Equal to the layer's own call to
    float32 rounding (tests/test_kernels.py). Shapes: [B, H, W, C] -> [B, H, W, C].
    """
    import tensorflow as tf

    approximate = block.gelu_approximate
    scale, shift = batchnorm_affine(block.spatial_bn)
    se = None
    if block.se is not None:
        reduce, expand = block.se.reduce, block.se.expand
        se = tuple(tf.convert_to_tensor(w) for w in (reduce.kernel[0, 0], reduce.bias, expand.kernel[0, 0], expand.bias))
    gamma = None if block.layer_scale is None else tf.convert_to_tensor(block.layer_scale.gamma)
    if block.mode == "depthwise":
        branch, post_gelu = block.depthwise(inputs), True
    elif block.mode == "mixed":
        branch, post_gelu = block.local_depthwise(gelu_fused(block.axial(inputs), approximate)), False
    else:  # axial
        branch, post_gelu = block.axial(inputs), True
    x = residual_branch_fused(inputs, branch, scale, shift, se, gamma, post_gelu, approximate)
    channel_scale, channel_shift = batchnorm_affine(block.channel_bn)
    return gelu_affine_fused(block.pointwise(x), channel_scale, channel_shift, approximate)


def _gelu_exact_tf(x):
    """Exact GELU whose gradient reuses the forward's normal CDF.

    Autodiff through x * Phi(x) re-derives erf in several elementwise passes; the closed form
    d/dx = Phi(x) + x * phi(x) needs one (its gain on CPU training: docs/performance.md, "Model").
    """
    import tensorflow as tf

    @tf.custom_gradient
    def _gelu(x):
        cdf = 0.5 * (1.0 + tf.math.erf(x * 0.7071067811865476))  # Phi(x)

        def grad(dy):
            pdf = tf.exp(-0.5 * tf.square(x)) * 0.3989422804014327  # phi(x) = exp(-x^2/2) / sqrt(2 pi)
            return dy * (cdf + x * pdf)

        return x * cdf, grad

    return _gelu(x)


@keras.saving.register_keras_serializable(package="tinyconv")
def gelu_exact(x):
    """Exact GELU (tinyconv's fast-gradient form), as a serializable activation for keras.layers.Activation."""
    return gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="tinyconv")
def gelu_tanh(x):
    """GELU with the tanh approximation, as a serializable activation for keras.layers.Activation."""
    return ops.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="tinyconv")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization (same weights, same config) on TensorFlow's fused kernel.

    Keras 3 normalizes with separate moments/normalize ops; for 4-D channels-last inputs on the TensorFlow
    backend this layer trains with the fused kernel instead (one pass for the statistics, one for the
    output, and a fused gradient; its gain on CPU training: docs/performance.md, "Model"). Which path a call
    takes is fast_path.batch_norm's choice: inference, other inputs, or a non-default axis take Keras'. One difference: the moving variance is updated with
    the batch variance the fused kernel returns, which carries Bessel's correction (as PyTorch's does);
    at 64x32x32 values per channel the two differ by 0.002%.
    Shapes: [B, H, W, C] -> [B, H, W, C].
    """

    def call(self, inputs, training=None, mask=None):
        if fast_path.batch_norm(self, inputs, training, mask) == "keras":
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y


def fft_depthwise_conv(inputs, kernel):
    """Stride-1 "same" depthwise conv [B, H, W, C] * [k, k, C, 1] whose kernel gradient is computed by FFT.

    TensorFlow's CPU DepthwiseConv2dNativeBackpropFilter is many times slower than the forward pass for a 9x9
    kernel at 32x32x128 (it dominates the seed model's training step). The kernel gradient is the
    batch-summed cross-correlation of the padded input with the output gradient:
        dK[i, j, c] = sum_{b, h, w} x_pad[b, h + i, w + j, c] * dy[b, h, w, c]
    which an FFT of size (H + k - 1, W + k - 1) computes without wrap-around, and faster (both measured in
    docs/performance.md, "Model").
    Forward and input gradient stay TensorFlow's native depthwise ops.
    """
    import tensorflow as tf

    k = kernel.shape[0]
    pad = k // 2

    @tf.custom_gradient
    def conv(x, w):
        y = tf.nn.depthwise_conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME")

        def grad(dy):
            dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                input_sizes=tf.shape(x), filter=w, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"
            )
            height, width = tf.shape(x)[1], tf.shape(x)[2]
            fft_size = tf.stack([height + 2 * pad, width + 2 * pad])
            # FFTs run over the two last axes: move channels in front of the spatial axes (float32 for FFT).
            x_t = tf.transpose(tf.cast(x, tf.float32), [0, 3, 1, 2])  # [B, C, H, W]
            dy_t = tf.transpose(tf.cast(dy, tf.float32), [0, 3, 1, 2])  # [B, C, H, W]
            x_t = tf.pad(x_t, [[0, 0], [0, 0], [pad, pad], [pad, pad]])  # [B, C, H + k - 1, W + k - 1]
            spectrum = tf.reduce_sum(
                tf.signal.rfft2d(x_t) * tf.math.conj(tf.signal.rfft2d(dy_t, fft_length=fft_size)), axis=0
            )  # [C, H + k - 1, (W + k - 1) // 2 + 1]
            correlation = tf.signal.irfft2d(spectrum, fft_length=fft_size)[:, :k, :k]  # [C, k, k]
            dw = tf.transpose(correlation, [1, 2, 0])[:, :, :, None]  # [k, k, C, 1]
            return dx, tf.cast(dw, w.dtype)

        return y, grad

    return conv(inputs, kernel)


@keras.saving.register_keras_serializable(package="tinyconv")
class FFTGradDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """keras.layers.DepthwiseConv2D (same weights, same config) with a faster training step on CPU, and other
    forms of the same conv on JAX.

    The form is fast_path.depthwise_conv's choice, made when the layer is built: "fft" (stride 1, "same" padding,
    depth_multiplier 1, odd kernels of at least fast_path.FFT_MIN_KERNEL_SIZE, TensorFlow without a GPU: the kernel
    gradient by FFT, `fft_depthwise_conv`), "dense" (`depthwise_conv_dense`), "shifted" (`depthwise_conv_shifted`)
    or "pallas" (`depthwise_conv_pallas`) on JAX when TINYCONV_DEPTHWISE asks for them, else "keras": exactly the
    Keras layer.
    Bias and activation follow the conv in every form, as in Keras'. Shapes: [B, H, W, C] -> [B, H, W, C].
    """

    def build(self, input_shape):
        super().build(input_shape)
        # "fft", "keras", "dense", "shifted" or "pallas", decided when the graph is built; never saved (get_config is
        # Keras')
        self._path = fast_path.depthwise_conv(self, input_shape)

    def call(self, inputs):
        if self._path == "keras":
            return super().call(inputs)
        if self._path == "fft":
            import tensorflow as tf

            # a tensor, not the variable: tf.custom_gradient must not see variables read inside it
            kernel = tf.identity(ops.cast(self.kernel, self.compute_dtype))
            y = fft_depthwise_conv(inputs, kernel)
        elif self._path == "dense":
            y = depthwise_conv_dense(inputs, ops.cast(self.kernel, self.compute_dtype))
        elif self._path == "shifted":
            y = depthwise_conv_shifted(inputs, ops.cast(self.kernel, self.compute_dtype))
        else:  # "pallas"
            y = depthwise_conv_pallas(inputs, ops.cast(self.kernel, self.compute_dtype))
        if self.use_bias:
            y = y + self.bias
        if self.activation is not None:
            y = self.activation(y)
        return y


# ------------------------------------------------------------------------------- files saved before the rename
# .keras files written before the restructure name these layers "tinyconv>BatchNormalization" and
# "tinyconv>DepthwiseConv2D", and Keras stores a model's top-level layer weights under paths derived from the
# class's own __name__ ("layers/batch_normalization_1/vars"), so registering the new classes under the old
# names is not enough: loading those files needs classes that are called that. These two are exactly the
# classes above under their old names; build_model never uses them (tests/test_saved_models.py guards this).


@keras.saving.register_keras_serializable(package="tinyconv", name="BatchNormalization")
class BatchNormalization(FusedBatchNormalization):
    """FusedBatchNormalization under its pre-restructure name, to load .keras files saved before the rename."""


@keras.saving.register_keras_serializable(package="tinyconv", name="DepthwiseConv2D")
class DepthwiseConv2D(FFTGradDepthwiseConv2D):
    """FFTGradDepthwiseConv2D under its pre-restructure name, to load .keras files saved before the rename."""
