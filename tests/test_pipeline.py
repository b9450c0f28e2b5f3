"""tinyconv.data.pipeline (tf.data) and tinyconv.data.device_input: shapes, normalization, order, determinism, coverage,
and that both inputs make the same batches. The ops themselves are tested in tests/test_augment.py.

The datasets run on small in-memory arrays (and one np.memmap) with the compiled (XLA) augmentation they
use in training.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.data.device_input import DeviceEvalBatches, DeviceTrainBatches  # noqa: E402
from tinyconv.data.pipeline import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    eval_dataset,
    measure_throughput,
    normalize,
    train_dataset,
)
from tinyconv.data.augment_config import REFERENCE_AUGMENT  # noqa: E402

FULL = REFERENCE_AUGMENT
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


# -------------------------------------------------------------------- the tf.data and the device input


def test_the_device_input_makes_the_tf_data_batches():
    """Same seed, epoch and step: the JAX path's batches are the tf.data pipeline's (here both on TF)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 64)
    ds = train_dataset(images, labels, 5, 16, augment=FULL, seed=7, deterministic=True, start_epoch=2)
    device = DeviceTrainBatches(images, labels, 5, 16, FULL, seed=7, start_epoch=2)
    for step, (x, y) in enumerate(first_batches(ds, 4)):
        x_device, y_device = (np.asarray(t) for t in device[step])
        np.testing.assert_allclose(x_device, x, atol=1e-4)
        np.testing.assert_allclose(y_device, y, atol=1e-6)
    evaluation = [np.asarray(b[0]) for b in DeviceEvalBatches(images[:40], labels[:40], 5, 16)]
    np.testing.assert_allclose(np.concatenate(evaluation), normalize(images[:40]).numpy(), atol=1e-5)


def test_reference_batches_share_one_crop_offset():
    images = indexed_images(64)
    batches = first_batches(train_dataset(images, np.zeros(64, int), 1, 32, augment=AugmentConfig(
        pad=4, crop_offset="batch", flip=False), seed=1), 2)
    for x, _ in batches:
        padded = np.all(np.isclose(x, normalize(np.zeros((1, 1, 1, 3), np.uint8)).numpy()), axis=-1)  # [B, H, W]
        assert all(np.array_equal(padded[0], padded[i]) for i in range(len(x)))


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
    with pytest.raises(TinyconvError, match="unknown augmentation fields: bogus"):
        AugmentConfig.from_dict({"bogus": 1})
    assert AugmentConfig.from_dict(FULL.to_dict()) == FULL


def test_measure_throughput_counts_images():
    images = np.zeros((64, 64, 64, 3), np.uint8)
    ds = eval_dataset(images, np.zeros(64, int), 2, 16)
    result = measure_throughput(ds, seconds=0.2, warmup_batches=1)
    assert result["images"] == 16 * result["batches"] > 0
    assert result["images_per_s"] > 0
