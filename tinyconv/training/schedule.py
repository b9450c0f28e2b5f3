"""The recipe's learning-rate schedules and optimizer: the Keras half of tinyconv.training.recipe.

    optimizer = build_optimizer(config, steps_per_epoch)   # AdamW (per-step or lr-scaled decay) on the schedule
    schedule = build_schedule(config, steps_per_epoch)     # EpochWarmupCosine (lr_update=epoch) or WarmupCosine
    lr = lr_at_epoch_end(schedule, steps_per_epoch, epoch) # the lr of an epoch's last step (history, TensorBoard)

Two schedules, both evaluated on the optimizer's step counter (saved with the optimizer, so a resumed run
continues on the same curve), both plain keras.ops (any backend):
    EpochWarmupCosine  the reference notebook's: the lr set once per epoch, at its start (`lr_update: epoch`)
    WarmupCosine       the same shape evaluated at every step (`lr_update: step`; unchanged since before)
Two weight-decay modes (`weight_decay_mode`):
    per_step   AdamWPerStepDecay: w <- w - weight_decay * w every step, whatever the lr (tensorflow_addons'
               AdamW, which the reference used)
    lr_scaled  keras.optimizers.AdamW: w <- w - lr * weight_decay * w (Keras 3's and PyTorch's AdamW)

Kept apart from recipe.py because it imports Keras (and with it TensorFlow), while recipe.py
must stay importable by `tinyconv --help`, which builds its --profile choices from PROFILES.
"""

from __future__ import annotations

import math

import keras

from tinyconv.errors import TinyconvError
from tinyconv.training.recipe import TrainConfig

ADAM_EPSILON = 1e-7  # Keras' (and tensorflow_addons') default, the reference's value


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


@keras.saving.register_keras_serializable(package="tinyconv")
class EpochWarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """The reference notebook's schedule: the lr set once per epoch, at its start, constant within the epoch.

    For epoch e = step // steps_per_epoch (0-based), W warm-up epochs and E epochs:
        lr(e) = peak_lr * (e + 1) / W                                       for e < W
              = min_lr + (peak_lr - min_lr) * (1 + cos(pi * p)) / 2          p = (e - W) / (E - W - 1)
    so epoch 0 trains at peak/W, the peak is reached at the last warm-up epoch (and held at the first
    cosine epoch) and the last epoch, E - 1, trains at exactly min_lr. With the reference's numbers (peak
    3e-3, W 5, E 100): 6e-4, 1.2e-3, ..., 3e-3, 3e-3, ..., 1e-5. A fractional W caps the warm-up at the
    peak; W = 0 starts on the cosine.

    A class of its own rather than an option of WarmupCosine: the two curves differ in more than their
    granularity. The reference's cosine ends at its last *used* epoch (denominator E - W - 1), WarmupCosine's
    one step past the last used step (denominator total - warmup), so a `steps_per_update` option would also
    have to change the end point; two small classes keep each formula readable, and WarmupCosine's saved
    configs (and runs resumed from them) stay exactly as they were.
    """

    def __init__(self, peak_lr: float, warmup_epochs: float, epochs: int, steps_per_epoch: int,
                 min_lr: float = 1e-5):
        if int(steps_per_epoch) < 1 or int(epochs) < 1:
            raise ValueError(
                f"EpochWarmupCosine needs epochs and steps_per_epoch >= 1, got {epochs}, {steps_per_epoch}"
            )
        self.peak_lr = float(peak_lr)
        self.warmup_epochs = float(warmup_epochs)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = keras.ops.cast(step, "int32")
        epoch = keras.ops.cast(keras.ops.floor_divide(step, self.steps_per_epoch), "float32")
        return self.epoch_lr(epoch)

    def epoch_lr(self, epoch):
        """The lr of a 0-based epoch (a number or a float32 tensor)."""
        epoch = keras.ops.cast(epoch, "float32")
        warmup = self.warmup_epochs
        warm = self.peak_lr * keras.ops.minimum((epoch + 1.0) / max(warmup, 1e-12), 1.0)
        decay_epochs = max(self.epochs - warmup - 1.0, 1.0)
        progress = keras.ops.clip((epoch - warmup) / decay_epochs, 0.0, 1.0)
        cosine = self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(epoch < warmup, warm, cosine)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "warmup_epochs": self.warmup_epochs,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "min_lr": self.min_lr,
        }


@keras.saving.register_keras_serializable(package="tinyconv")
class AdamWPerStepDecay(keras.optimizers.AdamW):
    """AdamW whose decoupled weight decay is NOT scaled by the learning rate: tensorflow_addons' AdamW.

    Every step, before the Adam update, each trainable weight (all of them: nothing is excluded unless
    `exclude_from_weight_decay` says so) shrinks by `weight_decay`:
        w <- w - weight_decay * w          (Keras' AdamW: w <- w - lr * weight_decay * w)
    so the decay is independent of the schedule: with no gradient a weight falls to w0 * (1 - wd)^n after
    n steps whatever the lr. Everything else (arguments, Adam arithmetic, saved config) is Keras' AdamW.
    Works with the TensorFlow backend (also under a tf.distribute strategy, as Keras' own decay does) and
    with JAX (`stateless_apply` runs this same method inside its stateless scope).
    """

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        if keras.backend.backend() == "tensorflow":
            self._apply_weight_decay_tf(variables)
            return
        for variable in variables:
            if self._use_weight_decay(variable):
                wd = keras.ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * wd)

    def _apply_weight_decay_tf(self, variables):
        # Keras' TFOptimizer._apply_weight_decay without the lr factor: the update runs per replica
        import tensorflow as tf  # only on the TensorFlow backend

        def distributed_apply_weight_decay(distribution, variables, **kwargs):
            def weight_decay_fn(variable):
                if self._use_weight_decay(variable):
                    variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype))

            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value  # the tf.Variable
                distribution.extended.update(variable, weight_decay_fn, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            distributed_apply_weight_decay, self._distribution_strategy, variables
        )


def build_schedule(config: TrainConfig, steps_per_epoch: int):
    """The recipe's schedule: linear warm-up over warmup_epochs, cosine decay to min_lr.

    `lr_update: epoch` gives EpochWarmupCosine (the reference: one lr per epoch, min_lr at the last epoch),
    `lr_update: step` WarmupCosine (a new lr every step, min_lr one step past the last).
    """
    if config.lr_update == "epoch":
        return EpochWarmupCosine(
            peak_lr=config.lr,
            warmup_epochs=config.warmup_epochs,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            min_lr=config.min_lr,
        )
    if config.lr_update == "step":
        return WarmupCosine(
            peak_lr=config.lr,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            total_steps=config.epochs * steps_per_epoch,
            min_lr=config.min_lr,
        )
    raise TinyconvError(f"recipe field lr_update must be epoch or step, got {config.lr_update!r}")


def build_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.AdamW:
    """AdamW (beta_1, beta_2 of the recipe, epsilon 1e-7, no clipping) on `build_schedule`'s learning rate.

    `weight_decay_mode: per_step` gives AdamWPerStepDecay (w <- w - wd * w each step, the reference),
    `lr_scaled` Keras' AdamW (w <- w - lr * wd * w).
    """
    if config.weight_decay_mode == "per_step":
        cls = AdamWPerStepDecay
    elif config.weight_decay_mode == "lr_scaled":
        cls = keras.optimizers.AdamW
    else:
        raise TinyconvError(
            f"recipe field weight_decay_mode must be per_step or lr_scaled, got {config.weight_decay_mode!r}"
        )
    return cls(
        learning_rate=build_schedule(config, steps_per_epoch),
        weight_decay=config.weight_decay,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=ADAM_EPSILON,
    )


def lr_at_epoch_end(schedule, steps_per_epoch: int, epoch: int) -> float:
    """The lr the schedule gives the last step of a 0-based epoch (for EpochWarmupCosine: the epoch's lr)."""
    return float(schedule((epoch + 1) * steps_per_epoch - 1))
