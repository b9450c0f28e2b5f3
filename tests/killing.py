"""Kill a training process for real (SIGKILL) right after its first backed-up epoch: the resume tests' set-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tinyconv.callbacks import read_history


def kill_after_first_backup(argv: list, run_dir: Path, *, cwd, env: dict, timeout: float) -> int:
    """Start `argv` (a trainer writing `run_dir` that pauses after each epoch), SIGKILL it once an epoch is in
    history.csv and backed up, and return the backed-up epoch count. Asserts it was really killed mid-run."""
    process = subprocess.Popen([str(arg) for arg in argv], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history, meta = run_dir / "history.csv", run_dir / "backup" / "training_metadata.json"
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if history.exists() and len(read_history(history)) >= 1 and meta.exists():
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    return json.loads(meta.read_text())["epoch"]
