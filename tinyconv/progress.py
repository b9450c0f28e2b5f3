"""Progress bars: the one way tinyconv shows one (download, checksum, extraction, decoding, prediction).

tqdm.auto draws a widget in JupyterLab when ipywidgets is installed and a text bar otherwise, always on stderr, so
that a command's result on stdout (`--json`) stays clean. Every bar goes when it is done (`leave=False`): the
command's result follows it, and a finished bar adds nothing to it; the download's bar stays (`leave=True`), as the
record of what came over the network.

tqdm is imported inside the function: `tinyconv --help` must not pay for it, and in a notebook without ipywidgets
tqdm.auto warns on import that it falls back to text bars ("IProgress not found"), which are what we want there.
"""

from __future__ import annotations

import sys
import warnings


def progress_bar(total: int | None = None, desc: str = "", unit: str = "img", *, enabled: bool = True,
                 leave: bool = False, iterable=None, **options):
    """A tqdm bar on stderr labelled `desc`, counting `total` `unit`s (or over `iterable`); `enabled=False` gives
    the same object drawing nothing, so callers keep one code path. `options` go to tqdm (`unit_scale`,
    `initial`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, disable=not enabled,
                **options)
