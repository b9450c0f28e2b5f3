"""Where is the object? Class activation maps from the classifier, boxes from maps, and the WSOL metrics.

    maps, logits = class_activation_maps(model, normalize(images))         # [N, h, w] for the top-1 class
    box = box_from_map(normalize_maps(upsample(maps))[0], 0.2)             # (x0, y0, x1, y1), inclusive
    result = evaluate_localization("models/seed-reference-e15.keras", data_dir)

The study of notebook 07 compares ways of drawing maps on the same images:

    train, val = train_with_boxes(data_dir, wnids), val_with_boxes(data_dir, wnids)   # images with boxes
    scored = score_maps(model, model_wnids, train, val, layer=None)   # CAM; a layer: Grad-CAM of it
    per_stage = score_stages(model, model_wnids, train, val)          # "stage 1".."stage 3", "CAM" (one pass)
    good, bad = good_and_bad(scored, true_boxes=val.boxes)           # good: objects smaller than half the frame
    print(versus_whole_image(scored, val.boxes))   # the gain over the whole-image box, with its paired standard error

Conventions:
- A box is (x0, y0, x1, y1) in pixels with both corners *inclusive*, as Tiny ImageNet's boxes are (a box
  covering the whole 64x64 image is (0, 0, 63, 63)); `iou` counts pixels, so its width is x1 - x0 + 1.
- A map's box is the bounding box of the largest 8-connected component of map >= fraction * max(map)
  (clovaai/wsolevaluation thresholds with cv2's `>`; on maps scaled to [0, 1] and fractions 0.05 .. 0.95 the two
  differ only on pixels exactly at the threshold).
- CAM (Zhou et al., 2016) is exact for a head that is global average pooling + Dense: the logit of class k is
  mean_{h,w} sum_c f[h, w, c] W[c, k] + b[k], so sum_c f[h, w, c] W[c, k] is each position's share of it.
- Grad-CAM (Selvaraju et al., 2017) for any layer: relu(sum_c mean_{h,w}(d logit_k / d A_c) A_c).
- Metrics (Choe et al., 2020, "Evaluating weakly supervised object localization methods right", and its journal
  version's MaxBoxAccV2): BoxAcc(tau, delta) is the share of images whose box at threshold tau has IoU >= delta
  with the true box (the map of the true class). **MaxBoxAcc** is theirs: for each delta in {0.3, 0.5, 0.7} the
  best tau on the images scored, then the mean over delta. It measures the maps apart from any threshold
  (their point), but the best tau is picked on the very images it scores, so it flatters maps a little beside
  a fixed box. Two differences from MaxBoxAccV2 as clovaai/wsolevaluation computes it: the box is the largest
  8-connected region's (V2 scores the best of every contour's box), and tau runs over 0.05..0.95 in steps of
  0.05 (theirs: steps of 0.01).
  The figures that need one threshold take it from *train* images with boxes (Tiny ImageNet has boxes for every
  train image; the model trained on them, as ImageNet's classifiers trained on Choe et al.'s train-fullsup
  images; nothing of val chooses it): GT-known loc (IoU >= 0.5 at the tau chosen for delta = 0.5), top-1 loc
  (top-1 correct as well) and **BoxAcc at train thresholds** (the mean over delta of BoxAcc at each delta's
  train-chosen tau). The last is what `versus_whole_image` compares with the whole-image box, image by image
  (a paired difference): no threshold is picked on the images it compares on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from tinyconv.data.augment import normalize
from tinyconv.data.dataset import default_data_dir, load_split, read_dataset_text, read_val_annotations, require_root
from tinyconv.errors import TinyconvError

IMAGE_SIZE = 64
IOU_LEVELS = (0.3, 0.5, 0.7)
THRESHOLDS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))  # fractions of the map's maximum

# ---------------------------------------------------------------------------------------------- maps


def cam_layers(model):
    """(the GlobalAveragePooling2D layer, the Dense head) of a model whose output is Dense(GAP(features)).

    Raises TinyconvError (one line) for any other head: CAM is only exact for GAP + Dense.
    """
    head = model.layers[-1] if model.layers else None
    pool = None
    if isinstance(head, keras.layers.Dense):
        try:  # the layer that produced the head's input (public API: the one whose output is that tensor)
            source = next((layer for layer in model.layers[:-1] if layer.output is head.input), None)
        except (AttributeError, ValueError):  # a layer never called, a head called on several inputs
            source = None
        if isinstance(source, keras.layers.GlobalAveragePooling2D) and not source.keepdims:
            pool = source
    if pool is None or head.activation not in (keras.activations.linear, None):
        raise TinyconvError(
            f"model {model.name} has no global-average-pooling + Dense head: class activation maps need one"
        )
    return pool, head


def class_activation_maps(model, images_normalized, classes=None, batch_size: int = 64):
    """CAM of each image for one class each, at the resolution of the last stage.

    Args:
        model: a keras.Model with a GAP + Dense head (see cam_layers).
        images_normalized: float32 [N, H, W, 3] (tinyconv.data.augment.normalize of uint8 images).
        classes: int [N] class per image, or None for each image's top-1 class.
    Returns:
        (maps float32 [N, h, w] (not normalised: sum_c f[h, w, c] W[c, k]), logits float32 [N, K]).
    """
    pool, head = cam_layers(model)
    probe = keras.Model(model.input, [pool.input, model.outputs[0]])
    kernel = np.asarray(ops.convert_to_numpy(head.kernel), dtype=np.float32)  # [C, K]
    maps, logits = [], []
    for start in range(0, len(images_normalized), batch_size):
        x = np.asarray(images_normalized[start : start + batch_size], dtype=np.float32)
        # a direct call, not predict_on_batch: each new probe would compile (and retrace) a predict function,
        # which costs more than these few batches and warns after five probes (one per stage and model)
        features, out = probe(x, training=False)
        features = np.asarray(ops.convert_to_numpy(features), dtype=np.float32)  # [B, h, w, C]
        out = np.asarray(ops.convert_to_numpy(out), dtype=np.float32)  # [B, K]
        chosen = out.argmax(-1) if classes is None else np.asarray(classes[start : start + batch_size])
        maps.append(_cam(features, kernel, chosen))
        logits.append(out)
    if not maps:
        return np.zeros((0, 0, 0), np.float32), np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.concatenate(maps).astype(np.float32), np.concatenate(logits)


def _cam(features, kernel, chosen) -> np.ndarray:
    """CAM from the last stage's features [B, h, w, C] and the head's kernel [C, K] for class chosen[b] of each."""
    return np.einsum("bhwc,cb->bhw", np.asarray(features, np.float32), kernel[:, chosen])


def grad_cam(model, images_normalized, layer, classes=None, batch_size: int = 32):
    """Grad-CAM of `layer` (a name or a layer with a [B, h, w, C] output) for one class per image.

    Returns (maps float32 [N, h, w] >= 0, logits float32 [N, K]); classes None means each image's top-1.
    """
    (maps,), logits = layer_maps(model, images_normalized, [layer], classes, batch_size)
    return maps, logits


def layer_maps(model, images_normalized, layers, classes=None, batch_size: int = 32):
    """The maps of several layers from one forward and one backward pass per batch: Grad-CAM of each layer (a name
    or a layer with a [B, h, w, C] output), CAM (see class_activation_maps) where `layers` holds None.

    One pass gives them all because a forward pass computes every layer's output and one gradient of the class
    score reaches every layer below it; a pass per layer computed the same forward again for each (notebook 07
    scored the seed's three stages and CAM in four forward and three backward passes per batch instead of one
    each: benchmarks/localize_stages.py, docs/performance.md). On TensorFlow the gradients come from its tape; on
    JAX (a GPU machine has no TensorFlow) from jax.vjp through the model cut at each layer, which must therefore
    cut it in two (the stages' outputs do; a layer inside a residual block does not: one line says so).

    Returns:
        (a float32 [N, h, w] per entry of `layers`, in their order: Grad-CAM maps >= 0, CAM maps unclipped;
         logits float32 [N, K]). classes None means each image's top-1.
    """
    resolved = []
    for layer in layers:
        if isinstance(layer, str):
            try:
                layer = model.get_layer(layer)
            except ValueError:
                raise TinyconvError(f"model {model.name} has no layer named {layer!r}") from None
        if layer is not None and len(layer.output.shape) != 4:
            raise TinyconvError(f"layer {layer.name} outputs {tuple(layer.output.shape)}, not a [B, h, w, C] map")
        resolved.append(layer)
    graded = [layer for layer in resolved if layer is not None]
    if not graded:  # CAM alone: a forward pass, no gradient
        maps, logits = class_activation_maps(model, images_normalized, classes, batch_size)
        return [maps for _ in resolved], logits
    kernel, extra = None, []
    if None in resolved:
        pool, head = cam_layers(model)
        kernel = np.asarray(ops.convert_to_numpy(head.kernel), dtype=np.float32)  # [C, K]
        extra = [pool.input]
    passes = _jax_passes if keras.backend.backend() == "jax" else _tensorflow_passes
    maps, logits = [[] for _ in resolved], []
    for graded_maps, cam_features, out, chosen in passes(model, graded, extra, images_normalized, classes, batch_size):
        graded_maps = iter(graded_maps)
        for i, layer in enumerate(resolved):
            maps[i].append(next(graded_maps) if layer is not None else _cam(cam_features, kernel, chosen))
        logits.append(out)
    if not logits:
        empty = np.zeros((0, 0, 0), np.float32)
        return [empty for _ in resolved], np.zeros((0, int(model.output_shape[-1])), np.float32)
    return [np.concatenate(m).astype(np.float32) for m in maps], np.concatenate(logits)


def _tensorflow_passes(model, graded, extra, images_normalized, classes, batch_size):
    """Per batch of layer_maps on TensorFlow: (Grad-CAM map of each graded layer, the extra output (CAM's
    features) or None, logits, the class chosen for each image), all numpy."""
    # imported here, so that importing tinyconv.study.localize never pulls TensorFlow into a JAX process
    import tensorflow as tf

    probe = keras.Model(model.input, [*(layer.output for layer in graded), *extra, model.outputs[0]])
    for start in range(0, len(images_normalized), batch_size):
        x = tf.convert_to_tensor(np.asarray(images_normalized[start : start + batch_size]), tf.float32)
        with tf.GradientTape() as tape:
            *features, out = probe(x, training=False)
            tape.watch(features[: len(graded)])
            out = tf.cast(out, tf.float32)  # [B, K]
            chosen = tf.argmax(out, -1) if classes is None else tf.constant(classes[start : start + batch_size])
            score = tf.reduce_sum(tf.gather(out, chosen, axis=1, batch_dims=1))
        grads = tape.gradient(score, features[: len(graded)])  # one backward pass for every graded layer
        graded_maps = []
        for feature, grad in zip(features, grads):
            feature, grad = tf.cast(feature, tf.float32), tf.cast(grad, tf.float32)  # [B, h, w, C]
            weights = tf.reduce_mean(grad, axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
            graded_maps.append(tf.nn.relu(tf.reduce_sum(weights * feature, axis=-1)).numpy())
        yield graded_maps, (features[-1] if extra else None), out.numpy(), np.asarray(chosen)


def _jax_passes(model, graded, extra, images_normalized, classes, batch_size):
    """layer_maps' batches on JAX: the model cut at each graded layer (in the model's order), run forward piece by
    piece, the class score differentiated with respect to the last cut and carried back through each piece with
    jax.vjp (one backward pass); the same yields as _tensorflow_passes."""
    import jax
    import jax.numpy as jnp

    order = {id(layer): i for i, layer in enumerate(model.layers)}
    cuts = [layer.output for layer in sorted({id(layer): layer for layer in graded}.values(),
                                              key=lambda layer: order[id(layer)])]
    if extra and not any(extra[0] is cut for cut in cuts):  # CAM's features: the head's input, after every stage
        cuts.append(extra[0])
    try:  # the model in pieces between the cuts: input -> cut 1 -> cut 2 ... -> logits
        pieces = [keras.Model(model.input, cuts[0])] + [keras.Model(a, b) for a, b in zip(cuts, cuts[1:])]
        tail = keras.Model(cuts[-1], model.outputs[0])
    except ValueError as exc:  # Keras: a piece needs a tensor that its cut does not give
        raise TinyconvError(f"model {model.name}: the layers {[layer.name for layer in graded]} do not each cut it "
                            f"in two, which Grad-CAM needs on JAX (on TensorFlow any layer works): {exc}") from None

    for start in range(0, len(images_normalized), batch_size):
        x = jnp.asarray(np.asarray(images_normalized[start : start + batch_size], dtype=np.float32))
        given = None if classes is None else jnp.asarray(np.asarray(classes[start : start + batch_size]))
        acts, backs = [pieces[0](x, training=False)], []  # forward once, keeping each later piece's vjp
        for piece in pieces[1:]:
            act, back = jax.vjp(lambda a, piece=piece: piece(a, training=False), acts[-1])
            acts.append(act)
            backs.append(back)

        def score(last):
            out = tail(last, training=False).astype(jnp.float32)  # [B, K]
            chosen = jnp.argmax(out, -1) if given is None else given
            return jnp.sum(jnp.take_along_axis(out, chosen[:, None], axis=1)), (out, chosen)

        grads = [None] * len(cuts)
        grads[-1], (out, chosen) = jax.grad(score, has_aux=True)(acts[-1])
        for i in range(len(cuts) - 1, 0, -1):  # back through the pieces between cuts: one backward pass in all
            (grads[i - 1],) = backs[i - 1](grads[i])
        maps = {}
        for cut, feature, grad in zip(cuts, acts, grads):
            feature, grad = np.asarray(feature, np.float32), np.asarray(grad, np.float32)  # [B, h, w, C]
            weights = grad.mean(axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
            maps[id(cut)] = (np.maximum((weights * feature).sum(axis=-1), 0.0), feature)
        cam_features = maps[id(extra[0])][1] if extra else None
        yield [maps[id(layer.output)][0] for layer in graded], cam_features, np.asarray(out), np.asarray(chosen)


def upsample(maps, size: int = IMAGE_SIZE) -> np.ndarray:
    """Maps [N, h, w] (or one [h, w]) resized bilinearly (half-pixel centres) to [N, size, size] float32."""
    maps = np.asarray(maps, dtype=np.float32)
    single = maps.ndim == 2
    x = maps[None, :, :, None] if single else maps[:, :, :, None]
    out = np.asarray(ops.convert_to_numpy(ops.image.resize(x, (size, size), interpolation="bilinear")))[..., 0]
    return out[0] if single else out


def normalize_maps(maps) -> np.ndarray:
    """Each map scaled to [0, 1] by its own min and max; a constant map becomes all zeros. float32, same shape.

    Raises TinyconvError (one line) for a map holding NaN or inf: a model whose outputs are not finite has no
    box, and scaling would hide that (a NaN map became all zeros, i.e. a whole-image box, which scores well here).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if not np.isfinite(maps).all():
        bad = int((~np.isfinite(maps.reshape(-1, *maps.shape[-2:]))).any(axis=(1, 2)).sum())
        raise TinyconvError(f"{bad} of the maps hold NaN or inf: the model's outputs are not finite")
    axes = tuple(range(maps.ndim - 2, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


# --------------------------------------------------------------------------------------------- boxes


def _label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a bool [H, W] mask: (labels int [H, W], 0 = background, count)."""
    from scipy import ndimage  # a dependency (pyproject.toml); imported where used

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return labels, int(count)


def check_threshold(threshold_fraction) -> float:
    """`threshold_fraction` as a float, if it lies in [0, 1]; else one TinyconvError. Outside, the box means
    nothing and no error would show it: above 1 no pixel reaches the threshold, below 0 every pixel does, NaN
    compares false with all, and each gives the whole image as the box."""
    try:
        value = float(threshold_fraction)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails every comparison
        raise TinyconvError(f"the box threshold must be a fraction of the map's maximum in [0, 1], "
                            f"got {threshold_fraction!r}")
    return value


def box_from_map(heatmap, threshold_fraction: float) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1), corners inclusive, of the largest 8-connected region where
    heatmap >= threshold_fraction * max(heatmap). Ties between equal regions go to the first in raster order.
    `threshold_fraction` must lie in [0, 1] (check_threshold).

    A map whose mask is empty gives the whole image: a map whose maximum is negative (raw CAM can be; the maps
    scored here are normalize_maps' [0, 1]) or one of NaNs only.
    """
    threshold_fraction = check_threshold(threshold_fraction)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise TinyconvError(f"box_from_map needs one [H, W] map, got shape {heatmap.shape}")
    height, width = heatmap.shape
    mask = heatmap >= threshold_fraction * np.nanmax(heatmap) if np.isfinite(heatmap).any() else np.zeros_like(heatmap, bool)
    labels, count = _label_components(mask)
    if count == 0:
        return 0, 0, width - 1, height - 1
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def iou(a, b) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1) with inclusive pixel corners."""
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(ix, 0) * max(iy, 0)
    area = lambda box: max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)  # noqa: E731
    union = area(a) + area(b) - inter
    return float(inter / union) if union > 0 else 0.0


def box_ious(maps, boxes, thresholds=THRESHOLDS) -> np.ndarray:
    """IoU with the true box of each map's box at each threshold: float64 [T, N] (maps [N, H, W], boxes [N, 4])."""
    return np.array([[iou(box_from_map(m, t), box) for m, box in zip(maps, boxes)] for t in thresholds])


def centre_box(width: float, height: float, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """The inclusive box of about width x height pixels centred in a size x size image."""
    w, h = int(round(min(max(width, 1), size))), int(round(min(max(height, 1), size)))
    x0, y0 = (size - w) // 2, (size - h) // 2
    return x0, y0, x0 + w - 1, y0 + h - 1


# ------------------------------------------------------------------------------------------- metrics


def choose_thresholds(ious, thresholds=THRESHOLDS, levels=IOU_LEVELS) -> dict[float, float]:
    """For each IoU level, the threshold whose BoxAcc (share of IoU >= level) is highest on `ious` [T, N];
    ties go to the lowest threshold."""
    ious = np.asarray(ious)
    return {level: float(thresholds[int(np.argmax((ious >= level).mean(axis=1)))]) for level in levels}


def _threshold_rows(thresholds, chosen, levels) -> dict:
    """{IoU level: the row of `thresholds` nearest the threshold chosen for it}."""
    thresholds = [float(t) for t in thresholds]
    return {level: thresholds.index(min(thresholds, key=lambda t: abs(t - chosen[level]))) for level in levels}


def box_hits(ious, thresholds, chosen, levels=IOU_LEVELS) -> np.ndarray:
    """Each image's share of the IoU levels its box meets at their chosen thresholds: float [N] in [0, 1].
    Its mean is BoxAcc at those thresholds, averaged over the levels (`train_threshold_box_acc`); per image, it
    pairs two ways of boxing the same images (versus_whole_image)."""
    ious = np.asarray(ious, dtype=np.float64)
    row = _threshold_rows(thresholds, chosen, levels)
    return np.mean([ious[row[level]] >= level for level in levels], axis=0).astype(np.float64)


def localization_metrics(ious, correct, thresholds=THRESHOLDS, chosen=None, levels=IOU_LEVELS) -> dict:
    """The WSOL metrics from box IoUs at each threshold (the module's docstring defines them).

    Args:
        ious: float [T, N], the IoU of each image's box (map of its true class) at each threshold.
        correct: bool [N], whether the top-1 class is the true one.
        chosen: {IoU level: threshold} picked elsewhere (on train images with boxes; see choose_thresholds);
            None picks them on these images.
    Returns:
        {"threshold" (the one chosen at IoU 0.5), "gt_known_loc", "top1_loc", "box_acc": {level: BoxAcc at
         its chosen threshold}, "train_threshold_box_acc" (the mean of box_acc), "max_box_acc" (Choe et al.'s:
         the best threshold per level on these images, averaged over the levels),
         "thresholds_chosen": {level: threshold}}; accuracies are fractions.
    """
    ious, correct = np.asarray(ious, dtype=np.float64), np.asarray(correct, dtype=bool)
    chosen = choose_thresholds(ious, thresholds, levels) if chosen is None else dict(chosen)
    row = _threshold_rows(thresholds, chosen, levels)
    box_acc = {level: float((ious[row[level]] >= level).mean()) for level in levels}
    at_half = ious[row[0.5]] if 0.5 in row else ious[row[levels[0]]]
    return {
        "threshold": float(chosen.get(0.5, chosen[levels[0]])),
        "gt_known_loc": float((at_half >= 0.5).mean()),
        "top1_loc": float(((at_half >= 0.5) & correct).mean()),
        "box_acc": box_acc,
        "train_threshold_box_acc": float(np.mean(list(box_acc.values()))),
        "max_box_acc": float(np.mean([(ious >= level).mean(axis=1).max() for level in levels])),
        "thresholds_chosen": chosen,
    }


def baseline_metrics(boxes, levels=IOU_LEVELS, size: int = IMAGE_SIZE) -> dict:
    """The centre box of the average box size, scored like a map's box: {"box", "gt_known_loc", "box_acc",
    "max_box_acc", "full_image": the same four for the whole-image box} (no threshold to choose: gt_known_loc is
    BoxAcc at 0.5, and MaxBoxAcc and BoxAcc at train thresholds are both the mean of box_acc, so only
    "max_box_acc" is given). Tiny ImageNet's boxes are large, so the whole image is a strong guess."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def score(box):
        ious = _fixed_box_ious(box, boxes)
        box_acc = {level: float((ious >= level).mean()) for level in levels}
        return {"box": box, "gt_known_loc": float((ious >= 0.5).mean()), "box_acc": box_acc,
                "max_box_acc": float(np.mean(list(box_acc.values())))}

    centre = centre_box((boxes[:, 2] - boxes[:, 0] + 1).mean(), (boxes[:, 3] - boxes[:, 1] + 1).mean(), size)
    return {**score(centre), "full_image": score((0, 0, size - 1, size - 1))}


def whole_image_hits(boxes, levels=IOU_LEVELS, size: int = IMAGE_SIZE) -> np.ndarray:
    """box_hits of the whole-image box on each true box: float [N]; its mean is the whole image's MaxBoxAcc."""
    ious = _fixed_box_ious((0, 0, size - 1, size - 1), boxes)
    return np.mean([ious >= level for level in levels], axis=0).astype(np.float64)


def _fixed_box_ious(box, true_boxes) -> np.ndarray:
    """IoU of one fixed box (the centre or the whole image) with each true box: float64 [N]."""
    return np.array([iou(box, b) for b in np.asarray(true_boxes).reshape(-1, 4)], dtype=np.float64)


# ---------------------------------------------------------------------------------------- evaluation


def read_train_boxes(root: Path, wnid: str) -> dict[str, tuple[int, int, int, int]]:
    """train/<wnid>/<wnid>_boxes.txt as file name -> (x0, y0, x1, y1), inclusive."""
    path = Path(root) / "train" / wnid / f"{wnid}_boxes.txt"
    if not path.is_file():
        raise TinyconvError(f"missing {path}: the train boxes are needed to choose the threshold")
    boxes = {}
    for number, line in enumerate(read_dataset_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            boxes[fields[0]] = tuple(int(v) for v in fields[1:5])
            assert len(fields) == 5
        except (ValueError, AssertionError):
            raise TinyconvError(f"malformed line {number} in {path}: expected file x0 y0 x1 y1") from None
    return boxes


@dataclass
class BoxedImages:
    """Images with their true boxes, labelled 0..K-1 in the order of `wnids`.

    Attributes:
        images: uint8 [N, 64, 64, 3]; labels: int [N]; boxes: int [N, 4] (x0, y0, x1, y1), inclusive.
        wnids, names: the classes the labels index; files: the file name of each image.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    wnids: list
    names: list
    files: list

    def __len__(self) -> int:
        return int(len(self.labels))

    def labels_for(self, model_wnids) -> np.ndarray:
        """The labels as indices into another class list (a model's outputs), e.g. a 200-class model
        scored on the images of 10 classes. Raises TinyconvError when the model lacks one of the classes."""
        model_wnids = list(model_wnids)
        missing = [wnid for wnid in self.wnids if wnid not in model_wnids]
        if missing:
            raise TinyconvError(f"the model has no output for class {missing[0]} ({len(missing)} missing)")
        return np.array([model_wnids.index(wnid) for wnid in self.wnids], dtype=np.int64)[self.labels]


def train_with_boxes(data_dir, wnids, per_class: int = 10, seed: int = 0) -> BoxedImages:
    """`per_class` train images per class (drawn with `seed`) with their boxes from train/<wnid>/<wnid>_boxes.txt:
    the images on which thresholds are chosen, never val's. Not held out: the models studied here trained on
    every train image (as ImageNet classifiers trained on Choe et al.'s train-fullsup images); what matters is
    that nothing of val chooses a threshold."""
    root = require_root(data_dir)
    train = load_split(data_dir, "train", classes=list(wnids))
    rng = np.random.default_rng(seed)
    picked, boxes = [], []
    for label, wnid in enumerate(train.wnids):
        by_name = read_train_boxes(root, wnid)
        rows = np.flatnonzero(train.labels == label)
        for i in np.sort(rng.choice(rows, size=min(per_class, len(rows)), replace=False)):
            name = Path(train.files[i]).name
            if name not in by_name:
                raise TinyconvError(f"train/{wnid}/{wnid}_boxes.txt has no box for {name}")
            picked.append(i)
            boxes.append(by_name[name])
    picked = np.asarray(picked, dtype=np.int64)
    return BoxedImages(images=np.ascontiguousarray(train.images[picked]), labels=np.asarray(train.labels)[picked],
                       boxes=np.asarray(boxes, dtype=np.int64).reshape(-1, 4), wnids=list(train.wnids),
                       names=list(train.names), files=[Path(train.files[i]).name for i in picked])


def val_with_boxes(data_dir, wnids, per_class: int | None = None) -> BoxedImages:
    """The val images of `wnids` with their official boxes; `per_class` keeps the first that many of each
    class (in val's file order), None keeps all 50."""
    root = require_root(data_dir)
    val = load_split(data_dir, "val", classes=list(wnids))
    annotations = read_val_annotations(root)
    boxes = [annotations[Path(name).name][1] for name in val.files]
    if any(box is None for box in boxes):
        raise TinyconvError(f"{root}/val has no val_annotations.txt: the val boxes are needed")
    keep = np.arange(len(val.labels))
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(val.labels == k)[:per_class] for k in range(len(val.wnids))])
        keep = np.sort(keep)
    return BoxedImages(images=np.ascontiguousarray(val.images[keep]), labels=np.asarray(val.labels)[keep],
                       boxes=np.asarray(boxes, dtype=np.int64).reshape(-1, 4)[keep], wnids=list(val.wnids),
                       names=list(val.names), files=[Path(val.files[i]).name for i in keep])


def localization_maps(model, images, classes=None, layer=None, batch_size: int = 64):
    """Maps at 64x64 in [0, 1] for uint8 images [N, 64, 64, 3]: CAM of the last stage when `layer` is None,
    else Grad-CAM of `layer` (a name or a layer). classes None: each image's top-1 class.

    Returns:
        (maps float32 [N, 64, 64], logits float32 [N, K]).
    """
    (maps,), logits = _maps_at_64(model, images, classes, [layer], batch_size)
    return maps, logits


def _maps_at_64(model, images, classes, layers, batch_size: int):
    """localization_maps for several layers (None: CAM) from one pass per batch: ([N, 64, 64] per layer, logits)."""
    x = normalize(np.ascontiguousarray(images))
    if all(layer is None for layer in layers):  # CAM alone needs no gradient, so no TensorFlow
        maps, logits = class_activation_maps(model, x, classes, batch_size)
        raw = [maps] * len(layers)
    else:
        raw, logits = layer_maps(model, x, layers, classes, batch_size=min(batch_size, 32))
    return [normalize_maps(upsample(maps)) for maps in raw], logits


def stage_layers(model) -> dict[str, object]:
    """"stage N" -> the layer whose output ends stage N (its last ConvMixerBlock), for Grad-CAM per stage."""
    from tinyconv.study import analysis  # analysis imports the model layers; only the notebook's study needs them

    return {f"stage {stage}": layer for stage, layer in sorted(analysis.stage_outputs(model).items())}


@dataclass
class ScoredMaps:
    """One way of drawing maps (CAM, or Grad-CAM of a layer) scored on val, thresholds chosen on train.

    Attributes:
        metrics: localization_metrics' dict plus "top1", "images", "train_images".
        maps: float32 [N, 64, 64], the val maps of the true classes in [0, 1].
        boxes: int [N, 4], each map's box at the threshold chosen for IoU 0.5.
        ious: float [N], their IoU with the true boxes; predicted: int [N], top-1 class (the model's order).
        correct: bool [N], top-1 is the true class.
        hits: float [N], box_hits at the train thresholds (its mean is metrics["train_threshold_box_acc"]).
    """

    metrics: dict
    maps: np.ndarray
    boxes: np.ndarray
    ious: np.ndarray
    predicted: np.ndarray
    correct: np.ndarray
    hits: np.ndarray


def score_maps(model, model_wnids, train: BoxedImages, val: BoxedImages, layer=None,
               thresholds=THRESHOLDS, batch_size: int = 64) -> ScoredMaps:
    """Maps of the true class (CAM, or Grad-CAM of `layer`) scored with the WSOL metrics on `val`, the
    threshold per IoU level chosen on `train` (train images with boxes, train_with_boxes), never on val.

    Args:
        model_wnids: the class of each model output (see BoxedImages.labels_for).
    """
    return score_layers(model, model_wnids, train, val, {"maps": layer}, thresholds, batch_size)["maps"]


def score_layers(model, model_wnids, train: BoxedImages, val: BoxedImages, layers: dict,
                 thresholds=THRESHOLDS, batch_size: int = 64) -> dict:
    """score_maps for each of `layers` (name -> a layer, or None for CAM), all from one pass over train and one
    over val (layer_maps): {name: ScoredMaps}."""
    train_maps, _ = _maps_at_64(model, train.images, train.labels_for(model_wnids), list(layers.values()), batch_size)
    labels = val.labels_for(model_wnids)
    val_maps, logits = _maps_at_64(model, val.images, labels, list(layers.values()), batch_size)
    predicted = logits.argmax(-1)
    correct = predicted == labels
    scored = {}
    for name, train_maps_of, maps in zip(layers, train_maps, val_maps):
        chosen = choose_thresholds(box_ious(train_maps_of, train.boxes, thresholds), thresholds)
        ious = box_ious(maps, val.boxes, thresholds)
        metrics = localization_metrics(ious, correct, thresholds, chosen)
        metrics.update(top1=float(correct.mean()) if len(correct) else 0.0, images=len(val), train_images=len(train))
        boxes = np.array([box_from_map(m, metrics["threshold"]) for m in maps], dtype=np.int64).reshape(-1, 4)
        per_image = np.array([iou(box, true) for box, true in zip(boxes, val.boxes)], dtype=np.float64)
        scored[name] = ScoredMaps(metrics=metrics, maps=maps, boxes=boxes, ious=per_image, predicted=predicted,
                                  correct=correct, hits=box_hits(ious, thresholds, chosen))
    return scored


def box_area_fraction(boxes, size: int = IMAGE_SIZE) -> np.ndarray:
    """The share of the size x size frame each inclusive box (x0, y0, x1, y1) covers: float64 [N] in (0, 1]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1) / float(size * size)


# The good cases are chosen among images whose true box covers at most this share of the frame: a box around
# the whole frame is matched by any map that lights up everywhere, so such an "IoU 1.00" shows nothing.
GOOD_CASE_MAX_AREA = 0.5


def good_and_bad(scored: ScoredMaps, count: int = 8, true_boxes=None,
                 max_area: float = GOOD_CASE_MAX_AREA) -> tuple[np.ndarray, np.ndarray]:
    """(indices of `count` well-localized correctly classified images; indices of the `count` worst-localized
    images, lowest IoU first, whatever the prediction). Fewer when there are fewer images.

    Good: with `true_boxes` ([N, 4], the val boxes), the correctly classified images whose true box covers at
    most `max_area` of the frame, highest IoU first; when fewer than `count` qualify, the other correctly
    classified images follow, smallest true box first (the least whole-frame ones). Without `true_boxes`: the
    correctly classified images by IoU alone.
    """
    correct = np.flatnonzero(scored.correct)
    if true_boxes is None:
        good = correct[np.argsort(-scored.ious[correct], kind="stable")][:count]
    else:
        area = box_area_fraction(true_boxes)
        small = correct[area[correct] <= max_area]
        large = correct[area[correct] > max_area]
        good = np.concatenate([small[np.argsort(-scored.ious[small], kind="stable")],
                               large[np.argsort(area[large], kind="stable")]])[:count]
    bad = np.argsort(scored.ious, kind="stable")[:count]
    return np.asarray(good, dtype=np.int64), np.asarray(bad, dtype=np.int64)


def good_cases_note(scored: ScoredMaps, true_boxes, good, max_area: float = GOOD_CASE_MAX_AREA) -> str:
    """One line saying how good_and_bad chose `good`: how many correctly classified images have a true box
    within `max_area` of the frame, and whether the grid had to fall back on larger boxes."""
    area = box_area_fraction(true_boxes)
    correct = np.flatnonzero(scored.correct)
    small = int((area[correct] <= max_area).sum())
    within = int((area[np.asarray(good, dtype=np.int64)] <= max_area).sum())
    text = (f"{small} of the {len(correct)} correctly classified val images have a true box covering at most "
            f"{max_area:.0%} of the frame; shown: the {within} of them whose box fits best")
    if within < len(good):
        text += (f", then {len(good) - within} correctly classified image(s) with the next smallest boxes "
                 f"(too few small boxes)")
    return text


def score_stages(model, model_wnids, train: BoxedImages, val: BoxedImages, batch_size: int = 64) -> dict:
    """{"stage 1": ScoredMaps (Grad-CAM of its output), ..., "CAM": ScoredMaps}: which stage localizes best.

    Both backends: on JAX through the model cut at each stage's output (layer_maps).
    """
    return score_layers(model, model_wnids, train, val, {**stage_layers(model), "CAM": None}, batch_size=batch_size)


def metrics_table(results: dict, baseline: dict | None = None) -> list[dict]:
    """Rows for tinyconv.study.analysis.format_table: one per entry of `results` (name -> ScoredMaps or metrics
    dict), then the centre-box and whole-image baselines of baseline_metrics when given. Percentages."""
    rows = []
    for name, result in results.items():
        m = result.metrics if isinstance(result, ScoredMaps) else result
        rows.append({"maps": name, "top-1": 100 * m["top1"], "GT-known loc": 100 * m["gt_known_loc"],
                     "top-1 loc": 100 * m["top1_loc"], "BoxAcc@train": 100 * m["train_threshold_box_acc"],
                     "MaxBoxAcc": 100 * m["max_box_acc"], "threshold": m["threshold"]})
    if baseline is not None:  # a fixed box has no threshold: its BoxAcc at any threshold is its MaxBoxAcc
        for name, entry in (("centre box", baseline), ("whole image", baseline["full_image"])):
            rows.append({"maps": name, "top-1": None, "GT-known loc": 100 * entry["gt_known_loc"], "top-1 loc": None,
                         "BoxAcc@train": 100 * entry["max_box_acc"], "MaxBoxAcc": 100 * entry["max_box_acc"],
                         "threshold": None})
    return rows


def format_metrics(results: dict, baseline: dict | None = None) -> str:
    """metrics_table as aligned text: percentages with one decimal, "-" where a row has no value."""
    from tinyconv.study.analysis import format_table

    def text(key, value):
        if key == "maps":
            return value
        return "-" if value is None else f"{value:.2f}" if key == "threshold" else f"{value:.1f}"

    shown = [{key: text(key, value) for key, value in row.items()} for row in metrics_table(results, baseline)]
    return format_table(shown, columns=["maps", "top-1", "GT-known loc", "top-1 loc", "BoxAcc@train", "MaxBoxAcc",
                                        "threshold"])


def case_titles(scored: ScoredMaps, images: BoxedImages, model_names, indices) -> list[str]:
    """Titles for good/bad case grids: the true class; the box's IoU and the share of the frame the true box
    covers; a third line naming the top-1 class when it is wrong."""
    area = box_area_fraction(images.boxes)
    titles = []
    for i in indices:
        verdict = "" if scored.correct[i] else f"\ntop-1: {model_names[int(scored.predicted[i])]}"
        titles.append(f"{images.names[int(images.labels[i])]}\nIoU {scored.ious[i]:.2f}, box {area[i]:.0%}{verdict}")
    return titles


def compare_with_whole_image(scored: ScoredMaps, true_boxes) -> dict:
    """A map's boxes against the whole-image box on the same val images, image by image: each image's box_hits at
    the train thresholds (scored.hits) against the whole image's (whole_image_hits).

    Both boxes are scored on the same images, and most images go the same way for both, so the error of the
    difference is that of the paired differences (measures.paired_standard_error), several times smaller than
    either accuracy's binomial one (notebook 07's `quick` model on 500 images, 2026-12-06: 0.4 against 2.2
    points). BoxAcc at train thresholds, not MaxBoxAcc: MaxBoxAcc picks the map's best threshold on these very
    images, which a fixed box cannot, so it would favour the map.

    Args:
        scored: ScoredMaps of the val images; true_boxes: their boxes [N, 4] (BoxedImages.boxes).
    Returns:
        {"images", "box_acc" (the map's BoxAcc at train thresholds), "whole_image" (the whole image's),
         "difference" (their difference), "standard_error" (of the paired difference)}: fractions.
    """
    from tinyconv.study.measures import paired_standard_error

    ours, whole = np.asarray(scored.hits, dtype=np.float64), whole_image_hits(true_boxes)
    if ours.shape != whole.shape:
        raise TinyconvError(f"{len(ours)} scored images but {len(whole)} true boxes: score and compare the same images")
    mean = lambda values: float(values.mean()) if len(values) else 0.0  # noqa: E731
    return {"images": len(ours), "box_acc": mean(ours), "whole_image": mean(whole), "difference": mean(ours - whole),
            "standard_error": paired_standard_error(ours, whole)}


def describe_comparison(comparison: dict, name: str = "CAM") -> str:
    """compare_with_whole_image's result as one sentence, so that a gain within its standard error is not read as
    a finding: within one standard error "not shown", within two "a hint", beyond two a finding."""
    diff, se, images = 100 * comparison["difference"], 100 * comparison["standard_error"], comparison["images"]
    what = f"{name}'s BoxAcc at train thresholds ({comparison['box_acc']:.1%})"
    if round(diff, 1) == 0:
        head = f"{what} ties with the whole-image box ({comparison['whole_image']:.1%})"
    else:
        verb = "beats" if diff > 0 else "falls short of"
        head = f"{what} {verb} the whole-image box ({comparison['whole_image']:.1%}) by {abs(diff):.1f} points"
    head += f" on {images:,} val images"
    better, worse = "localizes better than", "localizes worse than"
    error = "the standard error of the paired difference"
    if abs(diff) <= se:
        return (f"{head}, within {error} (±{se:.1f} points): on these images {name} is not shown to localize "
                f"differently from a box around the whole frame.")
    if abs(diff) <= 2 * se:
        return (f"{head}, beyond {error} (±{se:.1f} points) but within two: a hint that {name} "
                f"{better if diff > 0 else worse} the whole frame, not a finding.")
    return (f"{head}, beyond two standard errors of the paired difference (±{se:.1f} points each): {name} "
            f"{better if diff > 0 else worse} a box around the whole frame here.")


def versus_whole_image(scored: ScoredMaps, true_boxes, name: str = "CAM") -> str:
    """describe_comparison of compare_with_whole_image: one sentence (notebook 07)."""
    return describe_comparison(compare_with_whole_image(scored, true_boxes), name)


def load_localizable(model_or_path, data_dir=None):
    """(model, its ClassList, its run config or None) for a model, .keras file or run folder whose head CAM
    can read (see cam_layers); TinyconvError (one line) for a missing file or another head."""
    from tinyconv.deploy.inference import load_run_model, model_classes  # inference imports the layers (Keras)

    model, run, path = load_run_model(model_or_path)
    cam_layers(model)
    return model, model_classes(model, run, data_dir, path=path), run


def stage_kernel_size(run: dict | None, stage: int = 1) -> int | None:
    """The square depthwise kernel size of a stage from a run config (its "model" entry), None when unknown."""
    sizes = ((run or {}).get("model") or {}).get("kernel_sizes")
    return int(sizes[stage - 1]) if sizes and len(sizes) >= stage else None


def train_kernel_variants(profile: str, data_dir, out_root, kernel_sizes=(3, 13), stage: int = 1,
                          preset: str | None = None) -> dict[int, Path]:
    """Train the profile's model once per kernel size of one stage, everything else equal (recipe, seed,
    data), to ask whether large kernels localize better: large depthwise kernels widen the effective
    receptive field (Ding et al., 2022, RepLKNet), which may spread a map over more of the object.

    Each run goes to out_root/stage<stage>-k<size>; a finished run is reused and an interrupted one resumed
    (tinyconv.training.train.train).

    Returns:
        {kernel size: run folder}.
    Raises:
        TinyconvError: when that stage's blocks have no square kernel (axial mode).
    """
    from tinyconv.model.config import get_config
    from tinyconv.training.recipe import make_config
    from tinyconv.training.train import train

    config = make_config(profile, preset=preset)
    base = get_config(config.preset, **config.model_overrides)
    if not 1 <= stage <= len(base.kernel_sizes) or base.modes[stage - 1] == "axial":
        raise TinyconvError(f"stage {stage} of preset {config.preset} has no square depthwise kernel to vary")
    runs = {}
    for size in kernel_sizes:
        sizes = [int(k) for k in base.kernel_sizes]
        sizes[stage - 1] = int(size)
        out = Path(out_root) / f"stage{stage}-k{int(size)}"
        train(preset=preset, profile=profile, data_dir=data_dir, out=out,
              overrides={"model_overrides": {"kernel_sizes": sizes}})
        runs[int(size)] = out
    return runs


# What one more training run per kernel size costs, by profile (notebook 07 says it before training nothing).
KERNEL_VARIANT_COST = {
    "ci": "seconds",
    "quick": "about 10 minutes on two CPU cores",
    "full": "a full 100-epoch run on a GPU (hours)",
    "reference": "a full 100-epoch run on a GPU (hours)",
}


def kernel_variant_runs(profile: str, data_dir, out_root, kernel_sizes=(), kernel_runs=None, run: dict | None = None,
                        model_path=None) -> dict[int, Path]:
    """The models notebook 07 compares by stage-1 kernel size: {kernel size: run folder or .keras file}.

    `kernel_runs` ({size: folder}, keys may be strings) are taken as they are; otherwise one model per size
    in `kernel_sizes` is trained (train_kernel_variants, into out_root; a finished run is reused). With
    either, the studied model (`model_path`, its run config `run`) joins under its own stage-1 kernel size
    when it was trained with the same profile and that size is not there yet. Both empty: {} and nothing is
    trained (the notebook's default, since each size is one more training run: KERNEL_VARIANT_COST).
    """
    if kernel_runs:
        runs = {int(size): Path(path) for size, path in kernel_runs.items()}
    elif kernel_sizes:
        runs = train_kernel_variants(profile, data_dir, out_root, kernel_sizes)
    else:
        return {}
    own = stage_kernel_size(run)
    if run and run.get("profile") == profile and own is not None and own not in runs and model_path is not None:
        runs[own] = Path(model_path)
    return dict(sorted(runs.items()))


def kernel_comparison_skipped(profile: str) -> str:
    """The one line notebook 07 prints when `kernel_sizes` is empty: what the comparison would cost under
    `profile` and how to turn it on."""
    cost = KERNEL_VARIANT_COST.get(profile, "one training run")
    return (f"kernel-size comparison skipped (kernel_sizes = []): each size trains one more `{profile}` model "
            f"({cost}); to run it set kernel_sizes = [3, 13] in the parameters cell (papermill: "
            f'-p kernel_sizes "[3, 13]"), or pass finished runs as kernel_runs')


def evaluate_localization(model_or_path, data_dir=None, *, classes=None, per_class: int = 10,
                          thresholds=THRESHOLDS, batch_size: int = 64, seed: int = 0) -> dict:
    """CAM localization of a model on the official val boxes, thresholds chosen on train images with boxes.

    Args:
        model_or_path: a keras.Model, a .keras file or a run folder (see tinyconv.deploy.inference.load_run_model).
        per_class: train images per class (drawn with `seed`) on which the thresholds are chosen.
    Returns:
        localization_metrics' dict plus {"images", "train_images", "top1", "baseline": baseline_metrics,
        "versus_whole_image": compare_with_whole_image}.
    """
    from tinyconv.deploy.inference import load_run_model, model_classes  # inference imports the layers (Keras)

    model, run, path = load_run_model(model_or_path)
    cam_layers(model)  # a model without a GAP + Dense head fails here, before any data is read
    class_list = model_classes(model, run, data_dir, classes, path=path)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    train = train_with_boxes(data_dir, class_list.wnids, per_class, seed)
    val = val_with_boxes(data_dir, class_list.wnids)
    scored = score_maps(model, class_list.wnids, train, val, None, thresholds, batch_size)
    return {**scored.metrics, "baseline": baseline_metrics(val.boxes),
            "versus_whole_image": compare_with_whole_image(scored, val.boxes)}


def format_localization(result: dict) -> str:
    """A readable summary of evaluate_localization's result."""
    base = result["baseline"]
    acc = "  ".join(f"IoU {level}: {value:.2%}" for level, value in result["box_acc"].items())
    return "\n".join([
        f"localization (CAM, threshold {result['threshold']:.2f} of the max, chosen on {result['train_images']} "
        f"train images with boxes; {result['images']} val images)",
        f"  GT-known loc {result['gt_known_loc']:.2%}   top-1 loc {result['top1_loc']:.2%}   "
        f"BoxAcc at train thresholds {result['train_threshold_box_acc']:.2%}",
        f"  BoxAcc  {acc}",
        f"  MaxBoxAcc {result['max_box_acc']:.2%} (Choe et al.: the best threshold per IoU level on these images)",
        f"  centre-box baseline {tuple(base['box'])}: GT-known loc {base['gt_known_loc']:.2%}   "
        f"MaxBoxAcc {base['max_box_acc']:.2%}",
        f"  whole-image box: GT-known loc {base['full_image']['gt_known_loc']:.2%}   "
        f"MaxBoxAcc {base['full_image']['max_box_acc']:.2%}",
        f"  {describe_comparison(result['versus_whole_image'])}",
    ])


def localize_images(model_or_path, paths, data_dir=None, threshold: float = 0.2, resize: str = "crop") -> list[dict]:
    """The top-1 class, its CAM (64x64 in [0, 1]) and its box for each JPEG/PNG file.

    Returns one dict per image: {"image": path, "pixels": uint8 [64, 64, 3], "map": float32 [64, 64],
    "box": (x0, y0, x1, y1) inclusive, "wnid", "name", "probability"}. `threshold`: in [0, 1] (box_from_map).
    """
    from tinyconv.deploy.inference import load_image, load_run_model, model_classes, softmax

    if not paths:
        raise TinyconvError("no images given")
    threshold = check_threshold(threshold)  # before the model loads
    pixels = np.stack([load_image(path, resize) for path in paths])  # [N, 64, 64, 3]; resize: crop or squash
    model, run, model_path = load_run_model(model_or_path)
    cam_layers(model)
    class_list = model_classes(model, run, data_dir, path=model_path)
    maps, logits = class_activation_maps(model, normalize(pixels))
    maps = normalize_maps(upsample(maps))
    probs = softmax(logits)
    results = []
    for path, image, heatmap, row in zip(paths, pixels, maps, probs):
        k = int(row.argmax())
        results.append({"image": str(path), "pixels": image, "map": heatmap, "box": box_from_map(heatmap, threshold),
                        "wnid": class_list.wnids[k], "name": class_list.names[k], "probability": float(row[k])})
    return results
