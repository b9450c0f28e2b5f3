"""Runs of the `reference` profile against the reference's published log: val top-1 and train loss per epoch, one PNG.

    python scripts/plot_reference_runs.py OUT.png [LABEL=]RUN_DIR [[LABEL=]RUN_DIR ...] [--title TITLE]
    e.g. python scripts/plot_reference_runs.py docs/figures/seed-reference.png results/seed-reference \
        results/seed-reference-h100 results/seed-reference-h200

`scripts/cpu_lease.sh NAME stop` draws docs/figures/NAME.png this way (when it exists), the kept run first, each
run labelled by its folder. Each RUN_DIR needs a history.csv (tinyconv.training.history.read_history). The x axis spans the reference's 100
epochs, so a run stopped early, or still going, shows how far it got. Beside val top-1, each run's train loss minus the
reference's at the same epoch: the closer test of a faithful recipe, since an epoch's train loss averages 100,000
images and follows the reference's log to ~0.02-0.03, while one epoch's val top-1 moves by 1-2 points (docs/results.md). Nothing is written when a RUN_DIR has
no history.
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.fileio import write_bytes  # noqa: E402
from tinyconv.training.history import read_history  # noqa: E402
from tinyconv.training.plots import figure_png  # noqa: E402
from tinyconv.training.reference import REFERENCE_TOP1, read_reference_curve  # noqa: E402


def read_runs(specs: list[str]) -> list[tuple[str, list[dict]]]:
    """[(label, history rows)] for "LABEL=RUN_DIR" or "RUN_DIR" specs (labelled by the folder itself);
    TinyconvError names the first run without a history."""
    runs = []
    for spec in specs:
        label, _, folder = spec.rpartition("=")
        rows = read_history(Path(folder) / "history.csv")
        if not rows:
            raise TinyconvError(f"{Path(folder) / 'history.csv'} is missing or has no epochs")
        runs.append((label or folder, rows))
    return runs


def draw(runs: list[tuple[str, list[dict]]], title: str) -> Figure:
    reference = read_reference_curve()
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_top1, ax_loss = fig.subplots(1, 2)
    epochs = [r["epoch"] + 1 for r in reference]
    ax_top1.plot(epochs, [100 * r["val_top1"] for r in reference], "--", color="0.45",
                 label=f"reference notebook (M1, TF 2.x): {100 * REFERENCE_TOP1:.2f} % at epoch 100")
    ref_loss = {r["epoch"]: r["loss"] for r in reference}
    ax_loss.axhline(0, color="0.45", ls="--", label="the reference notebook's log")
    for rank, (label, rows) in enumerate(runs):
        x = [r["epoch"] + 1 for r in rows]
        on_top = 10 - rank  # the first run named is drawn over the others, not hidden under them
        ax_top1.plot(x, [100 * r["val_top1"] for r in rows], "o-", ms=3, zorder=on_top,
                     label=f"{label}: {100 * rows[-1]['val_top1']:.2f} % at epoch {rows[-1]['epoch'] + 1}")
        ax_loss.plot(x, [r["loss"] - ref_loss[r["epoch"]] for r in rows], "o-", ms=3, zorder=on_top, label=label)
    ax_top1.axhline(100 * REFERENCE_TOP1, color="0.7", lw=0.8)
    ax_top1.set_ylabel("val top-1 % (10,000 official val images)")
    ax_loss.set_ylabel("train loss minus the reference's at the same epoch")
    for ax in (ax_top1, ax_loss):
        ax.set_xlim(0, 101)
        ax.set_xlabel("epoch (of the reference profile's 100)")
        ax.grid(alpha=0.3)
    ax_top1.legend(fontsize=8, loc="lower right")
    ax_loss.legend(fontsize=8, loc="upper right")
    ax_loss.set_ylim(-0.15, 0.15)
    fig.suptitle(title)
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR")
    parser.add_argument("--title", default="seed preset, reference profile: our runs against the reference's log")
    args = parser.parse_args(argv)
    try:
        runs = read_runs(args.runs)
    except TinyconvError as exc:
        print(f"plot_reference_runs: {exc}", file=sys.stderr)
        return 1
    write_bytes(Path(args.out), figure_png(draw(runs, args.title)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
