"""The training recipe: every value of a run in one dataclass, the named profiles, and make_config.

    config = make_config("quick", lr=2e-3, mix_prob=0.5)   # a profile, then the preset, then field overrides
    config.augment                                        # the AugmentConfig tinyconv.pipeline applies

The recipe (`TrainConfig`'s defaults, the `full` profile): batch 128, 100 epochs, AdamW (lr 3e-3, weight
decay 1e-5), 5 warm-up epochs then cosine decay to 1e-5 per step (tinyconv.schedule), cross-entropy on
logits, crop+flip, colour jitter, cutout, mixup/cutmix on every batch, mixed_float16 on a capable GPU.

The augmentation values are one nested schema, `AugmentConfig`, that the pipeline uses as it is. For the
command line and the run's config.json they read flat (`--mix-prob 0.5`, `"mix_prob": 0.5`): their names are
unique among the recipe's fields, so make_config routes them into `augment` and `to_dict` writes them flat,
as run folders always had them.

No TensorFlow here: the CLI builds its --profile choices from PROFILES and must start in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from tinyconv.errors import TinyconvError

# -------------------------------------------------------------------------------------- augmentation


@dataclass
class AugmentConfig:
    """Train-time augmentation: the one schema the recipe (TrainConfig.augment) and tinyconv.pipeline share.

    The defaults are the light augmentation of short runs (crop + flip); the reference recipe sets
    jitter_prob=0.8, cutout_prob=0.7, mix_prob=1.0 (`REFERENCE_AUGMENT`)."""

    pad: int = 4  # zero padding (pixels per side) before the random crop back to the input size; 0 = no crop
    flip: bool = True  # random horizontal flip with probability 0.5 per image
    jitter_prob: float = 0.0  # probability that an image gets colour jitter
    jitter_strength: float = 0.2  # brightness/contrast/saturation factor in [1-s, 1+s], hue shift in [-s, s] turns
    cutout_prob: float = 0.0  # probability that an image gets a cutout hole
    cutout_half: int = 16  # half side of the square hole (pixels); the hole is clipped at the border
    mix_prob: float = 0.0  # probability that a batch is mixed at all (mixup or cutmix)
    cutmix_share: float = 0.5  # of the mixed batches, the fraction using cutmix instead of mixup
    mix_alpha: float = 0.2  # Beta(alpha, alpha) distribution of the per-example mixing ratio

    def __post_init__(self):
        for name in ("jitter_prob", "cutout_prob", "mix_prob", "cutmix_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise TinyconvError(f"AugmentConfig.{name} must be a probability in [0, 1], got {value}")
        if self.pad < 0 or self.cutout_half < 0:
            raise TinyconvError(f"AugmentConfig.pad and cutout_half must be >= 0, got {self.pad}, {self.cutout_half}")
        if not 0.0 <= self.jitter_strength < 1.0:
            raise TinyconvError(f"AugmentConfig.jitter_strength must be in [0, 1), got {self.jitter_strength}")
        if self.mix_alpha <= 0.0:
            raise TinyconvError(f"AugmentConfig.mix_alpha must be > 0, got {self.mix_alpha}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AugmentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TinyconvError(f"unknown AugmentConfig fields: {', '.join(unknown)}")
        return cls(**values)


AUGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig))

# The reference recipe's augmentation: crop + flip, colour jitter 0.8, cutout 0.7, every batch mixed.
REFERENCE_AUGMENT = AugmentConfig(jitter_prob=0.8, cutout_prob=0.7, mix_prob=1.0)


# ------------------------------------------------------------------------------------------- recipe


@dataclass
class TrainConfig:
    """Every value of the recipe. The defaults are the reference recipe, i.e. the `full` profile."""

    # model and data
    preset: str = "seed"  # model preset of tinyconv.models.PRESETS
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields changed on top of the preset
    classes: int | list[str] | None = None  # None: all 200; K: the first K of wnids.txt; or a list of wnids
    max_train_per_class: int | None = None  # cap on train images per class (None: all 500)
    max_val_per_class: int | None = None  # cap on val images per class during training (None: all 50)
    # schedule and optimizer
    epochs: int = 100
    batch_size: int = 128  # global batch; MirroredStrategy splits it over the GPUs
    lr: float = 3e-3  # peak learning rate, reached at the end of the warm-up
    min_lr: float = 1e-5  # the cosine decays to this value at the last step
    warmup_epochs: float = 5.0  # linear warm-up from lr/warmup_steps to lr
    weight_decay: float = 1e-5  # AdamW's decoupled weight decay
    beta_1: float = 0.9
    beta_2: float = 0.999
    label_smoothing: float = 0.0
    # augmentation, one nested schema (its fields are read and overridden by their own names, flat)
    augment: AugmentConfig = field(default_factory=lambda: dataclasses.replace(REFERENCE_AUGMENT))
    # execution
    mixed_precision: str = "auto"  # auto: mixed_float16 on GPUs with compute capability >= 7 | on | off
    jit_compile: str = "auto"  # XLA for the train step: auto (tinyconv.runtime.default_jit_compile) | on | off
    seed: int = 0  # weights initialisation and the data order/augmentation

    def __getattr__(self, name):
        """`config.mix_prob` reads `config.augment.mix_prob` (called only for names that are not fields)."""
        if name in AUGMENT_FIELDS:
            return getattr(self.augment, name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def to_dict(self) -> dict:
        """Every field, the augmentation ones flat in its place (the layout of a run's config.json)."""
        out = {}
        for name, value in dataclasses.asdict(self).items():
            if name == "augment":
                out.update(value)
            else:
                out[name] = value
        return out


# Each profile overrides some TrainConfig fields (augmentation fields by their own name); make_config
# applies a profile, then the preset, then the caller's overrides.
PROFILES: dict[str, dict] = {
    # The reference recipe: the seed preset, all 200 classes, 100 epochs. A GPU job (about 21 h on an M1).
    "full": {},
    # About 10 minutes on a 2-core CPU: the tiny preset on the first 10 classes of the real data, with
    # the light augmentation that suits short schedules (crop + flip; no jitter, cutout or mixing).
    "quick": {
        "preset": "tiny",
        "classes": 10,
        "epochs": 12,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup_epochs": 1.0,
        "weight_decay": 5e-4,
        "jitter_prob": 0.0,
        "cutout_prob": 0.0,
        "mix_prob": 0.0,
    },
    # Seconds, for tests: a handful of classes and images, one epoch, a smaller tiny model.
    "ci": {
        "preset": "tiny",
        "model_overrides": {"widths": [16, 32, 64], "depths": [1, 1, 1]},
        "classes": 4,
        "max_train_per_class": 16,
        "max_val_per_class": 8,
        "epochs": 1,
        "batch_size": 16,
        "warmup_epochs": 0.0,
        "jitter_prob": 0.0,
        "cutout_prob": 0.0,
        "mix_prob": 0.0,
        "jit_compile": "off",
    },
}

_CHOICES = {"mixed_precision": ("auto", "on", "off"), "jit_compile": ("auto", "on", "off")}


def field_types() -> dict:
    """Recipe field name -> type hint, the augmentation fields flat in place of `augment`."""
    hints = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        hints.update(typing.get_type_hints(AugmentConfig) if name == "augment" else {name: hint})
    return hints


def make_config(profile: str = "quick", preset: str | None = None, **overrides) -> TrainConfig:
    """The recipe of a profile with the preset and field overrides applied (in that order).

    Args:
        profile: "full", "quick" or "ci".
        preset: a model preset; None keeps the profile's.
        overrides: TrainConfig fields; strings are parsed as in tinyconv.overrides. `model_overrides`
            is merged into the profile's instead of replacing it.
    Raises:
        TinyconvError: unknown profile or field, or a value out of range.
    """
    if profile not in PROFILES:
        raise TinyconvError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    # overrides imports this module (it types text by these fields): imported here, not at the top, for that cycle
    from tinyconv.overrides import parse_value

    hints = field_types()
    values = {key: (dict(value) if isinstance(value, dict) else value) for key, value in PROFILES[profile].items()}
    if preset is not None:
        values["preset"] = preset
    for name, value in overrides.items():
        if name not in hints:
            raise TinyconvError(f"unknown recipe field {name!r}; known: {', '.join(hints)}")
        if isinstance(value, str) and hints[name] is not str:
            value = parse_value(name, value, hints[name])
        if name == "model_overrides":
            values["model_overrides"] = {**values.get("model_overrides", {}), **(value or {})}
        else:
            values[name] = value
    augment_values = {name: values.pop(name) for name in AUGMENT_FIELDS if name in values}
    augment = AugmentConfig(**{**REFERENCE_AUGMENT.to_dict(), **augment_values})
    config = TrainConfig(**values, augment=augment)  # AugmentConfig validated its own values
    _validate(config)
    return config


def _validate(config: TrainConfig) -> None:
    for name in ("epochs", "batch_size"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 1:
            raise TinyconvError(f"recipe field {name} must be a positive integer, got {getattr(config, name)!r}")
    for name in ("max_train_per_class", "max_val_per_class"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise TinyconvError(f"recipe field {name} must be a positive integer or None, got {value!r}")
    if isinstance(config.classes, int) and config.classes < 1:
        raise TinyconvError(f"recipe field classes must be >= 1, got {config.classes}")
    if not config.lr > 0 or not config.min_lr >= 0:
        raise TinyconvError(f"recipe fields lr and min_lr must be positive, got {config.lr}, {config.min_lr}")
    if config.warmup_epochs < 0 or config.warmup_epochs > config.epochs:
        raise TinyconvError(f"recipe field warmup_epochs must lie in [0, epochs], got {config.warmup_epochs}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise TinyconvError(f"recipe field label_smoothing must lie in [0, 1), got {config.label_smoothing}")
    for name, choices in _CHOICES.items():
        if getattr(config, name) not in choices:
            raise TinyconvError(f"recipe field {name} must be one of {', '.join(choices)}, got {getattr(config, name)!r}")
