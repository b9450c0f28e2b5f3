"""The shell scripts of a GPU lease (docs/gpu.md): split_file.sh cuts the zip into pieces named as gpu_receive.sh
keeps them and gpu_train.sh joins them, and the join gives the zip back; gpu_train.sh, rehearsed as two leases
under JAX on CPU (the first killed mid-epoch), continues one run from the first lease to the second as if it had
never stopped. This is the one rehearsal of a lease; tests/test_run_state.py checks the state's pieces."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pieces_travel_and_join_back_to_the_same_zip(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 1_000_003, dtype=np.uint8).tobytes()
    original = tmp_path / "tiny-imagenet-200.zip"
    original.write_bytes(data)
    split = subprocess.run(["bash", str(ROOT / "scripts/split_file.sh"), str(original), str(tmp_path / "pieces"),
                            "300000"], capture_output=True, text=True, check=True)
    assert hashlib.sha256(data).hexdigest() in split.stdout
    pieces = sorted(p.name for p in (tmp_path / "pieces").iterdir())
    assert pieces == ["zip.00", "zip.01", "zip.02", "zip.03"]

    stage = tmp_path / "stage"  # the far side: one gpu_receive.sh call per piece, then gpu_train.sh's join
    env = {**os.environ, "STAGE": str(stage), "SITE": str(tmp_path / "no-site")}
    for name in reversed(pieces):  # arrival order does not matter
        subprocess.run(["bash", str(ROOT / "scripts/gpu_receive.sh"), str(tmp_path / "pieces" / name)],
                       env=env, capture_output=True, text=True, check=True)
    joined = subprocess.run(f'cat "{stage}"/zip.*', shell=True, capture_output=True, check=True).stdout
    assert joined == data
    assert "cat \"$stage\"/zip.*" in (ROOT / "scripts/gpu_train.sh").read_text()  # the join the test repeats
    # here the pieces and wheels live in ignored folders: a device call carries only those its `carry` names
    # (six pieces at once would be 230 MB of a call's 64 MiB)
    ignored = subprocess.run(["git", "check-ignore", "pieces/zip.00", ".whl/keras.whl"], cwd=ROOT,
                             capture_output=True, text=True)
    assert ignored.stdout.split() == ["pieces/zip.00", ".whl/keras.whl"], ignored


def test_the_offline_bundle_holds_the_wheels_the_gpu_machine_lacks_and_they_install_for_its_python(tmp_path):
    """scripts/offline_bundle.sh, the first step of a lease's preparation (docs/gpu.md): keras as pyproject.toml pins
    it, namex, optree for CPython 3.12 on x86_64, and tinyconv's own wheel with its package data; all four install
    with gpu_receive.sh's pip flags for the GPU machine's Python. (It once failed at tinyconv's wheel: the venv's
    old setuptools could not read pyproject.toml's SPDX license under --no-build-isolation.)"""
    import keras

    out = tmp_path / "whl"
    done = subprocess.run(["bash", str(ROOT / "scripts/offline_bundle.sh"), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    names = sorted(path.name for path in out.iterdir())
    assert [name.split("-")[0] for name in names] == ["keras", "namex", "optree", "tinyconv"], names
    assert names[0] == f"keras-{keras.__version__}-py3-none-any.whl"
    assert "-cp312-cp312-manylinux" in names[2] and names[2].endswith("x86_64.whl"), names[2]
    assert sum(path.stat().st_size for path in out.iterdir()) < 8 * 2**20  # it travels with call 1 (64 MiB)

    site = tmp_path / "site"  # gpu_receive.sh's install, for Python 3.12 on x86_64 as the GPU machine runs it
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
                    "--platform", "manylinux_2_28_x86_64", *map(str, sorted(out.iterdir()))], check=True,
                   capture_output=True, text=True, timeout=300)
    assert (site / "keras" / "__init__.py").is_file() and (site / "optree").is_dir()
    assert (site / "tinyconv" / "training" / "reference_curve.csv").is_file()
    assert len(list((site / "tinyconv" / "deploy" / "check_images").glob("*.png"))) == 12


def test_lease_prepare_readies_a_lease_and_refuses_a_call_over_the_limit_before_any_device_time(synthetic_data_dir,
                                                                                                    tmp_path):
    """scripts/lease_prepare.sh on a copy of this checkout: wheels, pieces, the kept state moved aside, every call's
    load counted as the device tool counts it (tracked and untracked-unignored files, plus its carry), and the calls
    printed in order with the zip's sha256; a call over the limit is one line each and exit 1."""
    import shutil

    from synthetic import zip_dataset

    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv", "data", "runs", "build", ".whl", "pieces",
                                                               "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run("git init -q && git add -A", shell=True, cwd=repo, check=True)
    state = repo / "results" / "ci-lease" / "state"  # a run's kept state, as `tinyconv state keep` leaves it
    state.mkdir(parents=True)
    (state / "manifest.json").write_text('{"epoch": 3}')
    (state / "state-e0003-abcd.part00").write_bytes(b"\0" * 300_000)
    archive = zip_dataset(synthetic_data_dir / "tiny-imagenet-200", tmp_path / "tiny-imagenet-200.zip")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    env = {**os.environ, "PYTHON": sys.executable, "ZIP": str(archive), "PIECE_BYTES": "200000",
           "ASIDE": str(tmp_path / "aside"), "TRAIN_FLAGS": "--profile ci"}

    done = subprocess.run(["bash", "scripts/lease_prepare.sh", "ci-lease"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    pieces = sorted(path.name for path in (repo / "pieces").glob("zip.*"))
    assert len(pieces) >= 2 and (repo / "pieces" / ".sha256").read_text().strip() == sha
    assert len(list((repo / ".whl").glob("*.whl"))) == 4 and "already holds the wheels" not in done.stdout
    assert not state.exists() and (tmp_path / "aside" / "manifest.json").is_file()  # moved aside, epoch named
    assert f"moved results/ci-lease/state (epoch 3) to {tmp_path / 'aside'}" in done.stdout
    shortest = min(pieces, key=lambda name: (repo / "pieces" / name).stat().st_size)
    lines = done.stdout.splitlines()
    calls = [line for line in lines if line.strip().startswith("call ")]
    assert len(calls) == len(pieces) + 1
    assert calls[0].split("carry ", 1)[1] == f'[".whl", "pieces/{shortest}"]'  # the wheels ride with the short piece
    assert f"mv {tmp_path / 'aside'} results/ci-lease/state" in lines[lines.index(calls[-1]) - 1]
    assert calls[-1].endswith("carry none")
    assert f"SHA256={sha} scripts/gpu_train.sh ci-lease auto --profile ci" in done.stdout
    assert "state keep <files_at>/state results/ci-lease/state --run runs/ci-lease" in done.stdout

    # the same again: the pieces of that zip are kept; with a smaller limit every call is refused, one line each,
    # before anything is moved (the state stays where it is); and a state set aside earlier is never overwritten
    (tmp_path / "aside").rename(state)
    over = subprocess.run(["bash", "scripts/lease_prepare.sh", "ci-lease"], cwd=repo, env={**env, "LIMIT_BYTES": "100000"},
                          capture_output=True, text=True, timeout=300)
    assert over.returncode == 1 and f"pieces/ already holds the pieces of {sha}" in over.stdout
    assert ".whl/ already holds the wheels of this checkout" in over.stdout
    refused = over.stderr.strip().splitlines()
    assert len(refused) == len(pieces) + 1 and all(line.startswith("lease_prepare: a call would carry ") for line in refused)
    assert "4. state" not in over.stdout and (state / "manifest.json").is_file()
    (tmp_path / "aside").mkdir()
    with open(repo / "tinyconv" / "errors.py", "a") as changed:  # the code changed: its wheels are built again
        changed.write("# changed\n")
    kept = subprocess.run(["bash", "scripts/lease_prepare.sh", "ci-lease"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert kept.returncode == 1 and kept.stderr.strip() == (
        f"lease_prepare: {tmp_path / 'aside'} exists (an earlier lease's state set aside?): move it back or away "
        "first; nothing moved")
    assert (state / "manifest.json").is_file() and "already holds the wheels" not in kept.stdout


_NO_TENSORFLOW = """
import sys

class _Blocker:  # as tests/no_tensorflow.py: any path that reaches for TensorFlow fails loudly
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "tensorboard"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process runs without TensorFlow)")
        return None

sys.meta_path.insert(0, _Blocker())
"""


# A stand-in for the GPU machine's python3 in the first lease: `-m tinyconv train` runs tests/sleepy_cli.py (which
# stops for good in the middle of epoch 2, so that the kill lands there); every other call is plain python.
_SLEEPY_PYTHON = """#!/usr/bin/env bash
if [ "$1 $2 $3" = "-m tinyconv train" ]; then shift 2; exec "{python}" "{sleepy}" "$@"; fi
exec "{python}" "$@"
"""


def _chosen_form(lease_log: str) -> str:
    """The form a lease chose, read from its lease.log as the next lease's set-up reads it (docs/gpu.md)."""
    lines = [line for line in lease_log.splitlines() if line.startswith("chosen depthwise form: ")]
    assert len(lines) == 1, lease_log[-3000:]
    return lines[0].removeprefix("chosen depthwise form: ")


@pytest.mark.jax
@pytest.mark.kill
@pytest.mark.slow
def test_two_leases_of_the_lease_script_continue_one_run_as_if_never_interrupted(synthetic_data_dir, tmp_path):
    """scripts/gpu_train.sh rehearsed on CPU under JAX, as two leases on two fresh machines, the whole protocol of
    docs/gpu.md: the first lease times the depthwise forms, chooses one, trains with it and is SIGKILLed mid-epoch 2
    (as the device tool kills a call at its limit: the whole process group, the state watcher too); what it had
    returned in $OUT/state (epoch 1) is made the kept state with `tinyconv state keep`; the second lease, given the
    chosen form, restores that state on a fresh machine and finishes the run. Its history equals an uninterrupted
    run's with the same form to within 1e-6 (relative; measured: bit for bit on JAX CPU, the tolerance only absorbs
    another XLA CPU thread schedule). Each $OUT holds few enough files to come back whole (at most 8), and no
    process of it may import TensorFlow, which the GPU machines lack."""
    from killing import kill_when
    from synthetic import zip_dataset  # tests/ (conftest puts it on sys.path)

    from tinyconv.training.callbacks import read_history

    archive = zip_dataset(synthetic_data_dir / "tiny-imagenet-200", tmp_path / "tiny-imagenet-200.zip")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    subprocess.run(["bash", str(ROOT / "scripts/split_file.sh"), str(archive), str(tmp_path / "pieces"), "200000"],
                   capture_output=True, text=True, check=True)
    kept = tmp_path / "repo-results" / "ci-lease" / "state"
    sleepy = tmp_path / "sleepy-python"
    sleepy.write_text(_SLEEPY_PYTHON.format(python=sys.executable, sleepy=ROOT / "tests" / "sleepy_cli.py"))
    sleepy.chmod(0o755)
    train_flags = ["--profile", "ci", "--epochs", "3"]

    def machine_env(number: int, **extra) -> dict:
        machine = tmp_path / f"machine{number}"  # a fresh machine: nothing of another lease is on it
        return {**os.environ, "STAGE": str(machine / "stage"), "SITE": str(machine / "site"),
                "DATA": str(machine / "data"), "RUNS": str(machine / "runs"), "OUT": str(machine / "OUT"),
                "SHA256": sha, "PYTHON": sys.executable, "STATE_IN": str(kept), "JAX_PLATFORMS": "cpu",
                "FORMS_FLAGS": "--steps 2",  # 2 timed steps a form, not 10: each of 4 forms at the ci batch of 16
                "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **extra}

    def receive(env: dict) -> None:
        for piece in sorted((tmp_path / "pieces").iterdir()):
            subprocess.run(["bash", str(ROOT / "scripts/gpu_receive.sh"), str(piece)], env=env, capture_output=True,
                           check=True)
        # as on the GPU machines, no TensorFlow: $SITE is on every Python's path there, so a sitecustomize in it
        # refuses `import tensorflow` in each process the script starts (made after the pieces: with a $SITE,
        # gpu_receive.sh reports the machine's JAX, which is the GPU machine's python3 there)
        Path(env["SITE"]).mkdir(parents=True)
        (Path(env["SITE"]) / "sitecustomize.py").write_text(_NO_TENSORFLOW)

    def returned(env: dict) -> tuple[str, list[Path]]:
        log = (Path(env["OUT"]) / "lease.log").read_text()
        files = [path for path in Path(env["OUT"]).rglob("*") if path.is_file()]
        assert len(files) <= 8, files
        assert "blocked: this process runs without TensorFlow" not in log
        return log, files

    # lease 1: the forms, then training with the chosen one until the call is killed in epoch 2
    hung = tmp_path / "hung"
    first = machine_env(1, PYTHON=str(sleepy), FORMS_S="120", SYNC_S="240", SYNC_ROUNDS="1", SLEEPY_HANG_EPOCH="2",
                        SLEEPY_HANG_FILE=str(hung))
    receive(first)
    with open(tmp_path / "call1.out", "w") as shown:  # a file, not a pipe: a full pipe would stall the script's tee
        call = subprocess.Popen(["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", "auto", *train_flags],
                                env=first, stdout=shown, stderr=subprocess.STDOUT, start_new_session=True)
    meta = tmp_path / "machine1" / "runs" / "ci-lease" / "backup" / "training_metadata.json"
    packed = tmp_path / "machine1" / "OUT" / "state" / "manifest.json"

    def mid_epoch_two_with_epoch_one_returned() -> bool:  # the trainer stops for good after epoch 2's second step
        return hung.exists() and packed.exists() and json.loads(packed.read_text())["epoch"] == 1

    kill_when(call, mid_epoch_two_with_epoch_one_returned, 300, "epoch 2 with epoch 1's state returned", group=True)
    assert hung.read_text() == "epoch 2, step 2\n" and json.loads(meta.read_text())["epoch"] == 1
    log, _ = returned(first)
    assert "phase forms" in log and "phase restore" not in log and "phase done" not in log
    assert "versions: python" in log  # the device and software, before training: a killed call has them too
    form = _chosen_form(log)
    # the fit loop with and without a host round trip per step, with the chosen form, before training
    assert log.index("chosen depthwise form") < log.index("phase sync") < log.index("phase train")
    sync = json.loads(next(line for line in log.splitlines() if line.startswith('{"device"')))
    assert sync["backend"] == "jax" and sync["profile"] == "ci" and sync["device"].startswith("CPU")
    assert sync["async_images_per_s"] > 0 and sync["sync_images_per_s"] > 0 and sync["async_over_sync"] > 0
    # the forms: each measured in the run's own train step (the ci recipe's model, float32 on a CPU), checked
    # against keras, the fastest that agrees chosen and used for training
    choice = json.loads((tmp_path / "machine1" / "runs" / "ci-lease.forms.json").read_text())
    assert choice["profile"] == "ci" and choice["device"].startswith("CPU") and choice["dtype_policy"] == "float32"
    assert choice["train_flags"] == train_flags and choice["batch_size"] == 16  # the run's own step: ci's batch
    assert list(choice["forms"]) == ["keras", "dense", "pallas", "shifted"]  # measured in gpu_profile's order
    for name, result in choice["forms"].items():
        assert result["error"] is None and result["agrees"] and result["step_ms"] > 0, (name, result)
        assert result["max_rel_diff"] <= choice["tolerance"] == 1e-3, (name, result)
        # the ci model's 9x9 and 3x3 both took the form; dense only the 9x9 (fast_path.DENSE_MIN_TAPS)
        assert result["layers_in_form"] == ("1/2" if name == "dense" else "2/2"), (name, result)
    assert form == choice["chosen"] == min(choice["forms"], key=lambda name: choice["forms"][name]["step_ms"])
    # and the very program training compiles: under the persistent compilation cache (on for every compile here)
    # training loaded its train step, written by the forms' phase, and wrote no train step of its own
    train_began = int(next(line for line in log.splitlines() if " phase train " in line).split()[0])
    steps = sorted((tmp_path / "xla").glob("jit_train_step-*"))
    assert len(steps) >= 4 and not [path for path in steps if path.stat().st_mtime >= train_began], steps
    manifest = json.loads(packed.read_text())
    assert manifest["epoch"] == 1 and not manifest["complete"]
    subprocess.run([sys.executable, "-m", "tinyconv", "state", "keep", str(packed.parent), str(kept), "--run",
                    str(tmp_path / "here" / "ci-lease")], check=True, capture_output=True)

    # the same run uninterrupted, with the same form (beside lease 2: both cores are busy either way)
    whole = tmp_path / "whole" / "ci-lease"
    uninterrupted = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "no_tensorflow.py"), "tinyconv", "train", *train_flags, "--data-dir",
         str(tmp_path / "machine1" / "data"), "--out", str(whole)], cwd=ROOT,
        env={**first, "KERAS_BACKEND": "jax", "TINYCONV_DEPTHWISE": form}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)

    # lease 2, a fresh machine given the form lease 1 chose: restore, finish the run
    second = machine_env(2, TINYCONV_DEPTHWISE=form)
    receive(second)
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", "auto", *train_flags],
                          env=second, capture_output=True, text=True, timeout=600)
    log, _ = returned(second)
    assert done.returncode == 0, log[-3000:]
    assert log in done.stdout  # the call's output shows the log
    assert "phase restore" in log and "from epoch 2 of 3" in log and "phase forms" not in log
    assert "phase sync" not in log  # off unless asked for
    assert f"depthwise form given: {form}" in log
    manifest = json.loads((tmp_path / "machine2" / "OUT" / "state" / "manifest.json").read_text())
    assert manifest["epoch"] == 3 and manifest["complete"]

    whole_out, _ = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, whole_out[-3000:]
    got = read_history(tmp_path / "machine2" / "runs" / "ci-lease" / "history.csv")
    want = read_history(whole / "history.csv")
    assert [row["epoch"] for row in got] == [row["epoch"] for row in want] == [0, 1, 2]
    for row, expected in zip(got, want):
        for key in ("loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "lr"):
            assert row[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), (row["epoch"], key)

    # back here: the complete state is kept as the run's figures, and the state itself goes
    subprocess.run([sys.executable, "-m", "tinyconv", "state", "keep", str(tmp_path / "machine2" / "OUT" / "state"),
                    str(kept), "--run", str(tmp_path / "here" / "ci-lease")], check=True, capture_output=True)
    assert not kept.exists() and (kept.parent / "metrics.json").is_file()
    assert [row["epoch"] for row in read_history(kept.parent / "history.csv")] == [0, 1, 2]
    # a log per lease, the killed one's too, each naming the software it ran
    logs = sorted((kept.parent / "leases").iterdir())
    assert [path.name for path in logs] == ["lease-01.log", "lease-02.log"]
    assert all("versions: python" in path.read_text() for path in logs)
    assert "phase forms" in logs[0].read_text() and "phase restore" in logs[1].read_text()
