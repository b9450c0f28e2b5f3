"""Model configs, presets and the stage plan (no Keras: `tinyconv --help` and the recipe read them).

    config = get_config("seed", kernel_sizes=7, depths=(2, 2, 4))   # any field, overridden field by field
    stage_plan(config)                                                # what tinyconv.model.build builds, entry by entry

The design: a conv stem (stride 2), then stages of ConvMixerBlocks separated by grouped stride-2 "down"
convs, then global average pooling and a float32 Dense head. Layer names are stable: `stem_conv`,
`stem_bn`, `stage{s}_block{b}`, `down{s}_conv`, `down{s}_bn`, `head_pool`, `head` (stages count from 1).

The variants (fields `stem`, `down`, `block`; presets tiny-stem-*, tiny-down-*, resnet-small, resnet-tiny)
add a parameter-free layer before the stem or down conv, named after it: `stem_space_to_depth`,
`stem_unfold`, `stem_shuffle`, `down{s}_haar`, `down{s}_maxpool`, `down{s}_space_to_depth`; the basic
block's stem and down convs are followed by `*_bn`, `*_relu`. The defaults build today's models unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from tinyconv.checks import check_fields
from tinyconv.errors import TinyconvError

# Per-stage fields: a tuple with one entry per stage. An override may give a single value for all stages.
# The spatial mixers a ConvMixerBlock knows (tinyconv.model.layers.ConvMixerBlock checks the same tuple).
BLOCK_MODES = ("depthwise", "axial", "mixed")
# The variants of issue 18 (the reference notebook's "possible extensions"); the first of each is the default.
STEMS = ("conv", "space_to_depth", "shuffle", "unfold")
DOWNS = ("grouped_conv", "haar", "maxpool", "space_to_depth")
BLOCKS = ("convmixer", "basic")
STAGE_FIELDS = ("widths", "depths", "modes", "kernel_sizes", "axial_kernel_sizes", "se_reductions")
DOWN_INITS = ("per_group", "whole")
# The GroupedConv2D forms (tinyconv.model.fast_path takes its tuple from here: that module imports Keras).
GROUPED_CONVS = ("auto", "split", "native", "dense")


@dataclass
class ModelConfig:
    """Every architectural choice; the defaults are the `seed` preset."""

    name: str = "seed"  # preset name, recorded in run configs
    num_classes: int = 200  # Tiny ImageNet classes; the quick profile trains on a 10-class subset
    image_size: int = 64  # input is [B, image_size, image_size, 3], float32, already normalized
    # stem, to widths[0] channels, then GELU, BN: conv = a stem_kernel conv at stem_stride (no bias) |
    # space_to_depth = a lossless stem_stride x stem_stride pixel unshuffle, then a stem_kernel conv at stride 1 |
    # shuffle = the reference repository's SpatialShuffle (x and its parity-shuffled copy), then the conv stem |
    # unfold = ConvMixer's patch embedding: stem_stride x stem_stride patches flattened, a 1x1 projection
    stem: str = "conv"
    stem_kernel: int = 5
    stem_stride: int = 2
    # stages (one entry each); between stages a grouped stride-2 conv (no bias), GELU, BN to the next width
    # (the entry types are checked by ModelConfig.validate, with the ranges of MODEL_RULES)
    widths: tuple[int, ...] = (128, 256, 512)
    depths: tuple[int, ...] = (2, 3, 5)  # ConvMixerBlocks per stage
    modes: tuple[str, ...] = ("depthwise", "mixed", "axial")  # the spatial mixer of each stage's blocks
    kernel_sizes: tuple[int, ...] = (9, 3, 3)  # square depthwise kernel (depthwise mode; mixed mode's local conv)
    axial_kernel_sizes: tuple[int, ...] = (7, 7, 5)  # 1xa then ax1 kernels (axial and mixed modes)
    se_reductions: tuple[int, ...] = (0, 8, 8)  # squeeze-excite reduction per stage, 0 = no SE
    # down-sampling between stages, to the next width, then GELU, BN: grouped_conv = a down_kernel grouped conv
    # at stride 2 (down_groups groups) | haar = Haar wavelet sub-bands (4x channels, lossless), a 1x1 conv |
    # maxpool = 2x2 max-pool, a 1x1 conv | space_to_depth = 2x2 pixel unshuffle (lossless), a 1x1 conv
    down: str = "grouped_conv"
    down_kernel: int = 5
    down_groups: int = 8
    # init of the down convs' kernels: per_group = glorot-uniform over each group's own fans, as G separate
    # convs (the reference; tinyconv.model.layers.GroupedGlorotUniform) | whole = Keras' glorot over the whole kernel
    down_init: str = "per_group"
    # the blocks: convmixer = ConvMixerBlock (the fields above) | basic = ResNet's basic block, two
    # kernel_sizes[s] convs with BN and ReLU (modes, axial/SE, layer scale unused), and ReLU after the stem and
    # down convs in the order conv, BN, ReLU: the pooling-based CNN baseline
    block: str = "convmixer"
    # regularisation and residual scaling
    drop_path: float = 0.0  # stochastic depth of the last block; rises linearly from 0 over the blocks
    layer_scale_init: float | None = 1.0  # per-channel gamma on the residual branch; None = plain residual
    # numerics
    gelu_approximate: bool = False  # exact erf GELU as PyTorch's default; True = tanh approximation
    # BatchNormalization: Keras' defaults, the reference's (the tiny and convmixer presets keep 0.9 / 1e-5,
    # PyTorch's BatchNorm2d in Keras' momentum convention)
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    grouped_conv: str = "auto"  # GroupedConv2D implementation: auto (split on CPU, dense on GPU) | split | native | dense

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """A config recorded by to_dict (a run's config.json). One written before `down_init` existed had
        the whole-kernel init, so a missing down_init reads as "whole"."""
        return get_config(cls(), **{"down_init": "whole", **data})

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    def validate(self) -> ModelConfig:
        """Raise TinyconvError unless every field has its type and range (MODEL_RULES) and the fields agree (one
        entry per stage, kernels that fit the variants); returns the config. get_config calls it, and with it every
        entry point: the recipe (tinyconv.training.recipe), train, the sweeps, `info`."""
        check_fields(self, MODEL_RULES, "model config")
        _validate(self)
        return self


_POSITIVE = "[1, inf)"
# The range of each field (tinyconv.checks.check_fields; the type is the annotation's), per entry for the per-stage
# fields. Every field has one (a test checks it), so a new field states its range when it is added.
MODEL_RULES: dict = {
    "name": None,  # any name: a run records it; get_config's presets set it
    "num_classes": _POSITIVE,
    "image_size": _POSITIVE,
    "stem": STEMS,
    "stem_kernel": _POSITIVE,
    "stem_stride": _POSITIVE,
    "widths": _POSITIVE,
    "depths": _POSITIVE,  # a stage without a block is only a down-sampling: not a stage
    "modes": BLOCK_MODES,
    "kernel_sizes": _POSITIVE,  # and odd: _validate
    "axial_kernel_sizes": _POSITIVE,  # and odd: _validate
    "se_reductions": "[0, inf)",  # 0 = no SE
    "down": DOWNS,
    "down_kernel": _POSITIVE,
    "down_groups": _POSITIVE,
    "down_init": DOWN_INITS,
    "block": BLOCKS,
    "drop_path": "[0, 1)",  # the rate of the last block; 1 would drop it always
    "layer_scale_init": "[0, inf)",
    "gelu_approximate": None,  # a bool: the type says it all
    "bn_momentum": "[0, 1)",
    "bn_epsilon": "(0, inf)",  # the variance is divided by sqrt(var + epsilon)
    "grouped_conv": GROUPED_CONVS,
}


PRESETS: dict[str, ModelConfig] = {
    # 2,644,712 parameters (2,628,584 trainable), ~0.26 GMAC per 64x64 image.
    "seed": ModelConfig(),
    # The same design at 3/8 of the width for CPU demos and the quick profile (~0.3M parameters), with the
    # BN settings and down-conv init it always had.
    "tiny": ModelConfig(name="tiny", widths=(48, 96, 192), bn_momentum=0.9, bn_epsilon=1e-5, down_init="whole"),
    # The original isotropic ConvMixer (Trockman & Kolter): patch stem, depth x [residual depthwise, 1x1].
    # ConvMixer-256/8 with k=9 as in the paper's CIFAR-10 set-up; patch 2 gives the same 32x32 token grid
    # the paper uses (32x32 CIFAR with patch 1, 224 ImageNet with patch 7). No layer scale, no SE, no
    # biases (each conv is followed by BN, which makes a bias redundant).
    "convmixer": ModelConfig(
        name="convmixer",
        stem_kernel=2,
        stem_stride=2,
        widths=(256,),
        depths=(8,),
        modes=("depthwise",),
        kernel_sizes=(9,),
        axial_kernel_sizes=(9,),
        se_reductions=(0,),
        layer_scale_init=None,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        down_init="whole",
    ),
    # The pooling-based CNN baseline at the seed's parameter count (2,609,800 vs 2,644,712): ResNet basic
    # blocks (He et al., CVPR 2016) on the same 32/16/8 grids, 3x3 stem at stride 2, 2x2 max-pool + 1x1 conv
    # between stages, ResNet's widths 64/128/256 with the depth placed where the parameters come out matched.
    "resnet-small": ModelConfig(
        name="resnet-small",
        block="basic",
        stem_kernel=3,
        down="maxpool",
        widths=(64, 128, 256),
        depths=(2, 4, 1),
        modes=("depthwise",) * 3,
        kernel_sizes=(3, 3, 3),
        axial_kernel_sizes=(3, 3, 3),
        se_reductions=(0, 0, 0),
        layer_scale_init=None,
        bn_momentum=0.9,
        bn_epsilon=1e-5,
        down_init="whole",
    ),
}
# The same baseline at the tiny preset's parameter count (426,664 vs 422,612), for the quick-scale sweeps.
PRESETS["resnet-tiny"] = dataclasses.replace(PRESETS["resnet-small"], name="resnet-tiny", widths=(32, 64, 128),
                                             depths=(1, 1, 1))
# The stem and down-sampling variants on the tiny preset, one field (or two) changed each, named
# tiny-stem-VARIANT and tiny-down-VARIANT (s2d = space_to_depth) so that a sweep can list them.
VARIANTS = {
    "stem-s2d": dict(stem="space_to_depth", stem_kernel=3),  # a 3x3 conv on the 32x32x12 unshuffled grid
    "stem-shuffle": dict(stem="shuffle"),
    "stem-unfold": dict(stem="unfold"),
    "down-haar": dict(down="haar"),
    "down-maxpool": dict(down="maxpool"),
    "down-s2d": dict(down="space_to_depth"),
}
PRESETS.update(
    {f"tiny-{variant}": dataclasses.replace(PRESETS["tiny"], name=f"tiny-{variant}", **fields)
     for variant, fields in VARIANTS.items()}
)


def get_config(name_or_config="seed", **overrides) -> ModelConfig:
    """A preset (by name) or a config, with fields overridden one by one.

    A per-stage field (widths, depths, modes, kernel_sizes, axial_kernel_sizes, se_reductions) takes a
    tuple/list with one value per stage or a single value for every stage. Raises TinyconvError for an
    unknown preset, an unknown field or an inconsistent value.
    """
    if isinstance(name_or_config, ModelConfig):
        base = name_or_config
    elif isinstance(name_or_config, dict):
        return get_config(ModelConfig(), **{**name_or_config, **overrides})
    elif name_or_config in PRESETS:
        base = PRESETS[name_or_config]
    else:
        raise TinyconvError(f"unknown model preset {name_or_config!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    for key in overrides:
        if key not in known:
            raise TinyconvError(f"unknown model config field {key!r}; known fields: {', '.join(sorted(known))}")
    widths = overrides.get("widths", base.widths)
    num_stages = base.num_stages if _is_scalar(widths) else len(widths)
    values = {}
    for key, value in overrides.items():
        if key in STAGE_FIELDS:
            value = (value,) * num_stages if _is_scalar(value) else tuple(value)
        values[key] = value
    return dataclasses.replace(base, **values).validate()


def _is_scalar(value) -> bool:
    return not isinstance(value, (tuple, list))


def _validate(config: ModelConfig) -> None:
    """What check_fields cannot see field by field: the fields' agreement (their types and ranges are checked)."""
    n = config.num_stages
    if n < 1:
        raise TinyconvError("model config field 'widths' is empty; give one width per stage")
    for key in STAGE_FIELDS:
        if len(getattr(config, key)) != n:
            raise TinyconvError(
                f"model config field {key!r} has {len(getattr(config, key))} entries but there are {n} stages"
            )
    for key in ("kernel_sizes", "axial_kernel_sizes"):
        for k in getattr(config, key):
            if k % 2 == 0:  # "same" padding centres only an odd kernel
                raise TinyconvError(f"model config field {key!r}: kernel sizes must be odd and positive, got {k}")
    if config.stem in ("space_to_depth", "unfold") and config.image_size % config.stem_stride:
        raise TinyconvError(
            f"model config: the {config.stem} stem needs image_size {config.image_size} to be a multiple of "
            f"stem_stride={config.stem_stride}"
        )
    if config.stem == "shuffle" and config.image_size % 2:
        raise TinyconvError(f"model config: the shuffle stem needs an even image_size, got {config.image_size}")
    size = -(-config.image_size // config.stem_stride)
    for _ in range(config.num_stages - 1):
        if config.down in ("haar", "space_to_depth") and size % 2:
            raise TinyconvError(
                f"model config: the {config.down} down-sampling needs even feature maps, got {size}x{size}"
            )
        size = -(-size // 2)
    for width in config.widths if config.num_stages > 1 and config.down == "grouped_conv" else ():
        if width % config.down_groups:
            raise TinyconvError(f"model config: width {width} is not a multiple of down_groups={config.down_groups}")
    if config.block == "basic" and any(config.se_reductions):
        raise TinyconvError("model config field 'se_reductions': the basic block has no squeeze-excite; use 0")


# -------------------------------------------------------------------------------------------- plan


def _conv_field(rf: int, jump: int, k: int, stride: int = 1) -> tuple[int, int]:
    """Receptive field and jump after a conv of kernel k: rf grows by (k - 1) input-pixel jumps."""
    return rf + (k - 1) * jump, jump * stride


def _block_macs(config: ModelConfig, s: int, size: int, c: int) -> int:
    """MACs of one block (ConvMixerBlock or basic) of stage s at size x size x c."""
    mode, k, a = config.modes[s], config.kernel_sizes[s], config.axial_kernel_sizes[s]
    hw = size * size
    if config.block == "basic":
        return 2 * hw * k * k * c * c  # two k x k convs at c -> c
    macs = hw * c * c  # pointwise
    if mode in ("depthwise", "mixed"):
        macs += hw * c * k * k
    if mode in ("axial", "mixed"):
        macs += hw * c * 2 * a
    if config.se_reductions[s]:
        macs += 2 * c * max(1, c // config.se_reductions[s])
    return macs


@functools.lru_cache(maxsize=16)  # slow numpy (docs/performance.md, "Model"); stage_plan runs on every build and info
def shuffle_stem_field(image_size: int, kernel: int, stride: int) -> int:
    """The receptive field of the shuffle stem: the largest extent (rows or cols, input pixels) over its
    output units of the pixels one unit sees, through x and through the parity-shuffled copy.

    The shuffled copy is a global permutation (tinyconv.model.layers.spatial_shuffle), so a k x k window of it holds
    pixels from across the image: at 64x64 with the 5x5 stride-2 stem the field is the whole image. Computed
    from the permutation itself, with Keras' "same" padding (max((out - 1) * stride + k - H, 0) // 2 before).
    """
    h = image_size
    # perm[r, c] = the flat index of the original pixel the shuffled image holds at (r, c)
    perm = np.arange(h * h).reshape(h // 2, 2, h // 2, 2).transpose(1, 3, 0, 2).reshape(h, h)
    out = -(-h // stride)
    pad_before = max((out - 1) * stride + kernel - h, 0) // 2
    widest = 0
    for i in range(out):
        rows = np.arange(i * stride - pad_before, i * stride - pad_before + kernel)
        rows = rows[(rows >= 0) & (rows < h)]
        for j in range(out):
            cols = np.arange(j * stride - pad_before, j * stride - pad_before + kernel)
            cols = cols[(cols >= 0) & (cols < h)]
            seen = perm[np.ix_(rows, cols)].ravel()  # the shuffled copy's pixels, as original flat indices
            seen_rows = np.concatenate([seen // h, rows])
            seen_cols = np.concatenate([seen % h, cols])
            widest = max(widest, int(np.ptp(seen_rows)) + 1, int(np.ptp(seen_cols)) + 1)
    return widest


def _stem_entry(config: ModelConfig) -> dict:
    """The stem's plan entry; `rearrange` names its parameter-free layer (None for the conv stem), `kernel`
    and `conv_stride` its conv, `stride` the whole stem's; `local_field` is the receptive field through the
    unshuffled pixels alone (the receptive field except for the shuffle stem)."""
    k, stride, c = config.stem_kernel, config.stem_stride, config.widths[0]
    size = -(-config.image_size // stride)
    entry = dict(name="stem", kind="stem", stem=config.stem, prefixes=("stem_",), width=c, stride=stride,
                 output_shape=[size, size, c])
    if config.stem in ("space_to_depth", "unfold"):
        # stride x stride pixels to channels (rf stride, jump stride), then the conv at stride 1 on that grid
        kernel = k if config.stem == "space_to_depth" else 1
        rf, _ = _conv_field(*_conv_field(1, 1, stride, stride), kernel)
        macs = size * size * kernel**2 * 3 * stride**2 * c
        return dict(entry, rearrange=config.stem, kernel=kernel, conv_stride=1, macs=macs, receptive_field=rf,
                    local_field=rf)
    local, _ = _conv_field(1, 1, k, stride)
    if config.stem == "shuffle":  # x and its shuffled copy: 6 channels
        return dict(entry, rearrange="shuffle", kernel=k, conv_stride=stride, macs=size * size * k**2 * 6 * c,
                    receptive_field=max(local, shuffle_stem_field(config.image_size, k, stride)), local_field=local)
    return dict(entry, rearrange=None, kernel=k, conv_stride=stride, macs=size * size * k**2 * 3 * c,
                receptive_field=local, local_field=local)


def _down_entry(config: ModelConfig, s: int, size: int, c_in: int, rf: int, jump: int) -> dict:
    """The plan entry of the down-sampling before stage s + 1 (size: its output side); `rearrange` names its
    parameter-free layer (None for the grouped conv), `kernel` and `groups` its conv."""
    c = config.widths[s]
    entry = dict(name=f"down{s}", kind="down", down=config.down, prefixes=(f"down{s}_",), width=c, stride=2,
                 output_shape=[size, size, c])
    hw = size * size
    if config.down == "grouped_conv":
        k, groups = config.down_kernel, config.down_groups
        return dict(entry, rearrange=None, kernel=k, groups=groups, macs=hw * k**2 * (c_in // groups) * c,
                    receptive_field=_conv_field(rf, jump, k, 2)[0])
    # a 2x2 stride-2 window (max-pool, pixel unshuffle or the Haar filters) then a 1x1 conv
    c_mid = c_in if config.down == "maxpool" else 4 * c_in
    macs = hw * c_mid * c  # the 1x1 conv; max-pool and the pixel unshuffle do no multiply-adds
    if config.down == "haar":
        macs += hw * 4 * c_mid  # each sub-band value is a 4-tap filter of its 2x2 block
    return dict(entry, rearrange=config.down, kernel=1, groups=1, macs=macs,
                receptive_field=_conv_field(rf, jump, 2, 2)[0])


def _block_field(config: ModelConfig, s: int, rf: int, jump: int) -> int:
    """The receptive field after one block of stage s."""
    if config.block == "basic":
        return _conv_field(*_conv_field(rf, jump, config.kernel_sizes[s]), config.kernel_sizes[s])[0]
    mode, k, a = config.modes[s], config.kernel_sizes[s], config.axial_kernel_sizes[s]
    if mode in ("axial", "mixed"):
        rf, jump = _conv_field(rf, jump, a)
    if mode in ("depthwise", "mixed"):
        rf, jump = _conv_field(rf, jump, k)
    return rf


def stage_plan(config: ModelConfig) -> list[dict]:
    """The model as a list of entries, stem, stages (with the down-samplings between them), head; build_model
    builds exactly this list and model_info / the analysis read its numbers, so the two cannot drift.

    Every entry: name, kind ("stem" | "down" | "stage" | "head"), prefixes (of its layer names), width (output
    channels or classes), output_shape, macs (per image) and receptive_field (theoretical, input pixels).
    stem/down add stem/down (the variant), rearrange (the parameter-free layer's variant, or None), kernel
    (of the conv), stride, and conv_stride and local_field (stem) or groups (down); a stage adds block, mode,
    kernel_size, axial_kernel_size, se_reduction and drop_path (the rate of each of its blocks, rising
    linearly over the whole model).
    """
    stem = _stem_entry(config)
    plan = [stem]
    size, c = stem["output_shape"][0], config.widths[0]
    # rf grows through the local (unshuffled) path; the shuffle stem's field already spans (up to) the image,
    # and no later unit sees less than the stem units under it.
    rf, floor = stem["local_field"], stem["receptive_field"]
    jump = config.stem_stride
    total_blocks, first_block = sum(config.depths), 0
    for s in range(config.num_stages):
        if s > 0:
            c_in, c = c, config.widths[s]
            size = -(-size // 2)
            entry = _down_entry(config, s, size, c_in, rf, jump)
            rf, jump = entry["receptive_field"], jump * 2
            plan.append(dict(entry, receptive_field=max(rf, floor)))
        for _ in range(config.depths[s]):
            rf = _block_field(config, s, rf, jump)
        blocks = range(first_block, first_block + config.depths[s])
        first_block += config.depths[s]
        plan.append(dict(name=f"stage{s + 1}", kind="stage", prefixes=(f"stage{s + 1}_",), width=c,
                         block=config.block, mode=config.modes[s], kernel_size=config.kernel_sizes[s],
                         axial_kernel_size=config.axial_kernel_sizes[s], se_reduction=config.se_reductions[s],
                         drop_path=[config.drop_path * i / max(1, total_blocks - 1) for i in blocks],
                         output_shape=[size, size, c], macs=_block_macs(config, s, size, c) * config.depths[s],
                         receptive_field=max(rf, floor)))
    plan.append(dict(name="head", kind="head", prefixes=("head",), width=config.num_classes,
                     output_shape=[config.num_classes], macs=c * config.num_classes,
                     receptive_field=max(rf, floor)))
    return plan
