"""The one atomic write (tinyconv.fileio), the runs-root variable's deprecated name, and runtime.has_gpu off TensorFlow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tinyconv import fileio


def test_atomic_writes_leave_only_the_target(tmp_path):
    fileio.write_text(tmp_path / "a.txt", "text")
    fileio.write_json(tmp_path / "b.json", {"n": np.int64(3), "x": np.float32(0.5), "p": Path("/x")})
    assert (tmp_path / "a.txt").read_text() == "text"
    assert json.loads((tmp_path / "b.json").read_text()) == {"n": 3, "x": 0.5, "p": "/x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]
    assert fileio.temporary_path(tmp_path / "m.keras", ".keras").name == f".m.keras.{os.getpid()}.tmp.keras"


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "c.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["c.txt"]


def test_runs_root_reads_the_new_name_and_the_deprecated_one(monkeypatch, tmp_path):
    from tinyconv.train import default_runs_root

    monkeypatch.delenv("TINYCONV_RUNS_ROOT", raising=False)
    monkeypatch.setenv("TINYCONV_RUNS_DIR", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match="TINYCONV_RUNS_ROOT"):
        assert default_runs_root() == tmp_path / "old"
    monkeypatch.setenv("TINYCONV_RUNS_ROOT", str(tmp_path / "new"))
    assert default_runs_root() == tmp_path / "new"


def test_has_gpu_on_another_backend_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, tinyconv.runtime as r; print(r.has_gpu(), 'tensorflow' in sys.modules)"
    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
