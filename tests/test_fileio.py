"""The one atomic write (tinyconv.fileio), the cache's own writes failing (disk full) and a damaged cache manifest,
the runs-root variable's deprecated name, and runtime.has_gpu off TensorFlow."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tinyconv import fileio
from tinyconv.errors import TinyconvError


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


def test_a_folder_is_written_atomically_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "export_savedmodel"
    for version in ("old", "new"):
        with fileio.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_text(version)
            (tmp / "variables").mkdir()
    assert (target / "saved_model.pb").read_text() == "new" and (target / "variables").is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["export_savedmodel"]  # no temporary, no old folder aside

    with pytest.raises(RuntimeError):  # a failed export (its check refused it) leaves the old folder alone
        with fileio.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_text("refused")
            raise RuntimeError("check failed")
    assert (target / "saved_model.pb").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_failed_folder_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "export_savedmodel"
    target.mkdir()
    (target / "saved_model.pb").write_text("old")
    real_replace, calls = os.replace, []

    def replace(src, dst):  # the second rename (new folder into place) fails, as on a busy or full file system
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(TinyconvError, match=r"writing .*export_savedmodel failed: No space left on device; "
                                                   r"the previous version is intact; free some space"):
        with fileio.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_text("new")
    assert calls[0][1].endswith(".tmp.old")  # the old folder was moved aside under a temporary name first
    assert (target / "saved_model.pb").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_remove_path_takes_files_folders_and_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("f", "d", "missing"):
        fileio.remove_path(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_runs_root_reads_the_new_name_and_the_deprecated_one(monkeypatch, tmp_path):
    from tinyconv.training.train import default_runs_root

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


# ------------------------------------------------------------- the cache: memory-mapped writes, the manifest


def _copy_dataset(synthetic_data_dir, tmp_path) -> Path:
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "tiny-imagenet-200", data_dir / "tiny-imagenet-200")
    return data_dir


def test_a_full_disk_during_prepare_is_one_line_before_any_decoding(synthetic_data_dir, tmp_path, monkeypatch, capsys):
    """The arrays are filled through memory maps, where a full disk is a SIGBUS, not an error: prepare must
    allocate their blocks first, so the disk-full error comes as one line (the fault is injected there)."""
    import errno

    from tinyconv.data import dataset
    from tinyconv.cli import main

    data_dir = _copy_dataset(synthetic_data_dir, tmp_path)
    calls = []

    def full_disk(fd, offset, length):
        calls.append(length)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset.os, "posix_fallocate", full_disk)
    monkeypatch.setattr(dataset, "_decode_all",
                        lambda *args, **kwargs: pytest.fail("decoding before the space is there"))
    assert main(["prepare", "--data-dir", str(data_dir)]) == 1
    cache = data_dir / "cache"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"tinyconv: error: writing the cache in {cache} failed (train_images.npy): No space left on device; the "
        "dataset is untouched, run `tinyconv prepare` again once that is fixed; free some space")
    assert calls == [100 * 64 * 64 * 3 + 128]  # the whole train array (5 classes x 20 images) and its header
    assert sorted(p.name for p in cache.iterdir()) == [".prepare.lock"]  # no temporaries, no manifest


def test_a_damaged_manifest_is_one_line_for_load_split_and_rebuilt_by_prepare(synthetic_data_dir, tmp_path, capsys):
    from tinyconv.data.dataset import CACHE_VERSION, load_split, prepare
    from tinyconv.errors import TinyconvError

    data_dir = _copy_dataset(synthetic_data_dir, tmp_path)
    manifest = prepare(data_dir, progress=False)
    path = data_dir / "cache" / "manifest.json"
    version = f'{{"version": {CACHE_VERSION}'  # the current format's, damaged otherwise
    for damaged in (version + ', "splits": {}}', "[1, 2]", version + ', "spl'):
        path.write_text(damaged)
        with pytest.raises(TinyconvError, match=r"manifest\.json is (not a tinyconv cache manifest|unreadable).*"
                                                r"run `tinyconv prepare --force`"):
            load_split(data_dir, "val")
    rebuilt = prepare(data_dir, progress=False)  # prepare is the way out: it rebuilds, with a note
    assert "manifest.json is unreadable (JSONDecodeError); rebuilding the cache" in capsys.readouterr().err
    assert rebuilt["splits"]["train"]["source_sha256"] == manifest["splits"]["train"]["source_sha256"]
    assert len(load_split(data_dir, "val")) == 30


def test_weights_that_cannot_fit_are_refused_before_hdf5_starts(tmp_path, monkeypatch):
    """HDF5 on a full disk floods stderr and crashes at exit (seen on a full tmpfs): save_weights checks the room."""
    import shutil
    from collections import namedtuple

    import keras

    from tinyconv.errors import TinyconvError

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    target = tmp_path / "epoch-0001.weights.h5"
    fileio.save_weights(model, target)  # room enough: saved
    before = target.read_bytes()
    assert fileio.weights_file_bytes(model) >= len(before)  # the estimate is an upper bound
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(model, "save_weights", lambda path: pytest.fail("HDF5 started on a full disk"))
    with pytest.raises(TinyconvError) as failure:
        fileio.save_weights(model, target)
    assert str(failure.value).startswith(f"writing {target} failed: No space left on device (about 0.1 MB needed, "
                                         "0.0 MB free); the previous version is intact; free some space")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_library_error_of_many_lines_becomes_one_line():
    import errno

    hdf5 = OSError(errno.ENOSPC, "Can't close file (file write failed: time = Thu Nov 26 08:21:20 2026\n, "
                                 "errno = 28, error message = 'No space left on device')")
    assert fileio.os_error_reason(hdf5) == "No space left on device"
    assert fileio.os_error_reason(OSError(errno.EACCES, "Permission denied")) == "Permission denied"


def test_check_writable_refuses_each_unwritable_output_in_one_line_and_writes_nothing(tmp_path):
    """fileio.check_writable, the one check every command's output goes through (train, localize, notebooks,
    export; sweep may use it too): a file where a folder goes and the reverse, a file on the way, a missing parent
    where the writer makes none, a read-only place; and what it accepts, it leaves as it was."""
    from unwritable import read_only_folder, snapshot

    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    (tmp_path / "folder").mkdir()
    refused = [
        (a_file, dict(folder=True), f"{a_file}: is a file, not a folder (for the run)"),
        (tmp_path / "folder", dict(folder=False), "is a folder, not a file (for the run)"),
        (a_file / "run", dict(folder=True),
         f"{a_file / 'run'}: cannot write the run: {a_file} is a file, not a folder"),
        (a_file / "deeper" / "x.onnx", dict(), f"{a_file} is a file, not a folder"),
        (tmp_path / "no" / "x.onnx", dict(make_parents=False), f"folder {tmp_path / 'no'} does not exist"),
    ]
    before = snapshot(tmp_path)
    for path, options, message in refused:
        with pytest.raises(TinyconvError) as failure:
            fileio.check_writable(path, "the run", **options)
        assert message in str(failure.value) and "\n" not in str(failure.value)
    with read_only_folder(tmp_path) as read_only:
        for path in (read_only / "run", read_only / "new" / "deeper"):
            with pytest.raises(TinyconvError, match=rf"^{re.escape(str(path))}: cannot write the run: .* in "
                                                    rf"{re.escape(str(read_only))}"):
                fileio.check_writable(path, "the run", folder=True)
        assert snapshot(tmp_path) == {**before, "read-only": "<dir>"}
    for path, options in [(tmp_path / "folder", dict(folder=True)), (tmp_path / "new" / "run", dict(folder=True)),
                          (tmp_path / "x.onnx", dict(make_parents=False)), (a_file, dict())]:
        fileio.check_writable(path, "the run", **options)  # accepted, and nothing made: no folder, no probe
    assert snapshot(tmp_path) == {**before, "read-only": "<dir>"}
