"""Kill a process for real (SIGKILL) at a chosen moment: the resume tests' set-up (a training run after its first
backed-up epoch, a sweep after its first trial)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tinyconv.training.history import read_history


def wait_until(ready: Callable[[], bool], timeout: float, what: str = "the moment") -> None:
    """Poll `ready()` until it returns true; assert that it did within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not come within {timeout:.0f} s"
        time.sleep(0.1)


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float, what: str = "the moment", *,
              group: bool = False) -> None:
    """Poll `ready()` while `process` runs, SIGKILL it as soon as it returns true, and reap it. Asserts that
    `ready` came within `timeout` seconds and that the process was still running then (really killed mid-run);
    the process is killed in any case. On failure the message carries its output when it was piped.
    group=True kills its whole process group (start it with start_new_session=True): a script and its children."""
    kill = (lambda: os.killpg(process.pid, signal.SIGKILL)) if group else process.kill
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.05)
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the process ended (exit {process.returncode}) before it could be killed\n{output}")
        assert ready(), f"{what} did not come within {timeout:.0f} s"
        kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            kill()
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def kill_after_first_backup(argv: list, run_dir: Path, *, cwd, env: dict, timeout: float) -> int:
    """Start `argv` (a trainer writing `run_dir` that pauses after each epoch), SIGKILL it once an epoch is in
    history.csv and backed up, and return the backed-up epoch count. Asserts it was really killed mid-run."""
    process = subprocess.Popen([str(arg) for arg in argv], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history, meta = run_dir / "history.csv", run_dir / "backup" / "training_metadata.json"

    def backed_up() -> bool:
        return history.exists() and len(read_history(history)) >= 1 and meta.exists()

    kill_when(process, backed_up, timeout, "the first backed-up epoch")
    assert not (run_dir / "metrics.json").exists()
    return json.loads(meta.read_text())["epoch"]
