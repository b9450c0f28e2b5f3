"""Settings for `pytest --nbval-lax notebooks/` (part of `make test`).

Each notebook resolves its parameters from the environment when its `parameters` cell leaves them None
(tinyconv.study.params.resolve_params), and the kernels inherit this process's environment. So before the
first notebook kernel starts (the first notebook cell's setup), point them at the real dataset
(downloaded once per test process by tests/realdata.py), the seconds-long `ci` profile, and a temporary run dir.

Only cells marked `# NBVAL_CHECK_OUTPUT` are compared with the committed outputs (dataset counts, parameter
counts): those are the same under every profile.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _configure_notebook_environment() -> None:
    if os.environ.get("_TINYCONV_NBVAL_CONFIGURED"):
        return
    sys.path.insert(0, str(REPO / "tests"))
    from realdata import ensure_real_data  # noqa: E402  (tests/ helper, imported via sys.path)

    run_dir = Path(tempfile.mkdtemp(prefix="tinyconv-nbval-"))
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    os.environ["TINYCONV_PROFILE"] = "ci"
    os.environ["TINYCONV_DATA_DIR"] = str(ensure_real_data())
    os.environ["TINYCONV_RUN_DIR"] = str(run_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["_TINYCONV_NBVAL_CONFIGURED"] = "1"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the first notebook cell (nbval starts a notebook's kernel while setting up its first cell);
    tests that run before the notebooks in the same session never see these variables."""
    if str(getattr(item, "fspath", "")).endswith(".ipynb"):
        _configure_notebook_environment()
