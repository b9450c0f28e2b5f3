"""Every figure tinyconv draws: training curves (the run's curves.png and the live notebook curves) and the
training figure with its schedule (04), data and augmentation grids (02), the block diagram, stage costs and
receptive fields (03), the confusion matrix and top-5 predictions (04), kernels, kernel energy, block
statistics trained beside untrained, effective receptive fields and per-class accuracy (05).

Each function returns a matplotlib Figure with titles and labelled axes; the computations behind them live
in tinyconv.study.analysis. The notebooks save figures with tinyconv.study.params.save_figure.
"""

from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from matplotlib.ticker import EngFormatter, FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

from tinyconv.model.config import get_config, stage_plan  # no Keras: figures is imported without it
from tinyconv.study import measures

# ------------------------------------------------------------------------------------------ training


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
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title above the top row
    else:
        fig.tight_layout()
    return fig


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _text_size(text: str, fontsize: float) -> tuple[float, float]:
    """(width, height) in points of one line of `text` in the default font at `fontsize`."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    width = TextPath((0, 0), text, size=fontsize, prop=FontProperties()).get_extents().width
    return float(width), 1.3 * fontsize


def _place_labels(ax, points, texts, obstacles=(), fontsize: float = 7, colors=None, rising: bool = False) -> None:
    """Label each data point (x, y) with its text so that no two labels overlap, none leaves the axes and
    none covers another point (`obstacles`, data coordinates) where a free spot exists (no adjustText).

    Candidate spots alternate above and below the point at a growing distance, first on the side with more
    room (right of a point in the left 60 % of the axes, else left); with `rising` (points on a rising
    curve) a spot right of the point is tried below first and one left of it above first, off the curve. A white box keeps a label readable over
    lines and error bars, and a thin line joins a label that had to move away from its point. The spots are
    computed on the laid-out figure, so call this after the data, limits and layout are set.
    """
    fig = ax.figure
    fig.draw_without_rendering()  # settles a constrained layout: transData is then final
    scale = 72.0 / fig.dpi  # pixels -> points
    frame = ax.get_window_extent()
    left, bottom, right, top = (v * scale for v in (frame.x0, frame.y0, frame.x1, frame.y1))
    where = lambda xy: ax.transData.transform(xy) * scale  # noqa: E731  (points from the figure's corner)
    others = [where(xy) for xy in obstacles]
    pad = 0.15 * fontsize  # the white box's padding around the text
    placed: list[tuple[float, float, float, float]] = []
    leaders: list[np.ndarray] = []  # points along each leader line drawn so far

    def inside(points, box, margin: float = 1.0) -> bool:
        x0, y0, x1, y1 = box
        return bool(np.any((points[:, 0] > x0 - margin) & (points[:, 0] < x1 + margin)
                           & (points[:, 1] > y0 - margin) & (points[:, 1] < y1 + margin)))

    def leader(px, py, box) -> np.ndarray:
        """Points along the line from (px, py) to the box's nearest side, as the annotation draws it."""
        end = (min(max(px, box[0]), box[2]), box[1] if py < box[1] else box[3])
        return np.linspace((px, py), end, 24)[1:-1]

    def free(box, line, avoid_points: bool) -> bool:
        x0, y0, x1, y1 = box
        if x0 < left + 1 or x1 > right - 1 or y0 < bottom + 1 or y1 > top - 1:
            return False
        if any(x0 < b[2] + 1 and b[0] < x1 + 1 and y0 < b[3] + 1 and b[1] < y1 + 1 for b in placed):
            return False
        # a leader line crossing a label, or a label on a leader line, is as bad as two labels overlapping
        if line is not None and any(inside(line, b) for b in placed):
            return False
        if any(inside(drawn, box) for drawn in leaders):
            return False
        return not avoid_points or not any(x0 - 3 < ox < x1 + 3 and y0 - 3 < oy < y1 + 3 for ox, oy in others)

    for index, ((x, y), text) in enumerate(zip(points, texts)):
        px, py = where((x, y))
        width, height = _text_size(text, fontsize)
        width, height = width + 2 * pad, height + 2 * pad
        first = 1 if px - left < 0.6 * (right - left) else -1
        candidates = []
        for step in range(10):
            rise = 3 + step * (height + 1)
            for side in (first, -first):
                x0 = px + 4 if side > 0 else px - 4 - width
                pair = [(x0, py + rise), (x0, py - rise - height)]
                candidates += pair[::-1] if rising and side > 0 else pair
        boxes = [(x0, y0, x0 + width, y0 + height) for x0, y0 in candidates]
        lines = [leader(px, py, b) if (b[1] > py + height or b[3] < py - height) else None for b in boxes]
        options = list(zip(boxes, lines))
        box, line = (next((o for o in options if free(*o, True)), None) or next((o for o in options if free(*o, False)), None)
                     or options[0])
        placed.append(box)
        if line is not None:
            leaders.append(line)
        far = line is not None
        ax.annotate(text, (x, y), xytext=(box[0] - px + pad, box[1] - py + pad), textcoords="offset points",
                    ha="left", va="bottom", fontsize=fontsize, color=(colors[index] if colors else "k"),
                    bbox=dict(boxstyle=f"square,pad={pad / fontsize:.2f}", fc="white", ec="none", alpha=0.85),
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5", shrinkA=0, shrinkB=2) if far else None,
                    annotation_clip=False)


def plot_augmentations(examples: dict[str, np.ndarray], size: float = 1.4,
                       title: str = "Train-time augmentation: each op alone, then the full recipe"):
    """Rows = images, columns = augmentations (from augmentation_examples or augmentation_by_profile)."""
    names = list(examples)
    count = len(examples[names[0]])
    lines = max(name.count(", ") + name.count(": ") + 1 for name in names)
    fig, axes = plt.subplots(count, len(names), figsize=(max(len(names) * size, 5.0), count * size + 0.4 + 0.15 * lines),
                             squeeze=False)
    for column, name in enumerate(names):
        for row in range(count):
            ax = axes[row, column]
            ax.imshow(examples[name][row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:  # profile descriptions are long: one op per line
                ax.set_title(name.replace(": ", ":\n").replace(", ", "\n"), fontsize=8)
    fig.suptitle(title)
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
        infos: preset name -> tinyconv.model.config.model_info dict ("stages": [{"name", "params", "macs"}]).
    """
    fig, axes = plt.subplots(len(infos), 2, figsize=(11, 2.6 * len(infos)), squeeze=False)
    for row, (preset, info) in enumerate(infos.items()):
        names = [stage["name"] for stage in info["stages"]]
        positions = np.arange(len(names))
        for ax, key, what, color in (
            (axes[row, 0], "params", "parameters", "tab:blue"),
            (axes[row, 1], "macs", "MACs per image", "tab:orange"),
        ):
            total = info["params_total"] if key == "params" else info["macs_per_image"]
            scale, unit = (1e6, "M") if total >= 1e6 else (1e3, "k")  # a small model's stages in M read 0.00
            values = [stage[key] / scale for stage in info["stages"]]
            ax.bar(positions, values, color=color)
            ax.set_xticks(positions, names, fontsize=8)
            ax.set_ylabel(f"{what} ({unit})")
            ax.set_title(f"{preset}: {what} per stage (total {total / scale:.2f} {unit})", fontsize=10)
            for x, value in zip(positions, values):
                ax.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=7)
            ax.margins(y=0.15)  # room for the value labels above the tallest bar
    fig.tight_layout()
    return fig


def plot_receptive_fields(infos: dict[str, dict]):
    """Theoretical receptive field after each part of the model, one line per preset, against depth.

    The x axis counts the spatial layers from the input (stem, each block, each down conv), so presets of
    different shapes share it; each point is labelled with its part. Presets whose curves coincide (the
    width does not change the receptive field: `seed` and `tiny`) are drawn once, labelled with both names.
    """
    curves: dict[tuple, list[str]] = {}
    for preset, info in infos.items():
        depths = info["config"]["depths"]
        depth, stage, points = 0, 0, []
        for entry in info["stages"]:
            if entry["name"] == "head":
                continue
            depth += depths[stage] if entry["name"].startswith("stage") else 1
            if entry["name"].startswith("stage"):
                stage += 1
            points.append((depth, entry["receptive_field"], entry["name"]))
        curves.setdefault(tuple(points), []).append(preset)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels: dict[tuple, list] = {}  # (depth, part) -> [y, colour]: a part at the same depth in two curves is named once
    for index, ((points, presets), marker) in enumerate(zip(curves.items(), "osD^v")):
        xs, ys, names = zip(*points)
        ax.plot(xs, ys, marker=marker, label=" = ".join(presets), color=f"C{index}")
        for x, y, name in points:
            if (x, name) in labels:
                labels[(x, name)] = [max(y, labels[(x, name)][0]), "k"]
            else:
                labels[(x, name)] = [y, f"C{index}"]
    size = next(iter(infos.values()))["input_shape"][0]
    ax.axhline(size, color="k", ls="--", lw=1, label=f"image size ({size} px)")
    ax.set_xlabel("depth (spatial layers from the input: stem, blocks, down convs)")
    ax.set_ylabel("receptive field (input pixels)")
    ax.set_title("Theoretical receptive field after each part of the model")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    ax.margins(x=0.06, y=0.1)
    fig.tight_layout()
    spots = [(x, y) for (x, _), (y, _) in labels.items()]
    _place_labels(ax, spots, [name for _, name in labels], obstacles=spots, fontsize=7,
                  colors=[colour for _, colour in labels.values()], rising=True)
    return fig


def plot_stem_filters(kernel, columns: int = 16, title: str = ""):
    """Stem filters [k, k, 3, C] as RGB tiles (each filter scaled by its own max |w|; grey = 0); `title`
    goes before the default description."""
    tiles = measures.filters_as_rgb(kernel)
    count = len(tiles)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.6, rows * 0.6 + 0.5), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < count:
            ax.imshow(tiles[i], interpolation="nearest")
    k = kernel.shape[0]
    fig.suptitle(f"{title + ': ' if title else ''}stem, {count} filters of {k}x{k}x3 as RGB (grey = 0, per-filter scale)")
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


def plot_energy_profiles(profiles: dict[str, np.ndarray], untrained: dict[str, np.ndarray] | None = None):
    """Kernel energy per tap on each ring, relative to a uniform kernel of the same size (1 = uniform).

    Dividing by the ring's share of taps makes kernels of different sizes comparable: values above 1 near
    the center mean the block concentrates its weight there. With `untrained` (the same labels, from the
    same preset at initialisation), a second panel shows it on the same axes: what training changed.

    Args:
        profiles: label -> energy_by_distance(kernel) ([k // 2 + 1], sums to 1).
        untrained: the same for the untrained model, or None for one panel.
    """
    panels = [("trained", profiles)] + ([("untrained (same seed)", untrained)] if untrained else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 3.6), squeeze=False, sharey=True)
    for ax, (name, group) in zip(axes[0], panels):
        for label, profile in group.items():
            relative = profile / measures.ring_area_share(2 * len(profile) - 1)
            ax.plot(np.arange(len(profile)), np.maximum(relative, 1e-3), marker="o", ms=3, label=label)
        ax.axhline(1.0, color="k", ls="--", lw=1, label="uniform kernel")
        ax.set_yscale("log")  # a peaked center tap can hold 10x+ the uniform share while the rim holds 0.1x
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks crowd the axis
        ax.set_xticks(np.arange(max(len(p) for p in group.values())))
        ax.set_xlabel("distance from the kernel center (ring, pixels)")
        ax.set_title(f"Where the spatial kernels put their weight: {name}" if untrained else
                     "Where the spatial kernels put their weight", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("energy per tap / uniform")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_erfs(erfs: dict[str, np.ndarray], untrained: dict[str, np.ndarray] | None = None):
    """Effective receptive fields side by side (log scale so the tails are visible); with `untrained`
    (the same labels for the same preset at initialisation) a second row below, on the same color scale
    per column."""
    rows = [("trained", erfs)] + ([("untrained", untrained)] if untrained else [])
    fig, axes = plt.subplots(len(rows), len(erfs), figsize=(3.2 * len(erfs), 3.3 * len(rows)), squeeze=False)
    for column, label in enumerate(erfs):
        peak = max(group[label].max() for _, group in rows)
        for row, (name, group) in enumerate(rows):
            erf = group[label]
            ax = axes[row, column]
            positive = erf[erf > 0]
            floor = positive.min() if positive.size else 1e-12
            ax.imshow(np.maximum(erf, floor), cmap="magma", norm=LogNorm(vmin=max(floor, peak * 1e-4), vmax=peak))
            half, most = measures.erf_side(erf, 0.5), measures.erf_side(erf, 0.9)
            centre_row, centre_col = measures.erf_centre(erf)
            ax.plot([centre_col], [centre_row], "+", color="cyan", markersize=8)  # what the squares are centred on
            prefix = f"{name}, " if untrained else ""
            ax.set_title(f"{prefix}{label}\n50% in a {half} px square, 90% in {most} px", fontsize=9)
            ax.set_xlabel("input x (px)")
            ax.set_ylabel("input y (px)")
    fig.suptitle("Effective receptive field of the center unit (|gradient|, log scale; + its centre of mass)")
    fig.tight_layout()
    return fig


def _box_row(ax, y: float, texts: list[str], colors: list[str], height: float = 0.8, fontsize: float = 8) -> None:
    """Boxes with centred text at x = 0.5, 1.5, ... on row y, joined left to right by arrows."""
    for i, (text, color) in enumerate(zip(texts, colors)):
        ax.add_patch(FancyBboxPatch((i + 0.06, y - height / 2), 0.88, height, boxstyle="round,pad=0.02",
                                    facecolor=color, edgecolor="0.3", lw=0.8))
        ax.text(i + 0.5, y, text, ha="center", va="center", fontsize=fontsize)
        if i:
            ax.annotate("", (i + 0.06, y), (i - 0.06, y), arrowprops=dict(arrowstyle="->", color="0.3", lw=1))


_KIND_COLORS = {"input": "0.92", "stem": "#cfe2f3", "down": "#fce5cd", "stage": "#d9ead3", "head": "#ead1dc"}


def plot_block_diagram(config):
    """The model as boxes, from tinyconv.model.config.stage_plan (the list build_model builds), and one block's
    forward pass below it.

    Args:
        config: a tinyconv.model.config.ModelConfig (or a preset name).
    """
    config = get_config(config)
    plan = stage_plan(config)
    texts, colors = [f"input\n{config.image_size}x{config.image_size}x3"], [_KIND_COLORS["input"]]
    for entry in plan:
        shape = "x".join(str(n) for n in entry["output_shape"])
        # variant presets (tinyconv.model.config: stem, down and block fields) name their parts instead
        if entry["kind"] == "stem" and entry.get("stem", "conv") != "conv":
            text = f"stem\n{entry['stem'].replace('_', ' ')}\n/{entry['stride']}\n{shape}"
        elif entry["kind"] == "stem":
            text = f"stem\nconv {entry['kernel']}x{entry['kernel']}/{entry['stride']}\nGELU, BN\n{shape}"
        elif entry["kind"] == "down" and entry.get("down", "grouped_conv") != "grouped_conv":
            text = f"{entry['name']}\n{entry['down'].replace('_', ' ')}\n/2\n{shape}"
        elif entry["kind"] == "down":
            text = f"{entry['name']}\ngrouped conv\n{entry['kernel']}x{entry['kernel']}/2, g={entry['groups']}\n{shape}"
        elif entry["kind"] == "stage" and entry.get("block", "convmixer") == "basic":
            depth = config.depths[int(entry["name"].removeprefix("stage")) - 1]
            text = f"{entry['name']}: {depth} x\nResNet basic\nblock\n{shape}"
        elif entry["kind"] == "stage":
            k, a, mode = entry["kernel_size"], entry["axial_kernel_size"], entry["mode"]
            mixer = {"depthwise": f"{k}x{k}", "axial": f"1x{a}+{a}x1", "mixed": f"1x{a}+{a}x1\n+ {k}x{k}"}[mode]
            se = f", SE/{entry['se_reduction']}" if entry["se_reduction"] else ""
            depth = config.depths[int(entry["name"].removeprefix("stage")) - 1]
            text = f"{entry['name']}: {depth} x\n{mode}{se}\n{mixer}\n{shape}"
        else:
            text = f"head\navg pool\n+ dense\n{entry['width']} logits"
        texts.append(text)
        colors.append(_KIND_COLORS[entry["kind"]])
    basic = all(entry.get("block", "convmixer") == "basic" for entry in plan if entry["kind"] == "stage")
    block = ["x", "spatial mix\n(per stage)\nGELU, BN", "squeeze-\nexcite\n(if SE)", "x gamma\n(layer\nscale)",
             "+ x\n(residual)", "1x1 conv\nGELU, BN", "next\nblock"]
    if basic:
        block = ["x", "kxk conv\nBN, ReLU", "kxk conv\nBN", "+ x\n(residual)", "ReLU", "next\nblock"]
    add = next(i for i, text in enumerate(block) if text.startswith("+ x"))
    block_colors = ["0.92"] + ["#d9ead3"] * (add - 1) + ["#fff2cc"] + ["#d9ead3"] * (len(block) - add - 2) + ["0.92"]
    width = max(len(texts), len(block))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(1.35 * width, 8), 4.6),
                                      gridspec_kw=dict(height_ratios=[1.15, 1]))
    for ax in (top, bottom):
        ax.set_xlim(0, width)
        ax.axis("off")
    top.set_ylim(-0.6, 0.6)
    _box_row(top, 0.0, texts, colors, height=1.05)
    top.set_title(f"{config.name}: the stage plan build_model builds (output shape under each box)", fontsize=10)
    bottom.set_ylim(-0.75, 1.0)
    _box_row(bottom, -0.1, block, block_colors, height=0.85)
    # the residual path: x skips the spatial branch and is added back before the channel mixer
    bottom.annotate("", (add + 0.5, 0.33), (0.5, 0.33), arrowprops=dict(arrowstyle="->", color="tab:blue", lw=1.2,
                                                                         connectionstyle="bar,fraction=-0.12"))
    bottom.text(add / 2 + 0.5, 0.5, "residual: x is added back unchanged", ha="center", fontsize=8, color="tab:blue")
    bottom.set_title("one ResNet basic block (He et al., 2016)" if basic else
                     "one ConvMixerBlock (Trockman & Kolter, 2022): spatial mixing, then channel mixing", fontsize=10)
    fig.tight_layout()
    return fig


def plot_confusion(confusion, names, title: str = "Confusion matrix on val"):
    """A confusion matrix as a heat map of row shares (each true class sums to 1), counts written in.

    Meant for a few classes (up to about 20); for 200 use analysis.most_confused_pairs.
    """
    confusion = np.asarray(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    count = len(names)
    fig, ax = plt.subplots(figsize=(0.55 * count + 2.8, 0.5 * count + 1.6))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for t in range(count):
        for p in range(count):
            if confusion[t, p]:
                ax.text(p, t, str(confusion[t, p]), ha="center", va="center", fontsize=7,
                        color="white" if shares[t, p] > 0.5 else "black")
    labels = [_shorten(name, 16) for name in names]
    ax.set_xticks(np.arange(count), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(count), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return fig


def plot_top_predictions(images, labels, classes, probabilities, names, columns: int = 4):
    """Images with bars of their top-k predicted probabilities; the true class's bar is green, others grey.

    Args:
        images: uint8 [N, H, W, 3]; labels: int [N] true classes.
        classes, probabilities: [N, k] from analysis.top_predictions.
        names: class names by index.
    """
    count, k = classes.shape
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(3.1 * columns, 1.55 * rows + 0.5), squeeze=False,
                             gridspec_kw=dict(width_ratios=[1, 1.25] * columns))
    for i in range(rows * columns):
        ax_img, ax_bar = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        if i >= count:
            ax_img.axis("off")
            ax_bar.axis("off")
            continue
        ax_img.imshow(images[i], interpolation="nearest")
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        ax_img.set_title(_shorten(names[labels[i]], 18), fontsize=8)
        colors = ["tab:green" if c == labels[i] else "0.6" for c in classes[i]]
        ax_bar.barh(np.arange(k)[::-1], probabilities[i], color=colors)
        ax_bar.set_yticks(np.arange(k)[::-1], [_shorten(names[c], 14) for c in classes[i]], fontsize=7)
        ax_bar.set_xlim(0, 1)
        ax_bar.tick_params(axis="x", labelsize=7)
        ax_bar.set_xlabel("probability", fontsize=7)
    fig.suptitle(f"Val images and the model's top-{k} (green: the true class)")
    fig.tight_layout()
    return fig


def plot_class_accuracy(accuracy, counts, names, num_classes: int | None = None, title: str = "", ends: int = 10):
    """Top-1 per class, sorted, with binomial standard-error bars and the chance line at 1 / num_classes.

    With 50 val images a class's accuracy carries about +-7 points of sampling error; the bars show it, so
    that differences within it are not read as a story. Class names label the bars up to 40 classes; with
    more, the `ends` best and `ends` worst classes are named under the axis (with their accuracy), each
    joined to its bar by a thin line: the two ends are what such a chart can say.

    Args:
        accuracy: float [K] per class (NaN for a class without images); counts: int [K] images per class.
        names: K class names; num_classes: the classifier's classes for the chance level (default K).
    """
    from matplotlib import transforms

    accuracy = np.asarray(accuracy, dtype=np.float64)
    counts = np.asarray(counts)
    num_classes = num_classes or len(names)
    scored = np.flatnonzero(counts > 0)  # a class without val images has no accuracy to draw
    order = scored[np.argsort(-accuracy[scored], kind="stable")]
    errors = measures.standard_error(accuracy[order], counts[order])
    many = len(order) > 40
    ends = min(ends, len(order) // 2) if many else 0
    label_size, drop = 7.5, 26.0  # points: the end labels' font, and how far under the axis they start
    named = {int(p): f"{_shorten(names[order[p]], 20)} {accuracy[order[p]]:.0%}"
             for p in [*range(ends), *range(len(order) - ends, len(order))]}
    reach = max((_text_size(text, label_size)[0] for text in named.values()), default=0.0)
    height = 3.8 + (drop + reach) / 72
    fig, ax = plt.subplots(figsize=(13 if many else max(6.0, 0.55 * len(names) + 2.0), height))
    positions = np.arange(len(order))
    ax.bar(positions, accuracy[order], yerr=errors, width=1.0 if many else 0.7, color="tab:blue",
           ecolor="0.35", capsize=0 if many else 3, error_kw=dict(lw=0.6 if many else 1.0))
    ax.axhline(1.0 / num_classes, color="tab:red", ls=":", lw=1.5, label=f"chance (1/{num_classes})")
    mean = float(np.nanmean(accuracy))
    ax.axhline(mean, color="k", ls="--", lw=1, label=f"mean over classes ({mean:.1%})")
    if many:
        ax.set_xticks([])
        of = f" of {len(names)}" if len(order) < len(names) else ""
        ax.set_xlabel(f"{len(order)} classes{of} with val images, sorted by accuracy (error bars: +-1 standard error); "
                      f"the {ends} best and {ends} worst named", labelpad=drop + reach + 4)
        # the bars are a few pixels wide: each end's names are fanned out over a wider stretch of the axis
        under = transforms.offset_copy(transforms.blended_transform_factory(ax.transData, ax.transAxes),
                                       fig=fig, y=-drop, units="points")
        span = 0.2 * len(order)
        for group in (list(range(ends)), list(range(len(order) - ends, len(order)))):
            if not group:
                continue
            start = 0.0 if group[0] == 0 else len(order) - 1 - span
            for spot, p in zip(np.linspace(start, start + span, len(group)), group):
                ax.annotate(named[p], (p, 0), xycoords=("data", "axes fraction"), xytext=(spot, 0),
                            textcoords=under, rotation=90, ha="center", va="top", fontsize=label_size,
                            arrowprops=dict(arrowstyle="-", lw=0.5, color="0.5", shrinkA=1, shrinkB=0),
                            annotation_clip=False)
    else:
        ax.set_xticks(positions, [_shorten(names[i], 16) for i in order], rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("class, sorted by accuracy (error bars: +-1 standard error)")
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1 accuracy on val")
    low, high = (int(counts[order].min()), int(counts[order].max())) if len(order) else (0, 0)
    per_class = f"{low}" if low == high else f"{low}-{high}"
    ax.set_title(title or f"Per-class top-1 ({per_class} val images per class)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_block_compare(trained: list[dict], untrained: list[dict], key: str, title: str, ylabel: str,
                       band: tuple[str, str] | None = None):
    """One per-block statistic of the trained model beside the same preset untrained (same seed).

    Args:
        trained, untrained: rows with "block" and `key` (analysis.layer_scale_stats / squeeze_excite_stats).
        band: optional (low key, high key) drawn as a shaded range around each line (e.g. ("min", "max")).
    """
    fig, ax = plt.subplots(figsize=(9.6, 3.3))
    labels = [row["block"] for row in trained]
    positions = np.arange(len(labels))
    for rows, name, color, style in ((untrained, "untrained (same seed)", "0.45", "--"),
                                     (trained, "trained", "tab:blue", "-")):
        by_block = {row["block"]: row for row in rows}
        values = [by_block[label][key] for label in labels]
        ax.plot(positions, values, marker="o", ms=3, color=color, ls=style, label=f"{name}: {key}")
        if band:
            ax.fill_between(positions, [by_block[label][band[0]] for label in labels],
                            [by_block[label][band[1]] for label in labels], color=color, alpha=0.15,
                            label=f"{name}: {band[0]}..{band[1]}")
    ax.set_xticks(positions, labels, rotation=90, fontsize=7)
    ax.set_xlabel("block (stage s, index b)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    # beside the axes, not on them: a min..max band fills most of the plot, and any corner hides a part of it
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------- localization


def plot_localization(image, heatmap, box, title: str = "", true_box=None, size: float = 3.2):
    """One image with its class activation map overlaid (jet, alpha 0.45) and its box drawn (lime);
    `true_box` (x0, y0, x1, y1), if given, in white dashes. Boxes have inclusive pixel corners.

    Args:
        image: uint8 [H, W, 3]; heatmap: float [H, W] in [0, 1] (tinyconv.study.localize.normalize_maps).
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


def _draw_overlay(ax, image, heatmap, box=None, true_box=None, lw: float = 1.5):
    """An image with its map (jet, alpha 0.45), its box (lime) and the true box (white dashes) on `ax`."""
    ax.imshow(image, interpolation="nearest")
    ax.imshow(heatmap, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    for corners, style in ((box, dict(color="lime", lw=lw)), (true_box, dict(color="white", lw=lw * 0.8, ls="--"))):
        if corners is not None:
            x0, y0, x1, y1 = (int(v) for v in corners)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, **style))
    ax.axis("off")


def plot_localization_grid(images, maps, boxes, true_boxes=None, titles=None, columns: int = 8, title: str = "",
                           size: float = 1.6):
    """A grid of images with their maps overlaid, the map's box (lime) and the true box (white dashes).

    Args:
        images: uint8 [N, 64, 64, 3]; maps: float [N, 64, 64] in [0, 1]; boxes, true_boxes: [N, 4] inclusive
        (x0, y0, x1, y1) or None; titles: N strings (lines split on newlines).
    """
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    lines = max((str(t).count("\n") + 1 for t in titles), default=1) if titles is not None else 0
    fig = Figure(figsize=(columns * size, rows * (size + 0.15 * lines) + (0.35 if title else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= count:
            continue
        _draw_overlay(ax, images[i], maps[i], None if boxes is None else boxes[i],
                      None if true_boxes is None else true_boxes[i])
        if titles is not None:
            ax.set_title("\n".join(_shorten(line, 22) for line in str(titles[i]).split("\n")), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_maps_by_method(images, maps: dict, boxes: dict | None = None, true_boxes=None, title: str = "",
                        size: float = 1.6):
    """One row per image, one column per way of drawing its map (stages, models, kernel sizes).

    Args:
        images: uint8 [N, 64, 64, 3]; maps: column name -> float [N, 64, 64] in [0, 1];
        boxes: column name -> [N, 4] boxes (or None); true_boxes: [N, 4] drawn in every panel.
    """
    names = list(maps)
    count = len(images)
    fig = Figure(figsize=((len(names) + 1) * size, count * size + 0.3 + (0.35 if title else 0)), layout="constrained")
    axes = fig.subplots(max(count, 1), len(names) + 1, squeeze=False)
    for row in range(count):
        axes[row, 0].imshow(images[row], interpolation="nearest")
        axes[row, 0].axis("off")
        for column, name in enumerate(names, start=1):
            box = None if boxes is None or boxes.get(name) is None else boxes[name][row]
            _draw_overlay(axes[row, column], images[row], maps[name][row], box,
                          None if true_boxes is None else true_boxes[row], lw=1.2)
    for column, name in enumerate(["image"] + names):
        axes[0, column].set_title(_shorten(name, 18), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


LOCALIZATION_KEYS = (("gt_known_loc", "GT-known loc"), ("top1_loc", "top-1 loc"),
                     ("train_threshold_box_acc", "BoxAcc@train"), ("max_box_acc", "MaxBoxAcc"))


def plot_localization_metrics(groups: dict, baseline: dict | None = None, title: str = ""):
    """Grouped bars of GT-known loc, top-1 loc, BoxAcc at train thresholds and MaxBoxAcc (percent), one panel per
    group (tinyconv.study.localize's docstring defines them).

    Args:
        groups: panel title -> {bar group name -> localization metrics dict (tinyconv.study.localize.score_maps)}.
        baseline: tinyconv.study.localize.baseline_metrics of the same val boxes: the centre box's MaxBoxAcc drawn
            dashed across each panel, the whole-image box's dotted (a fixed box has no threshold to choose: its
            MaxBoxAcc is its BoxAcc at any threshold).
    """
    # at most two panels a row: four side by side came out ~1900 px wide, scaled down to unreadable in a notebook
    columns = min(2, len(groups))
    rows = -(-len(groups) // columns)
    panel_width = max(3.8, 1.2 + 1.5 * max(len(g) for g in groups.values()))
    fig = Figure(figsize=(panel_width * columns, 3.2 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    width = 0.8 / len(LOCALIZATION_KEYS)
    # one y scale for every panel, a little above the highest bar or line: bars up to ~40 % on a 0-105 axis
    # were short, and their value labels ran into the baseline lines
    values_all = [100 * m[key] for entries in groups.values() for m in entries.values() for key, _ in LOCALIZATION_KEYS]
    if baseline is not None:
        values_all += [100 * baseline["max_box_acc"], 100 * baseline["full_image"]["max_box_acc"]]
    top = min(105.0, max(values_all + [10.0]) * 1.12 + 2)
    for ax, (panel, entries) in zip(axes, groups.items()):
        positions = np.arange(len(entries))
        for j, (key, label) in enumerate(LOCALIZATION_KEYS):
            values = [100 * metrics[key] for metrics in entries.values()]
            offset = (j - (len(LOCALIZATION_KEYS) - 1) / 2) * width
            bars = ax.bar(positions + offset, values, width, label=label, color=f"C{j}", zorder=2)
            for bar, value in zip(bars, values):  # inside the bar's top (white), above it when too short
                inside = value >= 0.12 * top
                ax.text(bar.get_x() + bar.get_width() / 2, value - 0.01 * top if inside else value + 0.01 * top,
                        f"{value:.0f}", ha="center", va="top" if inside else "bottom", fontsize=7,
                        color="white" if inside else "0.2", zorder=3)
        if baseline is not None:  # behind the bars (zorder), so that they cross no value label
            ax.axhline(100 * baseline["max_box_acc"], color="0.3", ls="--", lw=1, label="centre box MaxBoxAcc",
                       zorder=1)
            ax.axhline(100 * baseline["full_image"]["max_box_acc"], color="0.3", ls=":", lw=1.2,
                       label="whole image MaxBoxAcc", zorder=1)
        ax.set_xticks(positions, [_shorten(name, 16) for name in entries], fontsize=8)
        ax.set_ylim(0, top)
        ax.set_ylabel("% of val images")
        ax.set_title(panel, fontsize=10)
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_axisbelow(True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------- sweeps (06)


SWEEP_COSTS = (("params", "parameters", False), ("macs", "MACs per image", False),
               ("train_img_s", "train images/s", True))


def _chance_line(ax, chance: float | None, vertical: bool = False) -> None:
    """The chance level (a fraction, e.g. 1 / classes) as a red dotted line in percent, labelled for the legend."""
    if chance:
        label = f"chance ({100 * chance:.3g} %)"
        if vertical:
            ax.axvline(100 * chance, color="tab:red", ls=":", lw=1.3, label=label)
        else:
            ax.axhline(100 * chance, color="tab:red", ls=":", lw=1.3, label=label)


def plot_sweep_costs(summary: list[dict], baseline: str | None = None, chance: float | None = None):
    """Mean val top-1 of each sweep variant (tinyconv.experiments.results.variant_summary) against its parameters, MACs and
    train images/s, the Pareto front (no variant both cheaper and more accurate; for images/s, faster) joined by a
    line and labelled, and the chance level (a fraction) when given.

    Error bars are comparison intervals: ± 2 x pooled sd / sqrt(2 n) for a mean of n seeds, half the difference
    that counts as real in compare_to_baseline, so that two variants of as many seeds differ beyond the noise
    exactly when their bars do not overlap. (They were each variant's own seed sd: with two seeds one degree of
    freedom, 0.1 to 7.5 points in the committed sweep, against the 7.9 points a difference must exceed.)"""
    from tinyconv.experiments.results import pareto_front, pooled_sd

    noise = pooled_sd(summary)

    fig = Figure(figsize=(13, 4.6), layout="constrained")
    axes = fig.subplots(1, len(SWEEP_COSTS), sharey=True)
    fronts = []
    for ax, (key, label, higher_better) in zip(axes, SWEEP_COSTS):
        entries = [s for s in summary if isinstance(s.get(key), (int, float))]
        xs = np.array([s[key] for s in entries], dtype=float)
        ys = np.array([100 * s["top1"] for s in entries])
        errors = [100 * 2 * noise / np.sqrt(2 * s["n"]) if noise is not None else 0.0 for s in entries]
        ax.errorbar(xs, ys, yerr=errors, fmt="o", color="0.55", ms=4, capsize=2, lw=0.8,
                    label="variant (bars that do not overlap differ beyond the noise)")
        front = pareto_front([(-x if higher_better else x, y) for x, y in zip(xs, ys)])
        front.sort(key=lambda i: xs[i])
        ax.plot(xs[front], ys[front], "o-", color="C3", ms=6, lw=1.2, label="Pareto front")
        fronts.append((ax, xs, ys, [entries[i]["variant"] for i in front], front, not higher_better))
        for i, s in enumerate(entries):
            if s["variant"] == baseline:
                ax.plot(xs[i], ys[i], "s", mfc="none", mec="C0", ms=10, label=f"baseline ({_shorten(baseline, 18)})")
        _chance_line(ax, chance)
        if len(xs) and xs.min() > 0 and xs.max() / xs.min() > 8:  # a log axis only where costs span decades
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 340k, 2.6M: raw counts run into each other
        ax.margins(x=0.08, y=0.08)
        ax.set_xlabel(label + (" (higher is better)" if higher_better else " (lower is better)"))
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("val top-1 % (mean over seeds)")
    # below the panels, not in one: in a corner it covered points of the first panel
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Accuracy against cost, one point per variant")
    for ax, xs, ys, names, front, rising in fronts:  # after the layout is complete: labels are placed in points
        _place_labels(ax, [(xs[i], ys[i]) for i in front], [_shorten(name, 22) for name in names],
                      obstacles=list(zip(xs, ys)), fontsize=7, rising=rising)  # a cost front rises: labels off it
    return fig


def plot_accuracy_vs_setting(series: list[tuple], base_rows: list[dict], xlabel: str, title: str = "",
                             chance: float | None = None):
    """Val top-1 of each trial against one model setting (tinyconv.experiments.results.setting_series: (value, row)
    pairs), each seed a dot and the mean a line; the base variant (with its own setting) as a grey band of
    mean ± sd when `base_rows` is not empty; the chance level (a fraction) when given."""
    fig = Figure(figsize=(6.2, 3.8), layout="constrained")
    ax = fig.subplots()
    values = sorted({value for value, _ in series})
    for value, row in series:
        ax.plot(value, 100 * row["top1"], "o", color="C0", alpha=0.6, ms=5)
    means = [100 * np.mean([row["top1"] for v, row in series if v == value]) for value in values]
    ax.plot(values, means, "-", color="C0", lw=1.5, label="mean over seeds (dots: seeds)")
    if base_rows:
        top1 = 100 * np.array([row["top1"] for row in base_rows])
        spread = top1.std(ddof=1) if len(top1) > 1 else 0.0
        ax.axhspan(top1.mean() - spread, top1.mean() + spread, color="0.85", zorder=0)
        ax.axhline(top1.mean(), color="0.5", lw=1, ls="--", label="base variant (mean ± sd)")
    _chance_line(ax, chance)
    ax.set_xticks(values)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val top-1 %")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()  # under the axes: inside, it covered the seeds' dots
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=7.5, frameon=False)
    if title:
        ax.set_title(title)
    return fig


def plot_variant_spread(rows: list[dict], comparisons: list[dict], variants: list[str] | None = None,
                        chance: float | None = None):
    """Each variant's trials (one dot per seed) and mean (bar), sorted by mean, against the baseline's mean
    and the ± 2 x noise band of a difference (tinyconv.experiments.results.compare_to_baseline); variants whose difference
    exceeds it are drawn in colour; the chance level (a fraction) as a vertical line when given."""
    compared = {c["variant"]: c for c in comparisons if variants is None or c["variant"] in variants}
    by_variant: dict[str, list[float]] = {}
    for row in rows:
        if row["variant"] in compared and row.get("top1") is not None:
            by_variant.setdefault(row["variant"], []).append(100 * row["top1"])
    order = sorted(by_variant, key=lambda name: np.mean(by_variant[name]))
    fig = Figure(figsize=(7.5, 1.3 + 0.32 * len(order)), layout="constrained")
    ax = fig.subplots()
    baseline = next(iter(compared.values()))["baseline"] if compared else None
    if baseline in by_variant:
        base_mean = np.mean(by_variant[baseline])
        noise = compared[baseline]["noise"]
        if noise is not None:
            ax.axvspan(base_mean - 200 * noise, base_mean + 200 * noise, color="0.9", zorder=0,
                       label="baseline ± 2 x noise of a difference")
        ax.axvline(base_mean, color="0.4", ls="--", lw=1, label=f"baseline ({_shorten(baseline, 20)})")
    _chance_line(ax, chance, vertical=True)
    for y, name in enumerate(order):
        colour = "C3" if compared[name]["exceeds"] else "C0" if name != baseline else "0.3"
        ax.plot(by_variant[name], [y] * len(by_variant[name]), "o", color=colour, alpha=0.7, ms=5)
        ax.plot([np.mean(by_variant[name])] * 2, [y - 0.3, y + 0.3], "-", color=colour, lw=2)
    ax.set_yticks(range(len(order)), [_shorten(name, 28) for name in order], fontsize=8)
    ax.set_xlabel("val top-1 % (dots: seeds, bar: mean; red: beyond the noise)")
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # under the axes: inside, it sat on the lowest variants' dots
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=7, frameon=False)
    return fig
