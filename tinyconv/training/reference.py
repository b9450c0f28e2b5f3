"""The reference notebook's published numbers: its per-epoch curve, final top-1 and parameter count.

    rows = read_reference_curve()                   # 100 rows shaped like tinyconv.training.history.read_history's
    rows = reference_curve_for(profile, classes)    # the same, or None for a run the reference is not comparable with
    fig = plot_history(run_rows, reference=rows)    # tinyconv.study.figures: the reference's val curves, dashed

The curve (tinyconv/training/reference_curve.csv, package data so that an installed wheel has it; facts from the reference's published log) has one row per epoch:
epoch (1-based), epoch_seconds, train_loss, train_accuracy, val_loss, val_accuracy. read_reference_curve
renames them to a history.csv's columns (epoch 0-based, loss, top1, val_loss, val_top1, epoch_s), so every
plot and table that reads a run's history reads the reference the same way. No Keras or TensorFlow here.
"""

from __future__ import annotations

import csv
from pathlib import Path

REFERENCE_CURVE = Path(__file__).resolve().parent / "reference_curve.csv"
REFERENCE_TOP1 = 0.6303  # val top-1 after the 100th epoch
REFERENCE_PARAMS = 2_644_712  # the seed preset's parameter count, the reference model's

# the CSV's columns -> history.csv's (tinyconv.training.history.HISTORY_COLUMNS)
_COLUMNS = {
    "epoch_seconds": "epoch_s",
    "train_loss": "loss",
    "train_accuracy": "top1",
    "val_loss": "val_loss",
    "val_accuracy": "val_top1",
}


def read_reference_curve(path=REFERENCE_CURVE) -> list[dict]:
    """The reference's per-epoch rows: {epoch (0-based int), loss, top1, val_loss, val_top1, epoch_s}.

    Raises FileNotFoundError when the CSV is missing (it ships inside the package).
    """
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            row = {"epoch": int(record["epoch"]) - 1}
            for column, name in _COLUMNS.items():
                value = record.get(column)
                row[name] = float(value) if value not in ("", None) else float("nan")
            rows.append(row)
    return rows


def comparable_with_reference(profile: str, num_classes: int) -> bool:
    """Whether a run's curve can be read against the reference's: the `reference` and `full` profiles on all 200
    classes (the reference's data, schedule length and score; `full` keeps its 100 epochs). The one place this
    rule lives: training's live curves, notebook 04 and `tinyconv state sessions` all ask here."""
    return profile in ("reference", "full") and num_classes == 200


def reference_curve_for(profile: str, num_classes: int) -> list[dict] | None:
    """The reference's per-epoch rows (read_reference_curve) for a run comparable with it, else None."""
    return read_reference_curve() if comparable_with_reference(profile, num_classes) else None
