"""Val top-1 per epoch of several run folders over the reference's published curve, as one PNG.

    python scripts/plot_val_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
    e.g. python scripts/plot_val_curves.py docs/figures/seed-reference-gpu.png \
        "H200, grouped convs=results/seed-reference-h200" "H100, GPU forms=results/seed-reference-h100"

Each RUN_DIR needs a history.csv (tinyconv.training.callbacks.read_history); the x axis spans the reference's 100 epochs
so that a run stopped early shows how far it got.
"""

import sys

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from tinyconv.training.callbacks import read_history  # noqa: E402
from tinyconv.training.reference import read_reference_curve  # noqa: E402


def main(out: str, runs: list[str]) -> int:
    reference = read_reference_curve()
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([r["epoch"] + 1 for r in reference], [100 * r["val_top1"] for r in reference], "--", color="0.45",
            label="reference notebook (M1, TF 2.x): 63.03 % at epoch 100")
    for spec in runs:
        label, _, folder = spec.rpartition("=")
        rows = read_history(f"{folder}/history.csv")
        ax.plot([r["epoch"] + 1 for r in rows], [100 * r["val_top1"] for r in rows], "o-", ms=3,
                label=f"{label}: {100 * rows[-1]['val_top1']:.2f} % at epoch {rows[-1]['epoch'] + 1}")
    ax.axhline(63.03, color="0.7", lw=0.8)
    ax.set_xlim(0, 101)
    ax.set_xlabel("epoch (of the reference profile's 100)")
    ax.set_ylabel("val top-1 % (10,000 official val images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("seed preset, reference profile: our GPU runs over the reference's curve")
    fig.savefig(out, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
