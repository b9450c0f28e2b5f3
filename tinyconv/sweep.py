"""A sweep: a set of ordinary training runs described by a small TOML file, run one per device by Ray Tune,
and the table of their results.

    tinyconv sweep experiments/cpu_quick.toml --out results/sweeps/cpu_quick

    spec = load_spec("experiments/cpu_quick.toml")      # checked up front: one line naming the file and field
    rows = run_sweep(spec, out="runs/sweeps/x")          # DIR/<trial>/ run folders, DIR/results.csv, results.md

A SPEC (docs/experiments.md) names a base `profile`, the `seeds`, a `[budget]` (`epochs`, or `seconds` per
trial), overrides for every trial (`[base]`) and the variants: a `[grid]` (every combination of its lists)
and/or a list of `[[trials]]`. Keys are recipe fields (`lr`, `classes`, ...), `preset`, or `model.FIELD`,
typed as tinyconv.overrides types `--set FIELD=VALUE`.

Each trial is `tinyconv.train.train` into DIR/<trial-name>/, resumable like any run. The sweep resumes by
its folders: a trial whose folder says it is done is not run again, a killed one resumes from its backup.
Ray Tune (https://docs.ray.io/en/latest/tune/) places the trials: on this machine by default (one trial at a
time with every core on a CPU-only machine, one per GPU where there are GPUs), or on an existing cluster
(`address`). Ray's own processes are ours only when we start them; they are stopped when the sweep ends,
fails or is interrupted, and a small reaper process stops them if the sweep itself is killed (SIGKILL):
Ray's dashboard and runtime-env agents outlive a killed driver otherwise (Ray 2.60, Linux).

The results tables, the noise and what notebook 06 reads are tinyconv.sweep_results.
Ray is an optional extra (`pip install tinyconv[sweep]`), imported only when trials run. No TensorFlow in
the driver: it is imported by the trials, in Ray's workers.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinyconv.errors import TinyconvError
from tinyconv.fileio import write_json
from tinyconv.models import PRESETS, get_config
from tinyconv.overrides import parse_overrides
from tinyconv.recipe import PROFILES, make_config
from tinyconv.sweep_results import RESULT_COLUMNS, write_results

try:  # Python 3.11+; the `sweep` extra brings tomli on 3.10
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SPEC_KEYS = ("description", "profile", "seeds", "budget", "base", "grid", "trials", "baseline")
BUDGET_KEYS = ("epochs", "seconds")
# Fields a trial may not override: the budget and the seeds say them, once for the whole sweep.
RESERVED = {"epochs": "set it in [budget]", "seed": "list it in seeds", "model_overrides": "use model.FIELD keys"}
TRIALS_DIR = "trials"  # in DIR: <trial>.json, each trial's status for the sweep (done / error) and its costs
LOGS_DIR = "logs"  # in DIR: <trial>.log, what each trial printed (its run folder holds only the run)
SESSION_FILE = ".ray-session.json"  # in DIR: the Ray processes of the sweep now running (for the reaper, tests)
RAYLET_START_S = 180.0  # how long the raylet may take to start (Ray: 30 s; a loaded 2-core machine needs more)
START_ATTEMPTS = 3
MARKER_VAR = "TINYCONV_SWEEP_MARKER"  # in the environment of every Ray process the sweep starts
ADDRESS_CHECK_S = 5.0  # how long `--address` may take to accept a TCP connection (ray.init itself waits for ever)


# ---------------------------------------------------------------------------------------------- spec


@dataclass
class Trial:
    """One training run of a sweep: its name (= its folder under DIR), its variant and its recipe overrides."""

    name: str
    variant: str  # the name without the seed: the trials of one variant differ only by seed
    point: dict  # the variant's own keys as the spec wrote them (not [base]), for the results table
    seed: int
    overrides: dict  # parse_overrides' dict: [base] + the variant's keys + seed + budget epochs


@dataclass
class SweepSpec:
    """A checked sweep file."""

    path: Path
    profile: str
    seeds: list
    epochs: int  # the schedule's length: the budget's epochs, or the profile's when the budget is seconds
    seconds: float | None  # per trial: stop at the last epoch end within it (the schedule is not shortened)
    trials: list = field(default_factory=list)
    description: str = ""
    baseline: str | None = None  # the variant the others are compared with (None: the first)
    text: str = ""  # the file's content, copied into DIR/sweep.json

    def variants(self) -> list[str]:
        return list(dict.fromkeys(trial.variant for trial in self.trials))


def _fail(path, where: str, message: str) -> TinyconvError:
    return TinyconvError(f"{path}: {where}: {message}")


def _flatten(table: dict, where: str, path) -> dict:
    """{"model": {"stem": "haar"}} (TOML's dotted keys) -> {"model.stem": "haar"}; other keys as they are."""
    flat = {}
    for key, value in table.items():
        if key == "model" and isinstance(value, dict):
            flat.update({f"model.{name}": inner for name, inner in value.items()})
        elif isinstance(value, dict):
            raise _fail(path, f"{where}.{key}", "a table is not a field value (only model.FIELD keys nest)")
        else:
            flat[key] = value
    return flat


def _override_text(key: str, value) -> str:
    """A TOML value as the text tinyconv.overrides parses (`--set FIELD=VALUE`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if key == "classes" and isinstance(value, list):  # a list of wnids
        return ",".join(str(item) for item in value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _check_key(key: str, value, where: str, path) -> dict:
    """One key of a trial: a known field with a value of its type; returns parse_overrides' dict for it."""
    if key in RESERVED:
        raise _fail(path, where, f"{key} cannot vary per trial; {RESERVED[key]}")
    if key == "preset":
        if value not in PRESETS:
            raise _fail(path, where, f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
        return {"preset": value}
    try:
        return parse_overrides([f"{key}={_override_text(key, value)}"])
    except TinyconvError as exc:
        raise _fail(path, where, str(exc)) from None


def _merge(target: dict, parsed: dict) -> dict:
    for key, value in parsed.items():
        if key == "model_overrides":
            target.setdefault("model_overrides", {}).update(value)
        else:
            target[key] = value
    return target


def _slug(value) -> str:
    if isinstance(value, list):
        return ".".join(_slug(item) for item in value)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def variant_name(point: dict) -> str:
    """A folder-safe name from a variant's keys: {"model.stem": "haar"} -> "stem-haar"; {} -> "base"."""
    parts = []
    for key, value in point.items():
        if key == "preset":
            parts.append(_slug(value))
        else:
            parts.append(f"{_slug(key.removeprefix('model.'))}-{_slug(value)}")
    return "_".join(parts) or "base"


def _points(spec: dict, path) -> list[tuple[str, str | None, dict]]:
    """(where, explicit name or None, keys) of every variant: the [[trials]] entries, then the grid's product."""
    points = []
    trials = spec.get("trials", [])
    if not isinstance(trials, list) or not all(isinstance(entry, dict) for entry in trials):
        raise _fail(path, "trials", "expected a list of tables ([[trials]] entries)")
    for index, entry in enumerate(trials):
        entry = dict(entry)
        name = entry.pop("name", None)
        if name is not None and (not isinstance(name, str) or _slug(name) != name):
            raise _fail(path, f"trials[{index}].name", f"{name!r} is not a folder name (letters, digits, . _ -)")
        points.append((f"trials[{index}]", name, _flatten(entry, f"trials[{index}]", path)))
    if "grid" in spec:
        grid = spec["grid"]
        if not isinstance(grid, dict):
            raise _fail(path, "grid", "expected a table of FIELD = [values]")
        grid = _flatten(grid, "grid", path)
        if not grid:
            raise _fail(path, "grid", "the grid is empty; give each field a list of values")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise _fail(path, f"grid.{key}", f"expected a non-empty list of values, got {values!r}")
        keys = list(grid)
        for combo in itertools.product(*(grid[key] for key in keys)):
            points.append(("grid", None, dict(zip(keys, combo))))
    if not points:
        raise _fail(path, "grid", "no trials: give a [grid] of FIELD = [values] or [[trials]] entries")
    return points


def _budget(spec: dict, profile: str, path) -> tuple[int, float | None]:
    budget = spec.get("budget")
    if not isinstance(budget, dict):
        raise _fail(path, "budget", "missing; give [budget] epochs = N, or seconds = S per trial")
    for key in budget:
        if key not in BUDGET_KEYS:
            raise _fail(path, f"budget.{key}", f"unknown budget field; known: {', '.join(BUDGET_KEYS)}")
    epochs, seconds = budget.get("epochs"), budget.get("seconds")
    if epochs is None and seconds is None:
        raise _fail(path, "budget", "give epochs = N, or seconds = S per trial")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise _fail(path, "budget.epochs", f"expected a positive integer, got {epochs!r}")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds <= 0):
        raise _fail(path, "budget.seconds", f"expected a positive number of seconds, got {seconds!r}")
    # with seconds, epochs (or the profile's) is the schedule's length: the time limit may stop it sooner
    return (epochs if epochs is not None else make_config(profile).epochs), (float(seconds) if seconds else None)


def load_spec(path) -> SweepSpec:
    """Read and check a sweep file: every trial's recipe and model config are resolved before anything runs.

    Raises:
        TinyconvError: one line naming the file and the field: unknown key, field or preset, an empty grid,
            a bad budget, a value of the wrong type, two trials of the same name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TinyconvError(f"{path}: cannot read the sweep file ({exc.strerror or exc})") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TinyconvError(f"{path}: not valid TOML ({exc})") from None
    for key in spec:
        if key not in SPEC_KEYS:
            raise _fail(path, key, f"unknown sweep field; known: {', '.join(SPEC_KEYS)}")
    profile = spec.get("profile", "quick")
    if profile not in PROFILES:
        raise _fail(path, "profile", f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    seeds = spec.get("seeds", [make_config(profile).seed])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise _fail(path, "seeds", f"expected a list of distinct integers >= 0, got {seeds!r}")
    epochs, seconds = _budget(spec, profile, path)
    base_table = spec.get("base", {})
    if not isinstance(base_table, dict):
        raise _fail(path, "base", "expected a table of FIELD = value")
    base: dict = {}
    for key, value in _flatten(base_table, "base", path).items():
        _merge(base, _check_key(key, value, f"base.{key}", path))

    trials, seen = [], {}
    for where, name, point in _points(spec, path):
        overrides = json.loads(json.dumps(base))  # a deep copy: model_overrides is a dict
        for key, value in point.items():
            _merge(overrides, _check_key(key, value, f"{where}.{key}" if where != "grid" else f"grid.{key}", path))
        variant = name or variant_name(point)
        try:  # the whole trial, as train() will resolve it: values in range, a consistent model
            config = make_config(profile, **{**overrides, "epochs": epochs})
            get_config(config.preset, **config.model_overrides)
        except TinyconvError as exc:
            raise _fail(path, f"{where} ({variant})", str(exc)) from None
        if variant in seen:
            raise _fail(path, where, f"a second trial named {variant!r} (first: {seen[variant]}); give it a name")
        seen[variant] = where
        for seed in seeds:
            trials.append(Trial(f"{variant}-s{seed}", variant, point, seed, {**overrides, "epochs": epochs, "seed": seed}))
    trials.sort(key=lambda trial: seeds.index(trial.seed))  # seed by seed: a cut sweep has whole seeds
    baseline = spec.get("baseline")
    if baseline is not None and baseline not in seen:
        raise _fail(path, "baseline", f"no variant named {baseline!r}; variants: {', '.join(seen)}")
    return SweepSpec(path=path, profile=profile, seeds=seeds, epochs=epochs, seconds=seconds, trials=trials,
                     description=str(spec.get("description", "")), baseline=baseline, text=text)


# -------------------------------------------------------------------------------------------- trials


def trial_file(out: Path, name: str) -> Path:
    return Path(out) / TRIALS_DIR / f"{name}.json"


def trial_status(out: Path, name: str) -> str:
    """'done', 'error' or 'pending' (never started, or killed: its run folder resumes)."""
    try:
        return json.loads(trial_file(out, name).read_text()).get("status", "pending")
    except (OSError, ValueError):
        return "pending"


def _history(path: Path) -> list[dict]:
    """history.csv's rows as floats, read here without tinyconv.callbacks (it imports Keras, and with it
    TensorFlow, which the sweep's driver does not need)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [{key: float(value) if value else float("nan") for key, value in row.items()}
                    for row in csv.DictReader(handle)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise TinyconvError(f"{path} is damaged or unreadable ({exc})") from None


def _seconds_left(run_dir: Path, seconds: float) -> float:
    """What is left of a trial's seconds after the epochs it already trained (a killed trial resumes)."""
    return seconds - sum(row["epoch_s"] for row in _history(run_dir / "history.csv"))


def run_trial(job: dict) -> dict:
    """Train one trial into its folder (resuming it), writing its output to train.log and its trial.json.

    `job`: {name, out, profile, data_dir, overrides, seconds}; the run folder is out/name, the log
    out/logs/name.log, the status out/trials/name.json. Runs in a Ray worker (or any process).
    Returns the status. Raises what train() raises, after recording it as an error.
    """
    from tinyconv import runtime

    if runtime.backend() == "tensorflow":
        runtime.quiet_tensorflow()
    import keras

    from tinyconv.models import ModelConfig, model_info
    from tinyconv.train import train

    out, name = Path(job["out"]), job["name"]
    run_dir, status_path = out / name, trial_file(out, name)
    for folder in (out / LOGS_DIR, out / TRIALS_DIR):
        folder.mkdir(parents=True, exist_ok=True)
    keras.backend.clear_session()  # a reused worker: nothing of the previous trial's graph or models
    start = time.time()
    log = open(out / LOGS_DIR / f"{name}.log", "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} trial {job['name']} in pid {os.getpid()}")
        time_limit, spent = None, False
        if job.get("seconds"):
            left = _seconds_left(run_dir, job["seconds"])
            spent = left <= 0  # killed after its budget was used up: nothing more to train
            time_limit = left / 60.0
        if spent:
            metrics = {"complete": False}
        else:
            overrides = dict(job["overrides"])
            metrics = train(preset=overrides.pop("preset", None), profile=job["profile"], data_dir=job["data_dir"],
                            out=run_dir, overrides=overrides, time_limit=time_limit)
        config = json.loads((run_dir / "config.json").read_text())
        info = model_info(ModelConfig.from_dict(config["model"]))
        status = {"status": "done", "name": job["name"], "complete": metrics.get("complete", True),
                  "params": info["params_total"], "macs": info["macs_per_image"], "session_s": time.time() - start}
    except BaseException as exc:
        status = {"status": "error", "name": job["name"], "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        print(f"trial failed: {status['error']}")
        write_json(status_path, status)
        raise
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        log.close()
    write_json(status_path, status)
    return status


def _tune_trial(config: dict, jobs: dict) -> None:
    """Ray Tune's function trainable: one trial by name."""
    from ray import tune

    status = run_trial(jobs[config["trial"]])
    tune.report({"done": 1, "params": status["params"]})


# --------------------------------------------------------------------------------------- Ray process


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
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = ""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        pass
    return state != "Z"  # a zombie is dead, only not yet reaped by its parent


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
    marker) is alive. Ray's private API: if it moves, Ray's own 30 s applies (and start_ray retries).
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
                raylet_alive = any(_proc_name(pid) == "raylet" and _alive(pid) for pid in ray_processes(marker))
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
        [sys.executable, "-c", f"from tinyconv.sweep import reap_after_parent; "
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
                _print(f"Ray did not start (try {attempt} of {START_ATTEMPTS}: {reason}); trying again")
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


# --------------------------------------------------------------------------------------------- sweep


def _print(message: str) -> None:
    print(message, flush=True)


def _jobs(spec: SweepSpec, out: Path, data_dir) -> dict:
    return {
        trial.name: {"name": trial.name, "out": str(out), "profile": spec.profile,
                     "data_dir": str(data_dir), "overrides": trial.overrides, "seconds": spec.seconds}
        for trial in spec.trials
    }


def _write_manifest(spec: SweepSpec, out: Path) -> None:
    write_json(out / "sweep.json", {
        "spec": spec.path.name, "profile": spec.profile, "seeds": spec.seeds,
        "budget": {"epochs": spec.epochs, "seconds": spec.seconds}, "description": spec.description,
        "baseline": spec.baseline or spec.variants()[0],
        "trials": [{"name": t.name, "variant": t.variant, "seed": t.seed, "overrides": t.point} for t in spec.trials],
        "spec_text": spec.text,
    })


def run_sweep(spec: SweepSpec | str | Path, out, data_dir=None, address: str | None = None,
              num_cpus: int | None = None) -> list[dict]:
    """Run (or resume) every trial of a sweep with Ray Tune, then write DIR/results.csv and DIR/results.md.

    Trials already done are not run again; a killed trial resumes from its run folder. Returns the result
    rows (read_results' shape). Raises TinyconvError when trials failed (the others' results are written
    first) or when the sweep was interrupted before every trial was done.
    """
    from tinyconv.dataset import default_data_dir

    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    out = Path(out).resolve()
    data_dir = Path(data_dir).resolve() if data_dir is not None else default_data_dir().resolve()
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(spec, out)
    pending = [t for t in spec.trials if trial_status(out, t.name) != "done"]
    done = len(spec.trials) - len(pending)
    _print(f"sweep {spec.path.name}: {len(spec.trials)} trials ({len(spec.variants())} variants x "
           f"{len(spec.seeds)} seeds), {done} already done, into {out}")
    failed: list[str] = []
    if pending:
        failed = _run_with_tune(spec, pending, out, data_dir, address, num_cpus)
    rows = collect_results(spec, out)
    write_results(rows, out, spec)
    _print(f"results: {out / 'results.csv'}, {out / 'results.md'}")
    left = [t.name for t in spec.trials if trial_status(out, t.name) != "done"]
    if failed:
        errors = "; ".join(f"{name}: {_trial_error(out, name)[:160]}" for name in failed[:2])
        raise TinyconvError(f"{len(failed)} of {len(spec.trials)} trials failed ({errors}); see "
                            f"{out / LOGS_DIR}/<trial>.log; run the same command again to retry them")
    if left:
        raise TinyconvError(f"sweep interrupted with {len(left)} of {len(spec.trials)} trials not done; "
                            f"run the same command again to resume {out}")
    return rows


def _trial_error(out: Path, name: str) -> str:
    try:
        return json.loads(trial_file(out, name).read_text()).get("error", "unknown error")
    except (OSError, ValueError):
        return "no trial.json (the worker died)"


def _run_with_tune(spec: SweepSpec, pending: list[Trial], out: Path, data_dir: Path, address, num_cpus) -> list[str]:
    """The pending trials on Ray Tune; returns the names of those that failed."""
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # a polite kill: stop like Ctrl-C, so Ray is shut down in `finally`
        raise KeyboardInterrupt

    if previous_term in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    _print(f"starting Ray {'at ' + address if address else 'on this machine'} for {len(pending)} trial(s) ...")
    session = start_ray(out, address, num_cpus)
    try:
        import logging

        import ray
        from ray import tune

        for name in ("ray.tune", "ray.train", "ray.air"):  # a failed trial is one line of ours, not a traceback
            logging.getLogger(name).setLevel(logging.CRITICAL)
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        resources, concurrent = trial_resources(ray.cluster_resources(), nodes)
        _print(f"Ray ready in {time.monotonic() - started:.0f} s: {resources} per trial, {concurrent} at a time")
        total = len(spec.trials)
        order = {t.name: i + 1 for i, t in enumerate(spec.trials)}
        progress = _progress_callback(tune, order, total, out)
        storage = Path(session.temp_dir or tempfile.mkdtemp(prefix="tcsweep-")) / "tune"
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_tune_trial, jobs=_jobs(spec, out, data_dir)), resources),
            param_space={"trial": tune.grid_search([t.name for t in pending])},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name="sweep", storage_path=str(storage), verbose=0, callbacks=[progress],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        tuner.fit()
        # by the trials' own status files: a trial whose worker died before it started has no config in
        # Tune's results (its result.config is None), yet it failed
        return [t.name for t in pending if trial_status(out, t.name) != "done"]
    finally:
        session.close()
        signal.signal(signal.SIGTERM, previous_term if previous_term is not None else signal.SIG_DFL)


def _progress_callback(tune, order: dict, total: int, out: Path):
    """A Tune callback printing one line as each trial starts and ends (Ray's own tables are off)."""

    class Progress(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            name = trial.config["trial"]
            _print(f"[{order[name]}/{total}] {name}: training (log: {out / LOGS_DIR / name}.log)")

        def on_trial_complete(self, iteration, trials, trial, **info):
            name = trial.config["trial"]
            row = trial_row(out, name)
            _print(f"[{order[name]}/{total}] {name}: val top-1 {row['top1']:.2%} in {row['wall_s']:.0f} s")

        def on_trial_error(self, iteration, trials, trial, **info):
            name = trial.config["trial"]
            _print(f"[{order[name]}/{total}] {name}: failed: {_trial_error(out, name)}")

    return Progress()


# ------------------------------------------------------------------------------------------- results


def trial_row(out: Path, name: str) -> dict:
    """A trial's numbers from its run folder (config.json, history.csv: a trial the seconds budget stopped
    has no metrics.json) and its status file (parameters, MACs)."""
    run_dir = Path(out) / name
    config = json.loads((run_dir / "config.json").read_text())
    status = json.loads(trial_file(out, name).read_text())
    history = _history(run_dir / "history.csv")
    best = max(row["val_top1"] for row in history)
    model = config.get("model", {})
    return {
        "top1": history[-1]["val_top1"], "top5": history[-1]["val_top5"], "best_top1": best,
        "train_img_s": statistics.median(row["images_per_s"] for row in history),
        "wall_s": sum(row["epoch_s"] for row in history), "epochs": len(history),
        "device": config.get("device", ""), "params": status.get("params"), "macs": status.get("macs"),
        "preset": config.get("preset", ""), "stem": model.get("stem", ""), "down": model.get("down", ""),
        "k1": (model.get("kernel_sizes") or [""])[0],
        "axial": ",".join(str(a) for a in model.get("axial_kernel_sizes") or []),
    }


def collect_results(spec: SweepSpec, out: Path) -> list[dict]:
    """One row per trial of the spec (RESULT_COLUMNS); trials not done have their status and no numbers."""
    rows = []
    for trial in spec.trials:
        row = {column: "" for column in RESULT_COLUMNS}
        row.update(trial=trial.name, variant=trial.variant, seed=trial.seed, run_dir=trial.name,
                   preset=trial.overrides.get("preset", make_config(spec.profile).preset),
                   overrides="; ".join(f"{k}={_override_text(k, v)}" for k, v in trial.point.items()),
                   status=trial_status(out, trial.name))
        if row["status"] == "done":
            row.update(trial_row(out, trial.name))
        rows.append(row)
    return rows
