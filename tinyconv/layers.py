"""The Keras 3 layers of the ConvMixer variant.

Every layer is registered for `.keras` saving (package "tinyconv"), returns every constructor argument from
`get_config()`, forwards `**kwargs` to `keras.layers.Layer`, and builds its sub-layers in `build()` with its
own dtype policy, so the whole model runs under `mixed_float16`. Tensors are channels-last: [B, H, W, C].

    DepthwiseConv2D       keras.layers.DepthwiseConv2D with an FFT kernel gradient on CPU (same weights, config)
    BatchNormalization    keras.layers.BatchNormalization on TensorFlow's fused kernel (same weights, config)
    AxialDepthwiseConv2D  depthwise 1xk then kx1: a rank-1 kxk depthwise kernel for 2k weights per channel
    GroupedConv2D         grouped convolution; split into per-group convs where native groups are slow (CPU)
    SqueezeExcite         channel gating from global context
    LayerScale            learnable per-channel residual scale (gamma)
    DropPath              stochastic depth on the residual branch
    ConvMixerBlock        spatial mixer (depthwise | axial | mixed) + residual, then the 1x1 channel mixer
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

BLOCK_MODES = ("depthwise", "axial", "mixed")
GROUPED_CONV_IMPLEMENTATIONS = ("auto", "split", "native")

# PyTorch's BatchNorm2d epsilon; momentum 0.9 is Keras' convention (PyTorch momentum=0.1 means the same).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def gelu(x, approximate: bool = False):
    """GELU; exact (erf) by default, as PyTorch's nn.GELU()."""
    if approximate or keras.config.backend() != "tensorflow":
        return ops.gelu(x, approximate=approximate)
    return _gelu_exact_tf(x)


def _gelu_exact_tf(x):
    """Exact GELU whose gradient reuses the forward's normal CDF.

    Autodiff through x * Phi(x) re-derives erf in several elementwise passes; the closed form
    d/dx = Phi(x) + x * phi(x) needs one. Measured +4% seed training images/s on CPU (docs/performance.md).
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
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization (same weights, same config) on TensorFlow's fused kernel.

    Keras 3 normalizes with separate moments/normalize ops; for 4-D channels-last inputs on the TensorFlow
    backend this layer trains with the fused kernel instead (one pass for the statistics, one for the
    output, and a fused gradient): measured +22% seed training images/s on CPU (docs/performance.md).
    Inference, other inputs, or a non-default axis take Keras' path. One difference: the moving variance is updated with
    the batch variance the fused kernel returns, which carries Bessel's correction (as PyTorch's does);
    at 64x32x32 values per channel the two differ by 0.002%.
    Shapes: [B, H, W, C] -> [B, H, W, C].
    """

    def _fused(self, inputs) -> bool:
        return (
            keras.config.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.scale
            and self.center
            and not self.synchronized
        )

    def call(self, inputs, training=None, mask=None):
        # inference is one multiply-add per element either way, and Keras' form measured faster there
        if not (training and self.trainable) or mask is not None or not self._fused(inputs):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y


def _has_gpu() -> bool:
    if keras.config.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _fft_depthwise_conv(inputs, kernel):
    """Stride-1 "same" depthwise conv [B, H, W, C] * [k, k, C, 1] whose kernel gradient is computed by FFT.

    TensorFlow's CPU DepthwiseConv2dNativeBackpropFilter is ~10x slower than the forward pass for a 9x9
    kernel at 32x32x128 (it dominates the seed model's training step). The kernel gradient is the
    batch-summed cross-correlation of the padded input with the output gradient:
        dK[i, j, c] = sum_{b, h, w} x_pad[b, h + i, w + j, c] * dy[b, h, w, c]
    which an FFT of size (H + k - 1, W + k - 1) computes without wrap-around, ~3x faster here.
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
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """keras.layers.DepthwiseConv2D (same weights, same config) with a faster training step on CPU.

    For stride 1, "same" padding, depth_multiplier 1, odd kernels of at least `fft_min_kernel_size` and the
    TensorFlow backend without a GPU, the kernel gradient is computed by FFT (see `_fft_depthwise_conv`);
    otherwise this is exactly the Keras layer. Shapes: [B, H, W, C] -> [B, H, W, C].
    """

    fft_min_kernel_size = 5  # below this the native gradient is cheap enough (measured: 3x3 ~20 ms per step)

    def build(self, input_shape):
        super().build(input_shape)
        k = self.kernel_size
        self._fft_gradient = (
            keras.config.backend() == "tensorflow"
            and not _has_gpu()
            and k[0] == k[1]
            and k[0] % 2 == 1
            and k[0] >= self.fft_min_kernel_size
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.padding == "same"
            and self.depth_multiplier == 1
            and self.data_format == "channels_last"
        )

    def call(self, inputs):
        if not self._fft_gradient:
            return super().call(inputs)
        import tensorflow as tf

        # a tensor, not the variable: tf.custom_gradient must not see variables read inside it
        kernel = tf.identity(ops.cast(self.kernel, self.compute_dtype))
        y = _fft_depthwise_conv(inputs, kernel)
        if self.use_bias:
            y = y + self.bias
        if self.activation is not None:
            y = self.activation(y)
        return y


@keras.saving.register_keras_serializable(package="tinyconv")
class AxialDepthwiseConv2D(keras.layers.Layer):
    """Depthwise 1xk convolution followed by a depthwise kx1 convolution, no bias, "same" padding.

    With zero padding and odd k the pair equals one kxk depthwise convolution whose kernel is the outer
    product of the two (rank 1 per channel): 2k weights per channel instead of k*k.

    Args:
        kernel_size: odd int k.
        kernel_initializer: initializer of both kernels.

    Shapes: [B, H, W, C] -> [B, H, W, C].
    Weights: `kernel_row` [1, k, C, 1] (applied first, along W), `kernel_col` [k, 1, C, 1] (along H).
    """

    def __init__(self, kernel_size: int, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"AxialDepthwiseConv2D needs an odd kernel_size, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        k = self.kernel_size
        self.kernel_row = self.add_weight(
            name="kernel_row", shape=(1, k, channels, 1), initializer=self.kernel_initializer
        )
        self.kernel_col = self.add_weight(
            name="kernel_col", shape=(k, 1, channels, 1), initializer=self.kernel_initializer
        )

    def call(self, inputs):
        x = ops.depthwise_conv(inputs, self.kernel_row, strides=1, padding="same")  # mixes along W
        return ops.depthwise_conv(x, self.kernel_col, strides=1, padding="same")  # mixes along H

    def axial_kernels(self) -> tuple[np.ndarray, np.ndarray]:
        """The two 1-D kernels as numpy: (row [k, C] applied along W, col [k, C] applied along H)."""
        row = keras.ops.convert_to_numpy(self.kernel_row)[0, :, :, 0]
        col = keras.ops.convert_to_numpy(self.kernel_col)[:, 0, :, 0]
        return row.astype(np.float32), col.astype(np.float32)

    def effective_kernel(self) -> np.ndarray:
        """The equivalent kxk depthwise kernel [k, k, C]: effective[i, j, c] = col[i, c] * row[j, c]."""
        row, col = self.axial_kernels()
        return np.einsum("ic,jc->ijc", col, row)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tinyconv")
class GroupedConv2D(keras.layers.Layer):
    """A grouped 2-D convolution with "same" padding, computed the fastest way on the device.

    TensorFlow runs native grouped convolutions on CPU through XLA and they are ~50x slower than `groups`
    separate convolutions concatenated (measured: 5x5 stride 2, 128->256 channels, 32x32, batch 64, groups 8:
    ~4.1 s vs 0.08 s per forward+backward). On GPU the native op is fast. The weight layout is the same for
    both (Keras Conv2D(groups=...) layout), so a model saved on one device loads on the other.

    Args:
        filters: output channels, a multiple of `groups`.
        kernel_size: int k (square kernel).
        strides: int stride.
        groups: number of channel groups; input channels must be a multiple.
        use_bias: add a bias per output channel.
        implementation: "auto" (native on GPU, split otherwise), "split" or "native".
        kernel_initializer, bias_initializer: initializers.

    Shapes: [B, H, W, C_in] -> [B, ceil(H / s), ceil(W / s), filters].
    Weights: `kernel` [k, k, C_in // groups, filters] (output channels of group g are g*F/G .. (g+1)*F/G - 1),
    `bias` [filters].
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        groups: int = 1,
        use_bias: bool = False,
        implementation: str = "auto",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if implementation not in GROUPED_CONV_IMPLEMENTATIONS:
            raise ValueError(
                f"GroupedConv2D implementation must be one of {GROUPED_CONV_IMPLEMENTATIONS}, got {implementation!r}"
            )
        if filters % groups:
            raise ValueError(f"GroupedConv2D filters={filters} is not a multiple of groups={groups}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        self.implementation = implementation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(f"GroupedConv2D input channels {channels} are not a multiple of groups={self.groups}")
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        # Decided when the graph is built, so a model built on CPU and loaded on GPU picks the right path.
        if self.implementation == "auto":
            self._split = self.groups > 1 and not _has_gpu()
        else:
            self._split = self.implementation == "split" and self.groups > 1

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        if self._split:
            input_groups = ops.split(inputs, self.groups, axis=-1)  # G x [B, H, W, C_in/G]
            kernel_groups = ops.split(kernel, self.groups, axis=-1)  # G x [k, k, C_in/G, F/G]
            outputs = [
                ops.conv(x, w, strides=self.strides, padding="same") for x, w in zip(input_groups, kernel_groups)
            ]
            y = ops.concatenate(outputs, axis=-1)  # [B, H/s, W/s, F]
        else:
            y = ops.conv(inputs, kernel, strides=self.strides, padding="same")
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        out = lambda n: None if n is None else -(-n // self.strides)  # noqa: E731  ("same" padding)
        return (batch, out(height), out(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            groups=self.groups,
            use_bias=self.use_bias,
            implementation=self.implementation,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tinyconv")
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excitation: global average pool, 1x1 conv to C//r (bias), GELU, 1x1 conv to C (bias),
    sigmoid, then scale the input channels.

    Args:
        reduction: r; the bottleneck has max(1, C // r) channels.
        gelu_approximate: tanh approximation of GELU instead of the exact erf form.

    Shapes: [B, H, W, C] -> [B, H, W, C].
    Sub-layers: `reduce` (Conv2D 1x1, C -> C//r), `expand` (Conv2D 1x1, C//r -> C).
    """

    def __init__(self, reduction: int = 8, gelu_approximate: bool = False, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"SqueezeExcite reduction must be >= 1, got {reduction}")
        self.reduction = int(reduction)
        self.gelu_approximate = bool(gelu_approximate)

    def build(self, input_shape):
        channels = input_shape[-1]
        hidden = max(1, channels // self.reduction)
        self.reduce = keras.layers.Conv2D(hidden, 1, use_bias=True, name="reduce", dtype=self.dtype_policy)
        self.reduce.build((None, 1, 1, channels))
        self.expand = keras.layers.Conv2D(channels, 1, use_bias=True, name="expand", dtype=self.dtype_policy)
        self.expand.build((None, 1, 1, hidden))

    def gate(self, inputs):
        """The per-channel gate in (0, 1): [B, H, W, C] -> [B, 1, 1, C]."""
        context = ops.mean(inputs, axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
        hidden = gelu(self.reduce(context), self.gelu_approximate)  # [B, 1, 1, C//r]
        return ops.sigmoid(self.expand(hidden))  # [B, 1, 1, C]

    def call(self, inputs):
        return inputs * self.gate(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, gelu_approximate=self.gelu_approximate)
        return config


@keras.saving.register_keras_serializable(package="tinyconv")
class LayerScale(keras.layers.Layer):
    """Multiply by a learnable per-channel scale `gamma` [C], initialised to `init_value`.

    Shapes: [..., C] -> [..., C].
    """

    def __init__(self, init_value: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init_value)
        )

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(init_value=self.init_value)
        return config


@keras.saving.register_keras_serializable(package="tinyconv")
class DropPath(keras.layers.Layer):
    """Stochastic depth: in training, zero a whole sample's residual branch with probability `rate` and
    scale survivors by 1 / (1 - rate); identity at inference and when rate == 0.

    Args:
        rate: drop probability in [0, 1).
        seed: optional int seed of the layer's random generator.

    Shapes: [B, ...] -> [B, ...].
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate > 0 else None

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        mask_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)  # one draw per sample
        mask = keras.random.uniform(mask_shape, seed=self.seed_generator) < keep
        return ops.where(mask, inputs / ops.cast(keep, inputs.dtype), ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="tinyconv")
class ConvMixerBlock(keras.layers.Layer):
    """One block: y = spatial(x); x = x + DropPath(gamma * y); x = BN(GELU(Conv1x1(x))).

    The spatial mixer, by `mode`:
        "depthwise"  kxk depthwise conv, GELU, BN
        "axial"      depthwise 1xa, ax1, GELU, BN
        "mixed"      depthwise 1xa, ax1, GELU, kxk depthwise, BN
    followed by squeeze-excite when `se_reduction` is set. Depthwise convs have no bias (BN follows).

    Args:
        mode: "depthwise", "axial" or "mixed".
        kernel_size: k of the square depthwise conv (depthwise and mixed modes).
        axial_kernel_size: a of the axial convs (axial and mixed modes).
        se_reduction: squeeze-excite reduction r, or None for no SE.
        drop_path: stochastic-depth rate of the residual branch.
        layer_scale_init: initial gamma, or None for no layer scale (plain residual, as the original ConvMixer).
        gelu_approximate: tanh approximation of GELU instead of the exact erf form.
        bn_momentum, bn_epsilon: BatchNormalization settings.

    Shapes: [B, H, W, C] -> [B, H, W, C].
    Sub-layers (attributes, with the same names): `depthwise` (DepthwiseConv2D kxk; depthwise mode),
    `axial` (AxialDepthwiseConv2D; axial, mixed), `local_depthwise` (DepthwiseConv2D kxk; mixed),
    `spatial_bn`, `se` (SqueezeExcite or None), `layer_scale` (LayerScale or None), `drop_path`,
    `pointwise` (Conv2D 1x1, no bias), `channel_bn`.
    """

    def __init__(
        self,
        mode: str = "depthwise",
        kernel_size: int = 9,
        axial_kernel_size: int = 7,
        se_reduction: int | None = None,
        drop_path: float = 0.0,
        layer_scale_init: float | None = 1.0,
        gelu_approximate: bool = False,
        bn_momentum: float = BN_MOMENTUM,
        bn_epsilon: float = BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in BLOCK_MODES:
            raise ValueError(f"ConvMixerBlock mode must be one of {BLOCK_MODES}, got {mode!r}")
        self.mode = mode
        self.kernel_size = int(kernel_size)
        self.axial_kernel_size = int(axial_kernel_size)
        self.se_reduction = None if not se_reduction else int(se_reduction)
        self.drop_path_rate = float(drop_path)
        self.layer_scale_init = None if layer_scale_init is None else float(layer_scale_init)
        self.gelu_approximate = bool(gelu_approximate)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        shape = tuple(input_shape)
        policy = self.dtype_policy
        bn = dict(momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=policy)

        self.depthwise = self.axial = self.local_depthwise = None
        if self.mode == "depthwise":
            self.depthwise = DepthwiseConv2D(
                self.kernel_size, padding="same", use_bias=False, name="depthwise", dtype=policy
            )
            self.depthwise.build(shape)
        else:
            self.axial = AxialDepthwiseConv2D(self.axial_kernel_size, name="axial", dtype=policy)
            self.axial.build(shape)
            if self.mode == "mixed":
                self.local_depthwise = DepthwiseConv2D(
                    self.kernel_size, padding="same", use_bias=False, name="local_depthwise", dtype=policy
                )
                self.local_depthwise.build(shape)
        self.spatial_bn = BatchNormalization(name="spatial_bn", **bn)
        self.spatial_bn.build(shape)
        self.se = None
        if self.se_reduction:
            self.se = SqueezeExcite(self.se_reduction, gelu_approximate=self.gelu_approximate, name="se", dtype=policy)
            self.se.build(shape)
        self.layer_scale = None
        if self.layer_scale_init is not None:
            self.layer_scale = LayerScale(self.layer_scale_init, name="layer_scale", dtype=policy)
            self.layer_scale.build(shape)
        self.drop_path = DropPath(self.drop_path_rate, name="drop_path", dtype=policy)
        self.pointwise = keras.layers.Conv2D(channels, 1, use_bias=False, name="pointwise", dtype=policy)
        self.pointwise.build(shape)
        self.channel_bn = BatchNormalization(name="channel_bn", **bn)
        self.channel_bn.build(shape)

    def spatial_mix(self, inputs, training=None):
        """The spatial branch up to its BatchNorm ([B, H, W, C] -> [B, H, W, C]); the analysis reads SE gates on it."""
        if self.mode == "depthwise":
            y = gelu(self.depthwise(inputs), self.gelu_approximate)
        else:
            y = gelu(self.axial(inputs), self.gelu_approximate)
            if self.mode == "mixed":
                y = self.local_depthwise(y)
        return self.spatial_bn(y, training=training)

    def call(self, inputs, training=None):
        y = self.spatial_mix(inputs, training=training)
        if self.se is not None:
            y = self.se(y)
        if self.layer_scale is not None:
            y = self.layer_scale(y)
        x = inputs + self.drop_path(y, training=training)  # [B, H, W, C]
        x = gelu(self.pointwise(x), self.gelu_approximate)
        return self.channel_bn(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            mode=self.mode,
            kernel_size=self.kernel_size,
            axial_kernel_size=self.axial_kernel_size,
            se_reduction=self.se_reduction,
            drop_path=self.drop_path_rate,
            layer_scale_init=self.layer_scale_init,
            gelu_approximate=self.gelu_approximate,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
        )
        return config
