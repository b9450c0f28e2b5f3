"""Shared fixtures: a synthetic official-layout dataset, the shared real zip, and the real dataset.

Fixtures that build data are session-scoped; tests that change files must copy the data first
(`shutil.copytree`) or build their own with `make_synthetic_dataset`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: synthetic, realdata

from realdata import SHARED_DIR_VAR, ensure_real_data  # noqa: E402
from synthetic import make_synthetic_dataset  # noqa: E402
import timeline  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A data dir holding a fresh synthetic tiny-imagenet-200/ (5 classes, 20 train + 6 val each, 10 test).

    Shared by the session: do not modify it; copy it or make your own.
    """
    data_dir = tmp_path_factory.mktemp("synthetic-data")
    make_synthetic_dataset(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def ci_run(synthetic_data_dir, tmp_path_factory) -> tuple[Path, dict]:
    """One 2-epoch ci run on the synthetic dataset: (run_dir, metrics).

    Shared by the session (tests/test_train.py, test_predict_inputs.py): do not modify the run folder; a test
    that trains on, damages or resumes a run makes its own or copies this one (`shutil.copytree`).
    """
    from tinyconv.training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "ci"
    metrics = train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2})
    return run_dir, metrics


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """A data dir with the real dataset downloaded over local HTTP, verified, extracted and prepared."""
    return ensure_real_data()


EXPENSIVE = ("realdata", "jax", "ray", "kill", "notebooks")  # the markers `make test-fast` leaves out

# The files that take longest in `make test`, longest first: seconds on their worker, from a timeline of both workers
# (2026-12-06, 2-core CPU; the real data's preparation counted where it ran). pytest-xdist's loadfile hands out whole
# files in this order (`--no-loadscope-reorder`; by default it orders them by their number of tests), and the
# longest-first order lets the two workers end together: on 2026-12-06 one idled 71 s while the other finished.
# A stale list costs only that balance. `make test` ends with the figures to remake it from ("seconds per test
# file", tests/timeline.py).
# The first such timeline (2026-12-07, 10d20ba, an AVX2-only VM, where the suite takes twice as long): this order
# left the workers busy 1,264 and 1,209 s; test_gpu_scripts.py 403, test_jax_backend.py 298, test_notebook_series.py
# 287, test_sweep.py 208, test_run_control.py 204, test_jax_parity.py 135, test_export.py 131, test_train.py 125.
LONGEST_FIRST = [
    "test_notebook_series.py",  # 136 (the seven notebooks at ci, the real data's preparation)
    "test_jax_backend.py",      # ~130 (JAX subprocesses)
    "test_gpu_scripts.py",      # ~125 (two leases with the forms and sync phases; the lease preparation three times)
    "test_run_control.py",      # 124 (kills, SIGTERM, damaged checkpoints)
    "test_sweep.py",            # 113 (two Ray clusters)
    "test_train.py",            # 93
    "test_export.py",           # 65
    "test_notebooks.py",        # 41
    "test_jax_parity.py",       # ~35
    "test_models.py",           # 31
    "test_predict_inputs.py",   # 30
    "test_dataset.py",          # 29
    "test_browser.py",          # 25
    "test_saved_models.py",     # 22
    "test_locks.py",            # 20
]
# The files that start JAX in the worker's own process go after all others: JAX then warns at every os.fork() of that
# process ("os.fork() is incompatible with multithreaded code"), and test_dataset.py, test_locks.py and test_cli.py
# fork (prepare's decoding pool, on purpose: tinyconv/data/dataset.py). The other JAX tests run JAX in subprocesses.
JAX_IN_PROCESS_LAST = {"test_pallas_depthwise.py"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the real dataset `realdata` (`make test-fast` leaves those out).

    Under pytest-xdist (`make test` runs `-n 2 --dist loadfile`: each file on one worker), the files go longest
    first (LONGEST_FIRST, then the other files that hold expensive tests, then the rest), so that a long file does
    not start last while the other worker idles, except JAX_IN_PROCESS_LAST, which go last; the order within a file
    stays. A worker runs the files in the order it is handed them, so no file of it forks after JAX started there."""
    for item in items:
        if "real_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
    if hasattr(config, "workerinput"):  # a worker: each collects, and all sort alike
        heavy = {item.path for item in items if any(item.get_closest_marker(m) for m in EXPENSIVE)}
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: (item.path.name in JAX_IN_PROCESS_LAST, rank.get(item.path.name, len(rank)),
                                     item.path not in heavy))


def pytest_configure(config):
    """In the main process (not in a pytest-xdist worker): add up the seconds per test file (tests/timeline.py),
    and name the folder where the real dataset is prepared once for the whole session; the workers inherit the
    variable (tests/realdata.py)."""
    timeline.pytest_configure(config)  # seconds per file and worker, printed at the end (LONGEST_FIRST)
    if not hasattr(config, "workerinput") and SHARED_DIR_VAR not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="tinyconv-realdata-session-"))
        os.environ[SHARED_DIR_VAR] = str(folder / "data")
        config._tinyconv_realdata_session = folder


def pytest_unconfigure(config):
    folder = getattr(config, "_tinyconv_realdata_session", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(SHARED_DIR_VAR, None)
