"""One lock per shared folder, so two processes never write the same run, cache or download at once.

    with folder_lock(run_dir / ".lock", "training run"):   # a second trainer of run_dir fails at once
        ...

The lock is an `fcntl.flock` on a small file that also holds the holder's pid, host and start time (JSON), so
the process that is refused can say who holds it. The operating system releases a flock when its process
dies, however it dies (kill -9 included): a lock file left by a dead process is simply taken over, with a
message naming the process it belonged to. Locks are advisory and local: they cover processes on one machine
(flock over NFS is not to be relied on).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from tinyconv.errors import TinyconvError


def _read_holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since {started})"


@contextlib.contextmanager
def folder_lock(path, what: str):
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block.

    Args:
        path: the lock file, inside the folder it protects.
        what: what is locked, for the messages ("training run", "dataset cache", "download").
    Raises:
        TinyconvError: another live process holds the lock (the message names it), or the lock file cannot
            be created (read-only folder, ...).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as exc:
        raise TinyconvError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            raise TinyconvError(
                f"the {what} in {path.parent} is in use by {_describe(holder)} (lock {path}); "
                "wait for it to finish or stop it"
            ) from None
        previous = _read_holder(handle)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            print(f"note: taking over the {what} lock {path} left by {_describe(previous)}, which is no longer running",
                  file=sys.stderr, flush=True)
        # the holder's details go straight to the file descriptor: a buffered write that fails (disk full) would
        # fail again when the file is closed
        fd = handle.fileno()
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode("utf-8"), 0)
        except OSError:
            # A full disk (or quota): the flock holds all the same, only a refused process could not name this
            # one; the writes the work itself makes report the disk, as one line naming their file.
            pass
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file: released normally, nothing to take over
            fcntl.flock(fd, fcntl.LOCK_UN)
