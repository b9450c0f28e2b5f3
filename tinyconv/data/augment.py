"""Train-time augmentation of a batch, written once in `keras.ops` for every backend.

The randomness and the arithmetic are kept apart:

    draws = draw_batch(rng, batch, height, width, augment)       # numpy, on the host: small arrays [B] and scalars
    x, y = augment_batch(images_uint8, labels_onehot, draws, augment)   # keras.ops: TF graph, or JAX on the GPU

`draw_batch` makes every random choice of one batch from a `numpy.random.Generator` (crop offsets, flips,
jitter factors, cutout centres, the mixing kind, Beta ratios and partner permutation); `augment_batch`
applies them. The tf.data pipeline (TensorFlow, CPU) and the on-device input (JAX, GPU) both call these two
functions with the generator of `batch_rng(seed, epoch, step)`, so the two backends see the same batches,
not only the same distribution, and a resumed run replays the epochs an uninterrupted one would have seen.

The order of the ops and each op's arithmetic follow the reference notebook (peterniederl/ConvMixer-
TinyImageNet, `tinyimg_preprocess_train` and `mixup_cutmix`), on images in [0, 1]:
    1. zero-pad `pad` per side, crop back at an offset drawn per batch (reference) or per example;
    2. horizontal flip per image, p = 0.5;
    3. colour jitter per image with probability `jitter_prob`, with factors drawn per batch (reference: TF's
       random_* ops on a 4-D batch) or per example: brightness + delta, contrast about each image's
       per-channel mean, saturation and hue in HSV; one clip to [0, 1] at the end;
    4. cutout per image with probability `cutout_prob`: a square of half side `cutout_half` around a float
       centre, its bounds truncated to integers and clipped at the border, filled with black
       (`cutout_fill="zero"`, the reference) or the mean colour (`"mean"`, i.e. 0 after normalisation);
    5. normalise with the ImageNet mean/std;
    6. with probability `mix_prob` the batch is mixed: cutmix with probability `cutmix_share`, else mixup,
       each example with the example a random permutation pairs it with, ratio lambda ~ Beta(alpha, alpha)
       per example; cutmix pastes a box of half side int(H * sqrt(1 - lambda)) // 2 around an integer centre
       and weights the labels by the pasted (clipped) area.
"""

from __future__ import annotations

import threading
import numpy as np
from keras import ops

from tinyconv.data.augment_config import AugmentConfig

# ImageNet statistics of images in [0, 1] (torchvision's values, the reference notebook's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ------------------------------------------------------------------------------------ randomness

# name -> dtype of every array draw_batch returns; shapes are [B] except the scalar mix_kind.
DRAWS = {
    "offset_y": np.int32, "offset_x": np.int32, "flip": np.bool_,
    "jitter": np.bool_, "brightness": np.float32, "contrast": np.float32, "saturation": np.float32,
    "hue": np.float32,
    "cutout": np.bool_, "cutout_y": np.float32, "cutout_x": np.float32,
    "mix_kind": np.int32, "ratio": np.float32, "partner": np.int32, "box_y": np.int32, "box_x": np.int32,
}
NO_MIX, MIXUP, CUTMIX = 0, 1, 2


def batch_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator of one batch: a function of (seed, epoch, step) alone, so any batch can be replayed."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(step), 1])


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The example order of one epoch: a permutation of range(count) drawn from (seed, epoch).

    The reference shuffles once and then through a 5,000-image buffer per epoch; a full reshuffle per
    epoch is the accepted difference (each epoch sees every image once either way).
    """
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0]).permutation(count)


def draw_batch(rng: np.random.Generator, batch: int, height: int, width: int, augment: AugmentConfig) -> dict:
    """Every random choice of one batch, as numpy arrays named and typed as in DRAWS."""
    a = augment

    def per(draw, mode: str):  # one value per example, or one for the whole batch repeated
        return np.repeat(draw(1), batch) if mode == "batch" else draw(batch)

    span = 2 * a.pad + 1
    d = {
        "offset_y": per(lambda n: rng.integers(0, span, n), a.crop_offset),
        "offset_x": per(lambda n: rng.integers(0, span, n), a.crop_offset),
        "flip": rng.random(batch) < (0.5 if a.flip else 0.0),
        "jitter": rng.random(batch) < a.jitter_prob,
        "brightness": per(lambda n: rng.uniform(-a.jitter_brightness, a.jitter_brightness, n), a.jitter_factors),
        "contrast": per(lambda n: rng.uniform(1 - a.jitter_contrast, 1 + a.jitter_contrast, n), a.jitter_factors),
        "saturation": per(lambda n: rng.uniform(1 - a.jitter_saturation, 1 + a.jitter_saturation, n), a.jitter_factors),
        "hue": per(lambda n: rng.uniform(-a.jitter_hue, a.jitter_hue, n), a.jitter_factors),
        "cutout": rng.random(batch) < a.cutout_prob,
        "cutout_y": rng.uniform(0, height, batch),
        "cutout_x": rng.uniform(0, width, batch),
    }
    mixed, use_cutmix = rng.random() < a.mix_prob, rng.random() < a.cutmix_share
    d["mix_kind"] = np.asarray((CUTMIX if use_cutmix else MIXUP) if mixed else NO_MIX)
    d["ratio"] = rng.beta(a.mix_alpha, a.mix_alpha, batch)
    d["partner"] = rng.permutation(batch)
    d["box_y"] = rng.integers(0, height, batch)
    d["box_x"] = rng.integers(0, width, batch)
    return {name: np.asarray(d[name]).astype(dtype) for name, dtype in DRAWS.items()}


# ------------------------------------------------------------------------------------ arithmetic


def normalize(images):
    """uint8 (0..255) or float images [..., 3] in 0..255 -> float32 normalised with the ImageNet mean/std."""
    return standardize(ops.cast(images, "float32") / 255.0)


def standardize(x):
    """float images [..., 3] in [0, 1] -> (x - mean) / std."""
    return (x - ops.convert_to_tensor(IMAGENET_MEAN, "float32")) / ops.convert_to_tensor(IMAGENET_STD, "float32")


def crop_flip(x, offset_y, offset_x, flip, pad: int):
    """Zero-pad by `pad`, crop [H, W] at (offset_y, offset_x) of the padded image, mirror where `flip`.

    x: float [B, H, W, C]; offsets int [B] in 0..2*pad; flip bool [B]. Returns [B, H, W, C]. A gather
    of rows then columns; source pixels outside the image are the zero padding.
    """
    batch, height, width, channels = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
    rows = offset_y[:, None] - pad + ops.arange(height, dtype="int32")[None, :]  # [B, H] source rows
    cols = offset_x[:, None] - pad + ops.arange(width, dtype="int32")[None, :]  # [B, W] source columns
    cols = ops.where(flip[:, None], ops.flip(cols, axis=1), cols)  # reading columns backwards is the flip
    inside = ((rows >= 0) & (rows < height))[:, :, None, None] & ((cols >= 0) & (cols < width))[:, None, :, None]
    rows = ops.broadcast_to(ops.clip(rows, 0, height - 1)[:, :, None, None], (batch, height, width, channels))
    cols = ops.broadcast_to(ops.clip(cols, 0, width - 1)[:, None, :, None], (batch, height, width, channels))
    out = ops.take_along_axis(x, rows, axis=1)  # [B, H, W, C]
    out = ops.take_along_axis(out, cols, axis=2)  # [B, H, W, C]
    return ops.where(inside, out, ops.zeros_like(out))


def color_jitter(x, apply, brightness, contrast, saturation, hue):
    """TF's adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue in that order, then one clip.

    x: float [B, H, W, 3] in [0, 1]; apply bool [B]; factors float [B] (equal across the batch when drawn
    per batch). Images where `apply` is False are returned unchanged.
    """
    per_image = lambda v: v[:, None, None, None]  # noqa: E731  [B] -> [B, 1, 1, 1]
    y = x + per_image(brightness)
    mean = ops.mean(y, axis=(1, 2), keepdims=True)  # [B, 1, 1, 3]: each image's per-channel mean
    y = (y - mean) * per_image(contrast) + mean
    hsv = ops.image.rgb_to_hsv(y)
    s = ops.clip(hsv[..., 1] * saturation[:, None, None], 0.0, 1.0)
    y = ops.image.hsv_to_rgb(ops.stack([hsv[..., 0], s, hsv[..., 2]], axis=-1))
    hsv = ops.image.rgb_to_hsv(y)
    h = hsv[..., 0] + hue[:, None, None]
    h = h - ops.floor(h)  # wrap into [0, 1)
    y = ops.image.hsv_to_rgb(ops.stack([h, hsv[..., 1], hsv[..., 2]], axis=-1))
    return ops.where(per_image(apply), ops.clip(y, 0.0, 1.0), x)


def box_mask(top, bottom, left, right, height: int, width: int):
    """bool [B, H, W, 1]: rows top..bottom-1 and columns left..right-1 of each image (int [B] bounds)."""
    r = ops.arange(height, dtype="int32")[None, :]
    c = ops.arange(width, dtype="int32")[None, :]
    in_rows = (r >= top[:, None]) & (r < bottom[:, None])  # [B, H]
    in_cols = (c >= left[:, None]) & (c < right[:, None])  # [B, W]
    return in_rows[:, :, None, None] & in_cols[:, None, :, None]


def cutout(x, apply, center_y, center_x, half: int, fill):
    """Fill [int(max(0, cy - half)), int(min(H, cy + half))) x (the same in x) with `fill` where `apply`.

    x: float [B, H, W, C]; apply bool [B]; centres float [B]; fill: a float or a [C] colour.
    """
    height, width = x.shape[1], x.shape[2]
    bound = lambda v, limit: ops.cast(ops.clip(v, 0.0, float(limit)), "int32")  # noqa: E731  truncation, as the reference
    hole = box_mask(bound(center_y - half, height), bound(center_y + half, height),
                    bound(center_x - half, width), bound(center_x + half, width), height, width)
    hole = hole & apply[:, None, None, None]
    return ops.where(hole, ops.cast(ops.convert_to_tensor(fill), x.dtype) * ops.ones_like(x), x)


def mix(x, y, kind, ratio, partner, box_y, box_x):
    """Mixup or cutmix of each example with `partner` (a permutation of the batch), or neither.

    x: float [B, H, W, C] normalised; y: float [B, K]; kind: int scalar (NO_MIX, MIXUP, CUTMIX); ratio
    float [B] ~ Beta; partner int [B]; box_y, box_x int [B] cutmix centres. Returns (x, y); every label
    row stays a convex combination summing to 1. Both mixes are computed and one is selected, so the
    function is one graph for every kind.
    """
    height, width = x.shape[1], x.shape[2]
    x_partner, y_partner = ops.take(x, partner, axis=0), ops.take(y, partner, axis=0)
    r = ratio[:, None, None, None]
    x_mixup = r * x + (1.0 - r) * x_partner
    y_mixup = ratio[:, None] * y + (1.0 - ratio[:, None]) * y_partner
    side = ops.sqrt(1.0 - ratio)  # box side as a share of the image side
    half_h = ops.cast(float(height) * side, "int32") // 2
    half_w = ops.cast(float(width) * side, "int32") // 2
    top, bottom = ops.clip(box_y - half_h, 0, height), ops.clip(box_y + half_h, 0, height)
    left, right = ops.clip(box_x - half_w, 0, width), ops.clip(box_x + half_w, 0, width)
    x_cutmix = ops.where(box_mask(top, bottom, left, right, height, width), x_partner, x)
    kept = 1.0 - ops.cast((bottom - top) * (right - left), "float32") / float(height * width)  # [B]
    y_cutmix = kept[:, None] * y + (1.0 - kept[:, None]) * y_partner
    x_out = ops.where(kind == MIXUP, x_mixup, ops.where(kind == CUTMIX, x_cutmix, x))
    y_out = ops.where(kind == MIXUP, y_mixup, ops.where(kind == CUTMIX, y_cutmix, y))
    return x_out, y_out


def augment_batch(images, labels, draws: dict, augment: AugmentConfig):
    """The whole train-time transform of one batch.

    Args:
        images: uint8 [B, H, W, 3]; labels: float32 one-hot [B, K]; draws: `draw_batch`'s arrays (numpy or
            tensors of the backend); augment: the AugmentConfig the draws were made with.
    Returns:
        (x float32 [B, H, W, 3] normalised, y float32 [B, K]).
    """
    a = augment
    x = ops.cast(images, "float32") / 255.0  # [B, H, W, 3] in [0, 1]
    if a.pad > 0 or a.flip:
        x = crop_flip(x, draws["offset_y"], draws["offset_x"], draws["flip"], a.pad)
    if a.jitter_prob > 0:
        x = color_jitter(x, draws["jitter"], draws["brightness"], draws["contrast"], draws["saturation"], draws["hue"])
    if a.cutout_prob > 0 and a.cutout_half > 0:
        fill = 0.0 if a.cutout_fill == "zero" else np.asarray(IMAGENET_MEAN, np.float32)
        x = cutout(x, draws["cutout"], draws["cutout_y"], draws["cutout_x"], a.cutout_half, fill)
    x = standardize(x)
    y = ops.cast(labels, "float32")
    if a.mix_prob > 0:
        x, y = mix(x, y, draws["mix_kind"], draws["ratio"], draws["partner"], draws["box_y"], draws["box_x"])
    return x, y


# ------------------------------------------------------------------------------------ batch plans


class BatchPlan:
    """Which examples and which random draws make batch `step` of `epoch`: the one source of both inputs.

    The tf.data pipeline (tinyconv.data.pipeline) and the on-device input (tinyconv.data.device_input) ask it for
    (indices, draws) and only differ in where the pixels are gathered and augmented. Thread-safe (tf.data
    calls it from several threads); keeps the orders of the two most recent epochs.

    Args:
        count: N examples; batch_size: B; height, width: the image size; augment: the AugmentConfig.
        seed: the run's seed; shuffle: a new order per epoch (else index order); drop_remainder: drop the
            last incomplete batch.
    """

    def __init__(self, count: int, batch_size: int, height: int, width: int, augment: AugmentConfig,
                 seed: int, shuffle: bool = True, drop_remainder: bool = True):
        self.count, self.batch_size, self.height, self.width = int(count), int(batch_size), int(height), int(width)
        self.augment, self.seed, self.shuffle = AugmentConfig(**augment.to_dict()), int(seed), bool(shuffle)
        self.steps = self.count // self.batch_size if drop_remainder else -(-self.count // self.batch_size)
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def order(self, epoch: int) -> np.ndarray:
        with self._lock:
            if epoch not in self._orders:
                order = epoch_order(self.seed, epoch, self.count) if self.shuffle else np.arange(self.count)
                self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
                self._orders[epoch] = order
            return self._orders[epoch]

    def __call__(self, epoch: int, step: int) -> tuple[np.ndarray, dict]:
        """(indices int32 [B'], draws) of batch `step` (0-based) of `epoch`; B' < B only for a kept last batch."""
        indices = self.order(int(epoch))[int(step) * self.batch_size : (int(step) + 1) * self.batch_size]
        draws = draw_batch(batch_rng(self.seed, epoch, int(step) + 1), len(indices), self.height, self.width,
                           self.augment)
        return indices.astype(np.int32), draws
