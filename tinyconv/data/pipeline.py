"""tf.data input pipelines from the uint8 cache (the TensorFlow backend's input; JAX uses tinyconv.data.device_input).

Each batch is planned on the host by `tinyconv.data.augment.BatchPlan`: which examples (the epoch's order, a
function of (seed, epoch)) and every random draw of its augmentation (a function of (seed, epoch, step)).
The graph then reads those pixels from the cache with a small numpy gather and applies
`tinyconv.data.augment.augment_batch` (keras.ops, compiled with XLA: per-element `tf.image` maps pay a kernel
launch per op and image and stay far below what a 2-core machine needs; figures in docs/performance.md).
So a given `seed` replays the same batches, each new iteration of the dataset (Keras starts one per epoch)
is the next epoch, a resumed run passes `start_epoch` to see exactly the epochs an uninterrupted run would
have seen, and the JAX input, planned by the same object, trains on the same batches.

The images stay where they are (a np.memmap of the cache, or any uint8 array), so the 1.2 GB train split
is never copied into a graph constant.

    train_dataset(images, labels, num_classes, batch_size, augment=AugmentConfig(), seed=0)
      -> (x float32 [B, H, W, 3] normalized, y float32 [B, num_classes])
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from tinyconv.data import augment as augment_ops
from tinyconv.data.augment import DRAWS, BatchPlan
from tinyconv.data.dataset import check_arrays
from tinyconv.errors import TinyconvError
from tinyconv.data.augment_config import AugmentConfig

# ImageNet statistics in 0..255 units (tinyconv.data.augment holds them in [0, 1] units).
IMAGENET_MEAN = tuple(255.0 * m for m in augment_ops.IMAGENET_MEAN)
IMAGENET_STD = tuple(255.0 * s for s in augment_ops.IMAGENET_STD)


def normalize(images_uint8) -> tf.Tensor:
    """uint8 (or 0..255 float) images [..., 3] -> float32 normalized with the ImageNet mean/std."""
    return tf.convert_to_tensor(augment_ops.normalize(images_uint8))


def gather_fn(images: np.ndarray):
    """A graph op reading images[indices] from a numpy array or memmap: int64 [B] -> uint8 [B, H, W, 3]."""
    image_shape = images.shape[1:]

    def gather(indices):
        return np.ascontiguousarray(images[indices])

    def read(indices):
        batch = tf.numpy_function(gather, [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(batch, [None, *image_shape])

    return read


_COMPILED_AUGMENT: dict[tuple, tf.types.experimental.GenericFunction] = {}


def _compiled_augment(augment: AugmentConfig, jit_compile: bool):
    """augment_batch as one tf.function per config, shared by every dataset of the process.

    XLA fuses the elementwise chain into a few loops (several times less CPU than op by op: docs/performance.md,
    "Train and eval pipelines") and sharing the
    function lets its compilation (seconds for the full recipe) be reused.
    """
    key = (tuple(sorted(augment.to_dict().items())), jit_compile)
    if key not in _COMPILED_AUGMENT:
        frozen = AugmentConfig(**augment.to_dict())  # the caller may mutate theirs later
        _COMPILED_AUGMENT[key] = tf.function(
            lambda x, y, draws: augment_ops.augment_batch(x, y, draws, frozen),
            jit_compile=jit_compile,
        )
    return _COMPILED_AUGMENT[key]


def _plan_op(plan: BatchPlan):
    """A graph op (epoch, step) -> (indices int64 [B], draws dict) computed by `plan` in numpy."""
    names, dtypes = list(DRAWS), [tf.as_dtype(dtype) for dtype in DRAWS.values()]

    def host(epoch, step):
        indices, draws = plan(int(epoch), int(step))
        return [indices.astype(np.int64)] + [draws[name] for name in names]

    def op(epoch, step):
        out = tf.numpy_function(host, [epoch, step], [tf.int64] + dtypes, stateful=False)
        indices = tf.ensure_shape(out[0], [None])
        draws = {name: tf.ensure_shape(t, [] if name == "mix_kind" else [None]) for name, t in zip(names, out[1:])}
        return indices, draws

    return op


# Longer than 60 lines with its docstring: the tf.data graph is one chain, clearer unsplit.
def train_dataset(
    images,
    labels,
    num_classes: int,
    batch_size: int,
    augment: AugmentConfig | None = None,
    seed: int | None = None,
    deterministic: bool = True,
    drop_remainder: bool = True,
    shuffle: bool = True,
    jit_compile: bool = True,
    start_epoch: int = 0,
) -> tf.data.Dataset:
    """The train pipeline: one iteration is one epoch, reshuffled and re-augmented per iteration.

    Args:
        images: uint8 [N, H, W, 3], an ndarray or np.memmap (read batch by batch, never copied whole).
        labels: int [N] in 0..num_classes-1.
        num_classes: K, the one-hot width.
        batch_size: B.
        augment: the AugmentConfig; None means AugmentConfig() (crop + flip).
        seed: None for fresh randomness per call; an int replays the same epochs (order and augmentation).
        deterministic: keep the batch order fixed under parallel processing (with a seed: bitwise repeatable). On by
            default: with it two CPU runs of one recipe and seed train alike, bit for bit (without it the batches of
            an epoch came in the order the parallel workers finished them, and two `ci` runs differed from the first
            epoch's loss on); it costs nothing measurable (tf.data, 20 classes, quick at batch 64: 34,200-35,700
            img/s ordered against 33,600-36,100 in any order; reference at 128: 10,600-11,100 against 10,100-10,700;
            2-core CPU, 2026-12-06), and the training step, at a few hundred images/s on a CPU, is the bottleneck.
        drop_remainder: drop the last incomplete batch (the default for training).
        shuffle: shuffle the examples each epoch; without it the batches come in index order.
        jit_compile: compile the batch augmentation with XLA (the same batches either way, up to rounding).
        start_epoch: the epoch number of the first iteration (a resumed run passes its completed epochs).
    Returns:
        tf.data.Dataset of (x float32 [B, H, W, 3] normalized, y float32 [B, K] one-hot or mixed).
    """
    augment = AugmentConfig() if augment is None else augment
    images, labels = check_arrays(images, labels, num_classes, batch_size)
    count = len(labels)
    if count == 0 or (drop_remainder and count < batch_size):
        raise TinyconvError(f"{count} training images cannot fill one batch of {batch_size}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    plan = BatchPlan(count, batch_size, images.shape[1], images.shape[2], augment, seed, shuffle, drop_remainder)
    plan_op, read = _plan_op(plan), gather_fn(images)
    label_table = tf.constant(labels)  # [N] int32, small enough to live in the graph
    compiled_augment = _compiled_augment(augment, jit_compile)

    def load_and_augment(epoch, step):
        indices, draws = plan_op(epoch, step)
        x = read(indices)  # [B, H, W, 3] uint8
        y = tf.one_hot(tf.gather(label_table, indices), num_classes, dtype=tf.float32)  # [B, K]
        return compiled_augment(x, y, draws)

    # The iteration counter lives on the host: tf.data runs there whatever the accelerator.
    with tf.device("/cpu:0"):
        epoch_counter = tf.Variable(start_epoch, dtype=tf.int64, trainable=False, name="epoch_counter")

    def steps_of_next_epoch(_):  # called once per iteration of the dataset
        epoch_number = epoch_counter.assign_add(1) - 1
        return tf.data.Dataset.range(plan.steps).map(lambda step: (epoch_number, step))

    ds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(steps_of_next_epoch)
    ds = ds.apply(tf.data.experimental.assert_cardinality(plan.steps))  # len(ds) for Keras
    ordered = deterministic or not shuffle  # an unshuffled pipeline promises its order
    ds = ds.map(load_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=ordered)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = ordered
    return ds.with_options(options)


_compiled_normalize = tf.function(normalize, jit_compile=True)  # one fused loop instead of three passes


def eval_dataset(images, labels, num_classes: int, batch_size: int) -> tf.data.Dataset:
    """The evaluation pipeline: every image once, in order, normalized, no augmentation.

    Args:
        images: uint8 [N, H, W, 3] (ndarray or np.memmap); labels: int [N] in 0..num_classes-1.
    Returns:
        tf.data.Dataset of (x float32 [B, H, W, 3] normalized, y float32 [B, K] one-hot); the last
        batch may be smaller.
    """
    images, labels = check_arrays(images, labels, num_classes, batch_size)
    read = gather_fn(images)
    label_table = tf.constant(labels)


    def load(indices):
        x = _compiled_normalize(read(indices))  # [B, H, W, 3]
        return x, tf.one_hot(tf.gather(label_table, indices), num_classes, dtype=tf.float32)

    ds = tf.data.Dataset.range(len(labels)).batch(batch_size)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def measure_throughput(ds: tf.data.Dataset, seconds: float = 10.0, warmup_batches: int = 3) -> dict:
    """Images per second a dataset of (x [B, ...], y) delivers, re-iterating it as needed.

    The first `warmup_batches` (graph tracing, filling the prefetch buffers) are not timed.
    Returns {"images_per_s", "images", "batches", "seconds"}.
    """
    iterator = iter(ds)

    def next_batch():
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:
            iterator = iter(ds)
            return next(iterator)

    for _ in range(warmup_batches):
        next_batch()
    images = batches = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        x, _ = next_batch()
        images += int(x.shape[0])
        batches += 1
    return {"images_per_s": images / elapsed, "images": images, "batches": batches, "seconds": elapsed}
