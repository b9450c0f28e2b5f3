"""The Ray side of a sweep: start (or join) Ray, size the trials to its nodes, and leave no Ray process behind.

    session = start_ray(out, address=None, num_cpus=None)   # a local head, or a cluster at HOST:PORT
    ...                                                     # Ray Tune places the trials (tinyconv.experiments.sweep)
    session.stop()                                          # every process this sweep started is gone

Every Ray process this module starts carries MARKER_VAR in its environment, so `ray_processes` finds them
all by it (also the ones Ray forks later), and a reaper process kills them if the sweep itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tinyconv.errors import TinyconvError
from tinyconv.fileio import write_json
from tinyconv.processes import running


SESSION_FILE = ".ray-session.json"  # in DIR: the Ray processes of the sweep now running (for the reaper, tests)


RAYLET_START_S = 180.0  # how long the raylet may take to start (Ray: 30 s; a loaded 2-core machine needs more)


START_ATTEMPTS = 3


MARKER_VAR = "TINYCONV_SWEEP_MARKER"  # in the environment of every Ray process the sweep starts


ADDRESS_CHECK_S = 5.0  # how long `--address` may take to accept a TCP connection (ray.init itself waits for ever)


def _proc_environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return []


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def ray_processes(marker: str, raylet_pids=()) -> list[int]:
    """The live processes of one sweep's Ray instance: those carrying its marker in their environment, and
    Ray's agents of its raylets (they get a fresh environment holding only RAY_RAYLET_PID). Linux (/proc);
    elsewhere an empty list."""
    if not Path("/proc/self/environ").exists():
        return []
    tag = f"{MARKER_VAR}={marker}".encode()
    raylets = {f"RAY_RAYLET_PID={pid}".encode() for pid in raylet_pids}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _proc_environ(int(entry.name))
        if tag in env or (raylets and raylets.intersection(env) and _proc_name(int(entry.name)).startswith("ray")):
            found.append(int(entry.name))
    return sorted(found)


def stop_processes(pids, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds."""
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(running(pid) for pid in pids):
            time.sleep(0.1)


def reap_after_parent(marker: str, temp_dir: str) -> None:
    """The reaper: wait for the sweep process to end (EOF on stdin, however it ended, SIGKILL included), then
    stop the Ray processes it left and remove Ray's temporary folder. stdin lines name the raylets' pids."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the sweep, which cleans up itself
    raylets = set()
    for line in sys.stdin:
        raylets.update(int(word) for word in line.split() if word.isdigit())
    stop_processes(ray_processes(marker, raylets))
    shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class RaySession:
    """A Ray instance the sweep started (or joined, with `address`) and what it takes to stop it."""

    marker: str
    temp_dir: str | None
    raylets: list
    reaper: subprocess.Popen | None
    session_file: Path

    def close(self) -> None:
        """ray.shutdown, then stop whatever of ours is still alive, then let the reaper go."""
        import ray

        try:
            ray.shutdown()
        finally:
            if self.temp_dir is not None:
                stop_processes(ray_processes(self.marker, self.raylets))
                shutil.rmtree(self.temp_dir, ignore_errors=True)
            if self.reaper is not None:
                self.reaper.stdin.close()
                self.reaper.wait(timeout=60)
            self.session_file.unlink(missing_ok=True)


def _quiet_ray_environment() -> None:
    # No usage statistics, no new-style progress tables, no per-trial CSV/JSON/TensorBoard loggers:
    # each trial's run folder is its record, and the sweep prints one line per trial itself.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The raylet waits 15 s for its dashboard agent (a Python process) to report its ports, then aborts;
    # on a loaded 2-core machine the agent's imports alone can take longer.
    os.environ.setdefault("RAY_agent_register_timeout_ms", str(int(RAYLET_START_S * 1000)))
    # On SIGTERM Ray's driver first "drains" the node over RPC (for Ray Serve), which hangs when the raylet
    # is already gone; the sweep has nothing to drain: stop at once.
    os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")


@contextlib.contextmanager
def _patient_raylet_start(seconds: float, marker: str):
    """Give Ray's raylet `seconds` instead of Ray's fixed 30 s to register at start-up.

    ray.init polls ray._private.services.get_node until the raylet has registered and gives up after a
    hard-coded 30 s (Ray 2.60, node.py); on a loaded 2-core machine the raylet and its agents can take
    longer. Each poll here keeps asking for up to `seconds`, while the raylet (found by the sweep's
    marker) is alive. Ray's private API: if it moves, Ray's own 30 s applies (and start_ray retries);
    tests/test_sweep.py::test_ray_private_get_node_is_where_the_patient_raylet_start_patches_it fails then.
    """
    try:
        from ray._private import services

        original = services.get_node
    except (ImportError, AttributeError):
        yield
        return

    def get_node(*args, **kwargs):
        deadline = time.monotonic() + seconds
        while True:
            try:
                return original(*args, **kwargs)
            except RuntimeError:  # not registered yet
                raylet_alive = any(_proc_name(pid) == "raylet" and running(pid) for pid in ray_processes(marker))
                if time.monotonic() > deadline or not raylet_alive:
                    raise
                time.sleep(0.5)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = original


def start_ray(out: Path, address: str | None = None, num_cpus: int | None = None) -> RaySession:
    """Start a local Ray instance for this sweep (or connect to `address`) with the noise off."""
    import logging

    _quiet_ray_environment()
    try:
        import ray
    except ImportError:
        raise TinyconvError("tinyconv sweep needs Ray: pip install 'tinyconv[sweep]'") from None
    marker = f"{os.getpid()}-{time.time_ns()}"
    session_file = out / SESSION_FILE
    if address:
        check_address(address)
        env = {name: value for name, value in os.environ.items()
               if name.startswith("TINYCONV_") or name in ("KERAS_BACKEND",)}
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            # Ray (2.5x+) turns on token authentication for `ray start --head` wherever ~/.ray/auth_token
            # exists, but a driver given an explicit address sends no token unless RAY_AUTH_MODE=token.
            hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token (the token: "
                    "RAY_AUTH_TOKEN or ~/.ray/auth_token)" if "RAY_AUTH_MODE" not in os.environ else "")
            raise TinyconvError(f"cannot join the Ray cluster at {address}: {exc}".splitlines()[0] + hint) from None
        return RaySession(marker, None, [], None, session_file)
    # Ray puts unix sockets under its temp dir: a short path, whatever $TMPDIR is.
    temp_dir = tempfile.mkdtemp(prefix="tcray-", dir="/tmp" if Path("/tmp").is_dir() else None)
    reaper = subprocess.Popen(
        [sys.executable, "-c", f"from tinyconv.experiments.ray_session import reap_after_parent; "
                               f"reap_after_parent({marker!r}, {temp_dir!r})"],
        stdin=subprocess.PIPE, text=True, start_new_session=True,  # not in the terminal's Ctrl-C group
    )
    session = RaySession(marker, temp_dir, [], reaper, session_file)
    os.environ[MARKER_VAR] = marker  # inherited by gcs_server, raylet and the workers (not by the reaper)
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                with _patient_raylet_start(RAYLET_START_S, marker):
                    ray.init(num_cpus=num_cpus or _cpu_count(), include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR, _temp_dir=temp_dir, configure_logging=True)
                break
            except Exception as exc:  # Ray raises a bare Exception when its raylet misses a fixed 30 s start-up
                reason = _raylet_failure(temp_dir)
                ray.shutdown()
                stop_processes(ray_processes(marker))
                if "timed out during startup" not in str(exc):
                    raise
                if attempt == START_ATTEMPTS:
                    raise TinyconvError(f"Ray did not start on this machine in {START_ATTEMPTS} tries (an overloaded "
                                        f"machine?): {reason}; run the same command again") from None
                print(f"Ray did not start (try {attempt} of {START_ATTEMPTS}: {reason}); trying again", flush=True)
        session.raylets = [pid for pid in ray_processes(marker) if _proc_name(pid) == "raylet"]
        reaper.stdin.write(" ".join(map(str, session.raylets)) + "\n")
        reaper.stdin.flush()
        write_json(session_file, {"marker": marker, "temp_dir": temp_dir, "driver": os.getpid(),
                                  "raylets": session.raylets, "reaper": reaper.pid})
    except BaseException:
        session.close()
        raise
    finally:
        os.environ.pop(MARKER_VAR, None)
    return session


def check_address(address: str, timeout: float = ADDRESS_CHECK_S) -> None:
    """Fail in seconds, with one line, when nothing listens at a `HOST:PORT` (or `ray://HOST:PORT`) address:
    ray.init keeps retrying such an address for minutes (Ray 2.60: still waiting after 5 min). Other forms
    (`auto`) are left to Ray."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return
    host = host.strip("[]") or "127.0.0.1"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TinyconvError(f"cannot join the Ray cluster at {address}: nothing answers at {host}:{port} "
                            f"({reason}); start one there (`ray start --head --port={port}`) or check the address"
                            ) from None


def _raylet_failure(temp_dir: str) -> str:
    """The raylet's fatal log line of a failed start (its temp dir is removed afterwards), else a generic one."""
    lines = []
    for log in Path(temp_dir).glob("session_*/logs/raylet.out"):
        try:
            lines += [line for line in log.read_text(errors="replace").splitlines() if " C " in line or "Check failed" in line]
        except OSError:
            pass
    if not lines:
        return "its raylet did not register in time"
    return "raylet: " + re.sub(r"^\[[^]]*\] \(raylet\) ", "", lines[-1].strip())[-240:]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def trial_resources(resources: dict, nodes: list[dict] | None = None) -> tuple[dict, int]:
    """(resources per trial, trials at once) from Ray's cluster resources and its alive nodes' resources.

    Where there are GPUs: one GPU per trial, with the CPUs that go with one GPU on the GPU node poorest in
    them (a head node without GPUs does not count: asking for the cluster's CPUs per GPU would ask for more
    than a GPU node has, and Ray would never place the trial). Otherwise every CPU of the smallest node, so
    a CPU-only machine runs one trial at a time with all its cores.
    """
    nodes = nodes or [resources]
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if gpus:
        per_gpu = [int(n.get("CPU", 0)) // int(n["GPU"]) for n in nodes if int(n.get("GPU", 0)) >= 1]
        return {"cpu": max(1, min(per_gpu) if per_gpu else cpus // gpus), "gpu": 1}, gpus
    node_cpus = [int(n.get("CPU", 0)) for n in nodes if int(n.get("CPU", 0)) >= 1] or [cpus]
    per_trial = max(1, min(node_cpus))
    return {"cpu": per_trial}, max(1, sum(n // per_trial for n in node_cpus))
