"""A sweep: a set of ordinary training runs described by a small TOML file, run one per device by Ray Tune,
and the table of their results.

    tinyconv sweep experiments/cpu_quick.toml --out results/sweeps/cpu_quick

    spec = load_spec("experiments/cpu_quick.toml")      # checked up front: one line naming the file and field
    rows = run_sweep(spec, out="runs/sweeps/x")          # DIR/<trial>/ run folders, DIR/results.csv, results.md

A SPEC (docs/experiments.md) names a base `profile`, the `seeds`, a `[budget]` (`epochs`, or `seconds` per
trial), overrides for every trial (`[base]`) and the variants: a `[grid]` (every combination of its lists)
and/or a list of `[[trials]]`. Keys are recipe fields (`lr`, `classes`, ...), `preset`, or `model.FIELD`,
typed as tinyconv.training.overrides types `--set FIELD=VALUE`.

Each trial is `tinyconv.training.train.train` into DIR/<trial-name>/, resumable like any run. The sweep resumes by
its folders: a trial whose folder says it is done is not run again, a killed one resumes from its backup.
Ray Tune (https://docs.ray.io/en/latest/tune/) places the trials: on this machine by default (one trial at a
time with every core on a CPU-only machine, one per GPU where there are GPUs), or on an existing cluster
(`address`). Ray's own processes are ours only when we start them; they are stopped when the sweep ends,
fails or is interrupted, and a small reaper process stops them if the sweep itself is killed (SIGKILL):
Ray's dashboard and runtime-env agents outlive a killed driver otherwise (Ray 2.60, Linux).

The results tables, the noise and what notebook 06 reads are tinyconv.experiments.results.
Ray is an optional extra (`pip install tinyconv[sweep]`), imported only when trials run. No TensorFlow in
the driver: it is imported by the trials, in Ray's workers.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tinyconv.errors import TinyconvError
from tinyconv.fileio import check_writable, not_utf8, write_json
from tinyconv.model.config import PRESETS
from tinyconv.training.overrides import parse_overrides
from tinyconv.training.recipe import PROFILES, make_config
from tinyconv.experiments.ray_session import start_ray, trial_resources
from tinyconv.experiments.results import RESULT_COLUMNS, write_results

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
    """A TOML value as the text tinyconv.training.overrides parses (`--set FIELD=VALUE`)."""
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
        if not isinstance(value, str) or value not in PRESETS:  # a str first: a TOML list or table is unhashable
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
        data = path.read_bytes()
    except OSError as exc:
        raise TinyconvError(f"{path}: cannot read the sweep file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")  # TOML is UTF-8 text
    except UnicodeDecodeError as exc:
        raise TinyconvError(f"{path}: not a TOML sweep file: {not_utf8(exc)}") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TinyconvError(f"{path}: not valid TOML ({exc})") from None
    for key in spec:
        if key not in SPEC_KEYS:
            raise _fail(path, key, f"unknown sweep field; known: {', '.join(SPEC_KEYS)}")
    profile = spec.get("profile", "quick")
    if not isinstance(profile, str) or profile not in PROFILES:  # a str first: a TOML list or table is unhashable
        raise _fail(path, "profile", f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    seeds = spec.get("seeds", [make_config(profile).seed])
    if (not isinstance(seeds, list) or not seeds  # the set last: a list among the seeds is unhashable
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise _fail(path, "seeds", f"expected a list of distinct integers >= 0, got {seeds!r}")
    for seed in seeds:  # and in the recipe's range (a seed Keras refuses would fail in every trial)
        try:
            make_config(profile, seed=seed)
        except TinyconvError as exc:
            raise _fail(path, "seeds", str(exc)) from None
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
        try:  # the whole trial as train() will resolve it (TrainConfig.validate: every type and range, the model)
            make_config(profile, **{**overrides, "epochs": epochs})
        except TinyconvError as exc:
            raise _fail(path, f"{where} ({variant})", str(exc)) from None
        if variant in seen:
            raise _fail(path, where, f"a second trial named {variant!r} (first: {seen[variant]}); give it a name")
        seen[variant] = where
        for seed in seeds:
            trials.append(Trial(f"{variant}-s{seed}", variant, point, seed, {**overrides, "epochs": epochs, "seed": seed}))
    trials.sort(key=lambda trial: seeds.index(trial.seed))  # seed by seed: a cut sweep has whole seeds
    baseline = spec.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline not in seen):  # a list is unhashable
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
    """history.csv's rows as floats, read here without tinyconv.training.callbacks (it imports Keras, and with it
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

    from tinyconv.model.build import model_info

    from tinyconv.model.config import ModelConfig
    from tinyconv.training.train import train

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
    from tinyconv.data.dataset import default_data_dir

    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        # 0 meant "all" by accident (Ray's num_cpus=0 or ...), a negative count a Ray error after its start
        raise TinyconvError(f"--num-cpus must be a positive number of CPUs, got {num_cpus}; leave it out for all")
    out = Path(out).resolve()
    data_dir = Path(data_dir).resolve() if data_dir is not None else default_data_dir().resolve()
    pending = [t for t in spec.trials if trial_status(out, t.name) != "done"]
    # Everything a trial needs is checked before a file is written or Ray starts: the data (only on this machine:
    # on a cluster the data dir must be valid on its nodes, which need not be this one), then the folder.
    if pending and not address:
        check_data(spec, pending, data_dir)
    check_writable(out, "the sweep folder", folder=True)  # not a file, not under one, writable (as train's --out)
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(spec, out)
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


def check_data(spec: SweepSpec, trials: list[Trial], data_dir: Path) -> None:
    """The check train() makes of its data dir (a dataset there, each class the recipe selects in it), once for
    each class selection among `trials`. Raises TinyconvError naming the data dir (and the trial for its classes)."""
    from tinyconv.data.dataset import require_root, selected_classes

    require_root(data_dir)
    checked = set()
    for trial in trials:
        classes = make_config(spec.profile, **trial.overrides).classes
        if json.dumps(classes) in checked:
            continue
        checked.add(json.dumps(classes))
        try:
            selected_classes(data_dir, classes)
        except TinyconvError as exc:
            raise TinyconvError(f"{exc} (data dir {data_dir}, classes of trial {trial.name})") from None


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
