"""The training curves: loss and top-1 per epoch, drawn live during a run and saved with it (matplotlib only).

    plot_history(rows, reference=read_reference_curve())   # a run's history.csv rows beside the reference's
    plot_training(rows, num_classes)                       # the same with chance marked, for the notebooks

The study's other figures are in tinyconv.study.figures; these sit with the training core because
`train` saves them and `LiveCurves` draws them while it runs.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def epoch_axis(ax, epochs) -> None:
    """Whole epochs on the x axis: a short run gets a tick per epoch (not 0.96, 0.98, ...), a long one a few."""
    if 0 < len(epochs) <= 10:
        ax.set_xticks(list(epochs))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def draw_loss_and_top1(ax_loss, ax_acc, rows: list[dict], reference: list[dict] | None = None) -> None:
    """Train and val loss on ax_loss, train and val top-1 on ax_acc, per epoch (1-based); the reference's
    val curves dashed grey when given. Shared by plot_history (live curves) and plot_training."""
    epochs = [row["epoch"] + 1 for row in rows]
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "top1", "top-1 accuracy")):
        ax.plot(epochs, [row.get(key) for row in rows], marker="o", markersize=3, label="train")
        ax.plot(epochs, [row.get(f"val_{key}") for row in rows], marker="o", markersize=3, label="val")
        if reference:
            ax.plot([row["epoch"] + 1 for row in reference], [row.get(f"val_{key}") for row in reference],
                    linestyle="--", color="0.45", linewidth=1.2, label="reference (val)")
        ax.set_xlabel("epoch")
        epoch_axis(ax, epochs)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)


def plot_history(rows: list[dict], title: str = "", reference: list[dict] | None = None):
    """A matplotlib Figure with loss and top-1 curves (train and val) per epoch.

    `reference`: rows of the same shape (tinyconv.training.reference.read_reference_curve) whose val loss and val
    top-1 are drawn as a dashed grey line labelled "reference (val)" on each panel; None draws nothing more.
    """
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    draw_loss_and_top1(ax_loss, ax_acc, rows, reference)
    ax_loss.legend()
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_training(rows: list[dict], num_classes: int, title: str = "", reference: list[dict] | None = None,
                  planned_epochs: int | None = None):
    """The one figure of a training run: loss, top-1 and the learning rate per epoch.

    Loss and top-1 are drawn for train and val; the top-1 panel marks chance (1 / num_classes) and the
    epoch of the best val top-1 (the epoch best.keras comes from); the learning-rate panel shows the
    schedule the run followed (history.csv's lr at each epoch's last step).

    Args:
        rows: history rows (tinyconv.training.history.read_history).
        num_classes: the classes the run trains on, for the chance level.
        reference: rows of the reference's published curve (tinyconv.training.reference.read_reference_curve),
            drawn dashed on the loss and top-1 panels; None for runs it is not comparable with.
        planned_epochs: the epochs the run's recipe plans; every panel then spans 1..planned_epochs, so a run
            stopped early (or still going) shows how far it got. None: the epochs in `rows`.
    """
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1, 1, 0.75]))
    epochs = np.array([row["epoch"] + 1 for row in rows])
    draw_loss_and_top1(ax_loss, ax_acc, rows, reference)
    val_top1 = np.array([row.get("val_top1", np.nan) for row in rows], dtype=np.float64)
    if len(rows) and np.isfinite(val_top1).any():
        best = int(np.nanargmax(val_top1))
        ax_acc.scatter([epochs[best]], [val_top1[best]], s=90, facecolors="none", edgecolors="k", zorder=5,
                       label=f"best val: {val_top1[best]:.1%} (epoch {epochs[best]})")
    ax_acc.axhline(1.0 / num_classes, color="tab:red", ls=":", lw=1.2, label=f"chance (1/{num_classes})")
    ax_acc.set_ylim(0, 1)
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_lr.plot(epochs, [row.get("lr") for row in rows], marker="o", markersize=3, color="tab:purple")
    ax_lr.set_xlabel("epoch")
    epoch_axis(ax_lr, epochs)
    ax_lr.set_ylabel("learning rate (end of epoch)")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_lr.grid(alpha=0.3)
    ax_lr.set_title("schedule", fontsize=10)
    if planned_epochs:
        for ax in (ax_loss, ax_acc, ax_lr):
            ax.set_xlim(0, planned_epochs + 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_title("loss", fontsize=10)
    ax_acc.set_title("top-1", fontsize=10)
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
