"""Batches made on the accelerator, for backends without tf.data (JAX on a GPU).

The uint8 cache is copied to the device once (1.2 GB for the whole train split fits any modern GPU);
each step then sends only a batch's indices and its random draws (a few hundred numbers) and a compiled
function gathers the images and applies `tinyconv.augment.augment_batch` on the device. JAX dispatches
asynchronously, so the next batch is being made while the current step runs: the host never touches a pixel.

    train = DeviceTrainBatches(images, labels, num_classes, batch_size, augment, seed, start_epoch)
    model.fit(train, validation_data=DeviceEvalBatches(val_images, val_labels, num_classes, batch_size))

Both are `keras.utils.PyDataset`s (pass `shuffle=False` to fit: the order is the dataset's own). The
epoch comes from fit() through `epoch_callback()`; the batch's examples and random draws come from
`tinyconv.augment.BatchPlan`, as in the tf.data pipeline, so both backends train on the same batches.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tinyconv.augment import BatchPlan, augment_batch, normalize
from tinyconv.dataset import check_arrays
from tinyconv.errors import TinyconvError
from tinyconv.recipe import AugmentConfig


def compile_function(fn):
    """`fn` compiled for the backend: jax.jit, tf.function(jit_compile=True), or as is (torch, numpy)."""
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=True)
    return fn


def _on_device(array: np.ndarray):
    return ops.convert_to_tensor(np.ascontiguousarray(array))


class DeviceTrainBatches(keras.utils.PyDataset):
    """One epoch of augmented train batches per iteration, made on the device.

    Args:
        images: uint8 [N, H, W, 3] (ndarray or memmap; copied to the device once).
        labels: int [N] in 0..num_classes-1.
        num_classes: K, the one-hot width.
        batch_size: B; the last incomplete batch is dropped (len = N // B).
        augment: the AugmentConfig.
        seed: the run's seed (order and draws derive from (seed, epoch, step)).
        start_epoch: the epoch number of the first iteration (a resumed run passes its completed epochs).
    Yields:
        (x float32 [B, H, W, 3] normalised, y float32 [B, K]) as device tensors.
    """

    def __init__(self, images, labels, num_classes: int, batch_size: int, augment: AugmentConfig, seed: int,
                 start_epoch: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        images, labels = check_arrays(images, labels, num_classes, batch_size)
        if len(labels) < batch_size:
            raise TinyconvError(f"{len(labels)} training images cannot fill one batch of {batch_size}")
        self.plan = BatchPlan(len(labels), batch_size, images.shape[1], images.shape[2], augment, seed)
        self.epoch = int(start_epoch)
        self.images = _on_device(images)  # [N, H, W, 3] uint8 on the device
        self.labels = _on_device(labels)  # [N] int32
        frozen = self.plan.augment

        def make_batch(images, labels, indices, draws):
            batch = ops.take(images, indices, axis=0)  # [B, H, W, 3] uint8
            onehot = ops.one_hot(ops.take(labels, indices, axis=0), num_classes)  # [B, K]
            return augment_batch(batch, onehot, draws, frozen)

        self._make_batch = compile_function(make_batch)

    def __len__(self) -> int:
        return self.plan.steps

    def batch(self, epoch: int, step: int):
        """The batch `step` (0-based) of `epoch`, whatever the current epoch: for tests and replays."""
        indices, draws = self.plan(epoch, step)
        return self._make_batch(self.images, self.labels, indices, draws)

    def __getitem__(self, step: int):
        return self.batch(self.epoch, step)

    def set_epoch(self, epoch: int) -> None:
        """Serve `epoch`'s order and draws from now on."""
        self.epoch = int(epoch)

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A callback that tells this dataset which epoch fit() is starting.

        Keras also calls a PyDataset's own on_epoch_end once before training (after peeking at a batch to
        build the model), so counting those calls would be off by one; the callback's epoch is fit()'s own.
        """
        dataset = self

        class _EpochSync(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                dataset.set_epoch(epoch)

        return _EpochSync()


class DeviceEvalBatches(keras.utils.PyDataset):
    """Every image once, in order, normalised on the device, with one-hot labels (the last batch may be smaller)."""

    def __init__(self, images, labels, num_classes: int, batch_size: int):
        super().__init__(workers=1, use_multiprocessing=False)
        images, labels = check_arrays(images, labels, num_classes, batch_size)
        self.count, self.batch_size = len(labels), int(batch_size)
        self.images = _on_device(images)
        self.labels = _on_device(labels)
        self._make_batch = compile_function(
            lambda images, labels: (normalize(images), ops.one_hot(labels, num_classes))
        )

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __getitem__(self, step: int):
        lo, hi = step * self.batch_size, min((step + 1) * self.batch_size, self.count)
        return self._make_batch(self.images[lo:hi], self.labels[lo:hi])
