"""Places a test can name as outputs that cannot be written: a file, a path under a file, a read-only folder.

A read-only folder is a folder with mode 0o555; as root that does not stop a write (root ignores permission
bits), so then /sys stands for it (sysfs: root cannot create a file there). Where neither refuses a write the
test is skipped, never passed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest


def _refuses_writes(folder: Path) -> bool:
    probe = folder / f".unwritable-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError:
        return True
    probe.unlink()
    return False


@contextlib.contextmanager
def read_only_folder(tmp_path: Path):
    """Yield a folder no file can be created in: tmp_path/read-only (mode 0o555), or /sys as root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.geteuid() != 0 and _refuses_writes(folder):
            yield folder
        elif Path("/sys").is_dir() and _refuses_writes(Path("/sys")):
            yield Path("/sys")
        else:
            pytest.skip("no folder here refuses writes (root without /sys)")
    finally:
        folder.chmod(0o755)


def snapshot(folder: Path) -> dict:
    """{relative path: bytes, or "<dir>", or "-> target" for a link} of everything under `folder`: equal
    snapshots before and after a refused command show that it wrote, replaced and removed nothing."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            state[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            state[key] = "<dir>"
        else:
            state[key] = path.read_bytes()
    return state
