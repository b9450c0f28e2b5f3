"""The training recipe, its profiles, a resumable run folder, evaluation and prediction.

    metrics = train(profile="quick")                          # runs/tiny-quick/, resumes if killed
    metrics = train(preset="seed", profile="full")            # the reference recipe (a GPU job)
    result = evaluate("runs/tiny-quick")                      # top-1/top-5/per-class on val, with flip TTA
    print(format_predictions(predict("runs/tiny-quick", ["cat.jpg"])))

The recipe (`TrainConfig`'s defaults, the `full` profile): batch 128, 100 epochs, AdamW (lr 3e-3, weight
decay 1e-5), 5 warm-up epochs then cosine decay to 1e-5 per step (`WarmupCosine`), cross-entropy on logits,
crop+flip, colour jitter, cutout, mixup/cutmix on every batch, mixed_float16 on a capable GPU.

A run folder `runs/NAME/` holds `config.json` (the resolved recipe, model config, class list), `history.csv`
(one row per epoch), `model.keras` (final), `best.keras` (best val top-1), `metrics.json`, `backup/` (resume
state: weights, optimizer state and with it the schedule position), `tb/` (TensorBoard) and `figures/`.
Starting the same command again continues from the last completed epoch; a folder holding another config
is never overwritten.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tinyconv.layers  # noqa: F401  (registers the custom layers, so saved models load after importing train)
from tinyconv.errors import TinyconvError

# ------------------------------------------------------------------------------------------- config


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
    # augmentation (tinyconv.pipeline.AugmentConfig)
    pad: int = 4  # zero padding before the random 64x64 crop
    flip: bool = True  # random horizontal flip
    jitter_prob: float = 0.8  # colour jitter probability per image
    jitter_strength: float = 0.2  # brightness/contrast/saturation factor in [1-s, 1+s], hue in [-s, s]
    cutout_prob: float = 0.7  # cutout probability per image
    cutout_half: int = 16  # half side of the cutout square
    mix_prob: float = 1.0  # probability that a batch is mixed (mixup or cutmix)
    cutmix_share: float = 0.5  # of mixed batches, the share that uses cutmix (labels by area)
    mix_alpha: float = 0.2  # Beta(alpha, alpha) per-example mixing ratio
    # execution
    mixed_precision: str = "auto"  # auto: mixed_float16 on GPUs with compute capability >= 7 | on | off
    jit_compile: str = "auto"  # XLA for the train step: auto (tinyconv.models.default_jit_compile) | on | off
    seed: int = 0  # weights initialisation and the data order/augmentation

    def augment_config(self):
        from tinyconv.pipeline import AugmentConfig

        return AugmentConfig(
            pad=self.pad,
            flip=self.flip,
            jitter_prob=self.jitter_prob,
            jitter_strength=self.jitter_strength,
            cutout_prob=self.cutout_prob,
            cutout_half=self.cutout_half,
            mix_prob=self.mix_prob,
            cutmix_share=self.cutmix_share,
            mix_alpha=self.mix_alpha,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Each profile overrides some TrainConfig fields; make_config applies a profile, then the preset, then
# the caller's overrides.
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
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _field_types() -> dict:
    return typing.get_type_hints(TrainConfig)


def _parse_value(name: str, text: str, hint) -> object:
    """Turn the text of an override into a value of the field's type."""
    text = text.strip()
    args = typing.get_args(hint)
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise TinyconvError(f"override {name}={text!r}: expected true or false")
    if hint is int or (args and int in args and list[str] not in args):
        try:
            return int(text)
        except ValueError:
            raise TinyconvError(f"override {name}={text!r}: expected an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise TinyconvError(f"override {name}={text!r}: expected a number") from None
    if hint is str:
        return text
    if name == "classes":  # int | list[str] | None: a count, or wnids separated by commas
        if text.isdigit():
            return int(text)
        return [wnid.strip() for wnid in text.split(",") if wnid.strip()]
    try:  # dicts, lists: JSON
        return json.loads(text)
    except json.JSONDecodeError:
        raise TinyconvError(f"override {name}={text!r}: expected JSON") from None


def _parse_model_value(name: str, text: str) -> object:
    """A ModelConfig override from text: JSON where it parses (numbers, lists, null), else a string."""
    from tinyconv.models import ModelConfig

    known = {f.name for f in dataclasses.fields(ModelConfig)}
    if name not in known:
        raise TinyconvError(f"unknown model field {name!r} in override model.{name}; known: {', '.join(sorted(known))}")
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if "," in text:  # widths=48,96,192
            return [_parse_model_value(name, part) for part in text.split(",")]
        return text


def parse_overrides(items) -> dict:
    """`["lr=1e-3", "classes=10", "model.depths=1,1,2"]` -> a dict typed by the TrainConfig fields.

    `model.FIELD=VALUE` items change the model config (collected under "model_overrides").
    Raises TinyconvError for an unknown field or a value of the wrong type.
    """
    hints = _field_types()
    overrides: dict = {}
    for item in items:
        if "=" not in item:
            raise TinyconvError(f"override {item!r} is not FIELD=VALUE")
        name, text = item.split("=", 1)
        name = name.strip()
        if name.startswith("model."):
            overrides.setdefault("model_overrides", {})[name[len("model.") :]] = _parse_model_value(
                name[len("model.") :], text
            )
            continue
        if name not in hints:
            raise TinyconvError(f"unknown recipe field {name!r} in override {item!r}; known: {', '.join(hints)}")
        value = _parse_value(name, text, hints[name])
        if name == "model_overrides":
            if not isinstance(value, dict):
                raise TinyconvError(f"override {item!r}: model_overrides must be a JSON object")
            overrides.setdefault("model_overrides", {}).update(value)
        else:
            overrides[name] = value
    return overrides


def make_config(profile: str = "quick", preset: str | None = None, **overrides) -> TrainConfig:
    """The recipe of a profile with the preset and field overrides applied (in that order).

    Args:
        profile: "full", "quick" or "ci".
        preset: a model preset; None keeps the profile's.
        overrides: TrainConfig fields; strings are parsed as in `parse_overrides`. `model_overrides`
            is merged into the profile's instead of replacing it.
    Raises:
        TinyconvError: unknown profile or field, or a value out of range.
    """
    if profile not in PROFILES:
        raise TinyconvError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    hints = _field_types()
    values = {key: (dict(value) if isinstance(value, dict) else value) for key, value in PROFILES[profile].items()}
    if preset is not None:
        values["preset"] = preset
    for name, value in overrides.items():
        if name not in hints:
            raise TinyconvError(f"unknown recipe field {name!r}; known: {', '.join(hints)}")
        if isinstance(value, str) and hints[name] is not str:
            value = _parse_value(name, value, hints[name])
        if name == "model_overrides":
            values["model_overrides"] = {**values.get("model_overrides", {}), **(value or {})}
        else:
            values[name] = value
    config = TrainConfig(**values)
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
    config.augment_config()  # validates the augmentation values


# ----------------------------------------------------------------------------------------- schedule


@keras.saving.register_keras_serializable(package="tinyconv")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_lr`, then cosine decay to `min_lr`, evaluated per optimizer step.

    lr(step) = peak_lr * (step + 1) / warmup_steps                         for step < warmup_steps
             = min_lr + (peak_lr - min_lr) * (1 + cos(pi * p)) / 2          p = (step - warmup) / (total - warmup)
    so the first update already moves, the peak is reached at the last warm-up step and lr(total_steps)
    = min_lr. The optimizer's step counter is part of its saved state, so a resumed run continues on
    the same curve.
    """

    def __init__(self, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 1e-5):
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warm = self.peak_lr * (step + 1.0) / warmup
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = keras.ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "min_lr": self.min_lr,
        }


# ------------------------------------------------------------------------------------------ files


def _atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_write_json(path: Path, obj) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _atomic_save_model(model: keras.Model, path: Path) -> None:
    """model.save to a temp `.keras` file beside `path` (Keras wants the suffix), then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _atomic_save_weights(model: keras.Model, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)


HISTORY_COLUMNS = (
    "epoch",  # 0-based
    "loss",
    "top1",
    "top5",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",  # at the epoch's last step
    "epoch_s",  # wall time of the epoch, validation included
    "train_s",  # wall time of the epoch's training steps
    "images_per_s",  # train images / train_s
)


def read_history(path) -> list[dict]:
    """The rows of a history.csv: epoch as int, every other column as float."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                if key == "epoch":
                    parsed[key] = int(value)
                else:
                    parsed[key] = float(value) if value not in ("", None) else float("nan")
            rows.append(parsed)
    return rows


def _write_history(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (row.get(key, "") if key == "epoch" else _fmt(row.get(key))) for key in HISTORY_COLUMNS})
    _atomic_write_text(path, buffer.getvalue())


def _fmt(value) -> str:
    if value is None:
        return ""
    return repr(float(value))


# -------------------------------------------------------------------------------------- callbacks


class _NonFiniteLoss(keras.callbacks.Callback):
    """Stop with a TinyconvError as soon as the training loss is NaN or infinite.

    It comes first among the epoch-end callbacks, so a diverged epoch is never backed up nor saved
    as best: the last good state stays in backup/ and best.keras.
    """

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where: str):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            backup = self.run_dir / "backup"
            kept = (
                f"the last good state (end of epoch {self._epoch}) is kept in {backup} and best.keras"
                if self._epoch > 0 and backup.exists()
                else "no epoch had completed, nothing was saved"
            )
            raise TinyconvError(
                f"training diverged in {self.run_dir}: the loss became {float(loss)} at epoch {self._epoch + 1}"
                f"{where}; {kept}. Lower lr (--set lr=...) and train into a new --out folder"
            )

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f", step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "")


class _History(keras.callbacks.Callback):
    """Time each epoch and write history.csv atomically, one row per completed epoch.

    Rows of epochs at or after the first epoch of this session are dropped before writing, so a
    resumed run never holds the same epoch twice, whatever the moment of the kill.
    """

    def __init__(self, path: Path, train_images_per_epoch: int, lr_at_epoch_end):
        super().__init__()
        self.path = path
        self.train_images_per_epoch = train_images_per_epoch
        self.lr_at_epoch_end = lr_at_epoch_end
        self._rows = None  # the file's rows, read once when the session's first epoch begins
        self._epoch_start = 0.0
        self._train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._rows is None:
            rows = read_history(self.path)
            self._rows = [row for row in rows if row["epoch"] < epoch]
            if len(self._rows) != len(rows):
                _write_history(self.path, self._rows)
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        train_s = (self._train_end or now) - self._epoch_start
        logs = logs or {}
        row = {key: logs.get(key) for key in HISTORY_COLUMNS[1:7]}
        row.update(
            epoch=epoch,
            lr=self.lr_at_epoch_end(epoch),
            epoch_s=now - self._epoch_start,
            train_s=train_s,
            images_per_s=self.train_images_per_epoch / max(train_s, 1e-9),
        )
        self._rows = [r for r in self._rows if r["epoch"] < epoch] + [row]
        _write_history(self.path, self._rows)


class _TensorBoardScalars(keras.callbacks.Callback):
    """Per-epoch scalars in TensorBoard's layout (tb/train, tb/validation; tags epoch_loss, epoch_top1, ...).

    Written with tf.summary.write and the scalars-plugin metadata, so it needs only TensorFlow; the
    `tensorboard` package (not a dependency) is only needed to view them: `tensorboard --logdir runs/NAME/tb`.
    keras.callbacks.TensorBoard would need that package at training time.
    """

    def __init__(self, log_dir: Path, lr_at_epoch_end):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.lr_at_epoch_end = lr_at_epoch_end
        self._writers = {}

    def _writer(self, name: str):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.log_dir / name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        logs = dict(logs or {})
        logs["learning_rate"] = self.lr_at_epoch_end(epoch)
        for name, prefix in (("train", ""), ("validation", "val_")):
            writer = self._writer(name)
            with writer.as_default():
                for key, value in logs.items():
                    is_val = key.startswith("val_")
                    if is_val != (prefix == "val_"):
                        continue
                    tag = "epoch_" + key[len(prefix) :]
                    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=epoch, metadata=metadata)
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class _BestCheckpoint(keras.callbacks.Callback):
    """Save best.keras (atomically) whenever val top-1 beats the best of the epochs so far, resumed ones included."""

    def __init__(self, path: Path, history_path: Path, monitor: str = "val_top1"):
        super().__init__()
        self.path = path
        self.history_path = history_path
        self.monitor = monitor
        self.best = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.best is None:
            earlier = [row[self.monitor] for row in read_history(self.history_path) if row["epoch"] < epoch]
            earlier = [value for value in earlier if math.isfinite(value)]
            self.best = max(earlier) if earlier and self.path.exists() else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            _atomic_save_model(self.model, self.path)


class _ResumableBackup(keras.callbacks.BackupAndRestore):
    """keras BackupAndRestore whose state survives a kill -9 at any moment.

    The stock callback overwrites latest.weights.h5 in place and then writes the epoch, so a kill in
    between leaves torn or mismatched files. Here each backup is a new `epoch-NNNN.weights.h5` written
    to a temp name and renamed, and only then does `training_metadata.json` (renamed into place too)
    point at it; older weight files are removed after that. The weights file holds the optimizer state,
    whose step counter drives WarmupCosine, so the schedule resumes exactly.
    """

    def __init__(self, backup_dir: Path):
        super().__init__(backup_dir=str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.backup_path = Path(backup_dir)
        meta_path = self.backup_path / "training_metadata.json"
        self._meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        # completed epochs of the backup this run resumes from (0: none); train() starts the data there too
        self.restored_epoch = int(self._meta["epoch"]) if self._meta else 0

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        if self._meta is None:
            return
        weights = self.backup_path / self._meta["weights"]
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        self.model._initial_epoch = self.restored_epoch

    def _save_model(self):
        self.backup_path.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:04d}.weights.h5"
        _atomic_save_weights(self.model, self.backup_path / name)
        _atomic_write_json(self.backup_path / "training_metadata.json", {"epoch": self._current_epoch, "weights": name})
        for old in self.backup_path.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


class _ThroughputEstimate(keras.callbacks.Callback):
    """Time a few training steps of the session's first epoch, then print images/s and the time to finish.

    It measures the real run (no separate trial run): the first `skip` steps (tracing, compilation, the
    input pipeline filling up) are not timed, the next `measure` steps are.
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, epochs: int, skip: int = 3, measure: int = 20):
        super().__init__()
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.skip = max(1, min(skip, steps_per_epoch - 1))
        self.measure = min(measure, steps_per_epoch - self.skip)
        self._epoch = None
        self._first_epoch = None
        self._t0 = None
        self.images_per_s = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.images_per_s is not None or self._epoch != self._first_epoch or self.measure < 1:
            return
        if batch == self.skip - 1:
            self._t0 = time.perf_counter()
        elif self._t0 is not None and batch == self.skip - 1 + self.measure:
            steps_per_s = self.measure / max(time.perf_counter() - self._t0, 1e-9)
            self.images_per_s = steps_per_s * self.batch_size
            remaining = self.epochs - self._first_epoch
            eta = remaining * self.steps_per_epoch / steps_per_s
            print(
                f"\nthroughput: {self.images_per_s:,.0f} train images/s (steps {self.skip + 1}-{batch + 1} of epoch "
                f"{self._first_epoch + 1}); estimated {_format_duration(eta)} of training steps for the "
                f"{remaining} epochs to go, validation not included",
                flush=True,
            )


class _EpochSleep(keras.callbacks.Callback):
    """Sleep after each epoch; only for the resume test ($TINYCONV_TEST_EPOCH_SLEEP seconds)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


def _format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plot_history(rows: list[dict], title: str = ""):
    """A matplotlib Figure with loss and top-1 curves (train and val) per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] + 1 for row in rows]
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "top1", "top-1 accuracy")):
        ax.plot(epochs, [row.get(key) for row in rows], marker="o", markersize=3, label="train")
        ax.plot(epochs, [row.get(f"val_{key}") for row in rows], marker="o", markersize=3, label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


class LiveCurves(keras.callbacks.Callback):
    """Redraw loss and top-1 curves inline in a notebook each time an epoch ends; a no-op outside IPython.

    Args:
        history_path: a history.csv to plot (so a resumed run shows its earlier epochs too). `train`
            sets it to the run's history.csv when left None; otherwise the callback plots the epochs it saw.
        title: figure title.
    """

    def __init__(self, history_path=None, title: str = ""):
        super().__init__()
        self.history_path = Path(history_path) if history_path else None
        self.title = title
        self.rows: list[dict] = []
        self._handle = None

    @staticmethod
    def _in_ipython() -> bool:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        return get_ipython() is not None

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if row["epoch"] < epoch]
        self.rows.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        if not self._in_ipython():
            return
        from IPython.display import Image, display

        rows = read_history(self.history_path) if self.history_path and self.history_path.exists() else self.rows
        image = Image(data=_figure_png(plot_history(rows, self.title)), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


# ---------------------------------------------------------------------------------------- devices


def _gpu_capabilities() -> list[tuple[str, tuple[int, int] | None]]:
    gpus = tf.config.list_physical_devices("GPU")
    result = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        result.append((details.get("device_name", gpu.name), details.get("compute_capability")))
    return result


def describe_device() -> str:
    """A short description of where training runs, e.g. 'CPU (2 cores)' or '1x NVIDIA H100 80GB HBM3'."""
    gpus = _gpu_capabilities()
    if gpus:
        names = sorted({name for name, _ in gpus})
        return f"{len(gpus)}x {', '.join(names)}"
    return f"CPU ({os.cpu_count()} cores)"


def _use_mixed_precision(setting: str) -> bool:
    gpus = _gpu_capabilities()
    capable = bool(gpus) and all(cc is not None and tuple(cc) >= (7, 0) for _, cc in gpus)
    if setting == "on" and not capable:
        raise TinyconvError("mixed_precision=on needs a GPU with compute capability >= 7; use auto or off")
    return capable if setting == "auto" else setting == "on"


def _use_jit(setting: str) -> bool:
    if setting != "auto":
        return setting == "on"
    from tinyconv.runtime import default_jit_compile

    return default_jit_compile()


def _strategy():
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


# ------------------------------------------------------------------------------------------- data


def _resolve_classes(data_dir: Path, classes) -> tuple[list[str], list[str], dict[str, str]]:
    """(wnids, short names, full words.txt entries) of the classes a config selects."""
    from tinyconv.dataset import class_names, dataset_root, read_wnids, read_words, select_classes

    root = dataset_root(data_dir)
    wnids = list(select_classes(read_wnids(root), classes))
    words = read_words(root)
    return wnids, list(class_names(root, wnids)), {wnid: words.get(wnid, wnid) for wnid in wnids}


def _cap_per_class(images: np.ndarray, labels: np.ndarray, cap: int | None):
    """The first `cap` images of each class, in their original order ([N', 64, 64, 3], [N'])."""
    if cap is None:
        return images, labels
    keep = np.concatenate([np.flatnonzero(labels == c)[:cap] for c in np.unique(labels)])
    keep.sort()
    return np.asarray(images[keep]), np.asarray(labels[keep])


# -------------------------------------------------------------------------------------------- runs


def default_runs_dir() -> Path:
    """$TINYCONV_RUNS_DIR, else the repository's runs/."""
    env = os.environ.get("TINYCONV_RUNS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "runs"


_COMPARED_KEYS = ("profile", "train", "model", "wnids")


def _check_run_dir(run_dir: Path, doc: dict) -> str:
    """'new', 'resume' or 'complete'; raises TinyconvError if the folder belongs to something else."""
    config_path = run_dir / "config.json"
    if config_path.exists():
        try:
            existing = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TinyconvError(f"{config_path}: unreadable run config ({exc}); use another --out") from None
        differences = _differences(existing, doc)
        if differences:
            raise TinyconvError(
                f"{config_path} holds a different run ({'; '.join(differences[:4])}); "
                "use another --out, or delete the folder to start over"
            )
        return "complete" if (run_dir / "metrics.json").exists() else "resume"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise TinyconvError(f"{run_dir} is not empty and holds no config.json; refusing to write a run into it")
    return "new"


def _differences(existing: dict, doc: dict) -> list[str]:
    out = []
    for key in _COMPARED_KEYS:
        old, new = existing.get(key), json.loads(json.dumps(doc.get(key), default=_json_default))
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    out.append(f"{key}.{name}: {old.get(name)!r} there, {new.get(name)!r} now")
        elif old != new:
            out.append(f"{key} differs" if key == "wnids" else f"{key}: {old!r} there, {new!r} now")
    return out


def _compiled_model(model_config, config: TrainConfig, schedule, *, mixed: bool, jit: bool, strategy):
    """build_model + compile with the recipe's optimizer, loss and metrics, in the strategy's scope.

    Under mixed precision the layers are built with the mixed_float16 policy (Keras then wraps AdamW in a
    LossScaleOptimizer); the global policy is restored afterwards.
    """
    from tinyconv.models import build_model

    num_classes = model_config.num_classes
    previous_policy = keras.config.dtype_policy()
    try:
        if mixed:
            keras.config.set_dtype_policy("mixed_float16")
        with strategy.scope():
            model = build_model(model_config)
            model.compile(
                optimizer=keras.optimizers.AdamW(
                    learning_rate=schedule,
                    weight_decay=config.weight_decay,
                    beta_1=config.beta_1,
                    beta_2=config.beta_2,
                ),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
                metrics=[
                    keras.metrics.CategoricalAccuracy(name="top1"),
                    # k is capped for runs on fewer than 5 classes (ci); the name stays top5
                    keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
                ],
                jit_compile=jit,
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model


def train(
    preset: str | None = None,
    profile: str = "quick",
    data_dir=None,
    out=None,
    overrides: dict | None = None,
    callbacks=(),
) -> dict:
    """Train with a recipe profile into a run folder; resume it if it was interrupted.

    Args:
        preset: model preset; None keeps the profile's (full: seed, quick/ci: tiny).
        profile: "full", "quick" or "ci" (see PROFILES).
        data_dir: the folder holding tiny-imagenet-200/ (default: tinyconv.dataset.default_data_dir()).
        out: the run folder (default: runs/<preset>-<profile>).
        overrides: TrainConfig fields (see parse_overrides / make_config).
        callbacks: extra Keras callbacks, e.g. LiveCurves() in a notebook.
    Returns:
        metrics: top1, top5, val_loss (final epoch, fractions), best_top1, best_epoch, params, wall_s,
        images_per_s, device, epochs, ...; also written to metrics.json.
    Raises:
        TinyconvError: bad config, a run folder holding another config, missing data, a diverged loss.
    """
    from tinyconv.dataset import default_data_dir, load_split
    from tinyconv.models import get_config
    from tinyconv.pipeline import eval_dataset, train_dataset

    config = make_config(profile, preset, **(overrides or {}))
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    run_dir = Path(out) if out else default_runs_dir() / f"{config.preset}-{profile}"

    wnids, names, words = _resolve_classes(data_dir, config.classes)
    model_config = get_config(config.preset, **{**config.model_overrides, "num_classes": len(wnids)})
    doc = {
        "profile": profile,
        "preset": config.preset,
        "train": config.to_dict(),
        "model": model_config.to_dict(),
        "wnids": wnids,
        "names": names,
        "words": [words[wnid] for wnid in wnids],
        "data_dir": str(data_dir),
    }
    state = _check_run_dir(run_dir, doc)
    if state == "complete":
        metrics = json.loads((run_dir / "metrics.json").read_text())
        print(
            f"{run_dir} already holds this run, complete ({metrics.get('epochs')} epochs, "
            f"val top-1 {metrics.get('top1', float('nan')):.2%}); returning its metrics without training"
        )
        return metrics

    train_split = load_split(data_dir, "train", classes=wnids)
    val_split = load_split(data_dir, "val", classes=wnids)
    train_images, train_labels = _cap_per_class(train_split.images, train_split.labels, config.max_train_per_class)
    val_images, val_labels = _cap_per_class(val_split.images, val_split.labels, config.max_val_per_class)
    num_classes = len(wnids)
    steps_per_epoch = len(train_labels) // config.batch_size
    if steps_per_epoch < 1:
        raise TinyconvError(
            f"{len(train_labels)} train images in {data_dir} cannot fill one batch of {config.batch_size}; "
            "lower batch_size"
        )

    mixed = _use_mixed_precision(config.mixed_precision)
    jit = _use_jit(config.jit_compile)
    device = describe_device()
    doc.update(mixed_precision=mixed, jit_compile=jit, device=device, steps_per_epoch=steps_per_epoch)
    if state == "new":
        run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(run_dir / "config.json", doc)
        print(f"training {config.preset} ({profile}) into {run_dir}: {len(train_labels)} train / {len(val_labels)} "
              f"val images, {num_classes} classes, {config.epochs} epoch(s) of {steps_per_epoch} steps on {device}")

    keras.utils.set_random_seed(config.seed)
    strategy = _strategy()
    schedule = WarmupCosine(
        peak_lr=config.lr,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        total_steps=config.epochs * steps_per_epoch,
        min_lr=config.min_lr,
    )
    model = _compiled_model(model_config, config, schedule, mixed=mixed, jit=jit, strategy=strategy)

    backup = _ResumableBackup(run_dir / "backup")  # reads the resume state once
    done = backup.restored_epoch
    train_ds = train_dataset(
        train_images,
        train_labels,
        num_classes,
        config.batch_size,
        augment=config.augment_config(),
        seed=config.seed,
        start_epoch=done,  # a resumed run sees the same data order and augmentation as an uninterrupted one
    )  # its cardinality is already steps_per_epoch (count // batch_size, drop_remainder)
    val_ds = eval_dataset(val_images, val_labels, num_classes, config.batch_size)

    history_path = run_dir / "history.csv"
    estimate = _ThroughputEstimate(config.batch_size, steps_per_epoch, config.epochs)
    user_callbacks = list(callbacks)
    for callback in user_callbacks:
        if isinstance(callback, LiveCurves) and callback.history_path is None:
            callback.history_path = history_path

    def lr_at_epoch_end(epoch: int) -> float:  # the lr of the epoch's last step
        return float(schedule((epoch + 1) * steps_per_epoch - 1))

    run_callbacks = [
        _NonFiniteLoss(run_dir),  # first: a diverged epoch must not reach the history, best or backup
        estimate,
        _History(history_path, steps_per_epoch * config.batch_size, lr_at_epoch_end),
        _BestCheckpoint(run_dir / "best.keras", history_path),
        _TensorBoardScalars(run_dir / "tb", lr_at_epoch_end),
        *user_callbacks,
    ]
    run_callbacks.append(backup)  # last: back up only an epoch every other callback has finished
    sleep = float(os.environ.get("TINYCONV_TEST_EPOCH_SLEEP", "0") or 0)
    if sleep > 0:  # the resume test kills the process during this pause, after a backed-up epoch
        run_callbacks.append(_EpochSleep(sleep))

    if done:
        print(f"resuming {run_dir} from epoch {done + 1} of {config.epochs} (epochs 1-{done} are done)", flush=True)
    elif state == "resume":
        print(f"resuming {run_dir}: no completed epoch was backed up, starting at epoch 1", flush=True)

    verbose = 1 if sys.stdout.isatty() else 2
    fit_start = time.perf_counter()
    try:
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            callbacks=run_callbacks,
            verbose=verbose,
            shuffle=False,  # train_dataset reshuffles every epoch itself
        )
    except KeyboardInterrupt:
        done = len(read_history(history_path))
        print(f"\ninterrupted after {done} completed epoch(s); run the same command again to resume {run_dir}",
              file=sys.stderr, flush=True)
        raise
    session_s = time.perf_counter() - fit_start

    rows = read_history(history_path)
    if len(rows) != config.epochs or [row["epoch"] for row in rows] != list(range(config.epochs)):
        raise TinyconvError(
            f"{history_path} holds epochs {[row['epoch'] for row in rows]} after training; expected 0..{config.epochs - 1}"
        )
    _atomic_save_model(model, run_dir / "model.keras")
    if not (run_dir / "best.keras").exists():
        _atomic_save_model(model, run_dir / "best.keras")
    (run_dir / "figures").mkdir(exist_ok=True)
    fig = plot_history(rows, title=f"{config.preset} ({profile}), {num_classes} classes")
    _atomic_write_bytes(run_dir / "figures" / "curves.png", _figure_png(fig))

    last = rows[-1]
    best = max(rows, key=lambda row: row["val_top1"] if math.isfinite(row["val_top1"]) else -1.0)
    train_seconds = sum(row["train_s"] for row in rows)
    metrics = {
        "top1": last["val_top1"],
        "top5": last["val_top5"],
        "val_loss": last["val_loss"],
        "train_top1": last["top1"],
        "train_loss": last["loss"],
        "best_top1": best["val_top1"],
        "best_epoch": best["epoch"] + 1,
        "epochs": len(rows),
        "params": int(model.count_params()),
        "wall_s": sum(row["epoch_s"] for row in rows),
        "train_s": train_seconds,
        # the median epoch: the first epoch of each session also pays for tracing and compilation
        "images_per_s": float(np.median([row["images_per_s"] for row in rows])),
        "last_session_s": session_s,
        "device": device,
        "mixed_precision": mixed,
        "jit_compile": jit,
        "preset": config.preset,
        "profile": profile,
        "classes": num_classes,
        "train_images": int(len(train_labels)),
        "val_images": int(len(val_labels)),
        "run_dir": str(run_dir),
    }
    _atomic_write_json(run_dir / "metrics.json", metrics)
    _remove_backup(run_dir / "backup")
    print(
        f"done: val top-1 {metrics['top1']:.2%}, top-5 {metrics['top5']:.2%} after {metrics['epochs']} epochs "
        f"({_format_duration(metrics['wall_s'])}, {metrics['images_per_s']:,.0f} train images/s); {run_dir}"
    )
    return metrics


def _remove_backup(backup_dir: Path) -> None:
    if not backup_dir.exists():
        return
    for path in backup_dir.iterdir():
        path.unlink(missing_ok=True)
    backup_dir.rmdir()


# -------------------------------------------------------------------------------- evaluate, predict


def _resolve_model_path(path: Path) -> Path:
    if path.is_dir():
        for name in ("model.keras", "best.keras"):
            if (path / name).exists():
                return path / name
        raise TinyconvError(f"{path} holds no model.keras or best.keras")
    if not path.exists():
        raise TinyconvError(f"{path}: no such model file")
    if path.suffix != ".keras":
        raise TinyconvError(f"{path}: not a .keras model file")
    return path


def load_run_model(model_or_path):
    """(keras.Model, run config dict or None, model path or None) for a model, a .keras file or a run folder.

    The run config is the config.json beside the model file (class list and names).
    """
    if isinstance(model_or_path, keras.Model):
        return model_or_path, None, None

    path = _resolve_model_path(Path(model_or_path))
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # a truncated zip, a foreign file, an unknown layer: all one-line errors
        raise TinyconvError(f"{path}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    config_path = path.parent / "config.json"
    run = None
    if config_path.exists():
        try:
            run = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TinyconvError(f"{config_path}: unreadable run config ({exc})") from None
    return model, run, path


def _class_info(model, run, data_dir, classes=None) -> tuple[list[str], list[str], list[str]]:
    """(wnids, short names, words entries) of the model's outputs."""
    num_outputs = int(model.output_shape[-1])
    if run and run.get("wnids"):
        wnids = list(run["wnids"])
        names = list(run.get("names") or wnids)
        words = list(run.get("words") or names)
    else:
        from tinyconv.dataset import default_data_dir

        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        wnids, names, words_by_wnid = _resolve_classes(data_dir, classes if classes is not None else num_outputs)
        words = [words_by_wnid[wnid] for wnid in wnids]
    if len(wnids) != num_outputs:
        raise TinyconvError(f"the model has {num_outputs} outputs but its class list names {len(wnids)} classes")
    return wnids, names, words


def predict_logits(model, images: np.ndarray, batch_size: int = 256, flip: bool = False) -> np.ndarray:
    """Logits [N, K] for uint8 images [N, 64, 64, 3]; flip=True mirrors them left-right first."""
    from tinyconv.pipeline import _gather_fn, normalize

    ds = tf.data.Dataset.range(len(images)).batch(batch_size)
    read = _gather_fn(images)  # the pipelines' batch reader: images[idx] from an array or memmap

    def load(idx):
        x = normalize(read(idx))  # [B, 64, 64, 3]
        return tf.reverse(x, axis=[2]) if flip else x

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [N, K]."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _accuracies(probs: np.ndarray, labels: np.ndarray, wnids, names) -> dict:
    top_k = min(5, probs.shape[-1])
    ranked = np.argsort(-probs, axis=-1)[:, :top_k]  # [N, k]
    correct1 = ranked[:, 0] == labels
    correct5 = (ranked == labels[:, None]).any(axis=-1)
    per_class = []
    for index, (wnid, name) in enumerate(zip(wnids, names)):
        mask = labels == index
        count = int(mask.sum())
        per_class.append(
            {
                "wnid": wnid,
                "name": name,
                "images": count,
                "top1": float(correct1[mask].mean()) if count else float("nan"),
                "top5": float(correct5[mask].mean()) if count else float("nan"),
            }
        )
    return {"top1": float(correct1.mean()), "top5": float(correct5.mean()), "per_class": per_class}


def evaluate(model_or_path, data_dir=None, tta: bool = True, *, classes=None, batch_size: int = 256) -> dict:
    """Top-1, top-5 and per-class accuracy on the official val images of the model's classes.

    Args:
        model_or_path: a keras.Model, a .keras file or a run folder (its model.keras). The class list comes
            from the run's config.json; a bare model uses `classes` or the first K classes of wnids.txt.
        data_dir: the folder holding tiny-imagenet-200/ (default: tinyconv.dataset.default_data_dir()).
        tta: also score the average of the softmax of x and of x flipped left-right.
        classes: for a model without a run config: None (first K) or a list of wnids.
    Returns:
        {"model", "classes", "images", "top1", "top5", "per_class": [{wnid, name, images, top1, top5}],
         "tta": {"top1", "top5", "per_class"} or None}; accuracies are fractions.
    """
    from tinyconv.dataset import default_data_dir, load_split

    model, run, path = load_run_model(model_or_path)
    wnids, names, _ = _class_info(model, run, data_dir, classes)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    val = load_split(data_dir, "val", classes=wnids)
    labels = np.asarray(val.labels, dtype=np.int64)
    probs = softmax(predict_logits(model, val.images, batch_size))  # [N, K]
    result = {
        "model": str(path) if path else model.name,
        "classes": len(wnids),
        "images": int(len(labels)),
        **_accuracies(probs, labels, wnids, names),
        "tta": None,
    }
    if tta:
        flipped = softmax(predict_logits(model, val.images, batch_size, flip=True))
        result["tta"] = _accuracies((probs + flipped) / 2.0, labels, wnids, names)
    return result


def format_evaluation(result: dict, rows: int = 10) -> str:
    """A readable summary: overall top-1/top-5 (with TTA if present) and the worst and best classes."""
    lines = [f"model: {result['model']}   classes: {result['classes']}   val images: {result['images']}"]
    line = f"top-1 {result['top1']:.2%}   top-5 {result['top5']:.2%}"
    tta = result.get("tta")
    if tta:
        line += f"   with flip TTA: top-1 {tta['top1']:.2%}   top-5 {tta['top5']:.2%}"
    lines.append(line)
    per_class = sorted(result["per_class"], key=lambda c: (c["top1"], c["wnid"]))
    if len(per_class) <= 2 * rows:
        lines.append("per-class top-1:")
        shown = [("", per_class)]
    else:
        shown = [(f"worst {rows}", per_class[:rows]), (f"best {rows}", per_class[-rows:])]
    for heading, entries in shown:
        if heading:
            lines.append(f"per-class top-1, {heading}:")
        for entry in entries:
            lines.append(f"  {entry['top1']:7.1%}  {entry['name']} ({entry['wnid']}, {entry['images']} images)")
    return "\n".join(lines)


def load_image(path) -> np.ndarray:
    """A JPEG or PNG of any size as uint8 [64, 64, 3] RGB (EXIF rotation applied, resized with antialiasing)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise TinyconvError(f"{path}: no such image file")
    if path.is_dir():
        raise TinyconvError(f"{path}: is a folder, not an image file")
    try:
        with Image.open(path) as picture:
            if picture.format not in ("JPEG", "PNG", "MPO"):
                raise TinyconvError(f"{path}: a {picture.format} image; only JPEG and PNG are supported")
            picture = ImageOps.exif_transpose(picture).convert("RGB")
            picture = picture.resize((64, 64), Image.Resampling.BICUBIC)
            return np.asarray(picture, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise TinyconvError(f"{path}: not a readable JPEG or PNG image ({type(exc).__name__})") from None


def predict(model_or_path, images, data_dir=None, top: int = 5) -> list[dict]:
    """The `top` most likely classes, with names, for each image.

    Args:
        model_or_path: a keras.Model, a .keras file or a run folder.
        images: a path or a list of paths to JPEG/PNG files of any size (resized to 64x64 RGB), or a uint8
            array [N, 64, 64, 3].
        data_dir: only needed for a model without a run config.json (names come from words.txt).
        top: how many classes per image.
    Returns:
        one dict per image: {"image": path or index, "top": [{"rank", "wnid", "name", "words", "probability"}]}
    """
    if top < 1:
        raise TinyconvError(f"top must be >= 1, got {top}")
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[1:] != (64, 64, 3):
            raise TinyconvError(f"images must be uint8 [N, 64, 64, 3], got {images.dtype} {images.shape}")
        pixels, labels = images.astype(np.uint8), [str(i) for i in range(len(images))]
    else:
        paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        if not paths:
            raise TinyconvError("no images given")
        pixels = np.stack([load_image(p) for p in paths])  # [N, 64, 64, 3]
        labels = [str(p) for p in paths]
    model, run, _ = load_run_model(model_or_path)
    wnids, names, words = _class_info(model, run, data_dir)
    probs = softmax(predict_logits(model, pixels, batch_size=64))  # [N, K]
    results = []
    for label, row in zip(labels, probs):
        ranked = np.argsort(-row)[: min(top, len(wnids))]
        results.append(
            {
                "image": label,
                "top": [
                    {
                        "rank": rank + 1,
                        "wnid": wnids[i],
                        "name": names[i],
                        "words": words[i],
                        "probability": float(row[i]),
                    }
                    for rank, i in enumerate(ranked)
                ],
            }
        )
    return results


def format_predictions(result: list[dict]) -> str:
    """One block per image: rank, probability, name and wnid."""
    lines = []
    for entry in result:
        lines.append(entry["image"])
        for guess in entry["top"]:
            lines.append(f"  {guess['rank']}. {guess['probability']:6.1%}  {guess['name']} ({guess['wnid']})")
    return "\n".join(lines)
