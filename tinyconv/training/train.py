"""A training run: its folder, and `train()` as a short sequence of named steps.

    metrics = train(profile="quick")                          # runs/tiny-quick/, resumes if killed
    metrics = train(preset="seed", profile="full")            # the reference recipe (a GPU job)

A run folder `runs/NAME/` holds `config.json` (the resolved recipe, model config, class list), `history.csv`
(one row per epoch), `model.keras` (final), `best.keras` (best val top-1), `metrics.json`, `backup/` (resume
state: weights, optimizer state and with it the schedule position), `tb/` (TensorBoard) and `figures/`.
Starting the same command again continues from the last completed epoch; a folder holding another config
is never overwritten. The recipe is tinyconv.training.recipe, the callbacks tinyconv.training.callbacks, evaluation and
prediction tinyconv.deploy.inference.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from tinyconv import runtime
from tinyconv.training.callbacks import (
    BestCheckpoint,
    EpochProgress,
    HistoryWriter,
    LiveCurves,
    NonFiniteLoss,
    ResumableBackup,
    TensorBoardScalars,
    ThroughputEstimate,
    TimeLimit,
    format_duration,
)
from tinyconv.data.dataset import default_data_dir, load_split, selected_classes
from tinyconv.errors import TinyconvError
from tinyconv.fileio import check_writable, json_default, remove_temporaries, save_model, write_bytes, write_json
from tinyconv.locks import folder_lock
from tinyconv.training.plots import figure_png, plot_history
from tinyconv.model import fast_path
from tinyconv.model.build import build_model
from tinyconv.model.config import ModelConfig, get_config
from tinyconv.training.history import read_history
from tinyconv.training.recipe import TrainConfig, make_config
from tinyconv.training.reference import reference_curve_for
from tinyconv.training.schedule import build_optimizer, build_schedule

# ------------------------------------------------------------------------------------------- folder


def default_runs_root() -> Path:
    """$TINYCONV_RUNS_ROOT, else the repository's runs/ (the folder that holds one folder per run).

    $TINYCONV_RUNS_DIR, its former name, still works with a DeprecationWarning: it differed by one letter
    from $TINYCONV_RUN_DIR, the notebooks' output folder.
    """
    env = os.environ.get("TINYCONV_RUNS_ROOT")
    if not env and os.environ.get("TINYCONV_RUNS_DIR"):
        warnings.warn("TINYCONV_RUNS_DIR is deprecated; set TINYCONV_RUNS_ROOT instead", DeprecationWarning,
                      stacklevel=2)
        env = os.environ["TINYCONV_RUNS_DIR"]
    return Path(env) if env else Path(__file__).resolve().parents[2] / "runs"


_COMPARED_KEYS = ("profile", "train", "model", "wnids")
LOCK_NAME = ".lock"  # in the run folder: one trainer at a time (tinyconv.locks)
SESSIONS_NAME = "sessions.jsonl"  # in the run folder: one line per training session (record_session)


def run_dir_state(run_dir: Path, doc: dict) -> str:
    """'new', 'resume' or 'complete'; raises TinyconvError if the folder belongs to something else."""
    config_path = run_dir / "config.json"
    if config_path.exists():
        try:
            existing = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 text
            raise TinyconvError(f"{config_path}: unreadable run config ({type(exc).__name__}); use another --out") from None
        if not isinstance(existing, dict):
            raise TinyconvError(f"{config_path}: not a run config (a JSON {type(existing).__name__}, not an object); "
                                "use another --out")
        differences = _differences(existing, doc)
        if differences:
            raise TinyconvError(
                f"{config_path} holds a different run ({'; '.join(differences[:4])}); "
                "use another --out, or delete the folder to start over"
            )
        return "complete" if (run_dir / "metrics.json").exists() else "resume"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise TinyconvError(f"{run_dir} is not empty and holds no config.json; refusing to write a run into it")
    return "new"


def _differences(existing: dict, doc: dict) -> list[str]:
    out = []
    for key in _COMPARED_KEYS:
        old, new = existing.get(key), json.loads(json.dumps(doc.get(key), default=json_default))
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    out.append(f"{key}.{name}: {old.get(name)!r} there, {new.get(name)!r} now")
        elif old != new:
            out.append(f"{key} differs" if key == "wnids" else f"{key}: {old!r} there, {new!r} now")
    return out


def model_metadata(run: dict) -> dict:
    """What a saved model file carries besides Keras' own (fileio.save_model): the class list of its outputs
    and the preprocessing its inputs expect, so a bare .keras predicts with the right names.

    `run`: the run's config.json document (a plan's `doc`): a model saved before files carried this list gets
    it from its run's config.json the same way (scripts/carry_classes.py).
    """
    from tinyconv.data.augment import IMAGENET_MEAN, IMAGENET_STD  # keras.ops: imported where a model is saved anyway

    size = int(run["model"]["image_size"])
    return {
        "wnids": run["wnids"],
        "names": run["names"],
        "words": run["words"],
        "input": {"size": [size, size, 3], "dtype": "float32",
                  "from": "uint8 RGB / 255, then (x - mean) / std", "mean": list(IMAGENET_MEAN),
                  "std": list(IMAGENET_STD)},
        "preset": run["preset"],
        "profile": run["profile"],
    }


def _clear_for_restart(run_dir: Path) -> None:
    """Remove what a run wrote except config.json (which says what the run is): resume state, history, models."""
    _remove_backup(run_dir / "backup")
    for name in ("history.csv", "metrics.json", "model.keras", "best.keras", SESSIONS_NAME):
        (run_dir / name).unlink(missing_ok=True)
    for folder in ("figures", "tb"):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


def _remove_backup(backup_dir: Path) -> None:
    if not backup_dir.exists():
        return
    for path in backup_dir.iterdir():
        path.unlink(missing_ok=True)
    backup_dir.rmdir()


# -------------------------------------------------------------------------------------------- steps


@dataclass
class RunPlan:
    """What a run is: its recipe, data, classes, model config and folder (the content of config.json)."""

    config: TrainConfig
    profile: str
    data_dir: Path
    run_dir: Path
    model_config: ModelConfig
    doc: dict  # config.json
    state: str  # run_dir_state: "new", "resume" or "complete"


@dataclass
class RunData:
    """The images a run trains and validates on, and the number of steps per epoch."""

    train_images: np.ndarray  # uint8 [N, 64, 64, 3]
    train_labels: np.ndarray  # int [N]
    val_images: np.ndarray
    val_labels: np.ndarray
    steps_per_epoch: int


def plan_run(preset, profile, data_dir, out, overrides) -> RunPlan:
    """Resolve the recipe, the classes and the model config; check the run folder against them."""
    config = make_config(profile, preset, **(overrides or {}))
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    run_dir = Path(out) if out else default_runs_root() / f"{config.preset}-{profile}"
    check_writable(run_dir, "the run", folder=True)  # one line now, not a traceback after loading the data
    wnids, names, words = selected_classes(data_dir, config.classes)
    model_config = get_config(config.preset, **{**config.model_overrides, "num_classes": len(wnids)})
    doc = {
        "profile": profile,
        "preset": config.preset,
        "train": config.to_dict(),
        "model": model_config.to_dict(),
        "wnids": wnids,
        "names": names,
        "words": [words[wnid] for wnid in wnids],
        "data_dir": str(data_dir),
    }
    return RunPlan(config, profile, data_dir, run_dir, model_config, doc, run_dir_state(run_dir, doc))


def _cap_per_class(images: np.ndarray, labels: np.ndarray, cap: int | None):
    """The first `cap` images of each class, in their original order ([N', 64, 64, 3], [N'])."""
    if cap is None:
        return images, labels
    keep = np.concatenate([np.flatnonzero(labels == c)[:cap] for c in np.unique(labels)])
    keep.sort()
    return np.asarray(images[keep]), np.asarray(labels[keep])


def load_data(plan: RunPlan) -> RunData:
    """The train and val images of the run's classes, capped per class as the recipe says."""
    config, wnids = plan.config, plan.doc["wnids"]
    train_split = load_split(plan.data_dir, "train", classes=wnids)
    val_split = load_split(plan.data_dir, "val", classes=wnids)
    train_images, train_labels = _cap_per_class(train_split.images, train_split.labels, config.max_train_per_class)
    val_images, val_labels = _cap_per_class(val_split.images, val_split.labels, config.max_val_per_class)
    steps_per_epoch = len(train_labels) // config.batch_size
    if steps_per_epoch < 1:
        raise TinyconvError(
            f"{len(train_labels)} train images in {plan.data_dir} cannot fill one batch of {config.batch_size}; "
            "lower batch_size"
        )
    return RunData(train_images, train_labels, val_images, val_labels, steps_per_epoch)


def start_folder(plan: RunPlan, data: RunData) -> None:
    """Choose the precision, XLA and the devices; write config.json for a new run.

    config.json records them (backend, device, dtype policy, devices, global batch); they are not compared
    on resume, so a run started on one machine can be continued on another.
    """
    config = plan.config
    policy = runtime.precision_policy(config.mixed_precision)
    plan.doc.update(
        backend=runtime.backend(),
        dtype_policy=policy,
        mixed_precision=policy != "float32",
        jit_compile=runtime.use_jit(config.jit_compile),
        device=runtime.describe_device(),
        devices=runtime.device_count(),
        global_batch=config.batch_size,
        steps_per_epoch=data.steps_per_epoch,
        depthwise_form=fast_path.depthwise_setting(),  # TINYCONV_DEPTHWISE: the forms compute the same values
    )
    if plan.state == "new":
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(plan.run_dir / "config.json", plan.doc)
        print(f"training {config.preset} ({plan.profile}) into {plan.run_dir}: {len(data.train_labels)} train / "
              f"{len(data.val_labels)} val images, {len(plan.doc['wnids'])} classes, {config.epochs} epoch(s) of "
              f"{data.steps_per_epoch} steps on {plan.doc['device']}")


def record_session(plan: RunPlan, from_epoch: int) -> dict:
    """Append this training session to the run folder's sessions.jsonl and return its line.

    config.json says how the run started and metrics.json how its last session ended; a run trained lease by lease
    on different machines needs each session's own: the epoch it started from, the device, the dtype policy, the
    depthwise form (TINYCONV_DEPTHWISE) and the software. The file travels with the run's packed state
    (tinyconv.training.run_state), so the next GPU lease can keep the form an earlier lease on the same kind of
    device chose (scripts/gpu_train.sh) and the record survives in the repository (results/NAME/).
    """
    doc = plan.doc
    line = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "from_epoch": int(from_epoch),
        "device": doc["device"],
        "devices": doc["devices"],
        "backend": doc["backend"],
        "dtype_policy": doc["dtype_policy"],
        "jit_compile": doc["jit_compile"],
        "depthwise_form": doc["depthwise_form"],
        "versions": {"python": sys.version.split()[0], "keras": keras.__version__, "numpy": np.__version__,
                     doc["backend"]: getattr(sys.modules.get(doc["backend"]), "__version__", "?")},
    }
    path = plan.run_dir / SESSIONS_NAME
    before = path.read_bytes() if path.is_file() else b""
    write_bytes(path, before + (json.dumps(line, default=json_default) + "\n").encode())  # whole or not at all
    return line


def compiled_model(plan: RunPlan, steps_per_epoch: int):
    """build_model + compile with the recipe's optimizer, loss and metrics, in the distribution scope.

    The layers are built under the run's dtype policy (mixed_float16: Keras wraps AdamW in a
    LossScaleOptimizer; mixed_bfloat16 needs none); the global policy is restored afterwards.
    """
    keras.utils.set_random_seed(plan.config.seed)
    num_classes = plan.model_config.num_classes
    previous_policy = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(plan.doc["dtype_policy"])
        with runtime.distribution_scope():
            model = build_model(plan.model_config)
            model.compile(
                optimizer=build_optimizer(plan.config, steps_per_epoch),
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=plan.config.label_smoothing
                ),
                metrics=[
                    keras.metrics.CategoricalAccuracy(name="top1"),
                    # k is capped for runs on fewer than 5 classes (ci); the name stays top5
                    keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
                ],
                jit_compile=plan.doc["jit_compile"],
            )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model


def run_callbacks(plan: RunPlan, data: RunData, backup: ResumableBackup, user_callbacks) -> list:
    """The run's callbacks in the order they must run at each epoch end, the caller's among them."""
    config, run_dir = plan.config, plan.run_dir
    history_path = run_dir / "history.csv"
    schedule = build_schedule(config, data.steps_per_epoch)
    user_callbacks = list(user_callbacks)
    for callback in user_callbacks:
        if isinstance(callback, LiveCurves) and callback.history_path is None:
            callback.history_path = history_path
        if isinstance(callback, LiveCurves) and callback.reference is None:
            callback.reference = reference_curve_for(plan.profile, plan.model_config.num_classes)

    def lr_at_epoch_end(epoch: int) -> float:  # the lr of the epoch's last step
        return float(schedule((epoch + 1) * data.steps_per_epoch - 1))

    tensorflow = runtime.backend() == "tensorflow"
    return [
        # first: a diverged epoch must not reach the history, best or backup. It reads every step's loss in
        # Keras' worker threads on JAX (async_safe), so no step waits for the host (tests/test_jax_backend.py)
        NonFiniteLoss(run_dir),
        ThroughputEstimate(config.batch_size, data.steps_per_epoch, config.epochs),
        # a log has no progress bar (verbose=2); a notebook shows its own curves (LiveCurves)
        *([] if sys.stdout.isatty() or any(isinstance(c, LiveCurves) for c in user_callbacks)
          else [EpochProgress(data.steps_per_epoch, config.epochs)]),
        HistoryWriter(history_path, data.steps_per_epoch * config.batch_size, lr_at_epoch_end),
        BestCheckpoint(run_dir / "best.keras", history_path, metadata=model_metadata(plan.doc)),
        *([TensorBoardScalars(run_dir / "tb", lr_at_epoch_end)] if tensorflow else []),  # tf.summary
        *user_callbacks,
        backup,  # last: back up only an epoch every other callback has finished
    ]


def input_data(plan: RunPlan, data: RunData, start_epoch: int) -> tuple:
    """(train, validation, extra callbacks) for fit: tf.data on TensorFlow, device-made batches elsewhere.

    Both plan their batches with tinyconv.data.augment.BatchPlan, so a run sees the same batches on either
    backend; a resumed run starts at `start_epoch` and sees what an uninterrupted one would have seen.
    """
    config, num_classes = plan.config, plan.model_config.num_classes
    if runtime.backend() == "tensorflow":
        from tinyconv.data.pipeline import eval_dataset, train_dataset  # tf.data: TensorFlow's input only

        train = train_dataset(data.train_images, data.train_labels, num_classes, config.batch_size,
                              augment=config.augment, seed=config.seed, start_epoch=start_epoch)
        val = eval_dataset(data.val_images, data.val_labels, num_classes, config.batch_size)
        return train, val, []
    from tinyconv.data.device_input import DeviceEvalBatches, DeviceTrainBatches

    distribution = runtime.data_parallel()  # None on one device; else each batch is split over the devices
    train = DeviceTrainBatches(data.train_images, data.train_labels, num_classes, config.batch_size,
                               config.augment, config.seed, start_epoch=start_epoch, distribution=distribution)
    val = DeviceEvalBatches(data.val_images, data.val_labels, num_classes, config.batch_size, distribution)
    return train, val, [train.epoch_callback()]


def fit(model, plan: RunPlan, data: RunData, backup: ResumableBackup, callbacks: list) -> float:
    """model.fit from the backed-up epoch on; returns the session's seconds."""
    config, run_dir, done = plan.config, plan.run_dir, backup.restored_epoch
    train_data, val_data, input_callbacks = input_data(plan, data, start_epoch=done)
    if done:
        print(f"resuming {run_dir} from epoch {done + 1} of {config.epochs} (epochs 1-{done} are done)", flush=True)
    elif plan.state == "resume":
        print(f"resuming {run_dir}: no completed epoch was backed up, starting at epoch 1", flush=True)
    start = time.perf_counter()
    try:
        with runtime.fit_scope():  # JAX: Keras places each batch and compiles the step for the distribution
            model.fit(
                train_data,
                validation_data=val_data,
                epochs=config.epochs,
                callbacks=input_callbacks + callbacks,
                verbose=1 if sys.stdout.isatty() else 2,
                shuffle=False,  # the inputs reshuffle every epoch themselves
            )
    except KeyboardInterrupt:
        done = len(read_history(run_dir / "history.csv"))
        print(f"\ninterrupted after {done} completed epoch(s); run the same command again to resume {run_dir}",
              file=sys.stderr, flush=True)
        raise
    return time.perf_counter() - start


def stopped_early(plan: RunPlan, data: RunData, limit: TimeLimit, session_s: float) -> dict:
    """The state of a run the time limit stopped: its curves so far, no metrics.json, backup/ kept."""
    rows = read_history(plan.run_dir / "history.csv")
    (plan.run_dir / "figures").mkdir(exist_ok=True)
    fig = plot_history(rows, title=f"{plan.config.preset} ({plan.profile}), {len(rows)} of {plan.config.epochs} epochs",
                       reference=reference_curve_for(plan.profile, plan.model_config.num_classes))
    write_bytes(plan.run_dir / "figures" / "curves.png", figure_png(fig))
    progress = {**_metrics(rows, plan, data, None, session_s), "complete": False}
    print(f"stopped by the time limit after epoch {limit.stopped_after} of {plan.config.epochs}: val top-1 "
          f"{progress['top1']:.2%}, best {progress['best_top1']:.2%} (epoch {progress['best_epoch']}); "
          f"run the same command again to continue {plan.run_dir}")
    return progress


def finalize(model, plan: RunPlan, data: RunData, session_s: float) -> dict:
    """Check the history, save model.keras (and best.keras if none), curves.png and metrics.json; drop backup/."""
    config, run_dir = plan.config, plan.run_dir
    history_path = run_dir / "history.csv"
    rows = read_history(history_path)
    if len(rows) != config.epochs or [row["epoch"] for row in rows] != list(range(config.epochs)):
        raise TinyconvError(
            f"{history_path} holds epochs {[row['epoch'] for row in rows]} after training; expected 0..{config.epochs - 1}"
        )
    save_model(model, run_dir / "model.keras", model_metadata(plan.doc))
    if not (run_dir / "best.keras").exists():
        save_model(model, run_dir / "best.keras", model_metadata(plan.doc))
    (run_dir / "figures").mkdir(exist_ok=True)
    num_classes = plan.model_config.num_classes
    fig = plot_history(rows, title=f"{config.preset} ({plan.profile}), {num_classes} classes",
                       reference=reference_curve_for(plan.profile, num_classes))
    write_bytes(run_dir / "figures" / "curves.png", figure_png(fig))
    metrics = _metrics(rows, plan, data, int(model.count_params()), session_s)
    write_json(run_dir / "metrics.json", metrics)
    _remove_backup(run_dir / "backup")
    print(
        f"done: val top-1 {metrics['top1']:.2%}, top-5 {metrics['top5']:.2%} after {metrics['epochs']} epochs "
        f"({format_duration(metrics['wall_s'])}, {metrics['images_per_s']:,.0f} train images/s); {run_dir}"
    )
    return metrics


def _metrics(rows: list[dict], plan: RunPlan, data: RunData, params: int, session_s: float) -> dict:
    last = rows[-1]
    best = max(rows, key=lambda row: row["val_top1"] if math.isfinite(row["val_top1"]) else -1.0)
    return {
        "top1": last["val_top1"],
        "top5": last["val_top5"],
        "val_loss": last["val_loss"],
        "train_top1": last["top1"],
        "train_loss": last["loss"],
        "best_top1": best["val_top1"],
        "best_epoch": best["epoch"] + 1,
        "epochs": len(rows),
        "params": params,  # None for an unfinished run (read it from best.keras)
        "wall_s": sum(row["epoch_s"] for row in rows),
        "train_s": sum(row["train_s"] for row in rows),
        # the median epoch: the first epoch of each session also pays for tracing and compilation
        "images_per_s": float(np.median([row["images_per_s"] for row in rows])),
        "last_session_s": session_s,
        "device": plan.doc["device"],
        "mixed_precision": plan.doc["mixed_precision"],
        "dtype_policy": plan.doc["dtype_policy"],
        "backend": plan.doc["backend"],
        "devices": plan.doc["devices"],
        "jit_compile": plan.doc["jit_compile"],
        "depthwise_form": plan.doc["depthwise_form"],  # the last session's
        "preset": plan.config.preset,
        "profile": plan.profile,
        "classes": plan.model_config.num_classes,
        "train_images": int(len(data.train_labels)),
        "val_images": int(len(data.val_labels)),
        "run_dir": str(plan.run_dir),
    }


# -------------------------------------------------------------------------------------------- train


def train(
    preset: str | None = None,
    profile: str = "quick",
    data_dir=None,
    out=None,
    overrides: dict | None = None,
    callbacks=(),
    time_limit: float | None = None,
    restart: bool = False,
) -> dict:
    """Train with a recipe profile into a run folder; resume it if it was interrupted.

    Args:
        preset: model preset; None keeps the profile's (full: seed, quick/ci: tiny).
        profile: "reference", "full", "quick" or "ci" (see tinyconv.training.recipe.PROFILES).
        data_dir: the folder holding tiny-imagenet-200/ (default: tinyconv.data.dataset.default_data_dir()).
        out: the run folder (default: <runs root>/<preset>-<profile>, see default_runs_root).
        overrides: TrainConfig fields (see tinyconv.training.overrides.parse_overrides / tinyconv.training.recipe.make_config).
        callbacks: extra Keras callbacks, e.g. LiveCurves() in a notebook.
        time_limit: minutes of training for this session: stop at the last epoch end that fits, keep the
            run resumable, and return its progress ("complete": False) instead of writing metrics.json.
        restart: train the run folder's run again from epoch 1 (its config must match, as for a resume): the
            way out of a damaged resume state.
    Returns:
        metrics: top1, top5, val_loss (final epoch, fractions), best_top1, best_epoch, params, wall_s,
        images_per_s, device, epochs, ...; also written to metrics.json.
    Raises:
        TinyconvError: bad config, a run folder holding another config, missing data, a diverged loss.
    """
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and 0 < time_limit < math.inf):
        raise TinyconvError(f"time_limit must be a number of minutes > 0 (None: no limit), got {time_limit!r}")
    plan = plan_run(preset, profile, data_dir, out, overrides)
    data = None
    if restart and plan.state != "new":
        # the data first: a stale cache or a missing split is an expected failure, and it must leave the run that
        # --restart would replace as it was
        data = load_data(plan)
        with folder_lock(plan.run_dir / LOCK_NAME, "training run"):
            _clear_for_restart(plan.run_dir)
        plan.state = "resume"
        print(f"restarting {plan.run_dir} from epoch 1", flush=True)
    if plan.state == "complete":
        try:
            metrics = json.loads((plan.run_dir / "metrics.json").read_text())
        except (OSError, ValueError) as exc:
            raise TinyconvError(f"{plan.run_dir / 'metrics.json'} is unreadable ({type(exc).__name__}) though the run "
                                "finished; run the same command with --restart to train it again") from None
        with folder_lock(plan.run_dir / LOCK_NAME, "training run"):  # what a kill during finalize left behind
            _remove_backup(plan.run_dir / "backup")
            for folder in (plan.run_dir, plan.run_dir / "figures"):
                remove_temporaries(folder)
        print(
            f"{plan.run_dir} already holds this run, complete ({metrics.get('epochs')} epochs, "
            f"val top-1 {metrics.get('top1', float('nan')):.2%}); returning its metrics without training"
        )
        return metrics
    data = data or load_data(plan)
    start_folder(plan, data)
    with folder_lock(plan.run_dir / LOCK_NAME, "training run"):  # a second trainer of this folder fails at once
        for folder in (plan.run_dir, plan.run_dir / "backup", plan.run_dir / "figures"):
            remove_temporaries(folder)  # under the lock, every temporary is a dead process's (a kill while saving)
        return _train_locked(plan, data, callbacks, time_limit)


def check_history(history_path: Path, restored_epoch: int) -> None:
    """Refuse to resume a run whose history.csv lacks epochs its backup has done, before any step is trained.

    The per-epoch figures of those epochs are gone (they live nowhere else), so the run could train to the end and
    still never write its metrics; only training it again from epoch 1 gives a whole record.
    """
    done = {row["epoch"] for row in read_history(history_path)}
    missing = [epoch for epoch in range(restored_epoch) if epoch not in done]
    if missing:
        what = "is missing" if not history_path.exists() else f"lacks epoch(s) {', '.join(str(e + 1) for e in missing)}"
        raise TinyconvError(
            f"{history_path} {what} while the run's backup holds {restored_epoch} completed epoch(s): their figures "
            "are lost, so the run cannot end with a complete record; run the same command with --restart to train "
            "it again from epoch 1"
        )


def _train_locked(plan: RunPlan, data: RunData, callbacks, time_limit) -> dict:
    """train()'s steps once it holds the run folder's lock."""
    model = compiled_model(plan, data.steps_per_epoch)
    backup = ResumableBackup(plan.run_dir / "backup", plan.config.backup_every)  # reads the resume state once
    check_history(plan.run_dir / "history.csv", backup.restored_epoch)
    record_session(plan, backup.restored_epoch)
    limit = [TimeLimit(time_limit)] if time_limit else []
    # the time limit runs before the backup (last), so the epoch it stops after is backed up too
    session_s = fit(model, plan, data, backup, limit + run_callbacks(plan, data, backup, callbacks))
    if limit and limit[0].stopped_after is not None and limit[0].stopped_after < plan.config.epochs:
        return stopped_early(plan, data, limit[0], session_s)
    return finalize(model, plan, data, session_s)
