"""The augmentation schema: every augmentation value of a run in one dataclass, and the reference's values.

    AugmentConfig(pad=4, flip=True)    # the light recipe of short runs (crop + flip)
    REFERENCE_AUGMENT                  # the reference notebook's augmentation, value by value

The ops that apply it are in tinyconv.data.augment (keras.ops); this module imports no Keras, so the recipe
(tinyconv.training.recipe, which nests an AugmentConfig) and the CLI's --help read it without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
        for name in ("jitter_prob", "cutout_prob", "mix_prob", "cutmix_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TinyconvError(f"augmentation field {name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("jitter_brightness", "jitter_contrast", "jitter_saturation", "jitter_hue"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise TinyconvError(f"augmentation field {name} must lie in [0, 1), got {getattr(self, name)}")
        if self.pad < 0 or self.cutout_half < 0:
            raise TinyconvError(f"augmentation fields pad and cutout_half must be >= 0, got {self.pad}, {self.cutout_half}")
        if self.mix_alpha <= 0.0:
            raise TinyconvError(f"augmentation field mix_alpha must be > 0, got {self.mix_alpha}")
        for name, choices in (("crop_offset", CROP_OFFSETS), ("jitter_factors", JITTER_FACTORS),
                              ("cutout_fill", CUTOUT_FILLS)):
            if getattr(self, name) not in choices:
                raise TinyconvError(f"augmentation field {name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")

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

# The reference notebook's augmentation: one crop offset per batch, per-image flip, colour jitter on 80 % of
# the images with one set of factors per batch, black cutout on 70 %, every batch mixed (mixup or cutmix).
REFERENCE_AUGMENT = AugmentConfig(
    pad=4, crop_offset="batch", flip=True, jitter_prob=0.8, jitter_factors="batch", cutout_prob=0.7,
    cutout_half=16, cutout_fill="zero", mix_prob=1.0, cutmix_share=0.5, mix_alpha=0.2,
)
