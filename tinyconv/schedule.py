"""The recipe's learning-rate schedule and optimizer: the Keras half of tinyconv.recipe.

    optimizer = build_optimizer(config, steps_per_epoch)   # AdamW on the WarmupCosine schedule

Kept apart from recipe.py because it imports Keras (and with it TensorFlow, about 3 s), while recipe.py
must stay importable by `tinyconv --help`, which builds its --profile choices from PROFILES.
"""

from __future__ import annotations

import math

import keras

from tinyconv.recipe import TrainConfig


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


def build_schedule(config: TrainConfig, steps_per_epoch: int) -> WarmupCosine:
    """The recipe's per-step schedule: linear warm-up over warmup_epochs, cosine decay to min_lr at the end."""
    return WarmupCosine(
        peak_lr=config.lr,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        total_steps=config.epochs * steps_per_epoch,
        min_lr=config.min_lr,
    )


def build_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.AdamW:
    """AdamW (decoupled weight decay, beta_1, beta_2 of the recipe) on `build_schedule`'s learning rate."""
    return keras.optimizers.AdamW(
        learning_rate=build_schedule(config, steps_per_epoch),
        weight_decay=config.weight_decay,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
    )
