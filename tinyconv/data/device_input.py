"""Batches made on the accelerator, for backends without tf.data (JAX on a GPU).

The uint8 cache is copied to the device once (1.2 GB for the whole train split fits any modern GPU);
each step then sends only a batch's indices and its random draws (a few hundred numbers) and a compiled
function gathers the images and applies `tinyconv.data.augment.augment_batch` on the device. JAX dispatches
asynchronously, so the next batch is being made while the current step runs: the host never touches a pixel.

    train = DeviceTrainBatches(images, labels, num_classes, batch_size, augment, seed, start_epoch)
    model.fit(train, validation_data=DeviceEvalBatches(val_images, val_labels, num_classes, batch_size))

Both are `keras.utils.PyDataset`s (pass `shuffle=False` to fit: the order is the dataset's own). The
epoch comes from fit() through `epoch_callback()`; the batch's examples and random draws come from
`tinyconv.data.augment.BatchPlan`, as in the tf.data pipeline, so both backends train on the same batches.

Several devices (JAX, `distribution=` a `keras.distribution.DataParallel`, see tinyconv.runtime.data_parallel):
the cache is replicated on every device and the batch function is compiled with the distribution's data
layout as its output sharding, so each device gathers and augments its own 1/n of the global batch (XLA
inserts the few collectives that mixup's pairing across the batch needs) and Keras, which places every
batch with that layout, finds it already there: no device holds the whole batch and no step copies one.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tinyconv.data.augment import BatchPlan, augment_batch, normalize
from tinyconv.data.dataset import check_arrays
from tinyconv.errors import TinyconvError
from tinyconv.data.augment_config import AugmentConfig


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


def _on_device(array: np.ndarray, sharding=None):
    """The array on the default device, or placed with a JAX `sharding` (replicated over a mesh)."""
    if sharding is None:
        return ops.convert_to_tensor(np.ascontiguousarray(array))
    import jax

    return jax.device_put(np.ascontiguousarray(array), sharding)


def _shardings(distribution, batch_shapes: tuple):
    """(replicated, per-output batch shardings) for a keras DataParallel on JAX, or (None, None) without one."""
    if distribution is None:
        return None, None
    if keras.config.backend() != "jax":
        raise TinyconvError(f"device batches over several devices need the JAX backend, not {keras.config.backend()}")
    from jax.sharding import NamedSharding, PartitionSpec

    replicated = NamedSharding(distribution.device_mesh.backend_mesh, PartitionSpec())
    return replicated, tuple(distribution.get_data_layout(shape).backend_layout for shape in batch_shapes)


def _check_split(count: int, devices: int, what: str) -> None:
    if devices > 1 and count % devices:
        raise TinyconvError(f"{what} of {count} does not split evenly over {devices} devices; "
                            f"choose a multiple of {devices}")


def _device_total(distribution) -> int:
    return 1 if distribution is None else int(distribution.device_mesh.devices.size)


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
        distribution: a keras.distribution.DataParallel (JAX) to split every batch over its devices, or None
            for the default device. B is the global batch: it must be a multiple of the device count.
    Yields:
        (x float32 [B, H, W, 3] normalised, y float32 [B, K]) as device tensors (sharded on the batch axis
        with a distribution).
    """

    def __init__(self, images, labels, num_classes: int, batch_size: int, augment: AugmentConfig, seed: int,
                 start_epoch: int = 0, distribution=None):
        super().__init__(workers=1, use_multiprocessing=False)
        images, labels = check_arrays(images, labels, num_classes, batch_size)
        if len(labels) < batch_size:
            raise TinyconvError(f"{len(labels)} training images cannot fill one batch of {batch_size}")
        _check_split(batch_size, _device_total(distribution), "the global batch_size")
        self.plan = BatchPlan(len(labels), batch_size, images.shape[1], images.shape[2], augment, seed)
        self.epoch = int(start_epoch)
        self.distribution = distribution
        replicated, outputs = _shardings(
            distribution, ((batch_size, *images.shape[1:3], 3), (batch_size, num_classes))
        )
        self.images = _on_device(images, replicated)  # [N, H, W, 3] uint8 on the device (on each, replicated)
        self.labels = _on_device(labels, replicated)  # [N] int32
        frozen = self.plan.augment

        def make_batch(images, labels, indices, draws):
            batch = ops.take(images, indices, axis=0)  # [B, H, W, 3] uint8
            onehot = ops.one_hot(ops.take(labels, indices, axis=0), num_classes)  # [B, K]
            return augment_batch(batch, onehot, draws, frozen)

        if outputs is None:
            self._make_batch = compile_function(make_batch)
        else:
            import jax

            self._make_batch = jax.jit(make_batch, out_shardings=outputs)

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
    """Every image once, in order, normalised on the device, with one-hot labels (the last batch may be smaller).

    With a `distribution` (as DeviceTrainBatches) every batch, the last one included, is split over its
    devices, so both the batch size and the remainder must be multiples of the device count: padding the
    last batch would change the validation loss and accuracy.
    """

    def __init__(self, images, labels, num_classes: int, batch_size: int, distribution=None):
        super().__init__(workers=1, use_multiprocessing=False)
        images, labels = check_arrays(images, labels, num_classes, batch_size)
        self.count, self.batch_size = len(labels), int(batch_size)
        devices = _device_total(distribution)
        _check_split(self.batch_size, devices, "the global batch_size")
        _check_split(self.count % self.batch_size, devices, f"the last validation batch ({self.count} images)")
        replicated, _ = _shardings(distribution, ())
        self.images = _on_device(images, replicated)
        self.labels = _on_device(labels, replicated)

        def make_batch(images, labels, indices):  # a gather, not a slice outside: one compiled program per batch
            return normalize(ops.take(images, indices, axis=0)), ops.one_hot(ops.take(labels, indices, axis=0),
                                                                             num_classes)

        if distribution is None:
            self._make_batch = compile_function(make_batch)
        else:
            import jax

            shape = (None, *images.shape[1:3], 3)  # get_data_layout reads only the rank
            outputs = tuple(distribution.get_data_layout(s).backend_layout for s in (shape, (None, num_classes)))
            self._make_batch = jax.jit(make_batch, out_shardings=outputs)

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __getitem__(self, step: int):
        lo, hi = step * self.batch_size, min((step + 1) * self.batch_size, self.count)
        return self._make_batch(self.images, self.labels, np.arange(lo, hi, dtype=np.int32))
