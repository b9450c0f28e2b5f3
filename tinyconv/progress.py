"""Progress bars: the one way tinyconv shows one (download, checksum, extraction, decoding, prediction).

tqdm.auto draws a widget in JupyterLab when ipywidgets is installed and a text bar otherwise, always on stderr, so
that a command's result on stdout (`--json`) stays clean. Every bar goes when it is done (`leave=False`): the
command's result follows it, and a finished bar adds nothing to it; the download's bar stays (`leave=True`), as the
record of what came over the network.

Into a log (stderr neither a terminal nor a notebook's stream: `cmd 2> log`, `| tee`, a GPU lease's `lease.log`) a
bar redraws at most every LOG_INTERVAL_S seconds and its last line stays: tqdm's ten redraws a second, each a
carriage return that a file keeps, would bury the log's lines, and a blanked last line would leave it no record.

tqdm is imported inside the function: `tinyconv --help` must not pay for it, and in a notebook without ipywidgets
tqdm.auto warns on import that it falls back to text bars ("IProgress not found"), which are what we want there.
"""

from __future__ import annotations

import sys
import warnings


LOG_INTERVAL_S = 30.0


def _writes_to_a_log(stream) -> bool:
    """Whether `stream` is a file or pipe, where redraws pile up: not a terminal, and not a Jupyter kernel's stream
    (ipykernel's OutStream, which the notebook front end redraws in place)."""
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


def progress_bar(total: int | None = None, desc: str = "", unit: str = "img", *, enabled: bool = True,
                 leave: bool = False, iterable=None, **options):
    """A tqdm bar on stderr labelled `desc`, counting `total` `unit`s (or over `iterable`); `enabled=False` gives
    the same object drawing nothing, so callers keep one code path. `options` go to tqdm (`unit_scale`,
    `initial`, `mininterval`: a terminal's redraw interval). Into a log it redraws at most every LOG_INTERVAL_S
    seconds and its last line stays (module docstring)."""
    if enabled and _writes_to_a_log(sys.stderr):
        options["mininterval"], leave = max(options.get("mininterval", 0.0), LOG_INTERVAL_S), True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, disable=not enabled,
                **options)
