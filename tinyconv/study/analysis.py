"""What a model learned and what the data looks like: the computations behind the notebooks (their figures
are drawn by tinyconv.study.figures, accuracies come from tinyconv.deploy.inference).

Data (02): channel statistics, grayscale counts, augmentation examples.
Model (03): per-stage tables and charts from `tinyconv.model.config.model_info`.
Kernels (05): stem filters, depthwise and axial kernels and the effective kxk kernels they compose,
kernel energy by distance from the center, layer-scale and squeeze-excite statistics, the effective
receptive field (ERF), per-class accuracy and misclassified examples.

Arrays are numpy; images are uint8 [N, 64, 64, 3] unless said otherwise; kernels are [k, k, C] (one
k x k kernel per channel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from tinyconv.data import augment as augment_ops
from tinyconv.data.dataset import load_split
from tinyconv.errors import TinyconvError
from tinyconv.deploy.inference import load_run_model, model_classes
from tinyconv.model.build import build_model
from tinyconv.model.config import PRESETS, ModelConfig, get_config, stage_plan
from tinyconv.model.layers import ConvMixerBlock
from tinyconv.study.measures import standard_error
from tinyconv.data.augment_config import REFERENCE_AUGMENT
from tinyconv.training.history import read_history
from tinyconv.training.recipe import PROFILES, TrainConfig, make_config
from tinyconv.training.reference import read_reference_curve
from tinyconv.training.run_state import session_rows

# ImageNet statistics in 0..255 units, for data statistics and display.
IMAGENET_MEAN = tuple(255.0 * m for m in augment_ops.IMAGENET_MEAN)
IMAGENET_STD = tuple(255.0 * s for s in augment_ops.IMAGENET_STD)

# ------------------------------------------------------------------------------------------------ data


def channel_stats(images, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation in 0..255 units, streamed in chunks (works on a memmap).

    From each channel's histogram of its 256 values: exact integer counts, so the sums (sum of v * count[v], of
    v^2 * count[v]) are exact too, and the train split's 1.2 GB take 5 s instead of the 19 s of summing them in
    float64 (2-core CPU; docs/performance.md).

    Args:
        images: uint8 [N, H, W, 3].
        chunk: images per chunk; bounds the working memory.
    Returns:
        (mean [3], std [3]) float64.
    """
    counts = np.zeros((3, 256), dtype=np.int64)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.uint8).reshape(-1, 3)  # [n*H*W, 3]
        for channel in range(3):
            counts[channel] += np.bincount(block[:, channel], minlength=256)
    values = np.arange(256, dtype=np.float64)
    count = counts[0].sum()
    if count == 0:
        return np.full(3, np.nan), np.full(3, np.nan)
    mean = (counts * values).sum(axis=1) / count
    std = np.sqrt(np.maximum((counts * values**2).sum(axis=1) / count - np.square(mean), 0.0))
    return mean, std


def grayscale_mask(images, chunk: int = 4096) -> np.ndarray:
    """Which images are grayscale (R == G == B at every pixel: one-channel JPEGs decode this way).

    Args:
        images: uint8 [N, H, W, 3].
    Returns:
        bool [N].
    """
    masks = []
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk])
        same = (block[..., 0] == block[..., 1]) & (block[..., 1] == block[..., 2])  # [n, H, W]
        masks.append(same.reshape(len(block), -1).all(axis=1))
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def count_per_class(labels, num_classes: int) -> np.ndarray:
    """Images per class: int [num_classes] from int labels [N]."""
    return np.bincount(np.asarray(labels), minlength=num_classes)


def box_areas(annotations, image_size: int = 64) -> np.ndarray:
    """Share of the image each val box covers.

    Args:
        annotations: file name -> (wnid, (x0, y0, x1, y1) or None), as tinyconv.data.dataset.read_val_annotations
            returns; corners are inclusive pixels.
    Returns:
        float64 [M] in (0, 1], one per annotated image (images without a box are skipped).
    """
    boxes = [box for _, box in annotations.values() if box is not None]
    areas = [(x1 - x0 + 1) * (y1 - y0 + 1) for x0, y0, x1, y1 in boxes]
    return np.asarray(areas, dtype=np.float64) / float(image_size * image_size)


def examples_per_class(mask, labels, count: int = 8) -> np.ndarray:
    """Indices of up to `count` images where `mask` holds, each from a different class (the first of each
    class, classes in label order), so that a grid shows the variety rather than one class.

    Args:
        mask: bool [N]; labels: int [N].
    Returns:
        int64 [<= count], ascending class order.
    """
    chosen, seen = [], set()
    labels = np.asarray(labels)
    for index in np.flatnonzero(np.asarray(mask)):
        if labels[index] not in seen:
            seen.add(labels[index])
            chosen.append(index)
            if len(chosen) == count:
                break
    return np.asarray(chosen, dtype=np.int64)


def to_uint8(x_normalized) -> np.ndarray:
    """Undo the ImageNet normalization for display: float [..., 3] -> uint8 [..., 3]."""
    x = np.asarray(x_normalized, dtype=np.float32) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def augmentation_examples(images, seed: int = 0, augment=None) -> dict[str, np.ndarray]:
    """Each train-time augmentation alone, and the whole recipe, applied to the same images.

    Args:
        images: uint8 [B, H, W, 3], B >= 2 (mixup and cutmix pair each image with another one).
        seed: the seed of the draws (tinyconv.data.augment.batch_rng(seed, 0, 1)).
        augment: an AugmentConfig for the strengths and for "full recipe" (default: the reference recipe).
    Returns:
        name -> uint8 [B, H, W, 3], in display order: original, crop+flip, colour jitter, cutout, mixup,
        cutmix, full recipe. Each op alone is applied to every image; mixup and cutmix pair image i with
        image B-1-i at a 60/40 ratio.
    """
    augment = augment or REFERENCE_AUGMENT
    images = np.asarray(images, np.uint8)
    batch, height, width = images.shape[:3]
    labels = np.eye(batch, dtype=np.float32)  # each image its own class, for the mixing ops
    draws = augment_ops.draw_batch(augment_ops.batch_rng(seed, 0, 1), batch, height, width, augment)
    unit = images.astype(np.float32) / 255.0
    always = np.ones(batch, bool)
    crop = augment_ops.crop_flip(unit, draws["offset_y"], draws["offset_x"], draws["flip"], max(augment.pad, 1))
    jitter = augment_ops.color_jitter(unit, always, draws["brightness"], draws["contrast"], draws["saturation"],
                                      draws["hue"])
    cut = augment_ops.cutout(unit, always, draws["cutout_y"], draws["cutout_x"], augment.cutout_half, 0.0)
    x = augment_ops.normalize(images)
    # A fixed 60/40 ratio and mirrored partners show both clearly; training draws them at random.
    ratio, partner = np.full(batch, 0.6, np.float32), np.arange(batch)[::-1].astype(np.int32)
    mixed, _ = augment_ops.mix(x, labels, augment_ops.MIXUP, ratio, partner, draws["box_y"], draws["box_x"])
    cutmixed, _ = augment_ops.mix(x, labels, augment_ops.CUTMIX, ratio, partner, draws["box_y"], draws["box_x"])
    recipe, _ = augment_ops.augment_batch(images, labels, draws, augment)
    as_uint8 = lambda unit_images: np.clip(np.rint(np.asarray(unit_images) * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return {
        "original": images,
        "crop + flip": as_uint8(crop),
        "colour jitter": as_uint8(jitter),
        "cutout": as_uint8(cut),
        "mixup": to_uint8(np.asarray(mixed)),
        "cutmix": to_uint8(np.asarray(cutmixed)),
        "full recipe": to_uint8(np.asarray(recipe)),
    }


def augmentation_by_profile(images, profiles=("quick", "full"), seed: int = 0) -> dict[str, np.ndarray]:
    """What each profile's train-time augmentation does to the same images, with the same draws' seed.

    Args:
        images: uint8 [B, H, W, 3], B >= 2.
        profiles: names of tinyconv.training.recipe.PROFILES.
    Returns:
        "original" and one "<profile>: <ops>" entry per profile -> uint8 [B, H, W, 3] (mixed images shown
        at their pixels; the labels mix too, which a picture cannot show).
    """
    images = np.asarray(images, np.uint8)
    labels = np.eye(len(images), dtype=np.float32)
    out = {"original": images}
    for profile in profiles:
        augment = make_config(profile).augment
        draws = augment_ops.draw_batch(augment_ops.batch_rng(seed, 0, 1), len(images), images.shape[1],
                                       images.shape[2], augment)
        x, _ = augment_ops.augment_batch(images, labels, draws, augment)
        out[f"{profile}: {describe_augment(augment)}"] = to_uint8(np.asarray(x))
    return out


def describe_augment(augment) -> str:
    """The ops an AugmentConfig applies, in a few words: e.g. "crop+flip, jitter 0.8, cutout 0.7, mix 1.0"."""
    ops = []
    if augment.pad or augment.flip:
        ops.append("+".join(name for name, on in (("crop", augment.pad), ("flip", augment.flip)) if on))
    for name, prob in (("jitter", augment.jitter_prob), ("cutout", augment.cutout_prob), ("mix", augment.mix_prob)):
        if prob:
            ops.append(f"{name} p={prob:g}")
    return ", ".join(ops) or "none"


# ----------------------------------------------------------------------------------------- model parts


def block_forward_source() -> str:
    """The source of ConvMixerBlock's forward pass (`spatial_mix` and `call`), as the package runs it:
    notebook 03 prints this instead of a copy that could drift from the code."""
    import inspect
    import textwrap

    return "\n".join(textwrap.dedent(inspect.getsource(fn)) for fn in (ConvMixerBlock.spatial_mix, ConvMixerBlock.call))


def describe_block(layer) -> str:
    """A short label of a block's spatial mixer: "depthwise 9x9", "axial 1x5+5x1", "mixed 1x7+7x1, 3x3"."""
    k, a = layer.kernel_size, layer.axial_kernel_size
    if layer.mode == "depthwise":
        return f"depthwise {k}x{k}"
    if layer.mode == "axial":
        return f"axial 1x{a}+{a}x1"
    return f"mixed 1x{a}+{a}x1, {k}x{k}"


@dataclass
class BlockRef:
    """A ConvMixerBlock located in the model.

    Attributes:
        stage: 1-based stage index (stages are runs of blocks at one spatial resolution).
        index: 0-based block index within the stage.
        layer: the ConvMixerBlock layer.
        resolution: (H, W) of its feature map for a 64x64 input.
    """

    stage: int
    index: int
    layer: object
    resolution: tuple[int, int]

    @property
    def label(self) -> str:
        return f"s{self.stage}b{self.index + 1}"


def find_blocks(model) -> list[BlockRef]:
    """The ConvMixerBlocks of a model in order, with their stage (a new stage starts when H x W changes).

    Args:
        model: a functional keras.Model from tinyconv.model.config.build_model (or a loaded .keras file).
    Returns:
        list of BlockRef.
    """
    blocks: list[BlockRef] = []
    stage, index, previous = 0, 0, None
    for layer in _all_layers(model):
        if not isinstance(layer, ConvMixerBlock):
            continue
        resolution = tuple(int(n) for n in layer.output.shape[1:3])
        named = re.fullmatch(r"stage(\d+)_block(\d+)", layer.name)  # build_model's names, 1-based
        if named:
            stage, index = int(named.group(1)), int(named.group(2)) - 1
        elif resolution != previous:
            stage, index = stage + 1, 0
        previous = resolution
        blocks.append(BlockRef(stage=stage, index=index, layer=layer, resolution=resolution))
        index += 1
    return blocks


def _all_layers(model):
    """Layers of a model in order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def stem_kernel(model) -> np.ndarray:
    """The kernel of the first convolution that reads the RGB input: [k, k, 3, C]."""
    for layer in _all_layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 4 and kernel.shape[2] == 3:
            return np.asarray(kernel.numpy(), dtype=np.float32)
    raise ValueError("the model has no convolution over the 3 input channels")


def block_kernels(block) -> dict[str, np.ndarray]:
    """The spatial kernels of one ConvMixerBlock, per channel.

    Returns:
        name -> array: "depthwise" [k, k, C] (depthwise mode), "row" [a, C] and "col" [a, C] (the axial
        1xa and ax1 kernels), "axial_effective" [a, a, C] (their outer product, rank 1 per channel),
        "local_depthwise" [k, k, C] (mixed mode).
    """
    kernels = {}
    if getattr(block, "depthwise", None) is not None:
        kernels["depthwise"] = block.depthwise.kernel.numpy()[:, :, :, 0].astype(np.float32)
    if getattr(block, "axial", None) is not None:
        row, col = block.axial.axial_kernels()
        kernels["row"], kernels["col"] = row, col
        kernels["axial_effective"] = block.axial.effective_kernel()
    if getattr(block, "local_depthwise", None) is not None:
        kernels["local_depthwise"] = block.local_depthwise.kernel.numpy()[:, :, :, 0].astype(np.float32)
    return kernels


def main_kernel(block) -> tuple[str, np.ndarray]:
    """The kxk kernel that describes a block's spatial reach: the depthwise one, else the axial effective one."""
    kernels = block_kernels(block)
    name = "depthwise" if "depthwise" in kernels else "axial_effective"
    return name, kernels[name]


def kernel_rank(kernel_2d, tolerance: float = 1e-5) -> int:
    """Numerical rank of one k x k kernel (singular values above `tolerance` times the largest)."""
    singular = np.linalg.svd(np.asarray(kernel_2d, dtype=np.float64), compute_uv=False)
    return int((singular > tolerance * max(singular[0], 1e-30)).sum())


def layer_scale_stats(blocks: list[BlockRef]) -> list[dict]:
    """Per block: mean, std, min, max of |gamma| of the layer scale (rows without one are skipped)."""
    rows = []
    for ref in blocks:
        scale = getattr(ref.layer, "layer_scale", None)
        if scale is None:
            continue
        gamma = np.abs(scale.gamma.numpy().astype(np.float64))
        rows.append(
            dict(block=ref.label, stage=ref.stage, mean=gamma.mean(), std=gamma.std(), min=gamma.min(), max=gamma.max())
        )
    return rows


def se_input(block, x):
    """The input of a block's squeeze-excite: the spatial branch up to and including its BatchNorm.

    ConvMixerBlock.spatial_mix in inference mode, so the gates can be read on real images.

    Args:
        block: a ConvMixerBlock; x: its input [B, H, W, C].
    Returns:
        [B, H, W, C] tensor.
    """
    return block.spatial_mix(x, training=False)


def squeeze_excite_stats(model, images_normalized, blocks: list[BlockRef] | None = None) -> list[dict]:
    """Per block with squeeze-excite: statistics of its channel gates on real images.

    Args:
        model: the model; images_normalized: float32 [B, 64, 64, 3] (a few val images).
        blocks: from find_blocks (default: computed).
    Returns:
        rows with block, stage, mean gate, std across channels of the per-channel mean gate, share of
        gates below 0.1 ("switched off") and above 0.9, and the std across images (input dependence).
    """
    blocks = blocks if blocks is not None else find_blocks(model)
    with_se = [ref for ref in blocks if getattr(ref.layer, "se", None) is not None]
    if not with_se:
        return []
    probe = keras.Model(model.input, [ref.layer.input for ref in with_se])
    inputs = probe(images_normalized, training=False)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    rows = []
    for ref, block_input in zip(with_se, inputs):
        gate = ref.layer.se.gate(se_input(ref.layer, block_input))  # [B, 1, 1, C]
        gate = np.asarray(gate, dtype=np.float64)[:, 0, 0, :]  # [B, C]
        per_channel = gate.mean(axis=0)
        rows.append(
            dict(
                block=ref.label,
                stage=ref.stage,
                mean=gate.mean(),
                channel_std=per_channel.std(),
                below_0_1=(gate < 0.1).mean(),
                above_0_9=(gate > 0.9).mean(),
                across_images_std=gate.std(axis=0).mean(),
            )
        )
    return rows


# ------------------------------------------------------------------------------- receptive fields


def stage_outputs(model, blocks: list[BlockRef] | None = None) -> dict[int, object]:
    """Stage number -> the last ConvMixerBlock of that stage (its output ends the stage)."""
    blocks = blocks if blocks is not None else find_blocks(model)
    last = {}
    for ref in blocks:
        last[ref.stage] = ref.layer
    return last


def effective_receptive_field(model, images_normalized, layer, batch_size: int = 16) -> np.ndarray:
    """The effective receptive field of `layer`'s center unit: |d out[center] / d input|, averaged.

    For each image, the output of `layer` at the spatial center (summed over channels) is differentiated
    with respect to the input pixels; the absolute gradient is summed over RGB, averaged over images and
    normalized to sum to 1 (Luo et al., 2016).

    Args:
        model: a functional keras.Model; layer: one of its layers with a [B, h, w, C] output.
        images_normalized: float32 [N, H, W, 3].
    Returns:
        float64 [H, W] summing to 1.
    """
    probe = keras.Model(model.input, layer.output)
    total = None
    for start in range(0, len(images_normalized), batch_size):
        x = np.asarray(images_normalized[start : start + batch_size], dtype=np.float32)
        contribution = np.abs(_centre_gradient(probe, x)).sum(axis=(0, 3))  # [H, W]
        total = contribution if total is None else total + contribution
    total = total.astype(np.float64)
    return total / max(total.sum(), 1e-30)


def _centre_gradient(probe, x: np.ndarray) -> np.ndarray:
    """d/dx of probe(x)'s spatial centre summed over channels and the batch: float32 [B, H, W, 3], on the Keras
    backend in use (JAX on a GPU, where there is no TensorFlow; TensorFlow on a CPU)."""

    def centre(x):
        features = ops.cast(probe(x, training=False), "float32")  # [B, h, w, C]
        h, w = features.shape[1], features.shape[2]
        return ops.sum(features[:, h // 2, w // 2, :])

    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(centre)(jax.numpy.asarray(x)), dtype=np.float32)
    # TensorFlow imported here, so that importing tinyconv.study.analysis (figures does) never pulls it into a
    # JAX process
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = centre(x)
    return tape.gradient(value, x).numpy()


# ---------------------------------------------------------------------------------- trained model


@dataclass
class TrainedModel:
    """A loaded model with the val split of its classes.

    Attributes:
        model: the keras.Model; path: the .keras file it came from.
        run: the run's config.json (None for a bare .keras file).
        val: the val Split of the model's classes (labels 0..K-1 in output order).
    """

    model: object
    path: object
    run: dict | None
    val: object

    def stage_receptive_fields(self) -> dict[int, int]:
        """Stage number -> theoretical receptive field (pixels) at its end, from the run's model config.

        Read from the analytic stage plan behind tinyconv.model.config.model_info: no second model is built. A bare
        model file without a run config is taken to be its named preset (`tinyconv_<preset>`), if one exists.
        """
        if self.run and "model" in self.run:
            config = ModelConfig.from_dict(self.run["model"])
        elif self.model.name.removeprefix("tinyconv_") in PRESETS:
            config = get_config(self.model.name.removeprefix("tinyconv_"))
        else:
            return {}
        fields = {}
        for stage in stage_plan(config):
            named = re.fullmatch(r"stage(\d+)", stage["name"])
            if named:
                fields[int(named.group(1))] = int(stage["receptive_field"])
        return fields


def load_trained(model_path, data_dir) -> TrainedModel:
    """Load a .keras file (or run folder) and the val images of its classes.

    The class list comes from the run's config.json beside the model; a bare model file is taken to use
    the first K classes of wnids.txt (K = its number of outputs); see tinyconv.deploy.inference.model_classes.

    Raises:
        TinyconvError: a missing or unreadable model, or a class list that does not match its outputs.
    """
    if not Path(model_path).exists():
        raise TinyconvError(f"no model at {model_path}: run 04_train first or set model_path")
    model, run, path = load_run_model(model_path)
    classes = model_classes(model, run, data_dir, path=path)
    val = load_split(data_dir, "val", classes=classes.wnids)
    return TrainedModel(model=model, path=path, run=run, val=val)


# The fully trained seed models the GPU runs may add to the repository, preferred in this order; the
# 15-epoch snapshot of the reference run is what the repository has now.
TRAINED_MODELS = (
    ("models/seed-reference.keras", "the seed preset after the reference profile's 100 epochs"),
    ("models/seed-full.keras", "the seed preset after the full profile's 100 epochs"),
    ("models/seed-reference-e15.keras", "the seed preset after 15 of the reference profile's 100 epochs (GPU run)"),
)


def trained_seed_model(repo_root) -> tuple[Path, str] | None:
    """(path, what it is) of the most trained seed model in the repository's models/ (TRAINED_MODELS, in order:
    100 epochs first, the 15-epoch snapshot last), None when there is none (notebooks 05 and 07).

    It lists models/ rather than asking for each file: a notebook's record names the folders it listed
    (tinyconv.study.provenance), so a model added there later makes the notebooks that chose one stale.
    """
    folder = Path(repo_root) / "models"
    present = {path.name for path in folder.iterdir() if path.is_file()} if folder.is_dir() else set()
    for relative, what in TRAINED_MODELS:
        if Path(relative).name in present:
            return Path(repo_root) / relative, what
    return None


def default_model(run_model, repo_root) -> tuple[Path, str]:
    """The model notebook 05 analyses when none is named: the most trained seed model in the repository
    (trained_seed_model), else the notebook run's own `run_model`.

    Returns:
        (path, a sentence saying what the model is).
    """
    found = trained_seed_model(repo_root)
    if found is not None:
        path, what = found
        return path, f"{what}: {path.relative_to(repo_root).as_posix()}"
    return Path(run_model), "the model notebook 04 trained (its best checkpoint)"


def calibrate_batchnorm(model, images_normalized) -> int:
    """Set every BatchNormalization's moving mean and variance to the statistics of its input over
    `images_normalized` (one forward pass in training mode with momentum 0, restored after); returns how many.

    An untrained model's BatchNorms still hold moving mean 0 and variance 1, which no input matches, so in
    inference mode its activations shrink block after block (in the seed's twin the stage-2 input had a standard
    deviation of 0.013) and whatever is read from them (effective receptive fields, squeeze-excite gates) shows
    that collapse, not the initialisation. Calibrated, inference mode computes what the network computes on
    these images at initialisation in training mode, image by image.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(ops.convert_to_tensor(np.asarray(images_normalized, dtype=np.float32)), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def untrained_twin(loaded: TrainedModel, calibration_images: int = 64):
    """The same preset, built and initialised as its training run started: same config, same seed, no
    training. Comparing with it separates what training changed from what initialisation put there.

    Its BatchNorm statistics are set from the first `calibration_images` val images (calibrate_batchnorm; 0
    leaves Keras' initial 0 and 1): until 2026-12-06 they were not, and notebook 05's untrained receptive fields
    and gates were those of collapsed activations. The weights are untouched.

    The weights equal the run's starting weights when the backend is the one it trained with (Keras draws
    initial weights with the backend's random generator); across backends (a JAX-trained model analysed with
    TensorFlow) they are another draw from the same initialisation, which is what per-block statistics compare.

    The config and seed come from the run's config.json (or the metadata the model file carries: preset and
    profile); a bare file without either is taken to be its named preset (`tinyconv_<preset>`) with the
    recipe's default seed.

    Raises:
        TinyconvError: when the twin's parameter count differs from the model's (another architecture).
    """
    run = loaded.run or {}
    model = loaded.model
    if "model" in run:
        config = ModelConfig.from_dict(run["model"])
    else:
        preset = run.get("preset") or model.name.removeprefix("tinyconv_")
        config = get_config(preset, num_classes=int(model.output_shape[-1]))
    seed = int((run.get("train") or {}).get("seed", profile_seed(run.get("profile"))))
    keras.utils.set_random_seed(seed)
    twin = build_model(config)
    if twin.count_params() != model.count_params():
        raise TinyconvError(
            f"{loaded.path}: cannot rebuild it untrained ({config.name} has {twin.count_params():,} parameters, "
            f"the model {model.count_params():,})"
        )
    if calibration_images and loaded.val is not None and len(loaded.val):
        calibrate_batchnorm(twin, augment_ops.normalize(np.asarray(loaded.val.images[:calibration_images])))
    return twin


def profile_seed(profile: str | None) -> int:
    """The seed a profile trains with (the recipe's default, the reference's 42, for an unknown profile)."""
    return make_config(profile).seed if profile in PROFILES else TrainConfig().seed


def profile_model_config(profile: str, preset: str | None = None) -> ModelConfig:
    """The model config a profile trains (its preset, model overrides and number of classes), without
    reading the dataset: what notebook 03 builds so that it explains the model 04 trains."""
    config = make_config(profile, preset)
    classes = config.classes
    count = 200 if not classes else classes if isinstance(classes, int) else len(classes)
    return get_config(config.preset, **{**config.model_overrides, "num_classes": count})


# ---------------------------------------------------------------------------------- predictions


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """int64 [K, K]: entry (t, p) counts images of true class t predicted as p (rows sum to the class sizes)."""
    flat = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def most_confused_pairs(confusion, names, count: int = 10) -> list[dict]:
    """The off-diagonal cells of a confusion matrix with the most images, largest first.

    Returns:
        rows {true, predicted, images, share} where share is images / the true class's size.
    """
    confusion = np.asarray(confusion)
    off = confusion.astype(np.float64).copy()
    np.fill_diagonal(off, -1)
    order = np.argsort(-off, axis=None, kind="stable")[:count]
    sizes = confusion.sum(axis=1)
    rows = []
    for flat in order:
        t, p = divmod(int(flat), confusion.shape[1])
        if off[t, p] <= 0:
            break
        rows.append(dict(true=names[t], predicted=names[p], images=int(confusion[t, p]),
                         share=float(confusion[t, p] / max(sizes[t], 1))))
    return rows


def top_predictions(logits, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes per image and their softmax probabilities, most probable first.

    Returns:
        (classes int64 [N, k], probabilities float64 [N, k]).
    """
    logits = np.asarray(logits, dtype=np.float64)
    k = min(k, logits.shape[1])
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    classes = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return classes, np.take_along_axis(probabilities, classes, axis=1)


def misclassified(labels, logits, count: int = 8) -> np.ndarray:
    """Indices of the `count` most confidently wrong predictions (highest softmax on the wrong class)."""
    return confident_mistakes(labels, logits, count)[0]


def confident_mistakes(labels, logits, count: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The `count` most confidently wrong predictions and their confidences (softmax of the predicted class).

    Returns:
        (indices int64 [<= count], confidences float64 [<= count]), most confident first.
    """
    logits = np.asarray(logits, dtype=np.float64)
    predictions = logits.argmax(axis=1)
    wrong = np.flatnonzero(predictions != np.asarray(labels))
    shifted = logits[wrong] - logits[wrong].max(axis=1, keepdims=True)
    confidence = 1.0 / np.exp(shifted).sum(axis=1)  # softmax of the arg-max class
    order = np.argsort(-confidence, kind="stable")[:count]
    return wrong[order], confidence[order]


# ------------------------------------------------------------------------------------------ training


def reference_run(repo_root) -> dict | None:
    """The most advanced run of the 200-class recipe committed under results/seed-reference*/ (the 100-epoch run
    and the 15-epoch GPU runs of docs/results.md), for notebook 04 to draw against the reference's published curve;
    None when there is none with a history.csv.

    Most advanced: the most epochs in its history.csv; on a tie, `results/seed-reference/` (the run that
    resumes across GPU leases, docs/gpu.md) before the one-off runs (-h100, -h200), then the best val top-1.

    Returns:
        {"path": the run folder, "history": its rows (read_history), "epochs": epochs reached, "planned": epochs
        its recipe plans (config.json, else the reference's 100), "classes", "profile", "preset", "device" (where
        its epochs ran: run_devices), "best_top1" and "best_epoch" (1-based)}.
    """
    import json

    found = []
    for folder in sorted(Path(repo_root, "results").glob("seed-reference*")):
        history = read_history(folder / "history.csv") if (folder / "history.csv").is_file() else []
        if not history:
            continue
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        train = config.get("train") or {}
        val_top1 = np.array([row.get("val_top1", np.nan) for row in history], dtype=np.float64)
        best = int(np.nanargmax(val_top1)) if np.isfinite(val_top1).any() else len(history) - 1
        found.append({
            "path": folder, "history": history, "epochs": history[-1]["epoch"] + 1,
            "planned": int(train.get("epochs") or len(read_reference_curve())),
            "classes": int((config.get("model") or {}).get("num_classes") or train.get("classes") or 200),
            "profile": config.get("profile"), "preset": config.get("preset"),
            "device": run_devices(folder, config.get("device")),
            "best_top1": float(val_top1[best]), "best_epoch": best + 1,
        })
    if not found:
        return None
    return max(found, key=lambda run: (run["epochs"], run["path"].name == "seed-reference",
                                       np.nan_to_num(run["best_top1"], nan=-1.0)))


def run_devices(run_dir, device: str | None = None) -> str | None:
    """Where a run's epochs ran, from its sessions.jsonl (run_state.session_rows): "CPU (2 cores), 15 epochs in 7
    sessions", or per device in the order they came, "...; 1x NVIDIA H100 80GB HBM3, 20 epochs in 1 session".

    A run that goes on from lease to lease moves between machines, and its config.json names only the first one;
    without a readable sessions.jsonl (a one-off run, or one from before it) that `device` is all there is.
    """
    try:
        rows = session_rows(run_dir)
    except TinyconvError:
        return device
    counts: dict[str, list[int]] = {}  # device -> [epochs, sessions]
    for row in rows:
        if row["epochs"] is None:  # a session that completed no epoch
            continue
        first, last = row["epochs"]
        tally = counts.setdefault(str(row["device"]), [0, 0])
        tally[0] += last - first + 1
        tally[1] += 1
    if not counts:
        return device
    return "; ".join(f"{name}, {epochs} epoch{'s' * (epochs != 1)} in {sessions} session{'s' * (sessions != 1)}"
                     for name, (epochs, sessions) in counts.items())


def reference_run_sentence(run: dict, shown: str | None = None) -> str:
    """One sentence on how far reference_run's run got, against the reference's published log at that epoch.

    Args:
        shown: how to name the run folder (e.g. params.show(run["path"])); default its name.
    """
    reference = {row["epoch"] + 1: row for row in read_reference_curve()}
    at = reference.get(run["epochs"], {}).get("val_top1")
    last = run["history"][-1].get("val_top1", float("nan"))
    theirs = f" (the reference's log: {at:.1%} at that epoch)" if at is not None else ""
    where = f" (trained on {run['device']})" if run.get("device") else ""
    return (f"The run shown, `{shown or run['path'].name}`{where}, reached **{run['epochs']} of its "
            f"{run['planned']} epochs**: val top-1 {last:.1%} at epoch {run['epochs']}{theirs}; the rest of "
            f"the reference's curve is what a complete run has to match.")


def training_summary(metrics: dict, evaluation: dict) -> str:
    """The result of a run in a few markdown lines, every number from the run (notebook 04 displays it).

    Args:
        metrics: what tinyconv.training.train.train returned (metrics.json).
        evaluation: tinyconv.deploy.inference.evaluate of the run's best.keras (with tta=True).
    Returns:
        markdown: top-1 with its standard error and chance, top-5 with its chance, flip TTA, the best and
        last epoch, the train/val gap and the cost, with the caveat that best.keras is picked on val.
    """
    classes, images = evaluation["classes"], evaluation["images"]
    k5 = min(5, classes)
    se = float(standard_error(evaluation["top1"], images))
    lines = [
        f"- **val top-1 {evaluation['top1']:.1%} ± {se:.1%}** (one standard error over {images:,} val images of "
        f"{classes} classes; chance {1 / classes:.1%}); top-{k5} {evaluation['top5']:.1%} (chance {k5 / classes:.0%})",
    ]
    if evaluation.get("tta"):
        lines.append(f"- with flip test-time augmentation: top-1 {evaluation['tta']['top1']:.1%}, "
                     f"top-{k5} {evaluation['tta']['top5']:.1%}")
    lines += [
        f"- best checkpoint at epoch {metrics['best_epoch']} of {metrics['epochs']}; the last epoch scores "
        f"{metrics['top1']:.1%}. best.keras is chosen on these same val images, so its score is slightly "
        "optimistic; the last epoch's is not",
        f"- train top-1 {metrics['train_top1']:.1%} against val {metrics['top1']:.1%} at the last epoch"
        " (train top-1 is averaged over the epoch, on augmented images, while the weights still change)",
        f"- {metrics['wall_s'] / 60:.1f} min on {metrics['device']}, a median {metrics['images_per_s']:.0f} "
        f"train images/s, {metrics['params']:,} parameters" if metrics.get("params") else
        f"- {metrics['wall_s'] / 60:.1f} min on {metrics['device']}, a median {metrics['images_per_s']:.0f} train images/s",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ tables


def format_table(rows: list[dict], columns: list[str] | None = None, formats: dict | None = None) -> str:
    """A plain-text table (monospace) of dict rows; `formats` maps column -> format spec."""
    if not rows:
        return "(empty)"
    columns = columns or list(rows[0])
    formats = formats or {}

    def cell(row, column):
        value = row.get(column, "")
        if column in formats:
            return format(value, formats[column])
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    table = [[str(c) for c in columns]] + [[cell(row, c) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(text.rjust(width) for text, width in zip(line, widths)) for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def preset_summary(name: str, info: dict) -> dict:
    """One comparison row of a preset: stages, widths, depths, params, MACs, receptive field."""
    config = info["config"]
    return dict(
        preset=name,
        widths="/".join(str(w) for w in config["widths"]),
        depths="/".join(str(d) for d in config["depths"]),
        modes="/".join(config["modes"]),
        params=int(info["params_total"]),
        mmacs=round(info["macs_per_image"] / 1e6, 1),
        receptive_field=int(info["receptive_field"]),
    )
