"""Run control: the time limit, backups every N epochs, the backend and precision policy, float32 inference copies."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from tinyconv import runtime
from tinyconv.training.callbacks import ResumableBackup, TimeLimit
from tinyconv.training.history import read_history
from tinyconv.errors import TinyconvError


@pytest.mark.slow  # two training sessions
def test_time_limit_stops_at_an_epoch_end_and_the_same_command_finishes_the_run(synthetic_data_dir, tmp_path):
    from tinyconv.training.train import train

    run_dir = tmp_path / "limited"
    progress = train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 3},
                     time_limit=1e-4)  # 6 ms: the limit is passed during the first epoch
    assert progress["complete"] is False and progress["epochs"] == 1
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0]
    assert not (run_dir / "metrics.json").exists()  # still a run to resume, not a finished one
    assert json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 1  # the stopped epoch
    assert (run_dir / "best.keras").exists() and (run_dir / "figures" / "curves.png").exists()

    # the same unfinished run without its history.csv: refused before any step, in one line offering --restart
    # (it used to train to the end, fail there, and fail again on every rerun)
    lost = tmp_path / "lost-history"
    shutil.copytree(run_dir, lost)
    (lost / "history.csv").unlink()
    with pytest.raises(TinyconvError, match=r"history.csv is missing while the run's backup holds 1 completed.*--restart"):
        train(profile="ci", data_dir=synthetic_data_dir, out=lost, overrides={"epochs": 3})
    assert not (lost / "history.csv").exists() and not (lost / "metrics.json").exists()
    assert json.loads((lost / "backup" / "training_metadata.json").read_text())["epoch"] == 1  # nothing trained

    metrics = train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 3})
    assert metrics["epochs"] == 3 and (run_dir / "metrics.json").exists()
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0, 1, 2]


class _Model:
    stop_training = False


def test_backups_every_n_epochs_and_always_the_last_and_a_stopped_one(tmp_path, monkeypatch):
    backup = ResumableBackup(tmp_path / "backup", every=3)
    saved = []
    monkeypatch.setattr(backup, "_save_model", lambda: saved.append(backup._current_epoch))
    model = _Model()
    backup._model = model
    backup.set_params({"epochs": 7})
    for epoch in range(5):
        backup.on_epoch_end(epoch)
    model.stop_training = True  # e.g. the time limit stopped the run after epoch 6
    backup.on_epoch_end(5)
    assert saved == [3, 6]
    model.stop_training = False
    backup.on_epoch_end(6)  # the last epoch
    assert saved == [3, 6, 7]


def test_time_limit_estimates_the_next_epoch_by_the_latest(monkeypatch):
    # epoch 1 compiles (50 s), the others take 10 s; limit 115 s
    clock = iter([0.0, 50.0, 50.0, 60.0, 60.0, 70.0, 70.0, 80.0, 80.0, 90.0, 90.0, 100.0])
    monkeypatch.setattr("tinyconv.training.callbacks.time.perf_counter", lambda: next(clock))
    limit = TimeLimit(minutes=115 / 60)
    limit._model = _Model()
    for epoch in range(6):
        limit.on_epoch_begin(epoch)
        limit.on_epoch_end(epoch)
        if limit.stopped_after:
            break
    # after epoch 4 (80 s) 80 + 10 <= 115 goes on (a slowest-epoch estimate, 50 s, would stop after epoch 3);
    # after epoch 5 (90 s) 90 + 10 <= 115 goes on; after epoch 6 (100 s) 100 + 10 <= 115 too: no stop in 6
    assert limit.stopped_after is None
    limit = TimeLimit(minutes=105 / 60)
    limit._model = _Model()
    clock2 = iter([0.0, 50.0, 50.0, 60.0, 60.0, 70.0, 70.0, 80.0, 80.0, 90.0, 90.0, 100.0])
    monkeypatch.setattr("tinyconv.training.callbacks.time.perf_counter", lambda: next(clock2))
    for epoch in range(6):
        limit.on_epoch_begin(epoch)
        limit.on_epoch_end(epoch)
        if limit.stopped_after:
            break
    assert limit.stopped_after == 6 and limit.model.stop_training  # after epoch 5, 90 + 10 <= 105; after 6, 100 + 10 > 105


def test_backend_is_read_like_keras_reads_it_without_importing_keras(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert runtime.backend() == "tensorflow"  # no keras.json: Keras' default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert runtime.backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert runtime.backend() == "torch"  # the variable wins, as in Keras


def test_precision_policy_on_a_machine_without_gpu():
    assert runtime.precision_policy("auto") == "float32"
    assert runtime.precision_policy("off") == "float32"
    with pytest.raises(TinyconvError, match="compute capability"):
        runtime.precision_policy("on")


def test_precision_policy_picks_bfloat16_on_jax_and_float16_on_tensorflow(monkeypatch):
    monkeypatch.setattr(runtime, "gpu_capabilities", lambda: [("H200", (9, 0))])
    monkeypatch.setattr(runtime, "backend", lambda: "jax")
    assert runtime.precision_policy("auto") == "mixed_bfloat16"
    monkeypatch.setattr(runtime, "backend", lambda: "tensorflow")
    assert runtime.precision_policy("auto") == "mixed_float16"
    monkeypatch.setattr(runtime, "gpu_capabilities", lambda: [("T4", (7, 5))])
    monkeypatch.setattr(runtime, "backend", lambda: "jax")
    assert runtime.precision_policy("auto") == "mixed_float16"  # no bf16 tensor cores before compute capability 8


def test_a_mixed_precision_model_gets_a_float32_copy_with_the_same_weights():
    from tinyconv.deploy.inference import in_float32
    from tinyconv.model.build import build_model

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build_model("tiny", widths=(16, 32, 64), depths=(1, 1, 1), num_classes=4)
    finally:
        keras.config.set_dtype_policy(previous)
    copy = in_float32(mixed)
    assert copy is not mixed
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in mixed.layers)
    for a, b in zip(mixed.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(copy.predict_on_batch(x), mixed.predict_on_batch(x), rtol=0.1, atol=0.1)
    assert in_float32(copy) is copy  # already float32: nothing to do


# ------------------------------------------------------------------ OS failures and damaged resume state


def test_disk_full_at_a_write_site_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import errno
    import os

    from tinyconv import fileio

    target = tmp_path / "history.csv"
    target.write_text("old")
    real_replace = os.replace

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", full_disk)
    for write in (lambda: fileio.write_text(target, "new"), lambda: fileio.write_json(target, {"a": 1}),
                  lambda: fileio.write_bytes(target, b"new")):
        with pytest.raises(TinyconvError, match=r"writing .*history.csv failed: No space left on device; the "
                                                r"previous version is intact; free some space"):
            write()
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]


@pytest.mark.slow  # three training sessions
def test_a_damaged_backup_with_no_intact_checkpoint_is_one_line_offering_restart_which_trains_again(
        synthetic_data_dir, tmp_path, capsys):
    from tinyconv.cli import main

    run_dir = tmp_path / "run"
    common = ["train", "--profile", "ci", "--epochs", "2", "--data-dir", str(synthetic_data_dir), "--out", str(run_dir)]
    assert main([*common, "--time-limit", "0.000001"]) == 0  # one epoch, then stopped: a run to resume
    meta = run_dir / "backup" / "training_metadata.json"
    weights = run_dir / "backup" / json.loads(meta.read_text())["weights"]
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, and no earlier checkpoint to fall back on
    capsys.readouterr()
    assert main(common) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("tinyconv: error: ") and "the resume state is damaged" in error
    assert "does not match its recorded sha256" in error and "no intact checkpoint is left" in error
    assert error.endswith("run the same command with --restart to train this run again from epoch 1 "
                          "(its other files are replaced as it goes)")
    assert main([*common, "--restart"]) == 0
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0, 1]
    assert (run_dir / "metrics.json").exists() and not (run_dir / "backup").exists()

    (run_dir / "metrics.json").write_text('{"top1": 0.')  # a finished run whose metrics.json was damaged
    capsys.readouterr()
    assert main(common) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"tinyconv: error: {run_dir / 'metrics.json'} is unreadable (JSONDecodeError) though the run finished; "
        "run the same command with --restart to train it again")


@pytest.mark.slow  # three training sessions
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(synthetic_data_dir, tmp_path, capsys):
    from tinyconv.training.train import train

    run_dir = tmp_path / "run"
    for _ in range(2):  # two sessions of one epoch each: two checkpoints, the second the newest
        train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 3}, time_limit=1e-4)
    backup = run_dir / "backup"
    assert sorted(p.name for p in backup.glob("*.h5")) == ["epoch-0001.weights.h5", "epoch-0002.weights.h5"]
    newest = backup / "epoch-0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # e.g. a run folder copied halfway
    capsys.readouterr()
    metrics = train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 3})
    err = capsys.readouterr().err
    assert f"{newest} does not match its recorded sha256; resuming from the intact checkpoint of epoch 1" in err
    assert metrics["epochs"] == 3  # epoch 2 trained again, each epoch once in the history
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0, 1, 2]


def _backup_of(tmp_path, epochs: int):
    """A ResumableBackup of a small compiled model that has backed up `epochs` epochs (weights differ per epoch)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)  # as fit builds it before the first backup
    backup = ResumableBackup(tmp_path / "backup")
    backup.set_model(model)
    backup.set_params({"epochs": 10})
    saved = {}
    for epoch in range(epochs):
        model.set_weights([np.full_like(w, epoch + 1) for w in model.get_weights()])
        backup.on_epoch_end(epoch)
        saved[epoch + 1] = model.get_weights()
    return model, saved


def _restored(tmp_path, model) -> int:
    backup = ResumableBackup(tmp_path / "backup")
    backup.set_model(model)
    backup.on_train_begin()
    return backup.restored_epoch


def test_a_backup_keeps_two_checkpoints_and_falls_back_past_damage(tmp_path, capsys):
    model, saved = _backup_of(tmp_path, 3)
    folder = tmp_path / "backup"
    assert sorted(p.name for p in folder.glob("*.h5")) == ["epoch-0002.weights.h5", "epoch-0003.weights.h5"]
    meta = json.loads((folder / "training_metadata.json").read_text())
    assert (meta["epoch"], meta["previous"]["epoch"]) == (3, 2) and len(meta["sha256"]) == 64

    # a bit flipped inside the newest checkpoint: the file still opens, only its checksum tells
    newest = folder / "epoch-0003.weights.h5"
    intact = newest.read_bytes()
    data = bytearray(intact)
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert _restored(tmp_path, model) == 2
    for restored, expected in zip(model.get_weights(), saved[2]):
        np.testing.assert_array_equal(restored, expected)
    assert "resuming from the intact checkpoint of epoch 2" in capsys.readouterr().err

    # a half-written training_metadata.json: the newest weights file that reads whole
    newest.write_bytes(intact)
    (folder / "training_metadata.json").write_text('{"epoch": 3, "weig')
    assert _restored(tmp_path, model) == 3
    assert "training_metadata.json is damaged (JSONDecodeError); resuming from the intact checkpoint of epoch 3" in (
        capsys.readouterr().err)
    newest.write_bytes(intact[:2000])  # ... and that one truncated too
    assert _restored(tmp_path, model) == 2
    (folder / "epoch-0002.weights.h5").write_bytes(b"")
    with pytest.raises(TinyconvError, match=r"the resume state is damaged .*epoch-0003.* unreadable .*--restart"):
        ResumableBackup(folder)


def test_a_damaged_history_is_one_line_offering_restart(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,top1\n0,1.5,0.25\n1,1.2,0.3\n2,1.")  # cut mid-row
    with pytest.raises(TinyconvError,
                       match=r"history.csv is damaged or unreadable \(line 4: too few cells\); .*--restart"):
        read_history(path)
    path.write_text("epoch,loss\n0,1.5\nzero,1.2\n")
    with pytest.raises(TinyconvError, match=r"line 3: invalid literal"):
        read_history(path)


@pytest.mark.slow
@pytest.mark.kill
def test_a_run_killed_at_four_random_moments_ends_with_each_epoch_once(synthetic_data_dir, tmp_path):
    """SIGKILL a ci run 4 times at random moments (start-up, steps, validation, saves), resume each time.
    (Ten kills took 2.5 min of CI, six 1.5 min; the kills spread over the same 3-12 s window after each start, so
    fewer of them still land in every phase across runs; the kill-and-resume tests of test_train, test_locks
    and test_jax_backend kill at chosen moments besides.)"""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "killed"
    epochs = 16  # long enough that every kill lands mid-run (an attempt gets through at most ~4 epochs)
    command = [sys.executable, "-m", "tinyconv", "train", "--profile", "ci", "--epochs", str(epochs),
               "--data-dir", str(synthetic_data_dir), "--out", str(run_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rng = random.Random(0)
    kills = 0
    for _ in range(4):
        process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # start-up (imports, data, compile) takes several seconds, an epoch about one: spread the kills over both
        time.sleep(rng.uniform(3.0, 12.0))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        _, err = process.communicate(timeout=60)
        assert process.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
        if (run_dir / "metrics.json").exists():
            break
    assert kills == 4  # every attempt was really killed mid-run
    final = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == list(range(epochs))
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == epochs
    model = keras.saving.load_model(run_dir / "best.keras")
    assert model.output_shape[-1] == 4
    leftovers = [p.name for p in run_dir.rglob(".*.tmp*")]
    assert leftovers == []  # no temporary of a killed save survives the resumes


def test_keras_fit_starts_at_the_epoch_a_callback_sets_in_model_initial_epoch():
    """ResumableBackup._load_model resumes the epoch count through Keras' private `model._initial_epoch`, as
    Keras' own BackupAndRestore does: fit reads it after on_train_begin (Keras 3.15, each backend's trainer).
    This fails, naming it, when a Keras upgrade renames the attribute or stops reading it there."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    assert hasattr(model, "_initial_epoch"), (
        f"Keras {keras.__version__} models have no _initial_epoch: update ResumableBackup._load_model")
    epochs = []

    class Resume(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model._initial_epoch = 2  # as ResumableBackup._load_model

        def on_epoch_begin(self, epoch, logs=None):
            epochs.append(epoch)

    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, epochs=4, batch_size=4, callbacks=[Resume()], verbose=0)
    assert epochs == [2, 3], (f"Keras {keras.__version__} fit ran epochs {epochs} after a callback set "
                              "model._initial_epoch = 2: update ResumableBackup._load_model")


@pytest.mark.kill
def test_sigterm_stops_a_run_as_ctrl_c_does_and_the_same_command_resumes(synthetic_data_dir, tmp_path):
    """`kill PID` (SIGTERM) used to end a training run on the spot, saying nothing; now the command stops as on
    Ctrl-C: how far it got and how to resume, one line of its own, exit status 143, no traceback, its lock free."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "termed"
    command = ["train", "--profile", "ci", "--epochs", "3", "--data-dir", str(synthetic_data_dir), "--out", str(run_dir)]
    process = subprocess.Popen([sys.executable, str(repo / "tests" / "sleepy_cli.py"), *command], cwd=repo,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meta = run_dir / "backup" / "training_metadata.json"
    deadline = time.monotonic() + 240
    while process.poll() is None and not meta.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None and meta.exists(), "the run ended or never backed up an epoch"
    process.send_signal(signal.SIGTERM)  # during the 2 s pause after epoch 1's backup
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "interrupted after 1 completed epoch(s); run the same command again to resume" in err
    assert err.strip().splitlines()[-1] == "tinyconv: terminated (SIGTERM)"

    from tinyconv.cli import main

    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert main(command) == 0  # resumes at once (the lock went with the process) and finishes
    finally:
        signal.signal(signal.SIGTERM, previous)  # main installs its handler in the process that calls it
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0, 1, 2]


@pytest.mark.slow  # one training session
def test_restart_keeps_the_finished_run_when_its_data_cannot_be_loaded(synthetic_data_dir, tmp_path, capsys):
    """--restart deletes a run's models and history only once the data it retrains on has loaded: a stale cache
    (an expected failure, one line) leaves the run it would replace as it was."""
    from tinyconv.cli import main
    from tinyconv.data.dataset import cache_dir

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data_dir, data_dir)
    run_dir = tmp_path / "run"
    common = ["train", "--profile", "ci", "--epochs", "1", "--data-dir", str(data_dir), "--out", str(run_dir)]
    assert main(common) == 0
    before = {path.relative_to(run_dir): path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert {"model.keras", "best.keras", "metrics.json", "history.csv"} <= {str(path) for path in before}
    manifest = cache_dir(data_dir) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 2', '"version": 1'))  # a stale cache
    capsys.readouterr()
    assert main([*common, "--restart"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("tinyconv: error: the cache in ") and "is stale (cache format 1" in error
    after = {path.relative_to(run_dir): path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.parametrize("content", [b"[1]", b'{"profile": "ci"\xff}', b"\xff\xfe"])
def test_a_run_folder_whose_config_is_not_a_json_object_is_one_line(tmp_path, content):
    from tinyconv.training.train import run_dir_state

    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(TinyconvError, match=rf"^{tmp_path / 'config.json'}: (unreadable run config|not a run config)"):
        run_dir_state(tmp_path, {"profile": "ci"})


def test_a_best_model_saved_by_an_epoch_being_trained_again_is_replaced_by_it(tmp_path):
    """best.keras records its epoch; one saved by an epoch that the resumed session trains again (a kill between the
    save and that epoch's backup) matches no row of the history, so the session's first epoch replaces it whatever
    its score. One saved by an epoch of the history keeps its place as the best so far."""
    from tinyconv.fileio import read_model_metadata, save_model
    from tinyconv.training.callbacks import BestCheckpoint
    from tinyconv.training.history import write_history

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    history = tmp_path / "history.csv"
    write_history(history, [{"epoch": 0, "val_top1": 0.5}, {"epoch": 1, "val_top1": 0.6}])
    best = tmp_path / "best.keras"
    for saved_epoch, expected in ((2, 0.6), (3, -np.inf)):  # by epoch 2 (in the history), by epoch 3 (trained again)
        save_model(model, best, {"wnids": ["a", "b"], "epoch": saved_epoch})
        callback = BestCheckpoint(best, history, metadata={"wnids": ["a", "b"]})
        callback.set_model(model)
        callback.on_epoch_begin(2)  # the session resumes at epoch 3 (0-based 2)
        assert callback.best == expected
    callback.on_epoch_end(2, {"val_top1": 0.55})  # below the history's best, yet it replaces the stray file
    assert read_model_metadata(best) == {"wnids": ["a", "b"], "epoch": 3}


def test_a_best_model_left_out_of_a_restored_state_is_saved_again_from_its_checkpoint(tmp_path):
    """A state leaves best.keras out when the checkpoint's epoch is the best (tinyconv.training.run_state): at the
    resumed session's first epoch the model holds that checkpoint, so BestCheckpoint saves it as that epoch, with
    those weights, and the best so far stays the history's. When the last epoch is not the best, the file is not
    the checkpoint's and nothing is made up: the session's first epoch saves one, as for any missing best.keras."""
    from tinyconv.fileio import read_model_metadata
    from tinyconv.training.callbacks import BestCheckpoint
    from tinyconv.training.history import write_history

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    history = tmp_path / "history.csv"
    best = tmp_path / "best.keras"
    write_history(history, [{"epoch": 0, "val_top1": 0.5}, {"epoch": 1, "val_top1": 0.6}])
    callback = BestCheckpoint(best, history, metadata={"wnids": ["a", "b"]})
    callback.set_model(model)
    callback.on_epoch_begin(2)
    assert callback.best == 0.6 and read_model_metadata(best) == {"wnids": ["a", "b"], "epoch": 2}
    saved = keras.saving.load_model(best)
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), model.get_weights()))
    callback.on_epoch_end(2, {"val_top1": 0.55})  # not better than the restored best: kept
    assert read_model_metadata(best)["epoch"] == 2

    best.unlink()
    write_history(history, [{"epoch": 0, "val_top1": 0.6}, {"epoch": 1, "val_top1": 0.5}])
    callback = BestCheckpoint(best, history, metadata={"wnids": ["a", "b"]})
    callback.set_model(model)
    callback.on_epoch_begin(2)
    assert not best.exists() and callback.best == -np.inf
