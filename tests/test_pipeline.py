"""tinyconv.pipeline: shapes, normalization, order, crop/flip/cutout geometry, mixing, determinism, coverage.

The batch ops are checked eagerly on images whose pixels encode where they came from; the datasets on
small in-memory arrays (and one np.memmap) with the compiled (XLA) augmentation they use in training.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.pipeline import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    color_jitter,
    cutmix,
    cutout,
    eval_dataset,
    measure_throughput,
    mix_batch,
    mixup,
    normalize,
    random_crop_flip,
    sample_mix_ratio,
    train_dataset,
)

FULL = AugmentConfig(jitter_prob=0.8, cutout_prob=0.7, mix_prob=1.0, cutmix_share=0.5)
NO_AUGMENT = AugmentConfig(pad=0, flip=False)


def coordinate_images(batch: int, size: int = 64) -> np.ndarray:
    """uint8 [B, S, S, 3]: channel 0 = row + 1, channel 1 = column + 1, channel 2 = example + 1 (0 = padding)."""
    rows, cols = np.meshgrid(np.arange(size) + 1, np.arange(size) + 1, indexing="ij")
    images = np.zeros((batch, size, size, 3), np.uint8)
    images[..., 0] = rows
    images[..., 1] = cols
    images[..., 2] = (np.arange(batch) + 1)[:, None, None]
    return images


def indexed_images(count: int, size: int = 64) -> np.ndarray:
    """uint8 [N, S, S, 3] whose example i is recoverable as pixel(0,0) channels (i // 256, i % 256)."""
    images = np.zeros((count, size, size, 3), np.uint8)
    images[:, :, :, 0] = (np.arange(count) // 256)[:, None, None]
    images[:, :, :, 1] = (np.arange(count) % 256)[:, None, None]
    images[:, :, :, 2] = 7
    return images


def decode_index(x_normalized: np.ndarray) -> np.ndarray:
    """Inverse of indexed_images after normalize: [B, S, S, 3] -> int [B]."""
    pixel = np.rint(x_normalized[:, 0, 0, :] * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)).astype(int)
    return pixel[:, 0] * 256 + pixel[:, 1]


def seed(a: int, b: int = 0) -> tf.Tensor:
    return tf.constant([a, b], tf.int64)


# ---------------------------------------------------------------------------------------------- basics


def test_normalize_values():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[0] = np.rint(IMAGENET_MEAN).astype(np.uint8)
    images[1] = 255
    x = normalize(images).numpy()
    assert x.dtype == np.float32 and x.shape == (2, 4, 4, 3)
    expected = (np.rint(IMAGENET_MEAN) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)  # near 0, not 0
    np.testing.assert_allclose(x[0], np.broadcast_to(expected, (4, 4, 3)), atol=1e-5)
    np.testing.assert_allclose(x[1, 0, 0], (255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-5)


@pytest.mark.parametrize("augment", [AugmentConfig(), FULL], ids=["light", "full"])
def test_train_batches_have_shapes_dtypes_and_label_sums(augment):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 40)
    # Same batch and class count as the determinism test, so the XLA compilation is shared.
    batches = list(train_dataset(images, labels, 5, 16, augment=augment, seed=1).as_numpy_iterator())
    assert len(batches) == 2  # 40 // 16, remainder dropped
    for x, y in batches:
        assert x.shape == (16, 64, 64, 3) and x.dtype == np.float32
        assert y.shape == (16, 5) and y.dtype == np.float32
        assert np.all(np.isfinite(x)) and np.all(y >= 0)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
        assert np.abs(x).max() < 3.0  # normalized, not 0..255


def test_eval_dataset_keeps_order_labels_and_the_last_partial_batch():
    count = 300
    images = indexed_images(count)
    labels = np.arange(count) % 7
    batches = list(eval_dataset(images, labels, 7, 64).as_numpy_iterator())
    assert [len(x) for x, _ in batches] == [64, 64, 64, 64, 44]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(decode_index(x), np.arange(count))
    np.testing.assert_array_equal(y.argmax(axis=1), labels)
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    np.testing.assert_allclose(x, normalize(images).numpy(), atol=1e-5)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_train_epoch_sees_every_example_once(drop_remainder):
    count, batch = 300, 64
    images = indexed_images(count)
    labels = np.arange(count)  # one class per example, so the label multiset is the example multiset
    ds = train_dataset(images, labels, count, batch, augment=NO_AUGMENT, seed=3, drop_remainder=drop_remainder)
    seen_labels, seen_images = [], []
    for x, y in ds.as_numpy_iterator():
        seen_labels.append(y.argmax(axis=1))
        seen_images.append(decode_index(x))
    seen_labels, seen_images = np.concatenate(seen_labels), np.concatenate(seen_images)
    np.testing.assert_array_equal(seen_labels, seen_images)  # each image arrives with its own label
    assert len(np.unique(seen_labels)) == len(seen_labels)  # nothing duplicated
    assert len(seen_labels) == ((count // batch) * batch if drop_remainder else count)
    assert len(ds) == (count // batch if drop_remainder else -(-count // batch))
    assert not np.array_equal(seen_labels, np.arange(len(seen_labels)))  # shuffled


def test_train_without_shuffle_keeps_order():
    images = indexed_images(96)
    ds = train_dataset(images, np.zeros(96, int), 1, 32, augment=NO_AUGMENT, seed=0, shuffle=False)
    order = np.concatenate([decode_index(x) for x, _ in ds.as_numpy_iterator()])
    np.testing.assert_array_equal(order, np.arange(96))


def test_train_reads_a_memmap(tmp_path):
    images = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="w+", shape=(64, 64, 64, 3))
    images[:] = indexed_images(64)
    images.flush()
    readonly = np.memmap(tmp_path / "images.u8", dtype=np.uint8, mode="r", shape=(64, 64, 64, 3))
    ds = train_dataset(readonly, np.arange(64) % 4, 4, 32, augment=NO_AUGMENT, seed=0)
    seen = np.concatenate([decode_index(x) for x, _ in ds.as_numpy_iterator()])
    assert sorted(seen) == list(range(64))


# ---------------------------------------------------------------------------------------- determinism


def first_batches(dataset, count=2):
    return [b for _, b in zip(range(count), dataset.as_numpy_iterator())]


def test_same_seed_replays_and_other_seeds_or_epochs_differ():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 64)

    def make(seed_value):
        return train_dataset(images, labels, 5, 16, augment=FULL, seed=seed_value, deterministic=True)

    ds = make(7)
    epoch_1, epoch_2 = first_batches(ds), first_batches(ds)
    replay = first_batches(make(7))
    for (x1, y1), (x2, y2) in zip(epoch_1, replay):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(epoch_1[0][0], epoch_2[0][0])  # a new iteration is a new epoch
    assert not np.array_equal(epoch_1[0][0], first_batches(make(8))[0][0])
    # A resumed run starting at epoch 1 sees what the uninterrupted run saw in its second epoch.
    resumed = train_dataset(images, labels, 5, 16, augment=FULL, seed=7, deterministic=True, start_epoch=1)
    for (x1, y1), (x2, y2) in zip(epoch_2, first_batches(resumed)):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


# --------------------------------------------------------------------------------------- crop and flip


def test_crop_is_a_per_example_translation_of_the_zero_padded_image():
    images = coordinate_images(32)
    out = random_crop_flip(tf.constant(images), pad=4, flip=False, seed=seed(1)).numpy()
    offsets = set()
    for i in range(32):
        # The top-left pixel that is not padding tells the offset; every other pixel must follow it.
        valid = out[i, ..., 0] > 0
        r, c = np.argwhere(valid)[0]
        dy, dx = int(out[i, r, c, 0]) - 1 - r, int(out[i, r, c, 1]) - 1 - c
        assert -4 <= dy <= 4 and -4 <= dx <= 4
        shifted = np.zeros((64 + 8, 64 + 8, 3), np.uint8)
        shifted[4:-4, 4:-4] = images[i]
        np.testing.assert_array_equal(out[i], shifted[4 + dy : 4 + dy + 64, 4 + dx : 4 + dx + 64])
        offsets.add((dy, dx))
    assert len(offsets) > 10  # offsets are drawn per example, not one per batch


def test_flip_mirrors_about_half_the_images():
    images = coordinate_images(32)
    out = random_crop_flip(tf.constant(images), pad=0, flip=True, seed=seed(2)).numpy()
    flipped = [np.array_equal(out[i], images[i, :, ::-1]) for i in range(32)]
    kept = [np.array_equal(out[i], images[i]) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 <= sum(flipped) <= 28


def test_no_pad_no_flip_is_identity():
    images = coordinate_images(4)
    np.testing.assert_array_equal(random_crop_flip(images, pad=0, flip=False, seed=seed(0)), images)


# ------------------------------------------------------------------------------------- jitter, cutout


def test_color_jitter_changes_colours_within_range_and_keeps_gray_gray():
    rng = np.random.default_rng(0)
    colour = tf.constant(rng.integers(0, 256, (16, 8, 8, 3)).astype(np.float32))
    out = color_jitter(colour, prob=1.0, strength=0.2, seed=seed(3)).numpy()
    assert out.min() >= 0.0 and out.max() <= 255.0 + 1e-3
    assert all(not np.allclose(out[i], colour[i]) for i in range(16))  # every image jittered at prob 1
    gray = tf.constant(np.repeat(rng.integers(0, 256, (16, 8, 8, 1)), 3, axis=-1).astype(np.float32))
    out_gray = color_jitter(gray, prob=1.0, strength=0.2, seed=seed(3)).numpy()
    np.testing.assert_allclose(out_gray[..., 0], out_gray[..., 1], atol=1e-2)  # hue/saturation leave gray alone
    np.testing.assert_allclose(out_gray[..., 0], out_gray[..., 2], atol=1e-2)
    unchanged = color_jitter(colour, prob=0.0, strength=0.2, seed=seed(3)).numpy()
    np.testing.assert_array_equal(unchanged, colour)


def test_cutout_holes_are_clipped_squares_of_the_given_half_size():
    ones = tf.ones([64, 64, 64, 3])
    out = cutout(ones, prob=1.0, half=16, seed=seed(4)).numpy()
    sides = []
    for i in range(64):
        hole = out[i, ..., 0] == 0
        assert np.all(out[i][hole] == 0) and np.all(out[i][~hole] == 1)
        rows, cols = np.nonzero(hole.any(axis=1))[0], np.nonzero(hole.any(axis=0))[0]
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert hole.sum() == height * width  # a rectangle
        # A 32-pixel square around a centre in 0..63, clipped: a side shorter than 32 touches the border.
        for lo, side in ((rows[0], height), (cols[0], width)):
            assert 16 <= side <= 32
            assert side == 32 or lo == 0 or lo + side == 64
        sides += [height, width]
    assert 32 in sides and min(sides) < 32  # both whole and clipped holes occur
    half_the_time = cutout(ones, prob=0.5, half=16, seed=seed(5)).numpy()
    untouched = sum(np.all(half_the_time[i] == 1) for i in range(64))
    assert 12 <= untouched <= 52


# ---------------------------------------------------------------------------------------------- mixing


def constant_batch(batch: int, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Example i is filled with value i + 1 and labelled class i (so every pair has distinct labels)."""
    x = tf.constant(np.broadcast_to((np.arange(batch) + 1.0)[:, None, None, None], (batch, 16, 16, 3)), tf.float32)
    return x, tf.one_hot(np.arange(batch), num_classes)


def test_mixup_mixes_images_and_labels_with_the_same_per_example_ratio():
    x, y = constant_batch(8, 8)
    ratio = sample_mix_ratio(8, alpha=0.2, seed=seed(6))
    assert np.all((ratio.numpy() >= 0) & (ratio.numpy() <= 1)) and len(np.unique(ratio.numpy())) > 1
    x_mixed, y_mixed = mixup(x, y, ratio=ratio)
    x_mixed, y_mixed = x_mixed.numpy(), y_mixed.numpy()
    for i in range(8):
        partner = 7 - i
        own = y_mixed[i, i]
        np.testing.assert_allclose(x_mixed[i], own * (i + 1) + (1 - own) * (partner + 1), rtol=1e-5)
        np.testing.assert_allclose(own, ratio[i], atol=1e-6)
        np.testing.assert_allclose(y_mixed[i, partner], 1 - own, atol=1e-6)
    np.testing.assert_allclose(y_mixed.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(y_mixed >= 0)


def test_cutmix_label_weights_equal_the_pasted_area_per_example():
    x, y = constant_batch(16, 16)
    ratio = tf.constant(np.linspace(0.05, 0.95, 16), tf.float32)
    x_mixed, y_mixed = cutmix(x, y, ratio=ratio, seed=seed(7))
    x_mixed, y_mixed = x_mixed.numpy(), y_mixed.numpy()
    areas = []
    for i in range(16):
        partner = 15 - i
        pasted = x_mixed[i, ..., 0] == partner + 1
        assert np.all(pasted | (x_mixed[i, ..., 0] == i + 1))  # pixels come from the pair only
        rows, cols = np.nonzero(pasted.any(axis=1))[0], np.nonzero(pasted.any(axis=0))[0]
        if pasted.any():
            assert pasted.sum() == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)  # one box
        fraction = pasted.mean()
        np.testing.assert_allclose(y_mixed[i, partner], fraction, atol=1e-6)
        np.testing.assert_allclose(y_mixed[i, i], 1 - fraction, atol=1e-6)
        areas.append(fraction)
    np.testing.assert_allclose(y_mixed.sum(axis=1), 1.0, atol=1e-6)
    assert len(set(areas)) > 8  # per-example boxes


def test_mix_batch_respects_mix_prob_and_cutmix_share():
    x, y = constant_batch(8, 8)
    untouched = mix_batch(x, y, seed=seed(8), mix_prob=0.0)
    np.testing.assert_array_equal(untouched[1], y)
    kinds = set()
    for k in range(24):
        x_mixed, y_mixed = (t.numpy() for t in mix_batch(x, y, seed=seed(9, k), mix_prob=0.5, cutmix_share=0.5))
        np.testing.assert_allclose(y_mixed.sum(axis=1), 1.0, atol=1e-6)
        if np.array_equal(y_mixed, y.numpy()):
            kinds.add("none")
        elif np.all(np.isin(x_mixed, np.arange(1, 9))):
            kinds.add("cutmix")  # only original pixel values: pasted, not blended
        else:
            kinds.add("mixup")
    assert kinds == {"none", "cutmix", "mixup"}
    only_mixup = mix_batch(x, y, seed=seed(10), mix_prob=1.0, cutmix_share=0.0)[0].numpy()
    assert not np.all(np.isin(only_mixup, np.arange(1, 9)))


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_one_line_errors():
    images = np.zeros((10, 64, 64, 3), np.uint8)
    with pytest.raises(TinyconvError, match="labels must lie in 0..4"):
        train_dataset(images, np.arange(10), 5, 4)
    with pytest.raises(TinyconvError, match="uint8"):
        eval_dataset(images.astype(np.float32), np.zeros(10, int), 5, 4)
    with pytest.raises(TinyconvError, match="10 integers"):
        eval_dataset(images, np.zeros(9, int), 5, 4)
    with pytest.raises(TinyconvError, match="cannot fill one batch"):
        train_dataset(images, np.zeros(10, int), 5, 16)
    with pytest.raises(TinyconvError, match="mix_prob"):
        AugmentConfig(mix_prob=1.5)
    with pytest.raises(TinyconvError, match="unknown AugmentConfig fields: bogus"):
        AugmentConfig.from_dict({"bogus": 1})
    assert AugmentConfig.from_dict(FULL.to_dict()) == FULL


def test_measure_throughput_counts_images():
    images = np.zeros((64, 64, 64, 3), np.uint8)
    ds = eval_dataset(images, np.zeros(64, int), 2, 16)
    result = measure_throughput(ds, seconds=0.2, warmup_batches=1)
    assert result["images"] == 16 * result["batches"] > 0
    assert result["images_per_s"] > 0
