"""Every figure tinyconv draws: training curves (the run's curves.png and the live notebook curves), data and
augmentation grids (02), stage costs and receptive fields (03), kernels, kernel energy, block statistics,
effective receptive fields and per-class accuracy (05).

Each function returns a matplotlib Figure with titles and labelled axes; the computations behind them live
in tinyconv.analysis. The notebooks save figures with tinyconv.notebooks.save_figure.
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FormatStrFormatter

from tinyconv import analysis

# ------------------------------------------------------------------------------------------ training


def plot_history(rows: list[dict], title: str = "", reference: list[dict] | None = None):
    """A matplotlib Figure with loss and top-1 curves (train and val) per epoch.

    `reference`: rows of the same shape (tinyconv.reference.read_reference_curve) whose val loss and val
    top-1 are drawn as a dashed grey line labelled "reference (val)" on each panel; None draws nothing more.
    """
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] + 1 for row in rows]
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "top1", "top-1 accuracy")):
        ax.plot(epochs, [row.get(key) for row in rows], marker="o", markersize=3, label="train")
        ax.plot(epochs, [row.get(f"val_{key}") for row in rows], marker="o", markersize=3, label="val")
        if reference:
            ax.plot([row["epoch"] + 1 for row in reference], [row.get(f"val_{key}") for row in reference],
                    linestyle="--", color="0.45", linewidth=1.2, label="reference (val)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (dpi 100)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def show_live(image_handle, rows: list[dict], title: str = "", reference: list[dict] | None = None):
    """Draw plot_history(rows, title, reference) inline in a notebook, replacing the image shown through
    `image_handle`.

    Returns the display handle to pass next time (None the first time shows a new image).
    """
    # IPython is imported here: it exists only in notebook environments, and this runs only inside one
    from IPython.display import Image, display

    image = Image(data=figure_png(plot_history(rows, title, reference=reference)), format="png")
    if image_handle is None:
        return display(image, display_id=True)
    image_handle.update(image)
    return image_handle


# --------------------------------------------------------------------------------------- analysis


def plot_image_grid(images, titles=None, columns: int = 8, title: str = "", size: float = 1.5, boxes=None):
    """A grid of uint8 images with optional titles and bounding boxes.

    Args:
        images: uint8 [N, H, W, 3] (or float in [0, 1]).
        titles: N strings shown above the images.
        columns: images per row.
        boxes: optional N boxes (x0, y0, x1, y1) in pixels, drawn as rectangles.
    """
    count = len(images)
    rows = max(1, -(-count // columns))
    lines = max((str(t).count("\n") + 1 for t in titles), default=1) if titles is not None else 1
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + 0.2 + 0.15 * lines)), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= count:
            continue
        ax.imshow(images[i], interpolation="nearest")
        if titles is not None:
            ax.set_title("\n".join(_shorten(line, 20) for line in str(titles[i]).split("\n")), fontsize=8)
        if boxes is not None:
            x0, y0, x1, y1 = boxes[i]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="lime", lw=1.5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_augmentations(examples: dict[str, np.ndarray], size: float = 1.4):
    """Rows = images, columns = augmentations (from augmentation_examples)."""
    names = list(examples)
    count = len(examples[names[0]])
    fig, axes = plt.subplots(count, len(names), figsize=(len(names) * size, count * size + 0.6), squeeze=False)
    for column, name in enumerate(names):
        for row in range(count):
            ax = axes[row, column]
            ax.imshow(examples[name][row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle("Train-time augmentation: each op alone, then the full recipe")
    fig.tight_layout()
    return fig


def plot_channel_stats(mean, std, reference_mean, reference_std):
    """Bar chart of the train set's per-channel mean and std next to the ImageNet values (0..255)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    positions = np.arange(3)
    for ax, ours, ref, what in ((axes[0], mean, reference_mean, "mean"), (axes[1], std, reference_std, "std")):
        ax.bar(positions - 0.2, ours, width=0.4, label="Tiny ImageNet train")
        ax.bar(positions + 0.2, ref, width=0.4, label="ImageNet (recipe)")
        ax.set_xticks(positions, ["R", "G", "B"])
        ax.set_ylabel(f"{what} (0..255)")
        ax.set_title(f"per-channel {what}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_stage_costs(infos: dict[str, dict]):
    """Parameters and MACs per stage, one row of bar charts per preset.

    Args:
        infos: preset name -> tinyconv.models.model_info dict ("stages": [{"name", "params", "macs"}]).
    """
    fig, axes = plt.subplots(len(infos), 2, figsize=(11, 2.6 * len(infos)), squeeze=False)
    for row, (preset, info) in enumerate(infos.items()):
        names = [stage["name"] for stage in info["stages"]]
        positions = np.arange(len(names))
        for ax, key, unit, color in (
            (axes[row, 0], "params", "parameters (M)", "tab:blue"),
            (axes[row, 1], "macs", "MACs per image (M)", "tab:orange"),
        ):
            values = [stage[key] / 1e6 for stage in info["stages"]]
            ax.bar(positions, values, color=color)
            ax.set_xticks(positions, names, fontsize=8)
            ax.set_ylabel(unit)
            total = info["params_total"] if key == "params" else info["macs_per_image"]
            ax.set_title(f"{preset}: {unit.split(' (')[0]} per stage (total {total / 1e6:.2f} M)", fontsize=10)
            for x, value in zip(positions, values):
                ax.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=7)
            ax.margins(y=0.15)  # room for the value labels above the tallest bar
    fig.tight_layout()
    return fig


def plot_receptive_fields(infos: dict[str, dict]):
    """Theoretical receptive field at the end of each stage, one line per preset, with the image size."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for preset, info in infos.items():
        stages = [stage for stage in info["stages"] if stage["name"] != "head"]
        fields = [stage["receptive_field"] for stage in stages]
        ax.plot([stage["name"] for stage in stages], fields, marker="o", label=preset)
    size = next(iter(infos.values()))["input_shape"][0]
    ax.axhline(size, color="k", ls="--", lw=1, label=f"image size ({size} px)")
    ax.set_xlabel("end of stage")
    ax.set_ylabel("receptive field (input pixels)")
    ax.set_title("Theoretical receptive field per stage")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_stem_filters(kernel, columns: int = 16):
    """Stem filters [k, k, 3, C] as RGB tiles (each filter scaled by its own max |w|; grey = 0)."""
    tiles = analysis.filters_as_rgb(kernel)
    count = len(tiles)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.6, rows * 0.6 + 0.5), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < count:
            ax.imshow(tiles[i], interpolation="nearest")
    k = kernel.shape[0]
    fig.suptitle(f"Stem: {count} filters of {k}x{k}x3 as RGB (grey = 0, per-filter scale)")
    return fig


def plot_kernels(kernels, title: str, columns: int = 16, count: int = 32):
    """The first `count` channels of a [k, k, C] kernel as diverging heat maps (per-channel scale)."""
    kernels = np.asarray(kernels)
    count = min(count, kernels.shape[-1])
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.6, rows * 0.6 + 0.5), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < count:
            kernel = kernels[:, :, i]
            limit = np.abs(kernel).max() + 1e-12
            ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    fig.suptitle(title)
    return fig


def plot_axial_pairs(row, col, effective, title: str, count: int = 8):
    """Axial pairs: for `count` channels, the 1xa row kernel, the ax1 column kernel and their outer product."""
    count = min(count, row.shape[-1])
    fig, axes = plt.subplots(3, count, figsize=(count * 1.1, 3.9), squeeze=False)
    for c in range(count):
        limit = max(np.abs(row[:, c]).max(), np.abs(col[:, c]).max(), 1e-12)
        axes[0, c].imshow(row[None, :, c], cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[1, c].imshow(col[:, c, None], cmap="RdBu_r", vmin=-limit, vmax=limit)
        eff_limit = np.abs(effective[:, :, c]).max() + 1e-12
        axes[2, c].imshow(effective[:, :, c], cmap="RdBu_r", vmin=-eff_limit, vmax=eff_limit)
        axes[0, c].set_title(f"ch {c}", fontsize=8)
        for r in range(3):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    for r, label in enumerate(("1xk (row)", "kx1 (col)", "effective")):
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_energy_profiles(profiles: dict[str, np.ndarray]):
    """Kernel energy per tap on each ring, relative to a uniform kernel of the same size (1 = uniform).

    Dividing by the ring's share of taps makes kernels of different sizes comparable: values above 1 near
    the center mean the block concentrates its weight there.

    Args:
        profiles: label -> energy_by_distance(kernel) ([k // 2 + 1], sums to 1).
    """
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, profile in profiles.items():
        relative = profile / analysis.ring_area_share(2 * len(profile) - 1)
        ax.plot(np.arange(len(profile)), np.maximum(relative, 1e-3), marker="o", ms=3, label=label)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="uniform kernel")
    ax.set_yscale("log")  # a peaked center tap can hold 10x+ the uniform share while the rim holds 0.1x
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xticks(np.arange(max(len(p) for p in profiles.values())))
    ax.set_xlabel("distance from the kernel center (ring, pixels)")
    ax.set_ylabel("energy per tap / uniform")
    ax.set_title("Where the spatial kernels put their weight")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_block_stats(rows: list[dict], keys: list[str], title: str, ylabel: str):
    """Per-block lines of the given keys (rows from layer_scale_stats or squeeze_excite_stats)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [row["block"] for row in rows]
    for key in keys:
        ax.plot(np.arange(len(rows)), [row[key] for row in rows], marker="o", ms=3, label=key)
    ax.set_xticks(np.arange(len(rows)), labels, rotation=90, fontsize=7)
    ax.set_xlabel("block (stage s, index b)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_erfs(erfs: dict[str, np.ndarray]):
    """Effective receptive fields side by side (log scale so the tails are visible)."""
    fig, axes = plt.subplots(1, len(erfs), figsize=(3.2 * len(erfs), 3.4), squeeze=False)
    for ax, (label, erf) in zip(axes[0], erfs.items()):
        positive = erf[erf > 0]
        floor = positive.min() if positive.size else 1e-12
        ax.imshow(np.maximum(erf, floor), cmap="magma", norm=LogNorm(vmin=max(floor, erf.max() * 1e-4), vmax=erf.max()))
        half, most = analysis.erf_radius(erf, 0.5), analysis.erf_radius(erf, 0.9)
        ax.set_title(f"{label}\n50% within r={half}px, 90% r={most}px", fontsize=9)
        ax.set_xlabel("input x (px)")
        ax.set_ylabel("input y (px)")
    fig.suptitle("Effective receptive field of the center unit (|gradient|, log scale)")
    fig.tight_layout()
    return fig


def plot_class_accuracy(accuracy, names, count: int = 10):
    """Horizontal bars of the best and worst `count` classes by top-1 accuracy."""
    best, worst = analysis.best_and_worst(accuracy, names, count)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.3 * count + 1.2))
    for ax, rows, what in ((axes[0], best, "best"), (axes[1], worst, "worst")):
        ax.barh(np.arange(len(rows))[::-1], [a for _, a in rows], color="tab:green" if what == "best" else "tab:red")
        ax.set_yticks(np.arange(len(rows))[::-1], [_shorten(n, 24) for n, _ in rows], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("top-1 accuracy on val")
        ax.set_title(f"{len(rows)} {what} classes")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------- localization


def plot_localization(image, heatmap, box, title: str = "", true_box=None, size: float = 3.2):
    """One image with its class activation map overlaid (jet, alpha 0.45) and its box drawn (lime);
    `true_box` (x0, y0, x1, y1), if given, in white dashes. Boxes have inclusive pixel corners.

    Args:
        image: uint8 [H, W, 3]; heatmap: float [H, W] in [0, 1] (tinyconv.localize.normalize_maps).
    """
    fig = Figure(figsize=(size, size + 0.35), layout="constrained")
    ax = fig.subplots()
    ax.imshow(image, interpolation="nearest")
    ax.imshow(heatmap, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    for corners, style in ((box, dict(color="lime", lw=2.0)), (true_box, dict(color="white", lw=1.5, ls="--"))):
        if corners is not None:
            x0, y0, x1, y1 = corners
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, **style))
    ax.axis("off")
    if title:
        ax.set_title(_shorten(title, 40), fontsize=9)
    return fig
