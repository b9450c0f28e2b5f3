"""The JAX backend, on CPU, in subprocesses with KERAS_BACKEND=jax where `import tensorflow` fails
(tests/no_tensorflow.py): the `ci` profile end to end (train, evaluate, predict, bench) on the synthetic and the real
dataset, resume after a real SIGKILL, data parallel over two forced host devices, and steps that never wait for the
host. The same logits on both backends, .keras files crossing and the device augmentation: tests/test_jax_parity.py.

JAX processes are slow to start and compile on a CPU, so the checks share few: one ci run serves the
train/evaluate/predict test and the data-parallel comparison, and all share one XLA compilation cache
(tests/jax_processes.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from jax_processes import AUGMENTS, BLOCKER, REFERENCE_LIKE, REPO, jax_env, json_out, ok, without_tf  # tests/ (conftest puts it on sys.path)
from killing import kill_after_first_backup

tf = pytest.importorskip("tensorflow")
pytest.importorskip("jax")
pytestmark = pytest.mark.jax


# ------------------------------------------------------------------------ ci profile, synthetic data


@pytest.fixture(scope="module")
def jax_ci_run(synthetic_data_dir, tmp_path_factory):
    """A 2-epoch ci run under JAX without TensorFlow: (run_dir, metrics, train stdout)."""
    run_dir = tmp_path_factory.mktemp("jax-runs") / "ci"
    train = without_tf("tinyconv", "train", "--profile", "ci", "--epochs", 2, "--data-dir", synthetic_data_dir,
                        "--out", run_dir, "--json")
    return run_dir, json_out(train), train.stdout


def test_ci_train_evaluate_predict_under_jax_without_tensorflow(jax_ci_run, synthetic_data_dir, tmp_path):
    from PIL import Image

    from tinyconv.training.history import read_history
    from tinyconv.deploy.inference import evaluate

    run_dir, metrics, _ = jax_ci_run
    for name in ("config.json", "history.csv", "model.keras", "best.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"] == "jax" and config["dtype_policy"] == "float32"
    assert config["devices"] == 1 and config["global_batch"] == 16
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["epochs"] == 2 and on_disk["backend"] == "jax" and on_disk == metrics
    assert on_disk["train_images"] == 64 and on_disk["val_images"] == 24
    rows = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in rows] == [0, 1]
    assert all(np.isfinite(row["loss"]) and 0.0 <= row["val_top1"] <= 1.0 for row in rows)

    evaluated = json_out(without_tf("tinyconv", "evaluate", run_dir, "--json", "--data-dir", synthetic_data_dir))
    assert evaluated["classes"] == 4 and evaluated["images"] == 24
    assert evaluated["top1"] == pytest.approx(metrics["top1"], abs=1e-6)  # same weights, same images
    assert [c["wnid"] for c in evaluated["per_class"]] == config["wnids"]
    assert evaluated["tta"] is not None and 0.0 <= evaluated["tta"]["top1"] <= 1.0

    # the model saved under JAX, evaluated here under TensorFlow: the same answers
    here = evaluate(run_dir, data_dir=synthetic_data_dir, tta=True)
    assert here["top1"] == pytest.approx(evaluated["top1"], abs=1e-6)
    assert [c["top1"] for c in here["per_class"]] == pytest.approx([c["top1"] for c in evaluated["per_class"]])

    image = tmp_path / "odd size.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(image)
    predicted = ok(without_tf("tinyconv", "predict", run_dir, image, "--top", 4)).stdout
    assert str(image) in predicted and "%" in predicted
    for name, wnid in zip(config["names"], config["wnids"]):  # 4 classes, top 4: every name is printed
        assert f"{name} ({wnid})" in predicted
    as_json = json.loads(ok(without_tf("tinyconv", "predict", run_dir / "best.keras", image, "--json")).stdout)
    probabilities = [guess["probability"] for guess in as_json[0]["top"]]
    assert len(probabilities) == 4 and sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_bench_under_jax_without_tensorflow():
    result = json_out(without_tf("tinyconv", "bench", "--preset", "tiny", "--batch-size", 8, "--steps", 2, "--json"))
    assert result["backend"] == "jax" and result["preset"] == "tiny" and result["batch_size"] == 8
    assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0


@pytest.mark.slow
def test_ci_profile_on_real_data_under_jax(real_data_dir, tmp_path):
    from tinyconv.training.history import read_history

    run_dir = tmp_path / "real-ci-jax"
    metrics = json_out(without_tf("tinyconv", "train", "--profile", "ci", "--data-dir", real_data_dir,
                                    "--out", run_dir, "--json"))
    for name in ("config.json", "history.csv", "model.keras", "best.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"] == "jax"
    assert config["names"] == ["Egyptian cat", "reel", "volleyball", "rocking chair"]
    assert metrics["backend"] == "jax" and metrics["epochs"] == 1
    assert metrics["train_images"] == 4 * 16 and metrics["val_images"] == 4 * 8
    assert 0.0 <= metrics["top1"] <= 1.0 and np.isfinite(metrics["val_loss"])
    assert [row["epoch"] for row in read_history(run_dir / "history.csv")] == [0]


# ------------------------------------------------------------------------------- resume after SIGKILL


@pytest.mark.kill
def test_resume_after_sigkill_under_jax_ends_with_each_epoch_once(synthetic_data_dir, tmp_path):
    """A run of the reference recipe's moving parts killed with SIGKILL after its first backed-up epoch and resumed
    by the same command ends as the same run uninterrupted: the same history, and the same weights, optimizer state
    and step count to within float32 rounding (measured: bit for bit on JAX CPU; the tolerance only absorbs another
    thread schedule). A lost random state (data order, augmentation draws, drop masks) or a schedule restarted at
    the wrong step would move them by far more."""
    from tinyconv.training.history import read_history

    epochs = 3
    run_dir = tmp_path / "killed"
    flags = ["--profile", "ci", "--epochs", epochs, *REFERENCE_LIKE, "--data-dir", synthetic_data_dir]
    command = ["train", *flags, "--out", run_dir]
    argv = [sys.executable, BLOCKER, "sleepy_cli", *command]
    killed_at = kill_after_first_backup(argv, run_dir, cwd=REPO, env=jax_env(tmp_path), timeout=240)
    assert 1 <= killed_at < epochs
    history = run_dir / "history.csv"

    second = ok(without_tf("tinyconv", *command))
    assert f"resuming {run_dir} from epoch {killed_at + 1} of {epochs}" in second.stdout
    assert "Epoch 1/3" not in second.stdout  # the completed epochs were not trained again

    assert [row["epoch"] for row in read_history(history)] == list(range(epochs))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and metrics["backend"] == "jax"
    assert not (run_dir / "backup").exists()
    sessions = [json.loads(line) for line in (run_dir / "sessions.jsonl").read_text().splitlines()]
    assert [session["from_epoch"] for session in sessions] == [0, killed_at]

    whole = tmp_path / "whole"
    ok(without_tf("tinyconv", "train", *flags, "--out", whole))
    for row, expected in zip(read_history(history), read_history(whole / "history.csv"), strict=True):
        for key in ("loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "lr"):
            assert row[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), (row["epoch"], key)

    import keras

    import tinyconv.deploy.inference  # noqa: F401  (registers the custom objects)

    model = keras.saving.load_model(run_dir / "model.keras")  # saved under JAX, loaded here under TensorFlow
    steps = json.loads((run_dir / "config.json").read_text())["steps_per_epoch"]
    assert int(model.optimizer.iterations.numpy()) == epochs * steps  # schedule position carried over
    reference = keras.saving.load_model(whole / "model.keras")
    for got, want in zip(model.variables + model.optimizer.variables,
                         reference.variables + reference.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=got.path)


# ------------------------------------------------------- data parallel over two (forced) host devices

TWO_DEVICES = "--xla_force_host_platform_device_count=2"  # XLA's CPU client shows two devices, as two GPUs would


def test_data_parallel_on_two_devices_matches_one_device_and_resumes(jax_ci_run, synthetic_data_dir, tmp_path):
    """keras.distribution.DataParallel over 2 devices: the same global batches give the one-device run's
    history (each epoch's loss is the mean over its 4 steps, the first step's among them, so a first step
    that differed would show), and a run SIGKILLed after its first epoch resumes to the end."""
    from tinyconv.training.history import read_history

    one_dir, _, _ = jax_ci_run  # 2 ci epochs on one device, same recipe
    run_dir = tmp_path / "two-devices"
    command = ["train", "--profile", "ci", "--epochs", 2, "--data-dir", synthetic_data_dir, "--out", run_dir]
    env = {**jax_env(tmp_path), "XLA_FLAGS": TWO_DEVICES}
    killed_at = kill_after_first_backup([sys.executable, BLOCKER, "sleepy_cli", *command], run_dir, cwd=REPO,
                                        env=env, timeout=400)
    assert killed_at == 1
    resumed = subprocess.run([sys.executable, str(BLOCKER), "tinyconv", *map(str, command)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=400)
    assert f"resuming {run_dir} from epoch 2 of 2" in ok(resumed).stdout

    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"] == "jax" and config["devices"] == 2 and config["global_batch"] == 16
    assert config["dtype_policy"] == "float32" and config["jit_compile"] is True
    assert config["device"].startswith("2 JAX CPU devices")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["epochs"] == 2 and not (run_dir / "backup").exists()

    two, one = read_history(run_dir / "history.csv"), read_history(one_dir / "history.csv")
    assert [row["epoch"] for row in two] == [0, 1]
    for name in ("loss", "val_loss", "top1", "val_top1"):  # sums over two devices instead of one: rounding only
        assert [row[name] for row in two] == pytest.approx([row[name] for row in one], rel=1e-5, abs=1e-6), name
    assert two[1]["loss"] < two[0]["loss"]  # it learned: the comparison is between runs that moved


_SPLIT_BATCHES = """
import json, sys

import jax
import keras
import numpy as np

from tinyconv.data.device_input import DeviceEvalBatches, DeviceTrainBatches
from tinyconv.data.augment_config import AugmentConfig

assert jax.device_count() == 2
distribution = keras.distribution.DataParallel(devices=jax.devices())
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8), rng.integers(0, 5, 40).astype(np.int32)
for values in json.loads(sys.argv[1]).values():
    augment = AugmentConfig.from_dict(values)
    one = DeviceTrainBatches(images, labels, 5, 8, augment, seed=11, start_epoch=3)
    two = DeviceTrainBatches(images, labels, 5, 8, augment, seed=11, start_epoch=3, distribution=distribution)
    for step in range(4):
        for single, split in zip(one[step], two[step]):
            assert np.array_equal(np.asarray(single), np.asarray(split))  # the same batch, bit for bit
            layout = distribution.get_data_layout(split.shape).backend_layout
            assert split.sharding == layout and len(split.addressable_shards) == 2
            assert split.addressable_shards[0].data.shape[0] == 4  # each device made its half
            # what Keras does with each batch under a distribution: here it returns the array as it is (no copy)
            assert jax.make_array_from_process_local_data(layout, split) is split
evaluation = DeviceEvalBatches(images, labels, 5, 16, distribution)
assert [int(x.shape[0]) for x, _ in (evaluation[i] for i in range(len(evaluation)))] == [16, 16, 8]
print("split batches equal")
"""


def test_data_parallel_batches_are_the_one_device_batches_made_in_halves(tmp_path):
    (tmp_path / "split_batches.py").write_text(_SPLIT_BATCHES)
    completed = subprocess.run(
        [sys.executable, str(BLOCKER), "split_batches", json.dumps(AUGMENTS)], cwd=REPO,
        env={**jax_env(tmp_path), "XLA_FLAGS": TWO_DEVICES}, capture_output=True, text=True, timeout=300,
    )
    assert "split batches equal" in ok(completed).stdout


def test_data_parallel_refuses_a_batch_that_does_not_split(synthetic_data_dir, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(BLOCKER), "tinyconv", "train", "--profile", "ci", "--set", "batch_size=15",
         "--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "odd")],
        cwd=REPO, env={**jax_env(), "XLA_FLAGS": TWO_DEVICES}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "tinyconv: error: the global batch_size of 15 does not split evenly over 2 devices" in completed.stderr
    assert "Traceback" not in completed.stderr


# ------------------------------------------------------------- no host round trip per training step


def test_steps_run_without_waiting_for_the_host_and_a_nan_still_stops_the_run(synthetic_data_dir, tmp_path):
    """Under JAX the run's own callbacks leave Keras free to run the batch-end hooks in worker threads (so no step
    waits for its loss to reach Python), NonFiniteLoss, read there, still stops a diverged epoch before the
    history, best.keras or the backup take it in, and the history's train time still covers the steps' run."""
    from tinyconv.training.history import read_history

    run_dir = tmp_path / "nan"
    completed = ok(without_tf("jax_async_steps", synthetic_data_dir, run_dir, extra_path=REPO / "tests"))
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["hooks"] > 0 and out["on_main_thread"] == 0, out  # every batch-end hook ran off the training loop
    assert "throughput:" in completed.stdout  # ThroughputEstimate measured the steps from the worker threads
    assert out["error"] is not None
    assert "training diverged" in out["error"] and "loss became nan at epoch 2, step" in out["error"], out["error"]
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == [0]
    meta = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    assert meta["epoch"] == 1
    # the history's train time ends once the epoch's last step has run, not when it was dispatched, which was earlier
    # by the steps still queued (before the fix: train_s 5.11 s, the last step ready at 6.13 s; after: 5.7264 and
    # 5.7262 s); 0.3 s for the probe's worker thread, which may note the time after the history's wait returned
    assert history[0]["train_s"] >= out["epoch_1_last_step_ready_s"] - 0.3, (history[0], out)
