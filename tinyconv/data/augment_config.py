"""The augmentation schema: every augmentation value of a run in one dataclass, and the reference's values.

    AugmentConfig(pad=4, flip=True)    # the light recipe of short runs (crop + flip)
    REFERENCE_AUGMENT                  # the reference notebook's augmentation, value by value

The ops that apply it are in tinyconv.data.augment (keras.ops); this module imports no Keras, so the recipe
(tinyconv.training.recipe, which nests an AugmentConfig) and the CLI's --help read it without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tinyconv.checks import check_fields
from tinyconv.errors import TinyconvError

CROP_OFFSETS = ("batch", "example")
JITTER_FACTORS = ("batch", "example")
CUTOUT_FILLS = ("zero", "mean")


@dataclass
class AugmentConfig:
    """Every augmentation value. The defaults are the light recipe (crop + flip) of short runs; the
    `reference` profile sets the notebook's values (`REFERENCE_AUGMENT`)."""

    pad: int = 4  # zero padding per side before the crop back to the input size; 0 = no crop
    crop_offset: str = "example"  # one crop offset per batch (the reference) or per example
    flip: bool = True  # horizontal flip, p = 0.5 per image
    jitter_prob: float = 0.0  # probability that an image gets colour jitter
    jitter_factors: str = "example"  # one set of jitter factors per batch (the reference) or per example
    jitter_brightness: float = 0.16  # additive delta ~ U(-b, b) on [0, 1] images (reference: 0.8 * 0.2)
    jitter_contrast: float = 0.16  # factor ~ U(1 - c, 1 + c)
    jitter_saturation: float = 0.16  # factor ~ U(1 - s, 1 + s)
    jitter_hue: float = 0.04  # shift ~ U(-h, h) of a full turn (reference: 0.2 * 0.2)
    cutout_prob: float = 0.0  # probability that an image gets a cutout hole
    cutout_half: int = 16  # half side of the square hole, in pixels
    cutout_fill: str = "zero"  # zero: black before normalisation (the reference); mean: the mean colour
    mix_prob: float = 0.0  # probability that a batch is mixed at all
    cutmix_share: float = 0.5  # of the mixed batches, the share mixed by cutmix instead of mixup
    mix_alpha: float = 0.2  # Beta(alpha, alpha) per-example mixing ratio

    def __post_init__(self):
        self.validate()

    def validate(self) -> AugmentConfig:
        """Raise TinyconvError unless every field has its type and range (AUGMENT_RULES); returns the config."""
        check_fields(self, AUGMENT_RULES, "augmentation")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AugmentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TinyconvError(f"unknown augmentation fields: {', '.join(unknown)}")
        return cls(**values)


AUGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig))

_PROBABILITY = "[0, 1]"
_STRENGTH = "[0, 1)"  # a jitter range around the identity: 1 would allow a black image or a full hue turn
# The range of each field (tinyconv.checks.check_fields; the type is the annotation's). Every field has one (a test
# checks it), so a new field states its range when it is added.
AUGMENT_RULES: dict = {
    "pad": "[0, inf)",
    "crop_offset": CROP_OFFSETS,
    "flip": None,  # a bool: the type says it all
    "jitter_prob": _PROBABILITY,
    "jitter_factors": JITTER_FACTORS,
    "jitter_brightness": _STRENGTH,
    "jitter_contrast": _STRENGTH,
    "jitter_saturation": _STRENGTH,
    "jitter_hue": _STRENGTH,
    "cutout_prob": _PROBABILITY,
    "cutout_half": "[0, inf)",
    "cutout_fill": CUTOUT_FILLS,
    "mix_prob": _PROBABILITY,
    "cutmix_share": _PROBABILITY,
    "mix_alpha": "(0, inf)",  # Beta(alpha, alpha) needs alpha > 0
}

# The reference notebook's augmentation: one crop offset per batch, per-image flip, colour jitter on 80 % of
# the images with one set of factors per batch, black cutout on 70 %, every batch mixed (mixup or cutmix).
REFERENCE_AUGMENT = AugmentConfig(
    pad=4, crop_offset="batch", flip=True, jitter_prob=0.8, jitter_factors="batch", cutout_prob=0.7,
    cutout_half=16, cutout_fill="zero", mix_prob=1.0, cutmix_share=0.5, mix_alpha=0.2,
)
