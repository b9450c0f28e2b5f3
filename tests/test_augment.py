"""The batch augmentation's semantics, op by op, as the reference notebook defines them (tinyconv.data.augment)."""

import numpy as np
import pytest
from keras import ops

from tinyconv.data.augment import (
    CUTMIX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIXUP,
    NO_MIX,
    AugmentConfig,
    augment_batch,
    batch_rng,
    draw_batch,
    epoch_order,
)
from tinyconv.errors import TinyconvError

B, H, W, K = 32, 64, 64, 10
OFF = 100  # position codes start here, so the zero padding (0) is told apart from image pixels


def position_images(batch=B):
    """uint8 [B, H, W, 3]: channel 0 = row + OFF, channel 1 = column + OFF, channel 2 = image index."""
    rows = np.broadcast_to(np.arange(H)[:, None], (H, W)) + OFF
    cols = np.broadcast_to(np.arange(W)[None, :], (H, W)) + OFF
    images = np.zeros((batch, H, W, 3), np.uint8)
    images[..., 0], images[..., 1] = rows, cols
    images[..., 2] = np.arange(batch)[:, None, None]
    return images


def onehot(batch=B):
    return np.eye(K, dtype=np.float32)[np.arange(batch) % K]


def pixels(x):
    """Normalised float images back to 0..255 values (rounded)."""
    x = ops.convert_to_numpy(x)
    return np.rint((x * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255.0)


def run(augment, seed=0, step=1, images=None, labels=None):
    images = position_images() if images is None else images
    labels = onehot(len(images)) if labels is None else labels
    draws = draw_batch(batch_rng(seed, 0, step), len(images), H, W, augment)
    x, y = augment_batch(images, labels, draws, augment)
    return draws, ops.convert_to_numpy(x), ops.convert_to_numpy(y)


def crop_offsets(x):
    """Per image, the (row, col) offset of the crop in the padded image, read from the position codes.

    The first row and column that hold an image pixel (not padding) give it: offset = pad + first source row.
    """
    p = pixels(x)
    offsets = []
    for image in p:
        inside = np.argwhere(image[..., 0] >= OFF)
        r0, c0 = inside[0]
        source_row = image[r0, c0, 0] - OFF - r0
        source_col_first = image[r0, :, 1]
        flipped = source_col_first[-1] < source_col_first[0] if (source_col_first >= OFF).all() else None
        offsets.append((int(source_row), flipped))
    return offsets


def test_reference_crop_offset_is_one_per_batch_and_per_example_otherwise():
    for mode, expect_one in (("batch", True), ("example", False)):
        augment = AugmentConfig(pad=4, crop_offset=mode, flip=False)
        _, x, _ = run(augment)
        p = pixels(x)
        # the source row of output row 10 and the source column of output column 10, per image
        rows = {int(v) for v in p[:, 10, 10, 0] - OFF - 10}
        cols = {int(v) for v in p[:, 10, 10, 1] - OFF - 10}
        assert rows <= set(range(-4, 5)) and cols <= set(range(-4, 5))
        if expect_one:
            assert len(rows) == 1 and len(cols) == 1
        else:
            assert len(rows) > 3 and len(cols) > 3


def test_crop_pads_with_zeros_and_flip_mirrors_per_image():
    augment = AugmentConfig(pad=4, crop_offset="example", flip=True)
    draws, x, _ = run(augment)
    p = pixels(x)
    for i in range(B):
        oy, ox, flip = int(draws["offset_y"][i]), int(draws["offset_x"][i]), bool(draws["flip"][i])
        source_rows = np.arange(H) + oy - 4
        source_cols = np.arange(W) + ox - 4
        if flip:
            source_cols = source_cols[::-1]
        inside = (source_rows[:, None] >= 0) & (source_rows[:, None] < H) & (source_cols[None] >= 0) & (source_cols[None] < W)
        expected_rows = np.where(inside, source_rows[:, None] + OFF, 0)
        expected_cols = np.where(inside, source_cols[None, :] + OFF, 0)
        np.testing.assert_array_equal(p[i, ..., 0], expected_rows)
        np.testing.assert_array_equal(p[i, ..., 1], expected_cols)
    assert 0.3 < draws["flip"].mean() < 0.7


def test_jitter_factors_are_shared_by_the_batch_in_reference_mode():
    batch_mode = AugmentConfig(pad=0, flip=False, jitter_prob=0.8, jitter_factors="batch")
    draws = draw_batch(batch_rng(3, 0, 1), B, H, W, batch_mode)
    for name in ("brightness", "contrast", "saturation", "hue"):
        assert np.unique(draws[name]).size == 1, name
    example_mode = AugmentConfig(pad=0, flip=False, jitter_prob=0.8, jitter_factors="example")
    draws = draw_batch(batch_rng(3, 0, 1), B, H, W, example_mode)
    for name in ("brightness", "contrast", "saturation", "hue"):
        assert np.unique(draws[name]).size == B, name
    assert abs(np.abs(draws["brightness"]).max() - 0.16) < 0.03 and np.abs(draws["hue"]).max() <= 0.04


def test_brightness_is_additive_on_unit_images_and_one_delta_per_batch():
    """Only brightness (contrast/saturation/hue factors neutral): every jittered image moves by the same delta."""
    augment = AugmentConfig(pad=0, flip=False, jitter_prob=0.8, jitter_factors="batch",
                            jitter_contrast=0.0, jitter_saturation=0.0, jitter_hue=0.0)
    gray = np.full((B, H, W, 3), 128, np.uint8)
    draws, x, _ = run(augment, images=gray)
    shift = pixels(x)[:, 0, 0, 0] - 128  # [B] in 0..255 units
    applied = draws["jitter"]
    assert 0 < applied.sum() < B
    np.testing.assert_array_equal(shift[~applied], 0)
    expected = np.rint(128 + draws["brightness"][0] * 255) - 128
    np.testing.assert_allclose(shift[applied], expected, atol=1)


def test_contrast_scales_about_each_images_channel_mean():
    augment = AugmentConfig(pad=0, flip=False, jitter_prob=1.0, jitter_factors="example",
                            jitter_brightness=0.0, jitter_saturation=0.0, jitter_hue=0.0)
    rng = np.random.default_rng(0)
    images = rng.integers(60, 190, (B, H, W, 3), dtype=np.uint8)
    draws, x, _ = run(augment, images=images)
    unit = images / 255.0
    mean = unit.mean(axis=(1, 2), keepdims=True)
    expected = np.clip((unit - mean) * draws["contrast"][:, None, None, None] + mean, 0, 1)
    np.testing.assert_allclose(pixels(x), np.rint(expected * 255), atol=1)


def test_cutout_is_black_before_normalisation_and_clipped_at_the_border():
    augment = AugmentConfig(pad=0, flip=False, cutout_prob=0.7, cutout_half=16, cutout_fill="zero")
    images = np.full((B, H, W, 3), 200, np.uint8)
    draws, x, _ = run(augment, images=images)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    hole_value = (np.float32(0.0) - mean) / std  # a black pixel, normalised in float32: exactly, per channel
    holes = np.all(x == hole_value, axis=-1)  # [B, H, W]
    for i in range(B):
        if not draws["cutout"][i]:
            assert not holes[i].any()
            continue
        cy, cx = draws["cutout_y"][i], draws["cutout_x"][i]
        top, bottom = int(max(0.0, cy - 16)), int(min(float(H), cy + 16))
        left, right = int(max(0.0, cx - 16)), int(min(float(W), cx + 16))
        expected = np.zeros((H, W), bool)
        expected[top:bottom, left:right] = True
        np.testing.assert_array_equal(holes[i], expected)
    assert 0.4 < draws["cutout"].mean() < 0.95


def test_cutout_mean_fill_is_zero_after_normalisation():
    augment = AugmentConfig(pad=0, flip=False, cutout_prob=1.0, cutout_fill="mean")
    _, x, _ = run(augment, images=np.full((B, H, W, 3), 200, np.uint8))
    assert np.isclose(x, 0.0, atol=1e-6).all(axis=-1).any()


def test_every_batch_is_mixed_one_way_and_labels_stay_convex():
    augment = AugmentConfig(pad=0, flip=False, mix_prob=1.0, cutmix_share=0.5)
    kinds = []
    for step in range(1, 41):
        draws, _, y = run(augment, step=step)
        kinds.append(int(draws["mix_kind"]))
        assert (y >= 0).all() and np.allclose(y.sum(axis=1), 1.0, atol=1e-6)
        assert sorted(draws["partner"]) == list(range(B))
    assert NO_MIX not in kinds and {MIXUP, CUTMIX} <= set(kinds)


def test_cutmix_label_weights_equal_the_pasted_clipped_area():
    augment = AugmentConfig(pad=0, flip=False, mix_prob=1.0, cutmix_share=1.0)
    images = np.broadcast_to(np.arange(B, dtype=np.uint8)[:, None, None, None] * 7, (B, H, W, 3)).copy()
    draws, x, y = run(augment, images=images)
    assert int(draws["mix_kind"]) == CUTMIX
    p = pixels(x)[..., 0]
    labels = onehot()
    for i in range(B):
        j = int(draws["partner"][i])
        if j == i:
            continue
        pasted = (p[i] == 7 * j).sum()
        half = int(H * np.sqrt(1.0 - draws["ratio"][i])) // 2  # the reference's int(H * sqrt(1 - lambda)) // 2
        top, bottom = np.clip([draws["box_y"][i] - half, draws["box_y"][i] + half], 0, H)
        left, right = np.clip([draws["box_x"][i] - half, draws["box_x"][i] + half], 0, W)
        assert pasted == (bottom - top) * (right - left)
        kept = 1.0 - pasted / (H * W)
        np.testing.assert_allclose(y[i], kept * labels[i] + (1 - kept) * labels[j], atol=1e-6)


def test_mixup_blends_images_and_labels_with_the_same_ratio():
    augment = AugmentConfig(pad=0, flip=False, mix_prob=1.0, cutmix_share=0.0)
    images = np.broadcast_to(np.arange(B, dtype=np.uint8)[:, None, None, None] * 7, (B, H, W, 3)).copy()
    draws, x, y = run(augment, images=images)
    assert int(draws["mix_kind"]) == MIXUP
    ratio, partner = draws["ratio"], draws["partner"]
    expected = ratio * 7 * np.arange(B) + (1 - ratio) * 7 * partner
    np.testing.assert_allclose(pixels(x)[:, 5, 5, 0], np.rint(expected), atol=1)
    labels = onehot()
    np.testing.assert_allclose(y, ratio[:, None] * labels + (1 - ratio[:, None]) * labels[partner], atol=1e-6)
    assert ((ratio < 0.1) | (ratio > 0.9)).mean() > 0.4  # Beta(0.2, 0.2) puts most mass near 0 and 1


def test_draws_and_orders_replay_from_seed_epoch_and_step():
    augment = AugmentConfig(jitter_prob=0.8, cutout_prob=0.7, mix_prob=1.0)
    a = draw_batch(batch_rng(5, 2, 7), B, H, W, augment)
    b = draw_batch(batch_rng(5, 2, 7), B, H, W, augment)
    c = draw_batch(batch_rng(5, 2, 8), B, H, W, augment)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)
    np.testing.assert_array_equal(epoch_order(5, 2, 100), epoch_order(5, 2, 100))
    assert sorted(epoch_order(5, 3, 100)) == list(range(100))
    assert not np.array_equal(epoch_order(5, 2, 100), epoch_order(5, 3, 100))


@pytest.mark.parametrize(
    "field, value",
    [("crop_offset", "image"), ("jitter_factors", "all"), ("cutout_fill", "grey"), ("jitter_prob", 1.5),
     ("jitter_hue", 1.0), ("mix_alpha", 0.0), ("pad", -1)],
)
def test_bad_values_are_refused_with_the_field_named(field, value):
    with pytest.raises(TinyconvError, match=field):
        AugmentConfig(**{field: value})
