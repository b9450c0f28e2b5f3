"""The training recipe: every value of a run in one dataclass, the named profiles, and make_config.

    config = make_config("quick", lr=2e-3, mix_prob=0.5)   # a profile, then the preset, then field overrides
    config.augment                                        # the AugmentConfig tinyconv.data.pipeline applies

The recipe (`TrainConfig`'s defaults, the `reference` profile) is the reference notebook's, item by item:
batch 128, 100 epochs, AdamW (lr 3e-3, weight decay 1e-5 per step, not scaled by the lr), the lr set once
per epoch (5 warm-up epochs, then cosine to 1e-5; tinyconv.training.schedule), cross-entropy on logits, and the
augmentation of tinyconv.data.augment (crop offset and jitter factors per batch, black cutout, every batch
mixed). `full` is that recipe with the changes we believe in; `quick` and `ci` are short CPU recipes.

The augmentation values are one nested schema, `AugmentConfig`, that the pipeline uses as it is. For the
command line and the run's config.json they read flat (`--mix-prob 0.5`, `"mix_prob": 0.5`): their names are
unique among the recipe's fields, so make_config routes them into `augment` and `to_dict` writes them flat,
as run folders always had them.

No TensorFlow here: the CLI builds its --profile choices from PROFILES and must start in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from tinyconv.data.augment_config import AUGMENT_FIELDS, REFERENCE_AUGMENT, AugmentConfig
from tinyconv.checks import check_fields
from tinyconv.errors import TinyconvError
from tinyconv.model.config import get_config

# ------------------------------------------------------------------------------------------- recipe


@dataclass
class TrainConfig:
    """Every value of the recipe. The defaults are the reference notebook's recipe, i.e. the `reference` profile."""

    # model and data
    preset: str = "seed"  # model preset of tinyconv.model.config.PRESETS
    model_overrides: dict = field(default_factory=dict)  # ModelConfig fields changed on top of the preset
    classes: int | list[str] | None = None  # None: all 200; K: the first K of wnids.txt; or a list of wnids
    max_train_per_class: int | None = None  # cap on train images per class (None: all 500)
    max_val_per_class: int | None = None  # cap on val images per class during training (None: all 50)
    # schedule and optimizer
    epochs: int = 100
    batch_size: int = 128  # global batch; MirroredStrategy splits it over the GPUs
    lr: float = 3e-3  # peak learning rate, reached at the end of the warm-up
    min_lr: float = 1e-5  # the cosine decays to this value at the last epoch (epoch) or step (step)
    warmup_epochs: float = 5.0  # linear warm-up to lr
    lr_update: str = "epoch"  # epoch: lr set once per epoch, at its start (the reference) | step: every step
    weight_decay: float = 1e-5  # AdamW's decoupled weight decay
    # per_step: w <- w - weight_decay * w every step, whatever the lr (tensorflow_addons' AdamW, the
    # reference) | lr_scaled: w <- w - lr * weight_decay * w (Keras 3's AdamW, PyTorch's AdamW)
    weight_decay_mode: str = "per_step"
    beta_1: float = 0.9
    beta_2: float = 0.999
    label_smoothing: float = 0.0
    # augmentation, one nested schema (its fields are read and overridden by their own names, flat)
    augment: AugmentConfig = field(default_factory=lambda: dataclasses.replace(REFERENCE_AUGMENT))
    # execution
    # auto: on a GPU, bfloat16 under JAX and float16 under TensorFlow (compute capability >= 7) | on | off
    mixed_precision: str = "auto"
    jit_compile: str = "auto"  # XLA for the train step: auto (tinyconv.runtime.default_jit_compile) | on | off
    seed: int = 42  # weights initialisation and the data order/augmentation (the reference's SEED)
    backup_every: int = 1  # epochs between resume backups (weights + optimizer): a kill loses fewer than this

    def __getattr__(self, name):
        """`config.mix_prob` reads `config.augment.mix_prob` (called only for names that are not fields)."""
        if name in AUGMENT_FIELDS:
            return getattr(self.augment, name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def validate(self) -> TrainConfig:
        """Raise TinyconvError unless every field has its type and range (RECIPE_RULES), the fields agree, and the
        preset with model_overrides is a valid model config; returns the config.

        make_config calls it, and with it every entry point (train, the CLI, the notebooks, the sweeps), before a
        run folder is touched: a value that would fail in Keras after config.json is written is refused here.
        """
        check_fields(self, RECIPE_RULES, "recipe")
        self.augment.validate()
        if isinstance(self.classes, list) and not self.classes:
            raise TinyconvError("recipe field 'classes' is an empty list; give wnids, a count K, or none for all")
        if self.min_lr > self.lr:
            raise TinyconvError(f"recipe field 'min_lr' ({self.min_lr}) exceeds lr ({self.lr}): the schedule decays "
                                "from lr to min_lr")
        if self.warmup_epochs > self.epochs:
            raise TinyconvError(f"recipe field 'warmup_epochs' ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        for name, why in _DERIVED_MODEL_FIELDS.items():
            if name in self.model_overrides:
                raise TinyconvError(f"model.{name} cannot be overridden in a recipe: {why}")
        get_config(self.preset, **self.model_overrides)  # the model config train() will build, checked whole
        return self

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
    # The reference notebook's recipe with no deviation: the seed preset, all 200 classes, 100 epochs.
    # A GPU job (about 21 h on an M1).
    "reference": {},
    # Our recipe for the seed preset: the reference plus the changes docs/results.md lists with their
    # reasons (a crop offset and jitter factors per example instead of per batch).
    "full": {"crop_offset": "example", "jitter_factors": "example"},
    # About 10 minutes on a 2-core CPU: the tiny preset on the first 10 classes of the real data, with
    # the light augmentation that suits short schedules (crop + flip; no jitter, cutout or mixing).
    "quick": {
        "preset": "tiny",
        "seed": 0,
        "lr_update": "step",
        "weight_decay_mode": "lr_scaled",
        "crop_offset": "example",
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
        "seed": 0,
        "lr_update": "step",
        "weight_decay_mode": "lr_scaled",
        "crop_offset": "example",
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

_POSITIVE = "[1, inf)"
_RATE = "[0, 1)"
# The range of each field (tinyconv.checks.check_fields; the type is the annotation's; the augmentation's are
# AUGMENT_RULES). Every field has one (a test checks it), so a new field states its range when it is added.
RECIPE_RULES: dict = {
    "preset": None,  # a name of tinyconv.model.config.PRESETS: get_config says "unknown model preset" and lists them
    "model_overrides": None,  # a dict: its fields are ModelConfig's, checked by get_config
    "classes": _POSITIVE,  # a count; a list of wnids is checked against wnids.txt by the data
    "max_train_per_class": _POSITIVE,
    "max_val_per_class": _POSITIVE,
    "epochs": _POSITIVE,
    "batch_size": _POSITIVE,
    "lr": "(0, inf)",
    "min_lr": "[0, inf)",
    "warmup_epochs": "[0, inf)",  # and at most epochs: validate
    "lr_update": ("epoch", "step"),
    "weight_decay": "[0, inf)",
    "weight_decay_mode": ("per_step", "lr_scaled"),
    "beta_1": _RATE,
    "beta_2": _RATE,
    "label_smoothing": _RATE,
    "augment": None,  # an AugmentConfig: its own validate
    "mixed_precision": ("auto", "on", "off"),
    "jit_compile": ("auto", "on", "off"),
    "seed": "[0, 4294967295]",  # keras.utils.set_random_seed takes 0 .. 2**32 - 1
    "backup_every": _POSITIVE,
}
# ModelConfig fields a recipe sets itself: overriding them would be overwritten or mislabel the run.
_DERIVED_MODEL_FIELDS = {
    "num_classes": "the number of classes trained on sets it; use classes=K",
    "name": "it is the preset's name, which runs and saved models are read back by; use preset=NAME",
}

# Strictly these: a flag's value is never guessed ("yes", "on" and the like are refused).
_TRUE = {"1", "true"}
_FALSE = {"0", "false"}


def parse_value(name: str, text: str, hint) -> object:
    """Turn the text of an override into a value of the field's type."""
    text = text.strip()
    args = typing.get_args(hint)
    or_none = ""
    if type(None) in args:
        if text.lower() in ("none", "null", ""):
            return None
        others = [arg for arg in args if arg is not type(None)]
        hint, or_none = (others[0] if len(others) == 1 else hint), " or none"  # float | None parses as float
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise TinyconvError(f"override {name}={text!r}: expected true or false (or 1 or 0){or_none}")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise TinyconvError(f"override {name}={text!r}: expected an integer{or_none}") from None
    if hint is float:
        try:
            return float(text)  # "inf" and "nan" parse; the config's validate refuses them, like any range
        except ValueError:
            raise TinyconvError(f"override {name}={text!r}: expected a number{or_none}") from None
    if hint is str:
        return text
    if name == "classes":  # int | list[str] | None: a count (-1 too, for the range check to name), or wnids
        try:
            return int(text)
        except ValueError:
            return [wnid.strip() for wnid in text.split(",") if wnid.strip()]
    try:  # dicts, lists: JSON
        return json.loads(text)
    except json.JSONDecodeError:
        raise TinyconvError(f"override {name}={text!r}: expected JSON") from None


def field_types() -> dict:
    """Recipe field name -> type hint, the augmentation fields flat in place of `augment`."""
    hints = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        hints.update(typing.get_type_hints(AugmentConfig) if name == "augment" else {name: hint})
    return hints


def make_config(profile: str = "quick", preset: str | None = None, /, **overrides) -> TrainConfig:
    """The recipe of a profile with the preset and field overrides applied (in that order), validated whole.

    Args:
        profile: a name of PROFILES ("reference", "full", "quick", "ci").
        preset: a model preset; None keeps the profile's. It may come as a keyword too (`preset=NAME`, and so
            `--set preset=NAME` and `train(overrides={"preset": ...})`: positional-only, the name is free for
            **overrides), but not twice with two values.
        overrides: TrainConfig fields; strings are parsed as in tinyconv.training.overrides. `model_overrides`
            is merged into the profile's instead of replacing it.
    Raises:
        TinyconvError: unknown profile or field, a value of the wrong type or out of range, an invalid model.
    """
    if profile not in PROFILES:
        raise TinyconvError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    named = overrides.pop("preset", None)  # preset=NAME, or None: the profile's, as the argument says
    if preset is not None and named is not None and named != preset:
        raise TinyconvError(f"two presets, {preset!r} (--preset, the preset argument) and {named!r} "
                            "(preset= among the overrides); give one")
    preset = preset if preset is not None else named
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
            value = {} if value is None else value  # model_overrides=null: nothing to change
            if not isinstance(value, dict):  # merged below: anything else would fail there, not name the field
                raise TinyconvError(f"recipe field 'model_overrides' must be a mapping of model fields, got {value!r}")
            values["model_overrides"] = {**values.get("model_overrides", {}), **value}
        else:
            values[name] = value
    augment_values = {name: values.pop(name) for name in AUGMENT_FIELDS if name in values}
    augment = AugmentConfig(**{**REFERENCE_AUGMENT.to_dict(), **augment_values})  # validates its own values
    return TrainConfig(**values, augment=augment).validate()
