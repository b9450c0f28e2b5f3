"""tf.data input pipelines from the uint8 cache: augmentation, mixup/cutmix and normalization.

The pipelines batch first and then augment the whole batch with vectorized, per-example random ops
(a translation by gather, a flip folded into the same gather, colour jitter with per-example factors,
cutout and cutmix by broadcast box masks), compiled with XLA. Per-element `tf.image` maps pay a
kernel launch per op and image and stay far below what a 2-core machine needs to keep a model fed
(figures in docs/performance.md).

Randomness is stateless: epoch e of a dataset built with `seed` uses the seed pair (seed, e), and the
shuffle order and every batch's augmentation derive from it. So a given `seed` replays the same
batches, each new iteration of the dataset (Keras starts one per epoch) gets new ones, and a resumed
run passes `start_epoch` to see exactly the epochs an uninterrupted run would have seen.

The images stay where they are (a np.memmap of the cache, or any uint8 array): batches of indices
go through the graph and a small numpy gather reads the pixels, so the 1.2 GB train split is
never copied into a graph constant.

    train_dataset(images, labels, num_classes, batch_size, augment=AugmentConfig(), seed=0)
      -> (x float32 [B, H, W, 3] normalized, y float32 [B, num_classes])
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from tinyconv.errors import TinyconvError
from tinyconv.recipe import AugmentConfig

# ImageNet statistics in 0..255 units (the torchvision values times 255).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# ITU-R 601 luma, the weights torchvision's rgb_to_grayscale uses for contrast and saturation.
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


# ------------------------------------------------------------------------------------------ batch ops


def normalize(images_uint8) -> tf.Tensor:
    """uint8 (or 0..255 float) images [..., 3] -> float32 normalized with the ImageNet mean/std."""
    images = tf.cast(images_uint8, tf.float32)
    return (images - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)


def _split_seed(seed, num: int) -> list[tf.Tensor]:
    """One stateless seed [2] -> `num` independent seeds [2]."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num), num=num)


def _bernoulli(shape, prob: float, seed) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed) < prob


def random_crop_flip(images: tf.Tensor, *, pad: int, flip: bool, seed) -> tf.Tensor:
    """Zero-pad by `pad`, crop back to [H, W] at a per-example random offset, flip half the images.

    Args:
        images: [B, H, W, C] any dtype (uint8 in the pipelines).
        pad: padding per side; offsets are uniform in 0..2*pad on each axis.
        flip: whether to mirror each image horizontally with probability 0.5.
        seed: stateless seed, int [2].
    Returns:
        [B, H, W, C], same dtype.
    """
    if pad == 0 and not flip:
        return images
    seed_y, seed_x, seed_flip = _split_seed(seed, 3)
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])  # [B, H+2p, W+2p, C]
    offset_y = tf.random.stateless_uniform([batch], seed=seed_y, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    offset_x = tf.random.stateless_uniform([batch], seed=seed_x, minval=0, maxval=2 * pad + 1, dtype=tf.int32)
    rows = offset_y[:, None] + tf.range(height)[None, :]  # [B, H]
    cols = offset_x[:, None] + tf.range(width)[None, :]  # [B, W]
    if flip:
        # Reading the crop's columns right-to-left is the flip, so crop and flip are one gather.
        flipped = _bernoulli([batch], 0.5, seed_flip)
        cols = tf.where(flipped[:, None], tf.reverse(cols, axis=[1]), cols)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, H, W+2p, C]
    return tf.gather(out, cols, axis=2, batch_dims=1)  # [B, H, W, C]


def _grayscale(images: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 3] -> [B, H, W, 1]."""
    return tf.reduce_sum(images * tf.constant(_GRAY_WEIGHTS, images.dtype), axis=-1, keepdims=True)


def color_jitter(images: tf.Tensor, *, prob: float, strength: float, seed) -> tf.Tensor:
    """torchvision ColorJitter(s, s, s, s), vectorized, applied to each image with probability `prob`.

    Brightness, contrast and saturation factors are uniform in [1-s, 1+s] and the hue shift uniform in
    [-s, s] of a full turn, drawn per image and applied in that fixed order (torchvision shuffles the
    order per call; a fixed order keeps the batch one graph).

    Args:
        images: float32 [B, H, W, 3] in 0..255.
    Returns:
        float32 [B, H, W, 3] in 0..255.
    """
    if prob <= 0.0 or strength <= 0.0:
        return images
    seed_apply, seed_b, seed_c, seed_s, seed_h = _split_seed(seed, 5)
    batch = tf.shape(images)[0]

    def factor(seed_k):
        return tf.random.stateless_uniform([batch, 1, 1, 1], seed=seed_k, minval=1 - strength, maxval=1 + strength)

    x = tf.clip_by_value(images * factor(seed_b), 0.0, 255.0)
    mean_gray = tf.reduce_mean(_grayscale(x), axis=[1, 2, 3], keepdims=True)  # [B, 1, 1, 1]
    contrast = factor(seed_c)
    x = tf.clip_by_value(contrast * x + (1 - contrast) * mean_gray, 0.0, 255.0)
    saturation = factor(seed_s)
    x = tf.clip_by_value(saturation * x + (1 - saturation) * _grayscale(x), 0.0, 255.0)
    hsv = tf.image.rgb_to_hsv(x / 255.0)
    shift = tf.random.stateless_uniform([batch, 1, 1], seed=seed_h, minval=-strength, maxval=strength)
    hue = hsv[..., 0] + shift
    hue = hue - tf.floor(hue)  # wrap to [0, 1); XLA turns floormod into a slow scalar fmod call
    x = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1)) * 255.0
    applied = _bernoulli([batch, 1, 1, 1], prob, seed_apply)
    return tf.where(applied, x, images)


def _box_mask(center_y, center_x, half_h, half_w, height: int, width: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example boxes [cy-half_h, cy+half_h) x [cx-half_w, cx+half_w), clipped to the image.

    All arguments int32 [B]. Returns (mask bool [B, H, W, 1], area int32 [B] of the clipped box).
    """
    top = tf.clip_by_value(center_y - half_h, 0, height)
    bottom = tf.clip_by_value(center_y + half_h, 0, height)
    left = tf.clip_by_value(center_x - half_w, 0, width)
    right = tf.clip_by_value(center_x + half_w, 0, width)
    rows = tf.range(height)[None, :]  # [1, H]
    cols = tf.range(width)[None, :]  # [1, W]
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])  # [B, W]
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]  # [B, H, W, 1]
    return mask, (bottom - top) * (right - left)


def cutout(images: tf.Tensor, *, prob: float, half: int, seed, fill: float = 0.0) -> tf.Tensor:
    """Set a square hole of half side `half` around a uniform random centre to `fill`, per image with
    probability `prob`; the hole is clipped at the border (so it is smaller near edges).

    In the pipelines this runs after normalization, where fill 0 is the dataset mean colour.

    Args:
        images: float [B, H, W, C].
    Returns:
        [B, H, W, C], same dtype.
    """
    if prob <= 0.0 or half <= 0:
        return images
    seed_apply, seed_y, seed_x = _split_seed(seed, 3)
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    center_y = tf.random.stateless_uniform([batch], seed=seed_y, minval=0, maxval=height, dtype=tf.int32)
    center_x = tf.random.stateless_uniform([batch], seed=seed_x, minval=0, maxval=width, dtype=tf.int32)
    half_size = tf.fill([batch], half)
    hole, _ = _box_mask(center_y, center_x, half_size, half_size, height, width)
    applied = _bernoulli([batch], prob, seed_apply)[:, None, None, None]
    return tf.where(hole & applied, tf.constant(fill, images.dtype), images)


def sample_mix_ratio(batch_size, *, alpha: float, seed) -> tf.Tensor:
    """Per-example mixing ratios ~ Beta(alpha, alpha): float32 [batch_size] in [0, 1].

    Drawn as g1 / (g1 + g2) of two gammas, in float64 so that small-alpha draws do not underflow to 0/0.
    """
    seed_1, seed_2 = _split_seed(seed, 2)
    g1 = tf.random.stateless_gamma([batch_size], seed=seed_1, alpha=alpha, dtype=tf.float64)
    g2 = tf.random.stateless_gamma([batch_size], seed=seed_2, alpha=alpha, dtype=tf.float64)
    total = g1 + g2
    ratio = tf.where(total > 0, g1 / tf.where(total > 0, total, 1.0), 0.5)
    return tf.cast(ratio, tf.float32)


def mixup(x: tf.Tensor, y: tf.Tensor, *, ratio: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend each example with its partner in the reversed batch.

    Args:
        x: float32 [B, H, W, C]; y: float32 [B, K] (one-hot or already soft).
        ratio: float32 [B], the weight of each example itself (see sample_mix_ratio).
    Returns:
        (x, y) of the same shapes; each y row is the same convex combination as its x.
    """
    x_partner, y_partner = tf.reverse(x, axis=[0]), tf.reverse(y, axis=[0])
    r = ratio[:, None, None, None]
    x = r * x + (1 - r) * x_partner
    r = ratio[:, None]
    return x, r * y + (1 - r) * y_partner


def cutmix(x: tf.Tensor, y: tf.Tensor, *, ratio: tf.Tensor, seed) -> tuple[tf.Tensor, tf.Tensor]:
    """Paste a box of the partner (the reversed batch) into each example; the box covers about
    1 - ratio of the image, centred uniformly, and the labels are weighted by the area actually
    pasted after clipping at the border.

    Args:
        x: float32 [B, H, W, C]; y: float32 [B, K].
        ratio: float32 [B] (see sample_mix_ratio); seed: stateless seed for the box centres, int [2].
    Returns:
        (x, y) of the same shapes.
    """
    seed_y, seed_x = _split_seed(seed, 2)
    batch = tf.shape(x)[0]
    height, width = x.shape[1], x.shape[2]
    side = tf.sqrt(1.0 - ratio)  # box side as a fraction of the image side
    half_h = tf.cast(tf.round(side * height / 2), tf.int32)
    half_w = tf.cast(tf.round(side * width / 2), tf.int32)
    center_y = tf.random.stateless_uniform([batch], seed=seed_y, minval=0, maxval=height, dtype=tf.int32)
    center_x = tf.random.stateless_uniform([batch], seed=seed_x, minval=0, maxval=width, dtype=tf.int32)
    box, area = _box_mask(center_y, center_x, half_h, half_w, height, width)
    x_partner, y_partner = tf.reverse(x, axis=[0]), tf.reverse(y, axis=[0])
    x = tf.where(box, x_partner, x)
    kept = 1.0 - tf.cast(area, tf.float32) / float(height * width)  # [B] weight of the example itself
    return x, kept[:, None] * y + (1 - kept[:, None]) * y_partner


def mix_batch(
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    seed,
    mix_prob: float = 1.0,
    cutmix_share: float = 0.5,
    alpha: float = 0.2,
    ratio: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """With probability `mix_prob` mix the whole batch: cutmix with probability `cutmix_share`, else mixup.

    Each example is paired with the example at the mirrored position of the batch (the batches are
    shuffled, so the pairs are random); mixing ratios are drawn per example from Beta(alpha, alpha).

    Args:
        x: float32 [B, H, W, C] normalized images; y: float32 [B, K] one-hot labels.
        seed: stateless seed, int [2].
        ratio: optional float32 [B], the Beta draws to use (XLA cannot sample gammas, so the compiled
            pipeline draws them outside and passes them in); None draws them here.
    Returns:
        (x float32 [B, H, W, C], y float32 [B, K]); every y row still sums to 1.
    """
    if mix_prob <= 0.0:
        return x, y
    seed_choice, seed_kind, seed_ratio, seed_box = _split_seed(seed, 4)
    if ratio is None:
        ratio = sample_mix_ratio(tf.shape(x)[0], alpha=alpha, seed=seed_ratio)
    do_mix = tf.random.stateless_uniform([], seed=seed_choice) < mix_prob
    use_cutmix = tf.random.stateless_uniform([], seed=seed_kind) < cutmix_share
    return tf.case(
        [
            (tf.logical_not(do_mix), lambda: (x, y)),
            (use_cutmix, lambda: cutmix(x, y, ratio=ratio, seed=seed_box)),
        ],
        default=lambda: mixup(x, y, ratio=ratio),
        exclusive=False,
    )


def augment_batch(
    images: tf.Tensor, labels: tf.Tensor, *, augment: AugmentConfig, seed, ratio: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """The whole train-time transform of one batch.

    crop+flip (uint8) -> colour jitter (0..255) -> normalize -> cutout (fill = mean colour) -> mixup/cutmix.

    Args:
        images: uint8 [B, H, W, 3]; labels: float32 one-hot [B, K]; seed: stateless seed, int [2].
        ratio: optional float32 [B] mixing ratios (see mix_batch).
    Returns:
        (x float32 [B, H, W, 3] normalized, y float32 [B, K]).
    """
    seed_crop, seed_jitter, seed_cutout, seed_mix = _split_seed(seed, 4)
    images = random_crop_flip(images, pad=augment.pad, flip=augment.flip, seed=seed_crop)
    x = tf.cast(images, tf.float32)
    x = color_jitter(x, prob=augment.jitter_prob, strength=augment.jitter_strength, seed=seed_jitter)
    x = normalize(x)
    x = cutout(x, prob=augment.cutout_prob, half=augment.cutout_half, seed=seed_cutout)
    return mix_batch(
        x,
        labels,
        seed=seed_mix,
        mix_prob=augment.mix_prob,
        cutmix_share=augment.cutmix_share,
        alpha=augment.mix_alpha,
        ratio=ratio,
    )


# ---------------------------------------------------------------------------------------- datasets


def _check_inputs(images, labels, num_classes: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    source = getattr(images, "filename", None) or "the image array"
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise TinyconvError(f"images must be a uint8 array [N, H, W, 3], got {dtype} {shape} ({source})")
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise TinyconvError(
            f"labels must be {images.shape[0]} integers to match the images, "
            f"got {labels.dtype} {labels.shape} ({source})"
        )
    if num_classes < 1:
        raise TinyconvError(f"num_classes must be >= 1, got {num_classes}")
    if batch_size < 1:
        raise TinyconvError(f"batch_size must be >= 1, got {batch_size}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise TinyconvError(
            f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()} ({source})"
        )
    return images, labels.astype(np.int32)


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

    XLA fuses the elementwise chain into a few loops (3-6x less CPU than op by op) and sharing the
    function lets its compilation (seconds for the full recipe) be reused. XLA cannot sample gammas,
    so the mixing ratios are drawn outside and passed in.
    """
    key = (tuple(sorted(augment.to_dict().items())), jit_compile)
    if key not in _COMPILED_AUGMENT:
        frozen = AugmentConfig(**augment.to_dict())  # the caller may mutate theirs later
        _COMPILED_AUGMENT[key] = tf.function(
            lambda x, y, seed, ratio: augment_batch(x, y, augment=frozen, seed=seed, ratio=ratio),
            jit_compile=jit_compile,
        )
    return _COMPILED_AUGMENT[key]


# Longer than 60 lines with its docstring: the tf.data graph is one chain, clearer unsplit.
def train_dataset(
    images,
    labels,
    num_classes: int,
    batch_size: int,
    augment: AugmentConfig | None = None,
    seed: int | None = None,
    deterministic: bool = False,
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
        augment: the augmentation; None means AugmentConfig() (crop + flip).
        seed: None for fresh randomness per call; an int replays the same epochs (order and augmentation).
        deterministic: keep the batch order fixed under parallel processing (with a seed: bitwise repeatable).
        drop_remainder: drop the last incomplete batch (the default for training).
        shuffle: shuffle the examples each epoch; without it the batches come in index order.
        jit_compile: compile the batch augmentation with XLA (same distribution, different random draws).
        start_epoch: the epoch number of the first iteration (a resumed run passes its completed epochs).
    Returns:
        tf.data.Dataset of (x float32 [B, H, W, 3] normalized, y float32 [B, K] one-hot or mixed).
    """
    augment = AugmentConfig() if augment is None else augment
    images, labels = _check_inputs(images, labels, num_classes, batch_size)
    count = len(labels)
    if count == 0 or (drop_remainder and count < batch_size):
        raise TinyconvError(f"{count} training images cannot fill one batch of {batch_size}")
    read = gather_fn(images)
    label_table = tf.constant(labels)  # [N] int32, small enough to live in the graph

    def epoch(epoch_seed):  # int64 scalar -> dataset of (indices [B], batch seed [2])
        if shuffle:
            keys = tf.random.stateless_uniform([count], seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)]))
            order = tf.argsort(keys)
        else:
            order = tf.range(count)
        indices = tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64)).batch(batch_size, drop_remainder)
        return indices.enumerate(start=1).map(lambda step, idx: (idx, tf.stack([epoch_seed, step])))

    compiled_augment = _compiled_augment(augment, jit_compile)

    def load_and_augment(indices, batch_seed):
        x = read(indices)  # [B, H, W, 3] uint8
        y = tf.one_hot(tf.gather(label_table, indices), num_classes, dtype=tf.float32)  # [B, K]
        seed_augment, seed_ratio = _split_seed(batch_seed, 2)
        if augment.mix_prob > 0:
            ratio = sample_mix_ratio(tf.shape(indices)[0], alpha=augment.mix_alpha, seed=seed_ratio)  # [B]
        else:
            ratio = tf.zeros(tf.shape(indices)[:1], tf.float32)  # unused
        return compiled_augment(x, y, seed_augment, ratio)

    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    # The iteration counter lives on the host: tf.data runs there whatever the accelerator.
    with tf.device("/cpu:0"):
        epoch_counter = tf.Variable(start_epoch, dtype=tf.int64, trainable=False, name="epoch_counter")

    def next_epoch_seed(_):  # called once per iteration
        epoch_number = epoch_counter.assign_add(1) - 1
        pair = tf.stack([tf.constant(seed, tf.int64), epoch_number])
        return tf.random.stateless_uniform([], seed=pair, minval=None, maxval=None, dtype=tf.int64)

    epoch_seeds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(next_epoch_seed)
    steps = count // batch_size if drop_remainder else -(-count // batch_size)
    ds = epoch_seeds.flat_map(epoch).apply(tf.data.experimental.assert_cardinality(steps))  # len(ds) for Keras
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
    images, labels = _check_inputs(images, labels, num_classes, batch_size)
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
