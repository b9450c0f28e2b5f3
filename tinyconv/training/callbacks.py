"""The callbacks a training run uses (history.csv's format: tinyconv.training.history).

    NonFiniteLoss       stop with a clear error when the loss becomes NaN or infinite (before anything is saved)
    ThroughputEstimate  time a few steps of the first epoch, print images/s and the time to finish
    EpochProgress       in a log, a line every few minutes of an epoch: the step, the rate, when its steps end
    HistoryWriter       history.csv, one row per completed epoch, rewritten atomically
    BestCheckpoint      best.keras whenever val top-1 improves
    TensorBoardScalars  per-epoch scalars in TensorBoard's layout, without the tensorboard package (TensorFlow only)
    TimeLimit           stop at an epoch end before a time budget runs out (the run stays resumable)
    ResumableBackup     BackupAndRestore whose state survives a kill -9 at any moment
    LiveCurves          redraw loss and top-1 curves inline in a notebook
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import keras

from tinyconv.errors import TinyconvError
from tinyconv.fileio import file_sha256, read_model_metadata, save_model, save_weights, write_json
from tinyconv.training.history import HISTORY_COLUMNS, read_history, write_history
from tinyconv.training.plots import show_live

# ----------------------------------------------------------------------------------------- training


class NonFiniteLoss(keras.callbacks.Callback):
    """Stop with a TinyconvError as soon as the training loss is NaN or infinite.

    It comes first among the epoch-end callbacks, so a diverged epoch is never backed up nor saved
    as best: the last good state stays in backup/ and best.keras.

    Every step's loss is read, without making the training loop wait for it: the callback is `async_safe`,
    so where the backend allows it (JAX), Keras runs batch-end callbacks in a worker thread, which waits for
    the step's loss while the loop dispatches the next steps. A NaN then surfaces a step or two later (when
    Keras next collects its worker threads, at the latest at the epoch's end, before any epoch-end callback):
    the error names the step at which it was read. On TensorFlow, callbacks run in the loop, step by step.
    """

    async_safe = True  # keras.callbacks.CallbackList: this callback may run in a worker thread

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where: str):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            backup = self.run_dir / "backup"
            kept = (
                f"the last good state (end of epoch {self._epoch}) is kept in {backup} and best.keras"
                if self._epoch > 0 and backup.exists()
                else "no epoch had completed, nothing was saved"
            )
            raise TinyconvError(
                f"training diverged in {self.run_dir}: the loss became {float(loss)} at epoch {self._epoch + 1}"
                f"{where}; {kept}. Lower lr (--set lr=...) and train into a new --out folder"
            )

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f", step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "")


def wait_for_steps(model) -> None:
    """Return once the device has run every training step dispatched so far.

    The step counter is an output of the last step's compiled computation, whose outputs are ready when all of it
    has run, and a device runs the steps in order (each takes the state the one before it left). Keras has given
    the model its variables back (the JAX trainer's state sync) by the time a fit starts the epoch's validation.
    Reading one integer is the whole cost. Called in a fit, so the model has its optimizer.
    """
    keras.ops.convert_to_numpy(model.optimizer.iterations)


class HistoryWriter(keras.callbacks.Callback):
    """Time each epoch and write history.csv atomically, one row per completed epoch.

    Rows of epochs at or after the first epoch of this session are dropped before writing, so a
    resumed run never holds the same epoch twice, whatever the moment of the kill.

    An epoch's train time (train_s, images_per_s) ends when the device has run its last train step. On JAX, Keras
    dispatches the steps without waiting for them (no callback makes each step wait: see NonFiniteLoss) and calls
    `on_test_begin` as soon as the last one is dispatched, while the device may still have many to run; the time
    taken there alone counted only the dispatching (a ci run on a CPU: 9,114 "train images/s" against 281 measured
    step by step). So `on_test_begin` first waits for the optimizer's step counter, an output of the last step.
    """

    def __init__(self, path: Path, train_images_per_epoch: int, lr_at_epoch_end):
        super().__init__()
        self.path = path
        self.train_images_per_epoch = train_images_per_epoch
        self.lr_at_epoch_end = lr_at_epoch_end
        self._rows = None  # the file's rows, read once when the session's first epoch begins
        self._epoch_start = 0.0
        self._train_end = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._rows is None:
            rows = read_history(self.path)
            self._rows = [row for row in rows if row["epoch"] < epoch]
            if len(self._rows) != len(rows):
                write_history(self.path, self._rows)
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            wait_for_steps(self.model)
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        train_s = (self._train_end or now) - self._epoch_start
        logs = logs or {}
        row = {key: logs.get(key) for key in HISTORY_COLUMNS[1:7]}
        row.update(
            epoch=epoch,
            lr=self.lr_at_epoch_end(epoch),
            epoch_s=now - self._epoch_start,
            train_s=train_s,
            images_per_s=self.train_images_per_epoch / max(train_s, 1e-9),
        )
        self._rows = [r for r in self._rows if r["epoch"] < epoch] + [row]
        write_history(self.path, self._rows)


class TensorBoardScalars(keras.callbacks.Callback):
    """Per-epoch scalars in TensorBoard's layout (tb/train, tb/validation; tags epoch_loss, epoch_top1, ...).

    Written with tf.summary.write and the scalars-plugin metadata, so it needs only TensorFlow; the
    `tensorboard` package (not a dependency) is only needed to view them: `tensorboard --logdir runs/NAME/tb`.
    keras.callbacks.TensorBoard would need that package at training time.
    """

    def __init__(self, log_dir: Path, lr_at_epoch_end):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.lr_at_epoch_end = lr_at_epoch_end
        self._writers = {}

    def _writer(self, name: str):
        # tf.summary exists only with TensorFlow; train() adds this callback on that backend alone, and the
        # JAX path must run where TensorFlow is not installed, so it is imported here, not at the top.
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.log_dir / name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf  # see _writer
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        logs = dict(logs or {})
        logs["learning_rate"] = self.lr_at_epoch_end(epoch)
        for name, prefix in (("train", ""), ("validation", "val_")):
            writer = self._writer(name)
            with writer.as_default():
                for key, value in logs.items():
                    is_val = key.startswith("val_")
                    if is_val != (prefix == "val_"):
                        continue
                    tag = "epoch_" + key[len(prefix) :]
                    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=epoch, metadata=metadata)
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class BestCheckpoint(keras.callbacks.Callback):
    """Save best.keras (atomically) whenever val top-1 beats the best of the epochs so far, resumed ones included.

    best.keras is for inference: it is saved without optimizer state (the seed: 11 MB instead of 32 MB);
    resuming uses backup/, which holds it. The weights go through an uncompiled twin of the model, built once.
    """

    def __init__(self, path: Path, history_path: Path, monitor: str = "val_top1", metadata: dict | None = None):
        super().__init__()
        self.path = path
        self.history_path = history_path
        self.monitor = monitor
        self.metadata = metadata  # stored inside best.keras (fileio.save_model): its classes and preprocessing
        self.best = None
        self._twin = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.best is None:
            rows = [row for row in read_history(self.history_path) if row["epoch"] < epoch]
            earlier = [row[self.monitor] for row in rows if math.isfinite(row[self.monitor])]
            last = rows[-1] if rows else None
            if earlier and last["epoch"] == epoch - 1 and not self.path.exists() and last[self.monitor] == max(earlier):
                # a restored state leaves best.keras out when the checkpoint's epoch was the best
                # (tinyconv.training.run_state): the model holds that checkpoint now, so this is the file, again
                self._save(epoch - 1)
            saved = read_model_metadata(self.path) if self.path.exists() else None
            # a best.keras saved by an epoch this session trains again (a kill after the save, before the epoch's
            # backup) matches no row of the history: this session's first epoch replaces it
            ahead = bool(saved) and int(saved.get("epoch") or 0) > epoch
            self.best = max(earlier) if earlier and self.path.exists() and not ahead else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            self._save(epoch)

    def _save(self, epoch: int) -> None:
        """best.keras from the model's weights now, as epoch `epoch` (0-based) left them."""
        if self._twin is None:
            self._twin = inference_copy(self.model)
        self._twin.set_weights(self.model.get_weights())
        # the epoch (1-based) travels inside the file: which row of the history it is
        metadata = None if self.metadata is None else {**self.metadata, "epoch": epoch + 1}
        save_model(self._twin, self.path, metadata)


def inference_copy(model: keras.Model) -> keras.Model:
    """An uncompiled copy of a functional model with the same weights: it saves without optimizer state."""
    twin = model.__class__.from_config(model.get_config())
    twin.set_weights(model.get_weights())
    return twin


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the first epoch after which another epoch would pass `minutes`.

    The limit counts from the session's first epoch; the next epoch is estimated to last as long as the
    latest one (the first also pays for compilation, so it would overstate the others). The run folder stays
    resumable: the same command continues it.
    """

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = float(minutes) * 60.0
        self.stopped_after = None  # epochs completed when the limit stopped the run
        self._start = None
        self._epoch_start = 0.0
        self._latest = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        now = time.perf_counter()
        self._start = now if self._start is None else self._start
        self._epoch_start = now

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self._latest = now - self._epoch_start
        if now - self._start + self._latest > self.seconds:
            self.model.stop_training = True
            self.stopped_after = epoch + 1


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """keras BackupAndRestore whose state survives a kill -9 at any moment, and a damaged checkpoint.

    The stock callback overwrites latest.weights.h5 in place and then writes the epoch, so a kill in
    between leaves torn or mismatched files. Here each backup is an epoch checkpoint, a new
    `epoch-NNNN.weights.h5` written to a temp name and renamed, and only then does `training_metadata.json`
    (renamed into place too) point at it, with its sha256. The weights file holds the optimizer state,
    whose step counter drives WarmupCosine, so the schedule resumes exactly.

    Two generations are kept: the newest checkpoint and the one before it (also listed in the metadata, as
    "previous"); older ones are removed once the new metadata is in place. A resume uses the newest intact one:
    if the newest checkpoint is damaged (a truncated copy of the run folder, a disk error), the run resumes
    from the previous one with a message; if training_metadata.json itself is damaged, from the newest
    weights file that reads whole. Only when none is intact does the message offer --restart.
    """

    METADATA_NAME = "training_metadata.json"

    def __init__(self, backup_dir: Path, every: int = 1):
        super().__init__(backup_dir=str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.backup_path = Path(backup_dir)
        self.every = max(1, int(every))  # back up every `every` epochs, the last one and a stopped one
        self._kept = []  # the checkpoints the metadata lists, newest first ({"epoch", "weights", "sha256"})
        meta_path = self.backup_path / self.METADATA_NAME
        if meta_path.exists():
            self._kept = [self._choose_checkpoint(meta_path)]
        # completed epochs of the checkpoint this run resumes from (0: none); train() starts the data there too
        self.restored_epoch = int(self._kept[0]["epoch"]) if self._kept else 0

    def _choose_checkpoint(self, meta_path: Path) -> dict:
        """The newest intact checkpoint (see the class docstring); a note when it is not the newest one listed."""
        problems = []
        try:
            meta = json.loads(meta_path.read_text())
            candidates = [meta] + ([meta["previous"]] if meta.get("previous") else [])
            for candidate in candidates:
                int(candidate["epoch"]), str(candidate["weights"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{meta_path} is damaged ({type(exc).__name__})")
            candidates = [  # newest first, by the epoch in the name; no checksum to compare with
                {"epoch": int(path.name[6:10]), "weights": path.name}
                for path in sorted(self.backup_path.glob("epoch-[0-9][0-9][0-9][0-9].weights.h5"), reverse=True)
            ]
        for candidate in candidates:
            damage = checkpoint_damage(self.backup_path, candidate)
            if damage is None:
                chosen = {key: candidate.get(key) for key in ("epoch", "weights", "sha256")}
                chosen["epoch"] = int(chosen["epoch"])
                if problems:
                    print(f"note: {'; '.join(problems)}; resuming from the intact checkpoint of epoch "
                          f"{chosen['epoch']} ({self.backup_path / chosen['weights']})", file=sys.stderr, flush=True)
                return chosen
            problems.append(damage)
        raise TinyconvError(self._damaged(meta_path.parent, "; ".join(problems) or "no checkpoint file"))

    def _damaged(self, where: Path, why: str) -> str:
        return (f"{where}: the resume state is damaged ({why}) and no intact checkpoint is left; run the same "
                "command with --restart to train this run again from epoch 1 (its other files are replaced as it goes)")

    # BackupAndRestore's per-batch hook serves save_freq=N steps; this class saves at epoch ends only. Keras' own
    # no-op takes its place, because Keras runs the batch-end hooks of a fit asynchronously only when no callback
    # overrides them (CallbackList._configure_async_dispatch): kept, it would make every JAX step wait for the host.
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def on_train_begin(self, logs=None):
        self._load_model()

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        last = epoch + 1 >= int(self.params.get("epochs") or 0)
        if (epoch + 1) % self.every == 0 or last or self.model.stop_training:
            self._save_model()

    def _load_model(self):
        if not self._kept:
            return
        weights = self.backup_path / self._kept[0]["weights"]
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(weights)
        except Exception as exc:  # intact but foreign (another model's weights): h5py, Keras and OS errors alike
            raise TinyconvError(self._damaged(weights, f"{type(exc).__name__} loading it")) from None
        # Keras' private attribute, as its own BackupAndRestore sets it: fit starts at this epoch. Guarded by
        # tests/test_run_control.py::test_keras_fit_starts_at_the_epoch_a_callback_sets_in_model_initial_epoch
        self.model._initial_epoch = self.restored_epoch

    def _save_model(self):
        try:
            self.backup_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TinyconvError(f"cannot create the backup folder {self.backup_path}: {exc.strerror or exc}") from None
        name = f"epoch-{self._current_epoch:04d}.weights.h5"
        save_weights(self.model, self.backup_path / name)
        entry = {"epoch": self._current_epoch, "weights": name, "sha256": file_sha256(self.backup_path / name)}
        previous = next((kept for kept in self._kept if kept["weights"] != name), None)
        write_json(self.backup_path / self.METADATA_NAME, {**entry, "previous": previous})
        self._kept = [entry] + ([previous] if previous else [])
        keep = {kept["weights"] for kept in self._kept}
        for old in self.backup_path.glob("epoch-*.weights.h5"):
            if old.name not in keep:
                old.unlink(missing_ok=True)


def checkpoint_damage(backup_dir: Path, entry: dict) -> str | None:
    """Why the checkpoint `entry` of a backup folder ({"weights", "sha256" if known}) cannot be resumed from, or None.

    With a recorded sha256 the file must match it; without one (a damaged training_metadata.json, or a backup
    from before checksums were recorded) it must open as HDF5 and every dataset in it must read whole.
    """
    name = str(entry["weights"])
    path = Path(backup_dir) / name
    if Path(name).name != name:
        return f"{name!r} is not a file name in {backup_dir}"
    if not path.is_file():
        return f"{path} is missing"
    try:
        if entry.get("sha256"):
            return None if file_sha256(path) == entry["sha256"] else f"{path} does not match its recorded sha256"
        import h5py  # a Keras dependency; only needed on this rare path

        def read(_, item):
            if isinstance(item, h5py.Dataset):
                item[()]

        with h5py.File(path, "r") as weights:
            weights.visititems(read)
    except Exception as exc:  # OSError, h5py's errors for truncated or scrambled files
        return f"{path} is unreadable ({type(exc).__name__})"
    return None


class ThroughputEstimate(keras.callbacks.Callback):
    """Time a few training steps of the session's first epoch, then print images/s and the time to finish.

    It measures the real run (no separate trial run): the first `skip` steps (tracing, compilation, the
    input pipeline filling up) are not timed, the next `measure` steps are. A step's time is taken when its
    results are ready, not when it was dispatched: Keras turns a step's logs into Python floats before it calls
    the batch-end hooks, which waits for the device. Where Keras runs those hooks in a worker thread (JAX; this
    callback is `async_safe`), that wait holds up the thread, not the training loop.
    """

    async_safe = True  # keras.callbacks.CallbackList: this callback may run in a worker thread

    def __init__(self, batch_size: int, steps_per_epoch: int, epochs: int, skip: int = 3, measure: int = 20):
        super().__init__()
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.skip = max(1, min(skip, steps_per_epoch - 1))
        self.measure = min(measure, steps_per_epoch - self.skip)
        self._epoch = None
        self._first_epoch = None
        self._ready = {}  # batch index -> perf_counter when its logs reached this callback (worker threads write it)
        self.images_per_s = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.images_per_s is not None or self._epoch != self._first_epoch or self.measure < 1:
            return
        first, last = self.skip - 1, self.skip - 1 + self.measure
        if batch in (first, last):
            self._ready[batch] = time.perf_counter()
        if first in self._ready and last in self._ready and self.images_per_s is None:
            steps_per_s = self.measure / max(self._ready[last] - self._ready[first], 1e-9)
            self.images_per_s = steps_per_s * self.batch_size
            remaining = self.epochs - self._first_epoch
            eta = remaining * self.steps_per_epoch / steps_per_s
            print(
                f"\nthroughput: {self.images_per_s:,.0f} train images/s (steps {self.skip + 1}-{last + 1} of epoch "
                f"{self._first_epoch + 1}); estimated {format_duration(eta)} of training steps for the "
                f"{remaining} epochs to go, validation not included",
                flush=True,
            )


class EpochProgress(keras.callbacks.Callback):
    """A line every `every_s` seconds of an epoch where no progress bar is drawn (stdout a log, not a terminal:
    Keras then prints one line per epoch, and an epoch of the seed on a 2-core CPU is ~50 silent minutes):

        epoch 7/100: step 300/782 (38 %), 15.6 steps/min; its steps end in ~31.0 min (08:48 UTC), validation after

    The rate is the epoch's so far, timed when each step's results reach the callback (as ThroughputEstimate's).
    `async_safe`, so on JAX it leaves the batch-end hooks in Keras' worker threads (no step waits for the host).
    """

    async_safe = True  # keras.callbacks.CallbackList: this callback may run in a worker thread

    def __init__(self, steps_per_epoch: int, epochs: int, every_s: float = 120.0, clock=time.monotonic,
                 wall_clock=time.time):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.every_s = every_s
        self.clock = clock  # seconds for the rate (monotonic); wall_clock: for the time of day the steps end
        self.wall_clock = wall_clock
        self._epoch = 0
        self._start = self._next = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = self.clock()
        self._next = self._start + self.every_s

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if self._next is None or now < self._next:
            return
        self._next = now + self.every_s
        done = batch + 1
        rate = done / max(now - self._start, 1e-9)  # steps per second
        left = max(self.steps_per_epoch - done, 0) / rate
        ends = time.strftime("%H:%M UTC", time.gmtime(self.wall_clock() + left))
        print(f"epoch {self._epoch + 1}/{self.epochs}: step {done}/{self.steps_per_epoch} "
              f"({100 * done / self.steps_per_epoch:.0f} %), {60 * rate:.1f} steps/min; its steps end in "
              f"~{format_duration(left)} ({ends}), validation after", flush=True)


def format_duration(seconds: float) -> str:
    """"42 s", "7.5 min" or "3.2 h"."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

# ----------------------------------------------------------------------------------------- notebook


class LiveCurves(keras.callbacks.Callback):
    """Redraw loss and top-1 curves inline in a notebook each time an epoch ends; a no-op outside IPython.

    Args:
        history_path: a history.csv to plot (so a resumed run shows its earlier epochs too). `train`
            sets it to the run's history.csv when left None; otherwise the callback plots the epochs it saw.
        title: figure title.
        reference: rows of the reference's curve (tinyconv.training.reference.read_reference_curve) to overlay;
            `train` sets them for the `reference` and `full` profiles on all 200 classes when left None.
    """

    def __init__(self, history_path=None, title: str = "", reference: list[dict] | None = None):
        super().__init__()
        self.history_path = Path(history_path) if history_path else None
        self.title = title
        self.reference = reference
        self.rows: list[dict] = []
        self._handle = None

    @staticmethod
    def _in_ipython() -> bool:
        try:
            from IPython import get_ipython  # optional: present only where notebooks run
        except ImportError:
            return False
        return get_ipython() is not None

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if row["epoch"] < epoch]
        self.rows.append({"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}})
        if not self._in_ipython():
            return
        rows = read_history(self.history_path) if self.history_path and self.history_path.exists() else self.rows
        self._handle = show_live(self._handle, rows, self.title, reference=self.reference)
