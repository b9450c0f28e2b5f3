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


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the real dataset `realdata` (`make test-fast` leaves those out).

    Under pytest-xdist (`make test` runs `-n 2 --dist loadfile`: each file on one worker), the files that hold
    expensive tests go first, so that the longest ones do not start last while the other worker idles; the
    order within a file, and of the other files, stays."""
    for item in items:
        if "real_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
    if hasattr(config, "workerinput"):  # a worker: each collects, and all sort alike
        heavy = {item.path for item in items if any(item.get_closest_marker(m) for m in EXPENSIVE)}
        items.sort(key=lambda item: item.path not in heavy)


def pytest_configure(config):
    """In the main process (not in a pytest-xdist worker): name the folder where the real dataset is prepared
    once for the whole session; the workers inherit the variable (tests/realdata.py)."""
    if not hasattr(config, "workerinput") and SHARED_DIR_VAR not in os.environ:
        folder = Path(tempfile.mkdtemp(prefix="tinyconv-realdata-session-"))
        os.environ[SHARED_DIR_VAR] = str(folder / "data")
        config._tinyconv_realdata_session = folder


def pytest_unconfigure(config):
    folder = getattr(config, "_tinyconv_realdata_session", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(SHARED_DIR_VAR, None)
