"""history.csv: a run's per-epoch record, one row per completed epoch (the format every table and figure reads).

    rows = read_history(run_dir / "history.csv")    # [{"epoch": 0, "loss": ..., "val_top1": ...}, ...]
    write_history(run_dir / "history.csv", rows)    # atomically: a kill leaves the old file or the new one

No Keras or TensorFlow here, so that scripts and `tinyconv state` read a history without starting a backend;
the callback that writes it after every epoch is tinyconv.training.callbacks.HistoryWriter.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tinyconv.errors import TinyconvError
from tinyconv.fileio import write_text

HISTORY_COLUMNS = (
    "epoch",  # 0-based
    "loss",
    "top1",
    "top5",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",  # at the epoch's last step
    "epoch_s",  # wall time of the epoch, validation included
    "train_s",  # wall time of the epoch's training steps
    "images_per_s",  # train images / train_s
)


def read_history(path) -> list[dict]:
    """The rows of a history.csv: epoch as int, every other column as float (NaN for an empty cell); [] when the
    file does not exist (a run that has not completed an epoch).

    Raises:
        TinyconvError: the file is unreadable or damaged (one line naming it and the way out, --restart).
    """
    path = Path(path)
    if not path.exists():
        return []
    line = 1
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = []
            reader = csv.DictReader(handle)
            for row in reader:
                line = reader.line_num
                parsed = {}
                for key, value in row.items():
                    if key is None or value is None:  # write_history writes every cell, empty or not
                        raise ValueError("too many cells" if key is None else "too few cells")
                    if key == "epoch":
                        parsed[key] = int(value)
                    else:
                        parsed[key] = float(value) if value not in ("", None) else float("nan")
                if "epoch" not in parsed:
                    raise ValueError("no epoch column")
                rows.append(parsed)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError) as exc:
        raise TinyconvError(f"{path} is damaged or unreadable (line {line}: {exc}); run the same command with "
                            "--restart to train this run again from epoch 1") from None
    return rows


def write_history(path: Path, rows: list[dict]) -> None:
    """Write `rows` as history.csv at `path` (HISTORY_COLUMNS, in order; a missing value is an empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (row.get(key, "") if key == "epoch" else _csv_number(row.get(key))) for key in HISTORY_COLUMNS})
    write_text(path, buffer.getvalue())


def _csv_number(value) -> str:
    """A history.csv cell: repr of the float (round-trips exactly), empty for a missing value."""
    if value is None:
        return ""
    return repr(float(value))
