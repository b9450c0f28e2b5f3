"""Processes: whether one is still running (the sweep's Ray clean-up, the lease's state watcher ask it), and worker
processes that do not outlive the process that started them (prepare's and verify's decoding pool).

    running(pid)             False once the process has exited, a zombie (exited, not yet reaped) included
    start_worker(parent)     the decoding pool's initializer: SIGTERM's default action, SIGINT ignored, and
                             die_with_parent(parent)
    die_with_parent(parent)  the worker ends when `parent` does, even by SIGKILL
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: the signal the kernel sends this process when its parent thread exits


def running(pid: int) -> bool:
    """Whether process `pid` is alive: it exists (or belongs to another user) and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # /proc/PID/stat: "pid (name) state ..."; the name may hold spaces and parentheses
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def die_with_parent(parent: int) -> None:
    """Make this (worker) process end when process `parent`, which started it, ends: a multiprocessing initializer.

    A Pool's workers wait for tasks on a pipe; when their parent is killed with SIGKILL nothing tells them, so they
    wait forever, holding what they inherited, the parent's lock files included (a killed `prepare` then kept the
    next one out). On Linux the kernel sends them SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
    thread looks every second. `parent` is passed in, not read here: a parent that died before this call is seen too.
    """
    if sys.platform.startswith("linux"):
        try:
            if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before the prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def start_worker(parent: int) -> None:
    """The initializer of tinyconv's process pools (prepare's and verify's decoding): the worker takes SIGTERM's
    default action again, ignores SIGINT, and ends with `parent` (die_with_parent).

    A pool that stops its workers by force (multiprocessing.Pool.terminate(), which ends every `with Pool(...)`
    block; a ProcessPoolExecutor once a worker has died) sends them SIGTERM and waits for them. A worker
    forked from a process with a Python SIGTERM handler (the CLI's, which stops a command as Ctrl-C does) inherits
    that handler, and a Python handler can lose the signal: one that lands just before the worker blocks on the
    task queue's lock (a C semaphore wait) runs only when Python code runs again, which it never does, and the
    pool's parent waits for the worker forever. A first `tinyconv evaluate` hung so, after decoding val
    (2026-12-06). The default action ends the worker in the kernel, whatever it is doing.

    Ctrl-C in a terminal sends SIGINT to every process of the command, workers included. The parent alone acts on it
    (it cancels the queued chunks and lets the running ones finish); a worker that took it too would die mid-chunk,
    printing a traceback of its own, and break the pool under the parent's orderly stop.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
