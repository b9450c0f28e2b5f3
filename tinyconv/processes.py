"""Whether a process is still running, as the sweep's Ray clean-up and the lease's state watcher ask it.

    running(pid)   False once the process has exited, a zombie (exited, not yet reaped) included
"""

from __future__ import annotations

import os
from pathlib import Path


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
