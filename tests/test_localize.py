"""tinyconv.study.localize: CAM / Grad-CAM maps, boxes from maps, IoU, the WSOL metrics, and `tinyconv localize`."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tinyconv import cli
from tinyconv.data.augment import normalize
from tinyconv.data.dataset import selected_classes
from tinyconv.errors import TinyconvError
from tinyconv.study import figures as tinyfigures
from tinyconv.study.localize import (
    BoxedImages,
    baseline_metrics,
    box_from_map,
    box_hits,
    cam_layers,
    choose_thresholds,
    class_activation_maps,
    evaluate_localization,
    case_titles,
    format_localization,
    format_metrics,
    good_and_bad,
    good_cases_note,
    grad_cam,
    iou,
    kernel_comparison_skipped,
    kernel_variant_runs,
    layer_maps,
    ScoredMaps,
    box_area_fraction,
    localization_maps,
    localization_metrics,
    localize_images,
    metrics_table,
    normalize_maps,
    score_maps,
    score_stages,
    stage_kernel_size,
    stage_layers,
    train_kernel_variants,
    train_with_boxes,
    upsample,
    val_with_boxes,
    versus_whole_image,
    whole_image_hits,
)

SQUARE = (12, 20, 43, 51)  # x0, y0, x1, y1 inclusive: 32 x 32 pixels, on the 4-pixel grid of the model below


def square_image(box=SQUARE) -> np.ndarray:
    """uint8 [64, 64, 3]: dark background (10), a bright square (245) at `box`."""
    image = np.full((64, 64, 3), 10, dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0 : y1 + 1, x0 : x1 + 1] = 245
    return image


def square_model(num_classes: int = 2, gap_head: bool = True) -> keras.Model:
    """A hand-set model: a 1x1 conv whose channel 0 is the brightness and channel 1 its negative, 4x4 average
    pooling to a 16x16 map, then GAP + Dense (or Flatten + Dense). Class 0 reads channel 0 (the square) and
    has a large bias so it is the top-1; the other classes read channel 1 (the background)."""
    inputs = keras.Input((64, 64, 3), name="image")
    x = keras.layers.Conv2D(2, 1, name="features")(inputs)
    x = keras.layers.AveragePooling2D(4, name="stage1_block1")(x)  # [B, 16, 16, 2]
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x) if gap_head else keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, name="head")(x)
    model = keras.Model(inputs, outputs, name="square")
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[..., 0], kernel[..., 1] = 1 / 3, -1 / 3
    model.get_layer("features").set_weights([kernel, np.zeros(2, np.float32)])
    head = model.get_layer("head")
    dense = np.zeros(head.kernel.shape, np.float32)
    if gap_head:
        dense[0, 0] = 1.0
        dense[1, 1:] = 1.0
    bias = np.zeros(num_classes, np.float32)
    bias[0] = 5.0
    head.set_weights([dense, bias])
    return model


# ---------------------------------------------------------------------------------------------- maps


def test_cam_box_finds_the_bright_square():
    model = square_model()
    maps, logits = class_activation_maps(model, normalize(square_image()[None]))
    assert maps.shape == (1, 16, 16) and logits.argmax(-1).tolist() == [0]
    heatmap = normalize_maps(upsample(maps))[0]  # [64, 64] in [0, 1]
    assert heatmap.shape == (64, 64) and heatmap.min() == 0.0 and heatmap.max() == 1.0
    box = box_from_map(heatmap, 0.5)
    assert iou(box, SQUARE) > 0.9, box
    # the map of class 1 (the background) does not find the square
    background = normalize_maps(upsample(class_activation_maps(model, normalize(square_image()[None]), [1])[0]))[0]
    assert iou(box_from_map(background, 0.5), SQUARE) < 0.5


def test_grad_cam_equals_cam_for_a_gap_dense_head():
    # d logit_k / d f[h, w, c] = W[c, k] / (h w): Grad-CAM of the last features is relu(CAM) / (h w)
    model = square_model()
    x = normalize(np.stack([square_image(), square_image((0, 0, 15, 31))]))
    cam, _ = class_activation_maps(model, x)
    grad, _ = grad_cam(model, x, "stage1_block1")
    np.testing.assert_allclose(grad, np.maximum(cam, 0) / 256.0, rtol=1e-5, atol=1e-6)
    with pytest.raises(TinyconvError, match="no layer named 'nope'"):
        grad_cam(model, x, "nope")


def test_model_without_a_global_pooling_head_is_a_one_line_error():
    with pytest.raises(TinyconvError) as info:
        cam_layers(square_model(gap_head=False))
    assert len(str(info.value).splitlines()) == 1 and "global-average-pooling + Dense head" in str(info.value)


def test_normalize_and_upsample():
    maps = np.stack([np.full((4, 4), 3.0), np.arange(16.0).reshape(4, 4)])
    normed = normalize_maps(maps)
    assert (normed[0] == 0).all() and normed[1].min() == 0 and normed[1].max() == 1
    assert upsample(normed).shape == (2, 64, 64) and upsample(normed[1]).shape == (64, 64)
    # a map of a model whose outputs are not finite is refused, not turned into zeros (a whole-image box)
    for bad in (np.nan, np.inf):
        broken = maps.copy()
        broken[1, 2, 2] = bad
        with pytest.raises(TinyconvError, match="1 of the maps hold NaN or inf"):
            normalize_maps(broken)


# --------------------------------------------------------------------------------------------- boxes


def test_iou_on_inclusive_boxes():
    assert iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert iou((0, 0, 9, 9), (10, 10, 19, 19)) == 0.0
    assert iou((3, 3, 3, 3), (3, 3, 3, 3)) == 1.0  # a one-pixel box has area 1
    assert iou((0, 0, 63, 63), (16, 16, 47, 47)) == pytest.approx(0.25)


def test_box_is_the_largest_connected_component():
    heatmap = np.zeros((20, 20), np.float32)
    heatmap[1:4, 1:4] = 1.0  # 9 pixels, holds the maximum
    heatmap[6:10, 10:15] = 0.8  # 20 pixels: the larger one wins
    heatmap[15:19, 0:20] = 0.4  # under the threshold
    assert box_from_map(heatmap, 0.5) == (10, 6, 14, 9)
    assert box_from_map(heatmap, 0.3) == (0, 15, 19, 18)  # now the 80-pixel strip is largest
    assert box_from_map(heatmap, 0.9) == (1, 1, 3, 3)


def test_boxes_use_eight_connectivity():
    heatmap = np.zeros((12, 12), np.float32)
    for i in range(5):
        heatmap[i, i] = 1.0  # a diagonal: one 8-connected component of 5 pixels (five 4-connected ones)
    heatmap[8:10, 8:10] = 1.0  # a 2x2 blob: 4 pixels
    assert box_from_map(heatmap, 0.5) == (0, 0, 4, 4)


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan"), "half"])
def test_a_threshold_outside_zero_to_one_is_refused_not_a_whole_image_box(threshold, tmp_path):
    """Above 1 no pixel qualified, below 0 all did, NaN none: each silently gave the whole image as the box.
    The library refuses it (the notebooks call it), localize_images before it loads anything."""
    heatmap = np.zeros((20, 20), np.float32)
    heatmap[1:4, 1:4] = 1.0
    with pytest.raises(TinyconvError, match=r"box threshold must be a fraction of the map's maximum in \[0, 1\]"):
        box_from_map(heatmap, threshold)
    with pytest.raises(TinyconvError, match=r"box threshold must be .* in \[0, 1\]"):
        localize_images(tmp_path / "no-model.keras", [tmp_path / "no-image.png"], threshold=threshold)
    assert box_from_map(heatmap, 0.0) == (0, 0, 19, 19) and box_from_map(heatmap, 1.0) == (1, 1, 3, 3)  # the ends


# ------------------------------------------------------------------------------------------- metrics


def test_metrics_on_a_hand_made_set():
    thresholds = (0.2, 0.6)
    ious = np.array([[0.8, 0.6, 0.4, 0.2], [0.9, 0.3, 0.75, 0.1]])  # [T, N]
    correct = np.array([True, False, True, True])
    assert choose_thresholds(ious, thresholds) == {0.3: 0.2, 0.5: 0.2, 0.7: 0.6}  # ties: the lower one
    result = localization_metrics(ious, correct, thresholds, chosen={0.3: 0.2, 0.5: 0.2, 0.7: 0.2})
    assert result["threshold"] == 0.2
    assert result["gt_known_loc"] == 0.5  # 0.8 and 0.6 reach 0.5
    assert result["top1_loc"] == 0.25  # ... and only the first is classified correctly
    assert result["box_acc"] == {0.3: 0.75, 0.5: 0.5, 0.7: 0.25}
    assert result["train_threshold_box_acc"] == pytest.approx(0.5)  # at the thresholds given
    # MaxBoxAcc (Choe et al.): each level's best threshold on these images, whatever was chosen elsewhere
    assert result["max_box_acc"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)  # 0.7 is best at 0.6
    on_these = localization_metrics(ious, correct, thresholds)  # thresholds chosen on these images
    assert on_these["train_threshold_box_acc"] == pytest.approx(on_these["max_box_acc"])
    assert on_these["max_box_acc"] == result["max_box_acc"]
    # per image: the share of levels each box meets at the chosen thresholds; the mean is BoxAcc over the levels
    hits = box_hits(ious, thresholds, {0.3: 0.2, 0.5: 0.2, 0.7: 0.2})
    assert hits.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert hits.mean() == pytest.approx(result["train_threshold_box_acc"])


def test_centre_box_baseline():
    result = baseline_metrics([(0, 0, 63, 63), (16, 16, 47, 47)])  # mean size 48 x 48
    assert result["box"] == (8, 8, 55, 55)
    # IoU 48^2/64^2 = 0.5625 with the whole image, 32^2/48^2 = 0.444 with the small box
    assert result["gt_known_loc"] == 0.5
    assert result["box_acc"] == {0.3: 1.0, 0.5: 0.5, 0.7: 0.0}
    # the whole image: IoU 1 and 0.25
    assert result["full_image"]["box"] == (0, 0, 63, 63)
    assert result["full_image"]["box_acc"] == {0.3: 0.5, 0.5: 0.5, 0.7: 0.5}


def test_evaluate_localization_on_synthetic_data(synthetic_data_dir):
    wnids = selected_classes(synthetic_data_dir, 5)[0]
    result = evaluate_localization(square_model(num_classes=5), synthetic_data_dir, classes=wnids)
    assert result["images"] == 30 and result["train_images"] == 50  # 6 val, 10 of 20 train per class
    for key in ("gt_known_loc", "top1_loc", "train_threshold_box_acc", "max_box_acc"):
        assert 0.0 <= result[key] <= 1.0
    assert result["top1_loc"] <= result["gt_known_loc"]
    assert result["train_threshold_box_acc"] <= result["max_box_acc"] + 1e-12  # the best on val is at least as good
    assert result["top1"] == pytest.approx(0.2)  # class 0 always wins: 6 of 30 val images
    text = format_localization(result)
    assert "GT-known loc" in text and "centre-box baseline" in text and "whole-image box" in text
    comparison = result["versus_whole_image"]  # the paired comparison, in the JSON and as the last line
    assert comparison["images"] == 30 and comparison["box_acc"] == pytest.approx(result["train_threshold_box_acc"])
    assert comparison["whole_image"] == pytest.approx(result["baseline"]["full_image"]["max_box_acc"])
    assert comparison["difference"] == pytest.approx(comparison["box_acc"] - comparison["whole_image"])
    assert text.splitlines()[-1].strip().startswith("CAM's BoxAcc at train thresholds")


def _squares(count: int, wnids, names=None) -> BoxedImages:
    """`count` square images with the square moving right, all of class 0 of `wnids`, boxes exact."""
    boxes = [(4 * i, 20, 4 * i + 27, 47) for i in range(count)]
    return BoxedImages(images=np.stack([square_image(b) for b in boxes]), labels=np.zeros(count, np.int64),
                       boxes=np.array(boxes), wnids=list(wnids), names=list(names or wnids),
                       files=[f"s{i}.png" for i in range(count)])


def test_score_maps_relabels_into_the_model_classes_and_finds_the_squares():
    model = square_model(num_classes=3)  # class 0 of the model is "b" below: the squares are labelled "b"
    train, val = _squares(4, ["b"]), _squares(6, ["b"])
    scored = score_maps(model, ["b", "a", "c"], train, val)
    assert scored.maps.shape == (6, 64, 64) and scored.boxes.shape == (6, 4)
    assert scored.correct.all() and scored.metrics["top1"] == 1.0
    assert scored.metrics["gt_known_loc"] == 1.0 and scored.metrics["images"] == 6
    assert (scored.ious >= 0.7).all()  # at the lowest threshold that scores best on train (ties go low)
    # the same squares called "a" (the background class of the model): still top-1 "b", so all wrong,
    # and the map of "a" does not find the squares
    wrong = score_maps(model, ["b", "a", "c"], _squares(4, ["a"]), _squares(6, ["a"]))
    assert not wrong.correct.any() and wrong.metrics["top1_loc"] == 0.0
    assert wrong.metrics["gt_known_loc"] < 0.5
    with pytest.raises(TinyconvError, match="no output for class z"):
        score_maps(model, ["b", "a", "c"], train, _squares(2, ["z"]))


def test_good_and_bad_cases_are_ordered_by_iou():
    model = square_model(num_classes=2)
    val = _squares(6, ["a"])
    scored = score_maps(model, ["a", "b"], _squares(3, ["a"]), val)
    scored.ious[:] = [0.2, 0.9, 0.5, 0.95, 0.1, 0.6]
    scored.correct[:] = [True, True, True, False, True, True]
    good, bad = good_and_bad(scored, count=2)
    assert good.tolist() == [1, 5]  # image 3 has the best IoU but a wrong class
    assert bad.tolist() == [4, 0]


def _scored(ious, correct) -> ScoredMaps:
    n = len(ious)
    return ScoredMaps(metrics={}, maps=np.zeros((n, 64, 64), np.float32), boxes=np.zeros((n, 4), np.int64),
                      ious=np.asarray(ious, dtype=np.float64), predicted=np.zeros(n, np.int64),
                      correct=np.asarray(correct, dtype=bool), hits=np.zeros(n))


WHOLE, HALF, QUARTER = (0, 0, 63, 63), (0, 0, 63, 31), (16, 16, 47, 47)  # 100 %, 50 % and 25 % of the frame


def test_box_area_fraction():
    np.testing.assert_allclose(box_area_fraction([WHOLE, HALF, QUARTER, (5, 5, 5, 5)]), [1.0, 0.5, 0.25, 1 / 4096])


def test_good_cases_skip_whole_frame_boxes_and_fall_back_on_the_next_smallest():
    # whole-frame boxes have the best IoUs (any map that lights up everywhere fits them): they are not good cases
    scored = _scored([1.0, 0.98, 0.6, 0.9, 0.7, 0.95, 0.99], [True, True, True, True, True, False, True])
    boxes = np.array([WHOLE, WHOLE, QUARTER, HALF, QUARTER, QUARTER, (0, 0, 63, 47)])  # the last covers 75 %
    good, bad = good_and_bad(scored, count=3, true_boxes=boxes)
    assert good.tolist() == [3, 4, 2]  # boxes of <= 50 %, by IoU; image 5 fits better but is misclassified
    assert bad.tolist() == [2, 4, 3]  # the worst boxes whatever their size
    assert "3 of the 6 correctly classified val images have a true box covering at most 50% of the frame" in \
        good_cases_note(scored, boxes, good)
    # too few small boxes: the rest are correctly classified images with the next smallest boxes, not by IoU
    good, _ = good_and_bad(scored, count=5, true_boxes=boxes)
    assert good.tolist() == [3, 4, 2, 6, 0]
    note = good_cases_note(scored, boxes, good)
    assert "shown: the 3 of them whose box fits best, then 2 correctly classified image(s)" in note
    assert good_and_bad(scored, count=2, true_boxes=boxes, max_area=0.3)[0].tolist() == [4, 2]
    # no correct image at all, or no boxes given: the old order by IoU alone
    assert good_and_bad(_scored([0.5, 0.9], [False, False]), true_boxes=[HALF, HALF])[0].tolist() == []
    assert good_and_bad(scored, count=2)[0].tolist() == [0, 6]


SMALL = QUARTER  # IoU with the whole image 0.25: the whole image meets no level on it


def _hits(values) -> ScoredMaps:
    """A ScoredMaps whose `hits` (each image's share of the IoU levels met) are `values`."""
    scored = _scored(np.zeros(len(values)), np.zeros(len(values), bool))
    scored.hits = np.asarray(values, dtype=np.float64)
    return scored


def test_whole_image_hits_are_its_max_box_acc_per_image():
    boxes = [WHOLE, SMALL, (0, 0, 44, 44)]  # IoU 1, 0.25, 0.494: levels met 3, 0, 1 of (0.3, 0.5, 0.7)
    assert whole_image_hits(boxes).tolist() == pytest.approx([1.0, 0.0, 1 / 3])
    assert whole_image_hits(boxes).mean() == pytest.approx(baseline_metrics(boxes)["full_image"]["max_box_acc"])


def test_versus_whole_image_pairs_the_images_and_states_the_paired_standard_error():
    # 500 images; the whole image meets every level on the first 200 (large boxes), none on the rest
    boxes = [WHOLE] * 200 + [SMALL] * 300
    # the map: the same as the whole image on 490 images, better on 10: +2.0 points, agreeing almost everywhere.
    # Paired SE: sd of the differences (ten 1s, 490 0s) / sqrt(500) = 0.63 points; the binomial SE of a 42 %
    # accuracy on 500 images would be 2.2 points and call this "not shown"
    ours = [1.0] * 200 + [1.0] * 10 + [0.0] * 290
    diff = np.array(ours) - whole_image_hits(boxes)
    se = 100 * np.std(diff, ddof=1) / np.sqrt(500)
    text = versus_whole_image(_hits(ours), boxes)
    assert text.startswith("CAM's BoxAcc at train thresholds (42.0%) beats the whole-image box (40.0%) by 2.0 points "
                           "on 500 val images, beyond two standard errors of the paired difference")
    assert f"±{se:.1f} points each" in text and se == pytest.approx(0.63, abs=0.01)
    assert "CAM localizes better than a box around the whole frame" in text
    # the same +2.0 points made of many disagreements both ways: 60 images better, 50 worse -> SE 2.1, not shown
    ours = [1.0] * 150 + [0.0] * 50 + [1.0] * 60 + [0.0] * 240
    text = versus_whole_image(_hits(ours), boxes, name="stage 3")
    assert "by 2.0 points" in text and "within the standard error of the paired difference (±2.1 points)" in text
    assert "stage 3 is not shown to localize differently" in text
    # between one and two: 30 better, 20 worse -> +2.0 points, SE 1.4
    ours = [1.0] * 180 + [0.0] * 20 + [1.0] * 30 + [0.0] * 270
    text = versus_whole_image(_hits(ours), boxes)
    assert "by 2.0 points" in text and "(±1.4 points) but within two: a hint that CAM localizes better" in text
    worse = versus_whole_image(_hits([0.0] * 200 + [0.0] * 300), boxes)
    assert "falls short of the whole-image box (40.0%) by 40.0 points" in worse and "localizes worse" in worse
    assert "ties with" in versus_whole_image(_hits(whole_image_hits(boxes)), boxes)
    with pytest.raises(TinyconvError, match="500 scored images but 2 true boxes"):
        versus_whole_image(_hits(ours), boxes[:2])


def test_versus_whole_image_on_scored_maps_uses_their_train_threshold_hits():
    model = square_model(num_classes=2)
    val = _squares(4, ["a"])
    scored = score_maps(model, ["a", "b"], _squares(3, ["a"]), val)
    assert scored.hits.mean() == pytest.approx(scored.metrics["train_threshold_box_acc"])
    assert "CAM's BoxAcc at train thresholds" in versus_whole_image(scored, val.boxes)


def test_kernel_variant_runs_trains_nothing_by_default(tmp_path, monkeypatch):
    import tinyconv.study.localize as localize

    def no_training(*args, **kwargs):
        raise AssertionError("nothing is trained unless kernel sizes are asked for")

    monkeypatch.setattr(localize, "train_kernel_variants", no_training)
    run = {"profile": "quick", "model": {"kernel_sizes": [9, 3, 3]}}
    assert kernel_variant_runs("quick", tmp_path, tmp_path / "k", [], None, run=run, model_path="best.keras") == {}
    # given runs: taken as they are (string keys from papermill), the studied model joins under its own size
    runs = kernel_variant_runs("quick", tmp_path, tmp_path / "k", [], {"13": "runs/k13", "3": "runs/k3"}, run=run,
                               model_path="best.keras")
    assert runs == {3: Path("runs/k3"), 9: Path("best.keras"), 13: Path("runs/k13")}
    # ... but not when it was trained with another profile
    other = kernel_variant_runs("ci", tmp_path, tmp_path / "k", [], {"3": "runs/k3"}, run=run, model_path="b.keras")
    assert other == {3: Path("runs/k3")}
    monkeypatch.setattr(localize, "train_kernel_variants", lambda profile, data, out, sizes: {
        int(k): Path(out) / f"stage1-k{k}" for k in sizes})
    assert list(kernel_variant_runs("quick", tmp_path, tmp_path / "k", [13], run=run, model_path="b.keras")) == [9, 13]
    line = kernel_comparison_skipped("quick")
    assert "\n" not in line and "skipped" in line and "about 10 minutes on two CPU cores" in line
    assert "kernel_sizes = [3, 13]" in line and '-p kernel_sizes "[3, 13]"' in line
    assert "seconds" in kernel_comparison_skipped("ci")


def test_score_stages_gives_grad_cam_per_stage_and_cam():
    from tinyconv.model.build import build_model

    keras.utils.set_random_seed(0)
    model = build_model("tiny", num_classes=3, widths=(8, 8, 8), depths=(1, 1, 1))
    val = _squares(3, ["x"])
    results = score_stages(model, ["x", "y", "z"], _squares(2, ["x"]), val)
    assert list(results) == ["stage 1", "stage 2", "stage 3", "CAM"]
    for scored in results.values():
        assert scored.maps.shape == (3, 64, 64) and 0.0 <= scored.metrics["max_box_acc"] <= 1.0
    rows = metrics_table(results, baseline_metrics(val.boxes))
    assert [row["maps"] for row in rows] == ["stage 1", "stage 2", "stage 3", "CAM", "centre box", "whole image"]
    assert rows[-1]["top-1"] is None and 0 <= rows[0]["MaxBoxAcc"] <= 100


def _noisy_squares(count: int, wnids, seed: int) -> BoxedImages:
    """`count` images of random noise with a brighter square each, of random classes of `wnids`, boxes exact."""
    rng = np.random.default_rng(seed)
    images, boxes = rng.integers(0, 120, (count, 64, 64, 3), dtype=np.uint8), []
    for image in images:
        x0, y0 = rng.integers(0, 40, 2)
        size = int(rng.integers(8, 24))
        image[y0 : y0 + size, x0 : x0 + size] += 120
        boxes.append((x0, y0, x0 + size - 1, y0 + size - 1))
    return BoxedImages(images=images, labels=rng.integers(0, len(wnids), count), boxes=np.array(boxes),
                       wnids=list(wnids), names=list(wnids), files=[f"n{i}.png" for i in range(count)])


def test_score_stages_from_one_pass_equals_a_pass_per_stage():
    """score_stages draws every stage's Grad-CAM and CAM from one forward and one backward pass per batch; each
    must be what a pass of its own gives (score_maps with that layer), over several batches, the last one short."""
    from tinyconv.model.build import build_model

    keras.utils.set_random_seed(1)
    model = build_model("tiny", num_classes=3, widths=(8, 8, 8), depths=(1, 1, 1))
    wnids = ["x", "y", "z"]
    train, val = _noisy_squares(4, wnids, seed=0), _noisy_squares(6, wnids, seed=1)
    one = score_stages(model, wnids, train, val, batch_size=4)
    layers = {**stage_layers(model), "CAM": None}
    assert list(one) == list(layers) == ["stage 1", "stage 2", "stage 3", "CAM"]
    for name, layer in layers.items():
        alone = score_maps(model, wnids, train, val, layer, batch_size=4)
        np.testing.assert_allclose(one[name].maps, alone.maps, rtol=0, atol=1e-5, err_msg=name)
        assert one[name].metrics == alone.metrics, name
        np.testing.assert_array_equal(one[name].boxes, alone.boxes)
        np.testing.assert_array_equal(one[name].predicted, alone.predicted)
    assert len({float(one[name].maps.std()) for name in one}) == 4  # four different maps, not one copied


def test_layer_maps_gives_each_layers_grad_cam_and_cam_in_the_order_asked():
    model = square_model()
    x = normalize(np.stack([square_image(), square_image((0, 0, 15, 31)), square_image((30, 30, 61, 45))]))
    (cam, grad, cam_again), logits = layer_maps(model, x, [None, "stage1_block1", None], classes=[0, 1, 0],
                                                batch_size=2)
    expected_cam, expected_logits = class_activation_maps(model, x, [0, 1, 0])
    np.testing.assert_allclose(cam, expected_cam, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cam, cam_again)
    np.testing.assert_allclose(grad, grad_cam(model, x, "stage1_block1", [0, 1, 0])[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-6, atol=1e-6)
    with pytest.raises(TinyconvError, match=r"outputs \(None, 2\), not a \[B, h, w, C\] map"):
        layer_maps(model, x, [model.get_layer("head_pool")])
    with pytest.raises(TinyconvError, match="no layer named 'nope'"):
        layer_maps(model, x, [None, "nope"])


def test_train_with_boxes_and_val_subsets(synthetic_data_dir):
    wnids = selected_classes(synthetic_data_dir, 5)[0]
    train = train_with_boxes(synthetic_data_dir, wnids[1:3], per_class=4, seed=1)
    assert len(train) == 8 and train.wnids == wnids[1:3] and sorted(set(train.labels.tolist())) == [0, 1]
    assert train.images.shape == (8, 64, 64, 3) and (train.boxes[:, 2] >= train.boxes[:, 0]).all()
    assert train.files == train_with_boxes(synthetic_data_dir, wnids[1:3], per_class=4, seed=1).files
    val = val_with_boxes(synthetic_data_dir, wnids, per_class=2)
    assert len(val) == 10 and np.bincount(val.labels).tolist() == [2] * 5
    assert len(val_with_boxes(synthetic_data_dir, wnids)) == 30
    assert val.labels_for(list(reversed(wnids))).tolist() == [4 - k for k in val.labels]


def test_format_metrics_and_case_titles():
    model = square_model(num_classes=2)
    val = _squares(3, ["b"], names=["bee"])
    scored = score_maps(model, ["a", "b"], _squares(2, ["b"]), val)  # top-1 is "a": every image is wrong
    text = format_metrics({"CAM": scored}, baseline_metrics(val.boxes))
    lines = text.splitlines()
    assert lines[0].split() == ["maps", "top-1", "GT-known", "loc", "top-1", "loc", "BoxAcc@train", "MaxBoxAcc",
                                "threshold"]
    assert lines[2].split()[:2] == ["CAM", "0.0"] and lines[3].split()[:3] == ["centre", "box", "-"]
    titles = case_titles(scored, val, ["ant", "bee"], [2, 0])
    area = (val.boxes[2, 2] - val.boxes[2, 0] + 1) * (val.boxes[2, 3] - val.boxes[2, 1] + 1) / 64**2  # 28 x 28
    assert titles[0] == f"bee\nIoU {scored.ious[2]:.2f}, box {area:.0%}\ntop-1: ant"


def test_trained_seed_model_prefers_the_most_trained(tmp_path):
    from tinyconv.study.analysis import trained_seed_model  # notebook 07's seed model, as 05's (one function)

    assert trained_seed_model(tmp_path) is None
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "seed-reference-e15.keras").write_bytes(b"")
    assert trained_seed_model(tmp_path)[0].name == "seed-reference-e15.keras"
    (tmp_path / "models" / "seed-reference.keras").write_bytes(b"")
    path, what = trained_seed_model(tmp_path)
    assert path.name == "seed-reference.keras" and "100 epochs" in what


def test_train_kernel_variants_changes_one_stage_and_reuses_finished_runs(synthetic_data_dir, tmp_path, capsys):
    runs = train_kernel_variants("ci", synthetic_data_dir, tmp_path, kernel_sizes=(5,))
    assert runs == {5: tmp_path / "stage1-k5"}
    config = json.loads((runs[5] / "config.json").read_text())
    assert stage_kernel_size(config) == 5 and config["model"]["kernel_sizes"][1:] == [3, 3]
    assert (runs[5] / "best.keras").is_file()
    capsys.readouterr()
    train_kernel_variants("ci", synthetic_data_dir, tmp_path, kernel_sizes=(5,))
    assert "already holds this run" in capsys.readouterr().out
    assert stage_kernel_size(None) is None
    with pytest.raises(TinyconvError, match="stage 3 of preset tiny has no square depthwise kernel"):
        train_kernel_variants("ci", synthetic_data_dir, tmp_path, kernel_sizes=(5,), stage=3)


# ------------------------------------------------------------------------------------------- figures


def test_plot_localization_grid_draws_each_map_and_both_boxes():
    import matplotlib

    val = _squares(5, ["a"])
    maps, _ = localization_maps(square_model(), val.images)
    boxes = np.array([box_from_map(m, 0.5) for m in maps])
    fig = tinyfigures.plot_localization_grid(val.images, maps, boxes, val.boxes, [f"#{i}\nIoU" for i in range(5)],
                                             columns=3, title="good cases")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(drawn) == 5  # 2 rows of 3, the last panel empty
    for ax, box, true in zip(drawn, boxes, val.boxes):
        assert len(ax.images) == 2  # the image and its map
        lime, white = ax.patches
        assert lime.get_edgecolor()[:3] == matplotlib.colors.to_rgb("lime")
        assert (lime.get_x(), lime.get_width()) == (box[0] - 0.5, box[2] - box[0] + 1)
        assert (white.get_y(), white.get_height()) == (true[1] - 0.5, true[3] - true[1] + 1)
    assert drawn[1].get_title() == "#1\nIoU" and fig._suptitle.get_text() == "good cases"


def test_plot_maps_by_method_has_a_column_per_method():
    val = _squares(2, ["a"])
    maps = {"CAM": localization_maps(square_model(), val.images)[0], "flat": np.zeros((2, 64, 64), np.float32)}
    fig = tinyfigures.plot_maps_by_method(val.images, maps, {"CAM": val.boxes, "flat": None}, val.boxes)
    assert len(fig.axes) == 2 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "CAM", "flat"]
    assert len(fig.axes[1].patches) == 2 and len(fig.axes[2].patches) == 1  # "flat" has no box of its own
    np.testing.assert_array_equal(fig.axes[4].images[1].get_array(), maps["CAM"][1])


def test_plot_localization_metrics_bars_and_baselines():
    metrics = {"stage 1": {"gt_known_loc": 0.4, "top1_loc": 0.2, "train_threshold_box_acc": 0.25, "max_box_acc": 0.3},
               "CAM": {"gt_known_loc": 0.6, "top1_loc": 0.5, "train_threshold_box_acc": 0.52, "max_box_acc": 0.55}}
    baseline = {"max_box_acc": 0.45, "full_image": {"max_box_acc": 0.35}}
    fig = tinyfigures.plot_localization_metrics({"quick": metrics, "seed": metrics}, baseline, title="per stage")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    heights = sorted(round(bar.get_height(), 6) for bar in ax.patches)
    assert heights == sorted([40.0, 20.0, 25.0, 30.0, 60.0, 50.0, 52.0, 55.0])
    assert sorted(line.get_ydata()[0] for line in ax.get_lines()) == [35.0, 45.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["stage 1", "CAM"]
    assert ax.get_title() == "quick" and ax.get_ylabel() == "% of val images"
    # each bar's value is written on it; the baselines run behind the bars, so they cross no value label, and
    # the scale fits the highest bar (60 %) instead of 0-105
    assert sorted(t.get_text() for t in ax.texts) == ["20", "25", "30", "40", "50", "52", "55", "60"]
    assert max(line.get_zorder() for line in ax.get_lines()) < min(bar.get_zorder() for bar in ax.patches)
    assert 60 < ax.get_ylim()[1] < 80
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == sorted(
        ["GT-known loc", "top-1 loc", "BoxAcc@train", "MaxBoxAcc", "centre box MaxBoxAcc", "whole image MaxBoxAcc"])
    # three or four panels wrap into rows of two (not a 1,900 px wide strip); an unused slot is hidden
    fig = tinyfigures.plot_localization_metrics({f"p{i}": metrics for i in range(3)}, baseline)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["p0", "p1", "p2"] and len(fig.axes) == 4
    assert fig.get_figwidth() < 10


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, synthetic_data_dir):
    """Two 5-class models with the run config.json (class list) of the synthetic data, a PNG and a fake PNG."""
    folder = tmp_path_factory.mktemp("models")
    wnids, names, words = selected_classes(synthetic_data_dir, 5)
    (folder / "config.json").write_text(json.dumps({"wnids": wnids, "names": names}))
    square_model(num_classes=5).save(folder / "square.keras")
    square_model(num_classes=5, gap_head=False).save(folder / "flat.keras")
    Image.fromarray(square_image()).save(folder / "square.png")
    (folder / "notes.png").write_text("not an image\n")
    return folder


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_localize_saves_the_overlay(saved_models, synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "cams"
    rc = cli.main(["localize", str(saved_models / "square.keras"), str(saved_models / "square.png"),
                   "--out", str(out), "--data-dir", str(synthetic_data_dir), "--threshold", "0.5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Egyptian cat" in printed and "box (12, 20, 43, 51)" in printed
    pictures = sorted(out.glob("*.png"))
    assert [p.name for p in pictures] == ["000_square_cam.png"]
    assert Image.open(pictures[0]).format == "PNG"


@pytest.mark.parametrize(
    "model, image, message",
    [
        ("square.keras", "notes.png", "not a readable JPEG or PNG image"),
        ("missing.keras", "square.png", "no such model file"),
        ("flat.keras", "square.png", "no global-average-pooling + Dense head"),
    ],
)
def test_cli_localize_errors_are_one_line(saved_models, synthetic_data_dir, tmp_path, capsys, model, image, message):
    rc = cli.main(["localize", str(saved_models / model), str(saved_models / image), "--out", str(tmp_path),
                   "--data-dir", str(synthetic_data_dir)])
    assert rc == 1
    assert message in _one_line_error(capsys)
    assert not list(tmp_path.glob("*.png"))


def test_cli_evaluate_with_localization(saved_models, synthetic_data_dir, capsys):
    rc = cli.main(["evaluate", str(saved_models / "square.keras"), "--no-tta", "--localization", "--json",
                   "--data-dir", str(synthetic_data_dir)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["localization"]["images"] == 30 and "baseline" in result["localization"]
    rc = cli.main(["evaluate", str(saved_models / "flat.keras"), "--no-tta", "--localization",
                   "--data-dir", str(synthetic_data_dir)])
    assert rc == 1 and "no global-average-pooling" in _one_line_error(capsys)


def test_grad_cam_of_a_layer_that_does_not_cut_the_model_is_one_line_for_jax():
    """On JAX, layer_maps cuts the model at each layer (Keras builds the pieces between them); a layer on one of two
    parallel branches does not cut it, and is refused in one line naming the layers. The pieces are built before any
    computation, so the refusal shows under TensorFlow too (the stages' outputs do cut it: test_jax_parity.py)."""
    from tinyconv.study.localize import _jax_passes

    inputs = keras.Input((64, 64, 3))
    left = keras.layers.Conv2D(2, 3, padding="same", name="left")(inputs)
    right = keras.layers.Conv2D(2, 1, name="right")(inputs)
    x = keras.layers.Add(name="join")([left, right])
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    model = keras.Model(inputs, outputs, name="branches")
    images = normalize(np.stack([square_image()]))
    with pytest.raises(TinyconvError, match=r"model branches: the layers \['left'\] do not each cut it in two"):
        next(_jax_passes(model, [model.get_layer("left")], [], images, None, 2))
