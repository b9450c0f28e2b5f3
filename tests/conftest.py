"""Shared fixtures: a synthetic official-layout dataset, the shared real zip, and the real dataset.

Fixtures that build data are session-scoped; tests that change files must copy the data first
(`shutil.copytree`) or build their own with `make_synthetic_dataset`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: synthetic, realdata

from realdata import ensure_real_data  # noqa: E402
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
def real_data_dir() -> Path:
    """A data dir with the real dataset downloaded over local HTTP, verified, extracted and prepared."""
    return ensure_real_data()
