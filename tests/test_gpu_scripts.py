"""The shell scripts of a GPU lease (docs/gpu.md): split_file.sh cuts the zip into pieces named as gpu_receive.sh
keeps them and gpu_train.sh joins them, and the join gives the zip back; gpu_train.sh, rehearsed as two leases
under JAX on CPU, continues one run from the first lease to the second."""

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


_NO_TENSORFLOW = """
import sys

class _Blocker:  # as tests/no_tensorflow.py: any path that reaches for TensorFlow fails loudly
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "tensorboard"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process runs without TensorFlow)")
        return None

sys.meta_path.insert(0, _Blocker())
"""


@pytest.mark.jax
@pytest.mark.slow
def test_two_leases_of_the_lease_script_continue_one_run_under_jax(synthetic_data_dir, tmp_path):
    """scripts/gpu_train.sh rehearsed on CPU under JAX, as two leases on two fresh machines: the first trains until
    its time limit (one epoch of three) and returns the run's state in $OUT/state; `tinyconv state keep` makes it
    the state kept in the repository; the second restores it, times the depthwise forms, chooses one, and finishes
    the run. Each $OUT holds few enough files to come back whole (at most 8). No process of it may import TensorFlow,
    which the GPU machines lack."""
    from synthetic import zip_dataset  # tests/ (conftest puts it on sys.path)

    from tinyconv.training.callbacks import read_history

    archive = zip_dataset(synthetic_data_dir / "tiny-imagenet-200", tmp_path / "tiny-imagenet-200.zip")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    subprocess.run(["bash", str(ROOT / "scripts/split_file.sh"), str(archive), str(tmp_path / "pieces"), "200000"],
                   capture_output=True, text=True, check=True)
    kept = tmp_path / "repo-results" / "ci-lease" / "state"
    cache = tmp_path / "xla-cache"

    def lease(number: int, minutes: str, forms_s: int) -> subprocess.CompletedProcess:
        machine = tmp_path / f"machine{number}"  # a fresh machine: nothing of the first lease is left on it
        env = {**os.environ, "STAGE": str(machine / "stage"), "SITE": str(machine / "site"),
               "DATA": str(machine / "data"), "RUNS": str(machine / "runs"), "OUT": str(machine / "OUT"),
               "SHA256": sha, "PYTHON": sys.executable, "STATE_IN": str(kept), "FORMS_S": str(forms_s),
               "FORMS_FLAGS": "--batch-size 4", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
               "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        for piece in sorted((tmp_path / "pieces").iterdir()):
            subprocess.run(["bash", str(ROOT / "scripts/gpu_receive.sh"), str(piece)], env=env, capture_output=True,
                           check=True)
        # as on the GPU machines, no TensorFlow: $SITE is on every Python's path there, so a sitecustomize in it
        # refuses `import tensorflow` in each process the script starts (made after the pieces: with a $SITE,
        # gpu_receive.sh reports the machine's JAX, which is the GPU machine's python3 there)
        (machine / "site").mkdir(parents=True)
        (machine / "site" / "sitecustomize.py").write_text(_NO_TENSORFLOW)
        done = subprocess.run(["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", minutes, "--profile", "ci",
                               "--epochs", "3"], env=env, capture_output=True, text=True, timeout=600)
        log = (machine / "OUT" / "lease.log").read_text()
        assert done.returncode == 0, log[-3000:]
        assert log in done.stdout  # the call's output shows the log
        files = [path for path in (machine / "OUT").rglob("*") if path.is_file()]
        assert len(files) <= 8, files
        return done

    first = lease(1, "0.001", forms_s=0)  # the time limit stops it after its first epoch
    assert "phase restore" not in first.stdout and "phase forms" not in first.stdout
    returned = tmp_path / "machine1" / "OUT" / "state"
    manifest = json.loads((returned / "manifest.json").read_text())
    assert manifest["epoch"] == 1 and not manifest["complete"]
    subprocess.run([sys.executable, "-m", "tinyconv", "state", "keep", str(returned), str(kept), "--run",
                    str(tmp_path / "here" / "ci-lease")], check=True, capture_output=True)

    second = lease(2, "auto", forms_s=120)
    assert "phase restore" in second.stdout and "from epoch 2 of 3" in second.stdout
    # the forms: each measured in the run's own train step (the ci recipe's model, float32 on a CPU), checked
    # against keras, the fastest that agrees chosen and used for training
    choice = json.loads((tmp_path / "machine2" / "runs" / "ci-lease.forms.json").read_text())
    assert choice["profile"] == "ci" and choice["device"].startswith("CPU") and choice["dtype_policy"] == "float32"
    assert set(choice["forms"]) == {"keras", "shifted", "pallas"}
    for name, form in choice["forms"].items():
        assert form["error"] is None and form["agrees"] and form["step_ms"] > 0, (name, form)
        assert form["max_rel_diff"] <= choice["tolerance"] == 1e-3, (name, form)
        assert form["layers_in_form"] == "2/2", (name, form)  # the ci model's 9x9 and 3x3 both took the form
    assert choice["chosen"] == min(choice["forms"], key=lambda name: choice["forms"][name]["step_ms"])
    assert f"chosen depthwise form: {choice['chosen']}" in second.stdout
    assert "blocked: this process runs without TensorFlow" not in second.stdout
    returned = tmp_path / "machine2" / "OUT" / "state"
    manifest = json.loads((returned / "manifest.json").read_text())
    assert manifest["epoch"] == 3 and manifest["complete"]
    subprocess.run([sys.executable, "-m", "tinyconv", "state", "keep", str(returned), str(kept), "--run",
                    str(tmp_path / "here" / "ci-lease")], check=True, capture_output=True)
    assert not kept.exists() and (kept.parent / "metrics.json").is_file()
    assert [row["epoch"] for row in read_history(kept.parent / "history.csv")] == [0, 1, 2]
