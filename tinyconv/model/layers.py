"""The Keras 3 layers of the ConvMixer variant: the architecture only. The faster forms live in
tinyconv.model.kernels, and which one a layer computes on this device is tinyconv.model.fast_path's choice.

Every layer is registered for `.keras` saving (package "tinyconv"), returns every constructor argument from
`get_config()`, forwards `**kwargs` to `keras.layers.Layer`, and builds its sub-layers in `build()` with its
own dtype policy, so the whole model runs under `mixed_float16`. Tensors are channels-last: [B, H, W, C].

    AxialDepthwiseConv2D  depthwise 1xk then kx1: a rank-1 kxk depthwise kernel for 2k weights per channel
    GroupedConv2D         grouped convolution: per-group convs, the backend's grouped conv or one block-diagonal conv
    GroupedGlorotUniform  glorot-uniform over one group's fans (a grouped kernel initialised as G separate convs)
    SqueezeExcite         channel gating from global context
    LayerScale            learnable per-channel residual scale (gamma)
    DropPath              stochastic depth on the residual branch
    ConvMixerBlock        spatial mixer (depthwise | axial | mixed) + residual, then the 1x1 channel mixer
    SpaceToDepth          lossless b x b pixel unshuffle (the space_to_depth / unfold stems and down-sampling)
    SpatialShuffle        the reference repository's parity shuffle + channel shuffle (the shuffle stem)
    HaarDWT               fixed orthonormal Haar wavelet transform, 4 sub-bands at half resolution (haar down)
    ResidualBlock         ResNet's basic block (the pooling-based CNN baseline)

The parameter-free ones are also plain functions with exact inverses: space_to_depth / depth_to_space,
spatial_shuffle / spatial_unshuffle, channel_shuffle, haar_dwt / haar_idwt.

The depthwise convolutions and BatchNorms inside the blocks are tinyconv.model.kernels' FFTGradDepthwiseConv2D and
FusedBatchNormalization: the Keras layers with faster TensorFlow training paths, same weights and configs.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tinyconv.data.augment import normalize
from tinyconv.model import fast_path
from tinyconv.model.config import BLOCK_MODES
from tinyconv.model.fast_path import GROUPED_CONV_IMPLEMENTATIONS
from tinyconv.model.kernels import (
    FFTGradDepthwiseConv2D,
    FusedBatchNormalization,
    convmixer_block_inference,
    depthwise_conv_shifted,
    gelu,
)

# The layers' defaults: PyTorch's BatchNorm2d epsilon; momentum 0.9 is Keras' convention (PyTorch momentum=0.1
# means the same). The `seed` preset passes Keras' BatchNormalization defaults (0.99, 1e-3), the reference's.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def _independent_copy(initializer):
    """An initializer like `initializer` (same class and settings) whose draws are independent of its draws: a
    fresh seed when it has none (Keras then draws one from Python's random, which keras.utils.set_random_seed
    seeds), its seed + 1 when it has an int seed, so a seeded model stays reproducible."""
    config = initializer.get_config()
    if "seed" not in config:  # not random (zeros, constants): nothing to make independent
        return initializer
    seed = config["seed"]
    config["seed"] = seed + 1 if isinstance(seed, int) else None
    return initializer.__class__.from_config(config)


@keras.saving.register_keras_serializable(package="tinyconv")
class GroupedGlorotUniform(keras.initializers.GlorotUniform):
    """Glorot-uniform for a grouped conv kernel, over the fans of ONE group: the init of `groups` separate convs.

    A grouped kernel [k, k, C_in/G, F] drawn by Keras' glorot_uniform gets limit sqrt(6 / (fan_in + fan_out))
    with fan_in = k*k*C_in/G but fan_out = k*k*F, i.e. G times the fan-out of each group's own conv. The
    reference built its grouped convs as G separate Conv2D layers (k x k, C_in/G -> F/G), each
    glorot-uniform over its own fans; this draws the same distribution into the one grouped kernel:
        limit = sqrt(6 / (k*k*C_in/G + k*k*F/G))
    (for the seed preset's down1, k 5, 128 -> 256, G 8: 0.0707 instead of 0.0297). A subclass of
    GlorotUniform, so `seed` and keras.utils.set_random_seed work as for the built-in one.

    Args:
        groups: G; the last axis (output channels) of the kernel is divided by it.
        seed: as for keras.initializers.GlorotUniform.
    """

    def __init__(self, groups: int = 1, seed=None):
        if int(groups) < 1:
            raise ValueError(f"GroupedGlorotUniform groups must be >= 1, got {groups}")
        self.groups = int(groups)
        super().__init__(seed=seed)

    def limit(self, shape) -> float:
        """The uniform bound of a kernel of this shape: glorot over one group's fan-in and fan-out."""
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in = receptive * shape[-2]  # the kernel's input axis already holds C_in / G
        fan_out = receptive * shape[-1] / self.groups
        return float(np.sqrt(6.0 / max(1.0, fan_in + fan_out)))

    def __call__(self, shape, dtype=None):
        limit = self.limit(shape)
        return keras.random.uniform(shape, minval=-limit, maxval=limit, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"groups": self.groups, "seed": super().get_config()["seed"]}


@keras.saving.register_keras_serializable(package="tinyconv")
class AxialDepthwiseConv2D(keras.layers.Layer):
    """Depthwise 1xk convolution followed by a depthwise kx1 convolution, no bias, "same" padding.

    With zero padding and odd k the pair equals one kxk depthwise convolution whose kernel is the outer
    product of the two (rank 1 per channel): 2k weights per channel instead of k*k. The factorization of a
    kxk filter into 1xk and kx1 follows the spatially separable convolutions of Inception-v3 (Szegedy et al.,
    "Rethinking the Inception Architecture for Computer Vision", CVPR 2016), here per channel (depthwise).

    Args:
        kernel_size: odd int k.
        kernel_initializer: initializer of both kernels.

    On a GPU both convs run as k shifted multiply-adds (`kernels.depthwise_conv_shifted`, one fused kernel)
    instead of cuDNN's grouped convolution, which is slower for these 1-D kernels (fast_path.axial_conv).

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
        # A Keras 3 initializer instance holds its seed (drawn at construction when none is given), so the same
        # instance gives the same numbers for shapes of the same size: until 2026-12-06 kernel_col started equal
        # to kernel_row, every axial kernel the symmetric outer product r r^T. The reference builds the two as
        # separate DepthwiseConv2D layers, each with its own glorot_uniform: independent draws, as here.
        self.kernel_col = self.add_weight(
            name="kernel_col", shape=(k, 1, channels, 1), initializer=_independent_copy(self.kernel_initializer)
        )
        self._path = fast_path.axial_conv()  # "shifted" or "depthwise"; the weights and config are the same either way

    def call(self, inputs):
        conv = depthwise_conv_shifted if self._path == "shifted" else self._depthwise_conv
        x = conv(inputs, ops.cast(self.kernel_row, self.compute_dtype))  # mixes along W
        return conv(x, ops.cast(self.kernel_col, self.compute_dtype))  # mixes along H

    @staticmethod
    def _depthwise_conv(x, kernel):
        return ops.depthwise_conv(x, kernel, strides=1, padding="same")

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

    Three ways to compute the same thing, with the same weights (Keras Conv2D(groups=...) layout), so a model
    saved with one loads into the others:
        split   `groups` separate convolutions, concatenated. TensorFlow runs native grouped convolutions on
                CPU through XLA, far slower than this.
        native  the backend's grouped convolution (cuDNN's grouped kernels on a GPU).
        dense   one ordinary convolution whose kernel holds the G group kernels on its block diagonal and
                zeros elsewhere: G times the multiply-adds, but on the GPU's matrix units, where cuDNN's
                grouped kernels (and the layout transforms around them) are slow. The zero blocks add exact
                zeros, and the kernel gradient of the zero blocks is dropped, so outputs and gradients are the
                grouped ones.
    "auto" is split on a CPU and dense on a GPU (fast_path.grouped_conv, at build time; measured in
    docs/performance.md). All three are plain keras.ops (any backend), and the saved config is the same either way.
    Grouped convolutions: Krizhevsky et al., "ImageNet Classification with Deep CNNs", NeurIPS 2012.

    Args:
        filters: output channels, a multiple of `groups`.
        kernel_size: int k (square kernel).
        strides: int stride.
        groups: number of channel groups; input channels must be a multiple.
        use_bias: add a bias per output channel.
        implementation: "auto" (dense on GPU, split otherwise), "split", "native" or "dense".
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
        self._path = fast_path.grouped_conv(self.implementation, self.groups)

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        if self._path == "split":
            input_groups = ops.split(inputs, self.groups, axis=-1)  # G x [B, H, W, C_in/G]
            kernel_groups = ops.split(kernel, self.groups, axis=-1)  # G x [k, k, C_in/G, F/G]
            outputs = [
                ops.conv(x, w, strides=self.strides, padding="same") for x, w in zip(input_groups, kernel_groups)
            ]
            y = ops.concatenate(outputs, axis=-1)  # [B, H/s, W/s, F]
        elif self._path == "dense":
            y = ops.conv(inputs, self.block_diagonal(kernel), strides=self.strides, padding="same")
        else:
            y = ops.conv(inputs, kernel, strides=self.strides, padding="same")
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y

    def block_diagonal(self, kernel):
        """[k, k, C_in/G, F] grouped kernel -> [k, k, C_in, F] dense kernel, zero outside the G diagonal blocks."""
        channels_in = kernel.shape[2] * self.groups
        tiled = ops.tile(kernel, (1, 1, self.groups, 1))  # input channel c reads group row c % (C_in/G)
        group_in = np.arange(channels_in) // (channels_in // self.groups)
        group_out = np.arange(self.filters) // (self.filters // self.groups)
        mask = (group_in[:, None] == group_out[None, :]).astype(np.float32)  # [C_in, F], 1 where groups match
        return tiled * ops.cast(mask, kernel.dtype)

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
    sigmoid, then scale the input channels (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

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
    """Multiply by a learnable per-channel scale `gamma` [C], initialised to `init_value` (Touvron et al.,
    "Going deeper with Image Transformers" (CaiT), ICCV 2021).

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
    scale survivors by 1 / (1 - rate); identity at inference and when rate == 0 (Huang et al., "Deep Networks
    with Stochastic Depth", ECCV 2016).

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

    # Keras saves a layer's weights, not its random generators' states (`Layer.weights` leaves seeds out), so a run
    # resumed from its backup would draw the masks of its first epochs again. The state goes with the weights.
    _SEED_STATE = "seed_generator_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.seed_generator is not None:
            store[self._SEED_STATE] = self.seed_generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        if self.seed_generator is not None and self._SEED_STATE in keys:
            self.seed_generator.state.assign(store[self._SEED_STATE])
        # a file saved before the state travelled has only the weights: its generator keeps its seed's start
        super().load_own_variables({key: store[key] for key in keys if key != self._SEED_STATE})

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="tinyconv")
class ConvMixerBlock(keras.layers.Layer):
    """One block: y = spatial(x); x = x + DropPath(gamma * y); x = BN(GELU(Conv1x1(x))).

    The ConvMixer block of Trockman & Kolter, "Patches Are All You Need?" (TMLR 2023): a residual depthwise
    spatial mixer, then a pointwise channel mixer, each followed by GELU and BatchNorm; here with optional
    axial kernels, squeeze-excite, layer scale and stochastic depth.

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
    Sub-layers (attributes, with the same names): `depthwise` (FFTGradDepthwiseConv2D kxk; depthwise mode),
    `axial` (AxialDepthwiseConv2D; axial, mixed), `local_depthwise` (FFTGradDepthwiseConv2D kxk; mixed),
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
            self.depthwise = FFTGradDepthwiseConv2D(
                self.kernel_size, padding="same", use_bias=False, name="depthwise", dtype=policy
            )
            self.depthwise.build(shape)
        else:
            self.axial = AxialDepthwiseConv2D(self.axial_kernel_size, name="axial", dtype=policy)
            self.axial.build(shape)
            if self.mode == "mixed":
                self.local_depthwise = FFTGradDepthwiseConv2D(
                    self.kernel_size, padding="same", use_bias=False, name="local_depthwise", dtype=policy
                )
                self.local_depthwise.build(shape)
        self.spatial_bn = FusedBatchNormalization(name="spatial_bn", **bn)
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
        self.channel_bn = FusedBatchNormalization(name="channel_bn", **bn)
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
        if fast_path.convmixer_block(self.compute_dtype) == "fused":
            return convmixer_block_inference(self, inputs)  # the same arithmetic, fused (kernels.py)
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


# ------------------------------------------------------------------ stems and down-sampling variants
# Parameter-free rearrangements and transforms (issue 18's variants), as functions on [B, H, W, C] tensors
# (keras.ops: any backend) with their exact inverses, and the layers wrapping them. H and W must be
# multiples of the block size; the batch axis stays dynamic (-1), so each image is rearranged on its own.


def space_to_depth(x, block_size: int = 2):
    """[B, H, W, C] -> [B, H/b, W/b, b*b*C]: each b x b block's pixels become channels, lossless.

    Channel order as tf.nn.space_to_depth: out[..., (dy * b + dx) * C + c] = x[b*i + dy, b*j + dx, c].
    Pixel (un)shuffle: Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
    Sub-Pixel Convolutional Neural Network", CVPR 2016; as a stem: Ridnik et al., "TResNet", WACV 2021.
    """
    b = int(block_size)
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // b, b, w // b, b, c))  # [B, i, dy, j, dx, C]
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, i, j, dy, dx, C]
    return ops.reshape(x, (-1, h // b, w // b, b * b * c))


def depth_to_space(x, block_size: int = 2):
    """The inverse of space_to_depth: [B, h, w, b*b*C] -> [B, h*b, w*b, C]."""
    b = int(block_size)
    _, h, w, bbc = x.shape
    c = bbc // (b * b)
    x = ops.reshape(x, (-1, h, w, b, b, c))  # [B, i, j, dy, dx, C]
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # [B, i, dy, j, dx, C]
    return ops.reshape(x, (-1, h * b, w * b, c))


def spatial_shuffle(x):
    """The reference's parity shuffle of one image, [B, H, W, C] -> [B, H, W, C], a pixel permutation.

    peterniederl/ConvMixer-TinyImageNet, utils.py `spatial_shuffle`: view the image as
    [H/2, row parity, W/2, col parity], move the parities first and read the result back as H x W. The four
    parity sub-images (even/odd rows x even/odd cols, each H/2 x W/2) are laid out one after another in
    row-major order, so pixels 2 or more apart in the image become neighbours.
    """
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c))  # [B, row_block, row_parity, col_block, col_parity, C]
    x = ops.transpose(x, (0, 2, 4, 1, 3, 5))  # [B, row_parity, col_parity, row_block, col_block, C]
    return ops.reshape(x, (-1, h, w, c))


def spatial_unshuffle(x):
    """The inverse permutation of spatial_shuffle."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, 2, 2, h // 2, w // 2, c))  # [B, row_parity, col_parity, row_block, col_block, C]
    x = ops.transpose(x, (0, 3, 1, 4, 2, 5))  # [B, row_block, row_parity, col_block, col_parity, C]
    return ops.reshape(x, (-1, h, w, c))


def channel_shuffle(x, groups: int):
    """Interleave `groups` channel groups: out[..., j * G + g] = x[..., g * C/G + j] (ShuffleNet's channel
    shuffle, Zhang et al., CVPR 2018; the reference's `channel_shuffle`)."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h, w, groups, c // groups))
    x = ops.transpose(x, (0, 1, 2, 4, 3))
    return ops.reshape(x, (-1, h, w, c))


# The orthonormal 2-D Haar analysis matrix: rows LL, LH, HL, HH; columns the 2x2 block's pixels in
# space_to_depth order (top-left, top-right, bottom-left, bottom-right). Orthonormal, so its transpose inverts it.
HAAR_MATRIX = 0.5 * np.array(
    [
        [1.0, 1.0, 1.0, 1.0],  # LL: the block average (x2)
        [1.0, 1.0, -1.0, -1.0],  # LH: top minus bottom (horizontal edges)
        [1.0, -1.0, 1.0, -1.0],  # HL: left minus right (vertical edges)
        [1.0, -1.0, -1.0, 1.0],  # HH: diagonal
    ],
    dtype="float32",
)


def _apply_block_matrix(x, matrix, compute_dtype):
    """[B, h, w, 4*C] (4 taps of C channels) -> [B, h, w, 4*C], each pixel's 4 taps mixed by the 4x4 matrix."""
    _, h, w, c4 = x.shape
    taps = ops.reshape(x, (-1, h, w, 4, c4 // 4))
    bands = ops.einsum("bt,nhwtc->nhwbc", ops.cast(matrix, compute_dtype), taps)
    return ops.reshape(bands, (-1, h, w, c4))


def haar_dwt(x):
    """One level of the orthonormal 2-D Haar wavelet transform, [B, H, W, C] -> [B, H/2, W/2, 4C]: the
    sub-bands LL, LH, HL, HH, each C channels, in that order. Lossless (haar_idwt inverts it) and
    energy-preserving. Haar, 1910; Mallat, "A theory for multiresolution signal decomposition", TPAMI 1989;
    as down-sampling in a CNN: Liu et al., "Multi-level Wavelet-CNN for Image Restoration", CVPRW 2018.
    """
    return _apply_block_matrix(space_to_depth(x, 2), HAAR_MATRIX, x.dtype)


def haar_idwt(x):
    """The inverse of haar_dwt: [B, h, w, 4C] sub-bands -> [B, 2h, 2w, C]."""
    return depth_to_space(_apply_block_matrix(x, HAAR_MATRIX.T, x.dtype), 2)


@keras.saving.register_keras_serializable(package="tinyconv")
class SpaceToDepth(keras.layers.Layer):
    """Lossless b x b pixel unshuffle (tinyconv.model.layers.space_to_depth); no weights.

    As the `space_to_depth` stem (b = 2, then a conv) and down-sampling (then a 1x1 conv), and as the
    `unfold` stem: with b = p and a 1x1 conv after it, it is ConvMixer's patch embedding (non-overlapping
    p x p patches flattened and linearly projected; Trockman & Kolter, "Patches Are All You Need?", TMLR 2022).

    Args:
        block_size: b; H and W must be multiples of it.

    Shapes: [B, H, W, C] -> [B, H/b, W/b, b*b*C].
    """

    def __init__(self, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        if int(block_size) < 1:
            raise ValueError(f"SpaceToDepth block_size must be >= 1, got {block_size}")
        self.block_size = int(block_size)

    def call(self, inputs):
        return space_to_depth(inputs, self.block_size)

    def inverse(self, outputs):
        """The input back from an output, exactly (depth_to_space)."""
        return depth_to_space(outputs, self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        b = self.block_size
        return (batch, height // b, width // b, channels * b * b)

    def get_config(self):
        config = super().get_config()
        config.update(block_size=self.block_size)
        return config


@keras.saving.register_keras_serializable(package="tinyconv")
class SpatialShuffle(keras.layers.Layer):
    """The reference repository's `SpatialShuffle` (peterniederl/ConvMixer-TinyImageNet, utils.py), the
    "lossless spatial shuffling" its notebook names as an extension: concatenate x with its parity-shuffled
    copy (spatial_shuffle) and interleave the two with a 2-group channel shuffle, so channel 2c is x's
    channel c and channel 2c + 1 the shuffled copy's. A conv after it sees, under one kernel, each pixel's
    neighbourhood and pixels of the other parity sub-images from across the image. No weights.

    Shapes: [B, H, W, C] -> [B, H, W, 2C]; H and W even.
    """

    def call(self, inputs):
        return channel_shuffle(ops.concatenate([inputs, spatial_shuffle(inputs)], axis=-1), 2)

    def inverse(self, outputs):
        """(x from the unshuffled channels, x recovered from the shuffled copy); both equal the input exactly."""
        _, h, w, c2 = outputs.shape
        pairs = ops.reshape(outputs, (-1, h, w, c2 // 2, 2))
        return pairs[..., 0], spatial_unshuffle(pairs[..., 1])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * input_shape[-1])


@keras.saving.register_keras_serializable(package="tinyconv")
class HaarDWT(keras.layers.Layer):
    """One level of the fixed orthonormal 2-D Haar wavelet transform (tinyconv.model.layers.haar_dwt): half the
    resolution, the LL, LH, HL, HH sub-bands as 4x the channels, lossless. With a 1x1 conv after it, the
    `haar` down-sampling ("wavelet mixing", the reference's suggested extension). No weights.

    Shapes: [B, H, W, C] -> [B, H/2, W/2, 4C]; H and W even.
    """

    def call(self, inputs):
        return haar_dwt(inputs)

    def inverse(self, outputs):
        """The input back from the sub-bands (haar_idwt)."""
        return haar_idwt(outputs)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, height // 2, width // 2, 4 * channels)


@keras.saving.register_keras_serializable(package="tinyconv")
class ResidualBlock(keras.layers.Layer):
    """ResNet's basic block: relu(x + BN(conv(relu(BN(conv(x)))))) with two k x k convs (no bias) at the
    input width (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), for the pooling-based
    CNN baseline; optional stochastic depth on the residual branch.

    Args:
        kernel_size: odd k of both convs.
        drop_path: stochastic-depth rate of the residual branch.
        bn_momentum, bn_epsilon: BatchNormalization settings.

    Shapes: [B, H, W, C] -> [B, H, W, C].
    Sub-layers: `conv1`, `bn1`, `conv2`, `bn2` (Conv2D, FusedBatchNormalization), `drop_path`.
    """

    def __init__(
        self,
        kernel_size: int = 3,
        drop_path: float = 0.0,
        bn_momentum: float = BN_MOMENTUM,
        bn_epsilon: float = BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ResidualBlock needs an odd kernel_size, got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.drop_path_rate = float(drop_path)
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        shape = tuple(input_shape)
        policy = self.dtype_policy
        bn = dict(momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=policy)
        conv = dict(kernel_size=self.kernel_size, padding="same", use_bias=False, dtype=policy)
        self.conv1 = keras.layers.Conv2D(channels, name="conv1", **conv)
        self.conv1.build(shape)
        self.bn1 = FusedBatchNormalization(name="bn1", **bn)
        self.bn1.build(shape)
        self.conv2 = keras.layers.Conv2D(channels, name="conv2", **conv)
        self.conv2.build(shape)
        self.bn2 = FusedBatchNormalization(name="bn2", **bn)
        self.bn2.build(shape)
        self.drop_path = DropPath(self.drop_path_rate, name="drop_path", dtype=policy)

    def call(self, inputs, training=None):
        y = ops.relu(self.bn1(self.conv1(inputs), training=training))
        y = self.bn2(self.conv2(y), training=training)
        return ops.relu(inputs + self.drop_path(y, training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            drop_path=self.drop_path_rate,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
        )
        return config


# The first layer of an exported model (tinyconv.deploy.export): defined here, with the other registered layers,
# so that loading any tinyconv .keras registers it without importing the export code.
@keras.saving.register_keras_serializable(package="tinyconv")
class PixelNormalization(keras.layers.Layer):
    """uint8 (or float 0..255) RGB pixels -> float32 normalised with the ImageNet mean/std, the arithmetic of
    training and `predict` (tinyconv.data.augment.normalize), so an exported model takes raw pixels.

    Shapes: [B, H, W, 3] -> [B, H, W, 3] float32.
    """

    def call(self, inputs):
        return normalize(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="float32")
