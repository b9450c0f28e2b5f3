"""The scripts of a GPU lease (docs/gpu.md): pack_data.py packs the zip's train and val, split_file.sh cuts the
pack into pieces named as gpu_receive.sh keeps them and gpu_train.sh joins them, and the join gives the pack back;
gpu_train.sh, rehearsed as two leases under JAX on CPU (the first killed mid-epoch), continues one run from the
first lease to the second as if it had never stopped. This is the one rehearsal of a lease; tests/test_run_state.py checks the state's pieces.
cpu_lease.sh, a CPU session's turn at the same run between leases, is rehearsed over two sessions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from killing import wait_until  # tests/

ROOT = Path(__file__).resolve().parents[1]


def test_the_scripts_the_docs_run_by_their_path_are_executable_in_git():
    """The docs run these as `scripts/NAME.sh ...`: a file checked in without its executable bit fails on a fresh
    clone with "Permission denied" (cpu_lease.sh did, 2026-12-07), however well its tests pass through `bash`."""
    modes = subprocess.run(["git", "ls-files", "-s", "scripts", "benchmarks"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    wrong = []
    for line in modes:
        mode, path = line.split()[0], line.split("\t")[1]
        shebang = (ROOT / path).read_bytes().startswith(b"#!")
        if path.endswith(".sh") and not shebang:
            wrong.append(f"{path}: no #! line")
        elif shebang and mode != "100755":
            wrong.append(f"{path}: mode {mode}, not executable (git update-index --chmod=+x {path})")
    assert len(modes) > 10 and not wrong, wrong


def test_pieces_travel_and_join_back_to_the_same_pack(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 1_000_003, dtype=np.uint8).tobytes()
    original = tmp_path / "tiny-imagenet-200.tar.xz"
    original.write_bytes(data)
    split = subprocess.run(["bash", str(ROOT / "scripts/split_file.sh"), str(original), str(tmp_path / "pieces"),
                            "300000"], capture_output=True, text=True, check=True)
    assert hashlib.sha256(data).hexdigest() in split.stdout
    pieces = sorted(p.name for p in (tmp_path / "pieces").iterdir())
    assert pieces == ["pack.00", "pack.01", "pack.02", "pack.03"]

    stage = tmp_path / "stage"  # the far side: one gpu_receive.sh call per piece, then gpu_train.sh's join
    env = {**os.environ, "STAGE": str(stage), "SITE": str(tmp_path / "no-site")}
    for name in reversed(pieces):  # arrival order does not matter
        subprocess.run(["bash", str(ROOT / "scripts/gpu_receive.sh"), str(tmp_path / "pieces" / name)],
                       env=env, capture_output=True, text=True, check=True)
    joined = subprocess.run(f'cat "{stage}"/pack.*', shell=True, capture_output=True, check=True).stdout
    assert joined == data
    assert "cat \"$stage\"/pack.*" in (ROOT / "scripts/gpu_train.sh").read_text()  # the join the test repeats
    # here the pieces and wheels live in ignored folders: a device call carries only those its `carry` names
    # (three pieces at once would be 150 MB of a call's 64 MiB)
    ignored = subprocess.run(["git", "check-ignore", "pieces/pack.00", ".whl/keras.whl"], cwd=ROOT,
                             capture_output=True, text=True)
    assert ignored.stdout.split() == ["pieces/pack.00", ".whl/keras.whl"], ignored


def test_a_train_call_on_a_machine_without_the_pieces_is_one_line_and_does_nothing(tmp_path):
    """A second train call that finds a fresh machine (the warm one went back after 30 s idle) has no data: one line
    saying so, exit 1, no data folder, no run."""
    env = {**os.environ, "STAGE": str(tmp_path / "stage"), "DATA": str(tmp_path / "data"),
           "RUNS": str(tmp_path / "runs"), "OUT": str(tmp_path / "OUT"), "SHA256": "0" * 64, "PYTHON": sys.executable,
           "FRESH": "1"}
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", "auto", "--profile", "ci"], env=env,
                          capture_output=True, text=True, timeout=60)
    said = (f"gpu_train.sh: no pieces of the pack in {tmp_path / 'stage'}: this machine received none "
            "(scripts/gpu_receive.sh)")
    # everything the script prints goes to the call's output and $OUT/lease.log, stderr included
    assert done.returncode == 1 and done.stdout.strip().splitlines()[-1] == said, done.stdout
    assert (tmp_path / "OUT" / "lease.log").read_text().strip().splitlines()[-1] == said
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_a_train_call_with_no_state_to_continue_stops_before_the_data_unless_told_to_start_afresh(tmp_path):
    """The kept state moved aside by lease_prepare.sh and not put back: the train call would have trained the run
    from epoch 1 again, and its returned state would have replaced the kept one. It stops at once instead (no
    device time spent on the data), in one line naming the missing manifest and FRESH=1."""
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "pack.00").write_bytes(b"a piece")
    env = {**os.environ, "STAGE": str(tmp_path / "stage"), "DATA": str(tmp_path / "data"),
           "RUNS": str(tmp_path / "runs"), "OUT": str(tmp_path / "OUT"), "SHA256": "0" * 64, "PYTHON": sys.executable,
           "STATE_IN": str(tmp_path / "results" / "state")}
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", "auto", "--profile", "ci"], env=env,
                          capture_output=True, text=True, timeout=60)
    said = (f"gpu_train.sh: no state to continue ({tmp_path / 'results' / 'state' / 'manifest.json'} is missing) and "
            "no run ci-lease on this machine; carry the kept state (lease_prepare.sh prints how), or, on the run's "
            "first lease only, set FRESH=1")
    assert done.returncode == 1 and done.stdout.strip().splitlines() == [said], done.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "stage" / "tiny-imagenet-200.tar.xz").exists()  # the pieces were not even joined


def test_a_train_call_on_a_machine_that_lacks_the_wheels_or_a_piece_says_which_in_one_line(tmp_path):
    """The machine went back between calls and a call landed on a fresh one: without the wheels (call 1) the train
    call names them, without all the pieces it names the pieces it has; one line each, before any data or run."""
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "pack.01").write_bytes(b"the second piece alone")
    no_keras = tmp_path / "python-without-keras"
    no_keras.write_text(f'#!/usr/bin/env bash\ncase "$2" in *"find_spec(\'keras\')"*) exit 1;; esac\nexec "{sys.executable}" "$@"\n')
    no_keras.chmod(0o755)
    env = {**os.environ, "STAGE": str(tmp_path / "stage"), "DATA": str(tmp_path / "data"), "SITE": str(tmp_path / "site"),
           "RUNS": str(tmp_path / "runs"), "OUT": str(tmp_path / "OUT"), "SHA256": "0" * 64, "FRESH": "1"}
    script = ["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", "auto", "--profile", "ci"]
    done = subprocess.run(script, env={**env, "PYTHON": str(no_keras)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout.strip().splitlines() == [
        f"gpu_train.sh: no keras in {tmp_path / 'site'}: this machine did not receive the wheels (call 1: "
        "scripts/gpu_receive.sh PIECE .whl); it is not the machine the pieces went to"], done.stdout
    done = subprocess.run(script, env={**env, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout.strip().splitlines()[1:] == [
        f"gpu_train.sh: the pieces in {tmp_path / 'stage'} (pack.01 ) do not join into the pack {'0' * 64}: one is "
        "missing or damaged; send the missing piece calls again"], done.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()
    assert sorted(path.name for path in (tmp_path / "stage").iterdir()) == ["pack.01"]  # the failed join removed


# the two ways gpu_train.sh extracts the pack (xz's tar where there is an xz, else Python's), as it writes them
_EXTRACTS = {"tar": 'tar -xJf "$stage/tiny-imagenet-200.tar.xz" -C "$data"',
             "python": '"$py" -m tarfile --filter data -e "$stage/tiny-imagenet-200.tar.xz" "$data"'}


def test_the_pack_holds_train_and_val_byte_for_byte_and_prepares_to_the_zips_caches(synthetic_data_dir, tmp_path):
    """scripts/pack_data.py, what a lease carries instead of the zip (docs/gpu.md): every file of the zip but the
    unlabeled test split, byte for byte, whichever of gpu_train.sh's two ways extracts it; `prepare` of its train
    and val gives the very caches the zip's files give. Bad input is one line naming the file, and nothing is
    written."""
    import zipfile

    from synthetic import zip_dataset

    from tinyconv.data.dataset import prepare

    archive = zip_dataset(synthetic_data_dir / "tiny-imagenet-200", tmp_path / "tiny-imagenet-200.zip")
    pack = tmp_path / "pieces" / "tiny-imagenet-200.tar.xz"
    made = subprocess.run([sys.executable, str(ROOT / "scripts/pack_data.py"), str(archive), str(pack)],
                          capture_output=True, text=True, check=True)
    with zipfile.ZipFile(archive) as source:
        want = {info.filename: source.read(info) for info in source.infolist()
                if not info.is_dir() and "/test/" not in info.filename}
    assert len(want) == 5 * (20 + 1) + 6 * 5 + 1 + 2  # per class 20 images and boxes; val; annotations; wnids, words
    assert made.stdout.strip() == (f"{pack}: {len(want)} files, {pack.stat().st_size} bytes, "
                                   f"sha256 {hashlib.sha256(pack.read_bytes()).hexdigest()}")
    assert [path.name for path in pack.parent.iterdir()] == [pack.name]  # no partial file left
    script = (ROOT / "scripts/gpu_train.sh").read_text()
    for way, command in _EXTRACTS.items():
        assert command in script
        data = tmp_path / way
        stage = tmp_path / "pieces"
        subprocess.run(["bash", "-c", f'mkdir -p "$data" && {command}'], env={**os.environ, "stage": str(stage), "data": str(data),
                                                     "py": sys.executable}, check=True)
        got = {path.relative_to(data).as_posix(): path.read_bytes() for path in data.rglob("*") if path.is_file()}
        assert got == want, way
    prepare(tmp_path / "tar", splits=("train", "val"), progress=False)
    original = tmp_path / "original"
    with zipfile.ZipFile(archive) as source:
        source.extractall(original)
    prepare(original, splits=("train", "val"), progress=False)
    for name in ("train_images.npy", "train_labels.npy", "train_files.txt", "val_images.npy", "val_labels.npy"):
        assert (tmp_path / "tar" / "cache" / name).read_bytes() == (original / "cache" / name).read_bytes(), name

    # bad input: one line naming the file, exit 1, nothing written
    out = tmp_path / "bad" / "pack.tar.xz"
    for bad, problem in ((tmp_path / "tar" / "tiny-imagenet-200" / "wnids.txt", "not a readable zip"),
                         (tmp_path / "missing.zip", "not a readable zip")):
        refused = subprocess.run([sys.executable, str(ROOT / "scripts/pack_data.py"), str(bad), str(out)],
                                 capture_output=True, text=True)
        assert refused.returncode == 1 and refused.stderr.startswith(f"pack_data: {bad}: {problem}"), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as other:
        other.writestr("tiny-imagenet-200/wnids.txt", "n0\n")
        other.writestr("tiny-imagenet-200/../escape.txt", "x")
    refused = subprocess.run([sys.executable, str(ROOT / "scripts/pack_data.py"), str(foreign), str(out)],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.strip() == (
        f"pack_data: {foreign}: 'tiny-imagenet-200/../escape.txt' is not under tiny-imagenet-200/ (not the official "
        "zip?)")
    assert not (tmp_path / "bad").exists()


def test_the_offline_bundle_holds_the_wheels_the_gpu_machine_lacks_and_they_install_for_its_python(tmp_path):
    """scripts/offline_bundle.sh, the first step of a lease's preparation (docs/gpu.md): keras as pyproject.toml pins
    it, namex, optree and simplejpeg for CPython 3.12 on x86_64, optree's typing_extensions, and tinyconv's own wheel with its
    package data; gpu_receive.sh installs them for the GPU machine's Python, typing_extensions only where that
    Python lacks it (the GPU machines have it beside PyTorch; a Python 3.12 with JAX alone does not, and there keras
    failed to import: "you need to have `optree` installed"). (The bundle once failed at tinyconv's wheel: the
    venv's old setuptools could not read pyproject.toml's SPDX license under --no-build-isolation.)"""
    import keras

    out = tmp_path / "whl"
    done = subprocess.run(["bash", str(ROOT / "scripts/offline_bundle.sh"), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    names = sorted(path.name for path in out.iterdir())
    assert [name.split("-")[0] for name in names] == [
        "keras", "namex", "optree", "simplejpeg", "tinyconv", "typing_extensions"], names
    assert names[0] == f"keras-{keras.__version__}-py3-none-any.whl"
    for compiled in (names[2], names[3]):  # optree, simplejpeg
        assert "-cp312-cp312-manylinux" in compiled and compiled.endswith("x86_64.whl"), compiled
    assert sum(path.stat().st_size for path in out.iterdir()) < 8 * 2**20  # it travels with call 1 (64 MiB)

    # gpu_receive.sh's install, as the GPU machine's python3 runs it: a stand-in python3 whose pip installs for
    # CPython 3.12 on x86_64, and which has typing_extensions or not
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(_GPU_PYTHON.format(python=sys.executable))
    (bin_dir / "python3").chmod(0o755)
    (tmp_path / "piece").write_bytes(b"a piece")
    for has_typing in (True, False):
        site = tmp_path / f"site-{has_typing}"
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STAGE": str(tmp_path / "stage"),
               "SITE": str(site), "HAS_TYPING": "0" if has_typing else "1"}
        subprocess.run(["bash", str(ROOT / "scripts/gpu_receive.sh"), str(tmp_path / "piece"), str(out)], env=env,
                       check=True, capture_output=True, text=True, timeout=300)
        assert (site / "keras" / "__init__.py").is_file() and (site / "optree").is_dir()
        assert (site / "simplejpeg").is_dir()  # tinyconv prepare decodes the pack's JPEGs with it
        assert (site / "tinyconv" / "training" / "reference_curve.csv").is_file()
        assert len(list((site / "tinyconv" / "deploy" / "check_images").glob("*.png"))) == 12
        # the machine's own typing_extensions is not shadowed; where there is none, the bundle's is installed
        assert (site / "typing_extensions.py").is_file() != has_typing


# A stand-in for the GPU machine's python3 in gpu_receive.sh: pip installs for CPython 3.12 on x86_64;
# `import typing_extensions` succeeds or not by $HAS_TYPING (0: it does); the other -c checks pass.
_GPU_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -c ]; then case "$2" in *typing_extensions*) exit "$HAS_TYPING" ;; *) exit 0 ;; esac; fi
if [ "$1 $2 $3" = "-m pip install" ]; then
    shift 3
    exec "{python}" -m pip install --python-version 3.12 --implementation cp --only-binary=:all: \\
        --platform manylinux_2_28_x86_64 "$@"
fi
exec "{python}" "$@"
"""


def test_lease_prepare_readies_a_lease_and_refuses_a_call_over_the_limit_before_any_device_time(synthetic_data_dir,
                                                                                                    tmp_path):
    """scripts/lease_prepare.sh on a copy of this checkout: wheels, the pack cut into the fewest pieces whose calls
    fit, the kept state and models/ moved aside, every call's load counted as the device tool counts it (tracked and
    untracked-unignored files, plus its carry), and the calls printed in order with the pack's sha256; a call over
    the limit is one line each and exit 1."""
    import re
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
    aside = tmp_path / "aside"
    env = {**os.environ, "PYTHON": sys.executable, "ZIP": str(archive), "ASIDE": str(aside), "TRAIN_FLAGS": "--profile ci"}
    models = sorted(path.name for path in (repo / "models").iterdir())
    (repo / "docs" / "figures" / "ci-lease.png").write_bytes(b"the run's figure")  # redrawn after the lease
    (repo / "results" / "ci-lease-h100").mkdir()  # another run of the name, drawn beside it
    (repo / "results" / "ci-lease-h100" / "history.csv").write_text("epoch,loss\n0,4.5\n")

    def run(**extra) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "scripts/lease_prepare.sh", "ci-lease"], cwd=repo, env={**env, **extra},
                              capture_output=True, text=True, timeout=300)

    def planned(stdout: str) -> list[tuple[str, int]]:
        """(carry, bytes) of each call printed."""
        return [(found[1], int(found[2])) for found in re.finditer(r"call \d+  carry (.+?)  \((\d+) bytes\)", stdout)]

    def put_back() -> None:
        (repo / "pieces" / "state").rename(state)
        (aside / "models").rename(repo / "models")
        aside.rmdir()

    # at the default limit the small synthetic pack is one piece, riding with the wheels
    done = run()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    pack = repo / "pieces" / "tiny-imagenet-200.tar.xz"
    sha = hashlib.sha256(pack.read_bytes()).hexdigest()
    assert f"SHA256={sha} " in done.stdout
    assert (repo / "pieces" / ".zip-sha256").read_text().strip() == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert len(list((repo / ".whl").glob("*.whl"))) == 6 and "already holds the wheels" not in done.stdout
    assert sorted(path.name for path in (repo / "pieces").glob("pack.*")) == ["pack.00"]
    calls = planned(done.stdout)
    assert [carry for carry, _ in calls] == ['[".whl", "pieces/pack.00"]', '["pieces/state"]']
    # set aside: the state into pieces/state (ignored by git), which the train call carries, so nothing is put back
    # by hand before it; models/ out of the tree, back after the lease
    assert not state.exists() and (repo / "pieces" / "state" / "manifest.json").is_file()
    assert sorted(path.name for path in (aside / "models").iterdir()) == models and not (repo / "models").exists()
    assert "moved results/ci-lease/state (epoch 3) to pieces/state, the train call's carry" in done.stdout
    lines = done.stdout.splitlines()
    last = next(i for i, line in enumerate(lines) if line.strip().startswith("call 2 "))
    assert lines[last].strip().endswith("bytes); timeout_s = min(600, budget_left_s of call 1's reply)")
    assert lines[last + 1].strip() == (f"CALL_S=<min(570, budget_left_s - 15)> STATE_IN=pieces/state OUT=$OUT "
                                       f"SHA256={sha} scripts/gpu_train.sh ci-lease auto --profile ci")
    # and a second train call with what the first leaves of the lease, on the machine still warm
    assert lines[last + 2].strip() == ("call 3  carry none, at once if the reply of call 2 shows lease.budget_left_s >= "
                                       "90 (else give_back); timeout_s = min(600, budget_left_s)")
    assert lines[last + 3].strip() == (f"CALL_S=<min(570, budget_left_s - 15)> STATE_IN=pieces/state OUT=$OUT "
                                       f"SHA256={sha} scripts/gpu_train.sh ci-lease auto --profile ci")
    assert lines[last + 4].strip() == f"then: mv {aside / 'models'} models && rmdir {aside}"
    assert lines[last + 5].strip() == ("then, for each train call in turn: .venv/bin/tinyconv state keep "
                                       "<files_at>/state results/ci-lease/state --run runs/ci-lease")
    assert lines[last + 6].strip() == ("(no train call's state kept, e.g. the lease ended before call 2: "
                                       "mv pieces/state results/ci-lease/state instead)")
    assert lines[last + 7].strip() == ("then: .venv/bin/python scripts/plot_reference_runs.py docs/figures/ci-lease.png "
                                       "results/ci-lease results/ci-lease-h100 (commit it with the run)")
    # each call's bytes as the device tool counts them: the tree without what was set aside, plus its carry
    wheels = sum(path.stat().st_size for path in (repo / ".whl").iterdir())
    tree = subprocess.run("{ git ls-files; git ls-files --others --exclude-standard; } | sort -u", shell=True,
                          cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    base = sum((repo / name).stat().st_size for name in tree if (repo / name).is_file())
    kept = sum(path.stat().st_size for path in (repo / "pieces" / "state").iterdir())
    assert calls == [('[".whl", "pieces/pack.00"]', base + wheels + pack.stat().st_size),
                     ('["pieces/state"]', base + kept)]

    # a limit that leaves room for a third of the pack beside the wheels: three pieces, the fewest that fit
    put_back()
    limit = base + wheels + pack.stat().st_size // 3 + 10
    three = run(LIMIT_BYTES=str(limit))
    assert three.returncode == 0, three.stdout[-2000:] + three.stderr[-3000:]
    assert "pieces/ already holds the pack of " in three.stdout and "already holds the wheels" in three.stdout
    pieces = sorted(path.name for path in (repo / "pieces").glob("pack.*"))
    assert pieces == ["pack.00", "pack.01", "pack.02"]
    calls = planned(three.stdout)
    assert len(calls) == 4 and all(load <= limit for _, load in calls) and calls[-1][0] == '["pieces/state"]'
    shortest = min(pieces, key=lambda name: (repo / "pieces" / name).stat().st_size)
    assert calls[0][0] == f'[".whl", "pieces/{shortest}"]'  # the wheels ride with the short piece
    assert b"".join((repo / "pieces" / name).read_bytes() for name in pieces) == pack.read_bytes()
    # a piece lost or damaged since: cut again, not carried as it is
    (repo / "pieces" / "pack.01").write_bytes(b"damaged")
    put_back()
    again = run(LIMIT_BYTES=str(limit))
    assert again.returncode == 0 and "pieces/ already holds the pack of " in again.stdout
    assert b"".join((repo / "pieces" / name).read_bytes() for name in pieces) == pack.read_bytes()

    # with a smaller limit every call is refused, one line each, before anything is moved; and a folder set aside
    # earlier is never overwritten
    put_back()
    over = run(LIMIT_BYTES="100000", PIECE_BYTES="200000")
    refused = over.stderr.strip().splitlines()
    pieces = list((repo / "pieces").glob("pack.*"))
    assert over.returncode == 1 and len(refused) == len(pieces) + 1, over.stderr
    assert all(line.startswith("lease_prepare: a call would carry ") for line in refused)
    assert "4. aside" not in over.stdout and (state / "manifest.json").is_file() and (repo / "models").is_dir()
    none = run(LIMIT_BYTES=str(base))
    assert none.returncode == 1 and none.stderr.strip() == (
        f"lease_prepare: the repository ({base} bytes) and .whl/ ({wheels}) leave no room for data in a call of "
        f"{base} bytes")
    aside.mkdir()
    with open(repo / "tinyconv" / "errors.py", "a") as changed:  # the code changed: its wheels are built again
        changed.write("# changed\n")
    kept = run()
    assert kept.returncode == 1 and kept.stderr.strip() == (
        f"lease_prepare: {aside} exists (an earlier lease's, never moved back?): move it back or away first; "
        "nothing moved")
    assert (state / "manifest.json").is_file() and (repo / "models").is_dir()
    assert "already holds the wheels" not in kept.stdout
    # a run whose files are kept but not its state: refused (a lost state, a complete run), nothing moved; and the
    # run's first lease (nothing of it kept): its train call says to start the run, and only that one
    aside.rmdir()
    shutil.rmtree(state)
    (state.parent / "config.json").write_text("{}")
    lost = run()
    assert lost.returncode == 1 and lost.stderr.strip() == (
        "lease_prepare: results/ci-lease/ holds a run but results/ci-lease/state is missing: "
        "git checkout -- results/ci-lease/state; nothing moved")
    (state.parent / "metrics.json").write_text("{}")
    assert run().stderr.strip() == "lease_prepare: results/ci-lease/ holds a complete run (metrics.json); nothing to train"
    shutil.rmtree(state.parent)
    first = run()
    assert first.returncode == 0 and "no kept state in results/ci-lease/state: the run starts fresh" in first.stdout
    assert f"FRESH=1 OUT=$OUT SHA256={sha} scripts/gpu_train.sh ci-lease auto --profile ci" in first.stdout
    assert planned(first.stdout)[-1][0] == "none" and "mv pieces/state" not in first.stdout


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
    """The form a lease chose, as its lease.log says (the next lease reads it from the run's sessions.jsonl)."""
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
    returned in $OUT/state (epoch 1) is made the kept state with `tinyconv state keep`; the second lease restores that
    state on a fresh machine of the same kind, takes the first lease's form from the run's sessions.jsonl, is killed
    in epoch 3, and its second train call, on the same machine (told SYNC_S, which it skips), continues the run there
    and finishes it. Its history equals an uninterrupted
    run's with the same form to within 1e-6 (relative; measured: bit for bit on JAX CPU, the tolerance only absorbs
    another XLA CPU thread schedule). Each $OUT holds few enough files to come back whole (at most 8), and no
    process of it may import TensorFlow, which the GPU machines lack."""
    from killing import kill_when
    from synthetic import zip_dataset  # tests/ (conftest puts it on sys.path)

    from tinyconv.fileio import read_model_metadata
    from tinyconv.training.history import read_history

    archive = zip_dataset(synthetic_data_dir / "tiny-imagenet-200", tmp_path / "tiny-imagenet-200.zip")
    pack = tmp_path / "tiny-imagenet-200.tar.xz"  # what a lease carries: train and val of the zip (no test split)
    subprocess.run([sys.executable, str(ROOT / "scripts/pack_data.py"), str(archive), str(pack)], check=True,
                   capture_output=True)
    sha = hashlib.sha256(pack.read_bytes()).hexdigest()
    subprocess.run(["bash", str(ROOT / "scripts/split_file.sh"), str(pack), str(tmp_path / "pieces"),
                    str(pack.stat().st_size // 3 + 1)], capture_output=True, text=True, check=True)
    assert len(list((tmp_path / "pieces").iterdir())) == 3
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
                        SLEEPY_HANG_FILE=str(hung), FRESH="1")  # the run's first lease: nothing kept yet
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
    assert (tmp_path / "machine1" / "runs" / "ci-lease.form").read_text() == f"{form}\n"  # for a later call there
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

    # lease 2, a fresh machine of the same kind: its train call restores the state, takes the form lease 1 chose
    # from the run's sessions.jsonl (the same device), and is killed in epoch 3, once it has returned epoch 2
    hung = tmp_path / "hung2"
    second = machine_env(2, PYTHON=str(sleepy), SLEEPY_HANG_EPOCH="3", SLEEPY_HANG_FILE=str(hung))
    receive(second)
    with open(tmp_path / "call2.out", "w") as shown:
        call = subprocess.Popen(["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", "auto", *train_flags],
                                env=second, stdout=shown, stderr=subprocess.STDOUT, start_new_session=True)
    packed = tmp_path / "machine2" / "OUT" / "state" / "manifest.json"
    kill_when(call, lambda: hung.exists() and packed.exists() and json.loads(packed.read_text())["epoch"] == 2, 300,
              "epoch 3 with epoch 2's state returned", group=True)
    log, _ = returned(second)
    assert "phase restore" in log and "from epoch 2 of 3" in log and "phase forms" not in log
    assert "phase sync" not in log  # off unless asked for
    assert f"depthwise form of the run's newest session on this kind of device: {form}" in log
    # ... and a second train call of the same lease, on the same machine (still warm, as a call issued at once
    # finds it) with a fresh $OUT, goes on from the run there, not from the repository's older state, and finishes
    topup = {**machine_env(2), "OUT": str(tmp_path / "machine2" / "OUT-topup"),  # no form given: it has one
             "SYNC_S": "240"}  # as a hurried copy of the first train call's command would say: skipped
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_train.sh"), "ci-lease", "auto", *train_flags],
                          env=topup, capture_output=True, text=True, timeout=600)
    topup_log, _ = returned(topup)
    assert done.returncode == 0, topup_log[-3000:]
    assert topup_log in done.stdout  # the call's output shows the log
    assert "was extracted and prepared by an earlier call on this machine" in topup_log
    assert "continuing the run an earlier call trained on this machine" in topup_log
    assert f"depthwise form of an earlier call on this machine: {form}" in topup_log and "phase forms" not in topup_log
    assert "phase restore" not in topup_log and "from epoch 3 of 3" in topup_log
    assert "sync: measured by an earlier call on this machine; skipped" in topup_log and "phase sync" not in topup_log
    manifest = json.loads((Path(topup["OUT"]) / "state" / "manifest.json").read_text())
    assert manifest["epoch"] == 3 and manifest["complete"]

    whole_out, _ = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, whole_out[-3000:]
    got = read_history(tmp_path / "machine2" / "runs" / "ci-lease" / "history.csv")
    want = read_history(whole / "history.csv")
    assert [row["epoch"] for row in got] == [row["epoch"] for row in want] == [0, 1, 2]
    for row, expected in zip(got, want):
        for key in ("loss", "top1", "top5", "val_loss", "val_top1", "val_top5", "lr"):
            assert row[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), (row["epoch"], key)

    # back here: each call's state is kept in turn (epoch 2, then the complete run: the run's figures, and the
    # state itself goes)
    for returned_state in (packed.parent, Path(topup["OUT"]) / "state"):
        said = subprocess.run([sys.executable, "-m", "tinyconv", "state", "keep", str(returned_state), str(kept),
                               "--run", str(tmp_path / "here" / "ci-lease")], check=True, capture_output=True, text=True)
    assert not kept.exists() and (kept.parent / "metrics.json").is_file()
    # the final model, which existed only on the GPU machine, is here with its class list, ready for models/
    final = tmp_path / "here" / "ci-lease" / "model.keras"
    assert said.stdout.splitlines()[-1] == f"its final model, with its class list: {final}"
    assert len(read_model_metadata(final)["wnids"]) == 4
    assert [row["epoch"] for row in read_history(kept.parent / "history.csv")] == [0, 1, 2]
    # one line per training session, each with the epoch it started from, its device and its form
    sessions = [json.loads(line) for line in (kept.parent / "sessions.jsonl").read_text().splitlines()]
    assert [session["from_epoch"] for session in sessions] == [0, 1, 2]
    assert {session["depthwise_form"] for session in sessions} == {form}
    assert all(session["backend"] == "jax" and session["device"].startswith("CPU") for session in sessions)
    # a log per call, the killed ones' too, each naming the software it ran
    logs = sorted((kept.parent / "leases").iterdir())
    assert [path.name for path in logs] == ["lease-01.log", "lease-02.log", "lease-03.log"]
    assert all("versions: python" in path.read_text() for path in logs)
    assert "phase forms" in logs[0].read_text() and "phase restore" in logs[1].read_text()
    assert "continuing the run an earlier call trained" in logs[2].read_text()


@pytest.mark.kill
def test_cpu_sessions_advance_the_kept_run_between_leases(synthetic_data_dir, tmp_path):
    """scripts/cpu_lease.sh: a CPU session trains the kept run on in the background and keeps what it trained as a
    lease would. It refuses to start a run afresh unless told, and a run whose state is missing; the first session
    is stopped mid-epoch 2 and keeps epoch 1 with its log; the next, on a clean checkout (no runs/), restores that
    state, continues from epoch 2 and, the run complete, leaves its config, history and metrics without the state."""
    from tinyconv.fileio import read_model_metadata
    from tinyconv.training.history import read_history

    sleepy = tmp_path / "sleepy-tinyconv"  # `tinyconv`, stopping for good in epoch 2 (tests/sleepy_cli.py)
    sleepy.write_text(  # and, told STALE, `notebooks --check` as it answers once a notebook shows an older state
        '#!/bin/sh\nif [ "$1 $2" = "notebooks --check" ] && [ -n "$STALE" ]; then echo "$STALE"; exit 1; fi\n'
        f'exec "{sys.executable}" "{ROOT / "tests" / "sleepy_cli.py"}" "$@"\n')
    sleepy.chmod(0o755)
    kept = tmp_path / "results" / "ci-cpu" / "state"
    hung = tmp_path / "hung"
    figure = tmp_path / "figures" / "ci-cpu.png"  # the run's figure in the docs, redrawn by each stop once it exists
    env = {**os.environ, "RUNS": str(tmp_path / "runs"), "KEPT": str(kept), "TINYCONV": str(sleepy),
           "SLEEPY_HANG_EPOCH": "2", "SLEEPY_HANG_FILE": str(hung), "FIGURE": str(figure)}
    flags = ["--profile", "ci", "--epochs", "3", "--data-dir", str(synthetic_data_dir)]

    def lease(action, *args, **extra):
        return subprocess.run(["bash", str(ROOT / "scripts/cpu_lease.sh"), "ci-cpu", action, *args],
                              env={**env, **extra}, capture_output=True, text=True, timeout=300)

    refused = lease("start", *flags)
    assert refused.returncode == 1 and refused.stderr.strip() == (
        f"cpu_lease: no state of ci-cpu to continue ({kept}/manifest.json); FRESH=1 starts the run")
    assert not (tmp_path / "runs").exists()

    started = lease("start", *flags, FRESH="1")
    assert started.returncode == 0, started.stderr
    wait_until(hung.exists, 240, "epoch 2 under way")
    with open(tmp_path / "runs" / "ci-cpu.lease.log", "a") as log:  # as EpochProgress writes it minutes into an epoch
        log.write("epoch 2/3: step 1/2 (50 %), 3.0 steps/min; its steps end in ~20 s (01:00 UTC), validation after\n")
    assert lease("status").stdout.splitlines()[:2] == [
        f"training (pid {(tmp_path / 'runs' / 'ci-cpu.pid').read_text().strip()})",
        "epoch 2/3: step 1/2 (50 %), 3.0 steps/min; its steps end in ~20 s (01:00 UTC), validation after"]
    with open(tmp_path / "runs" / "ci-cpu.lease.log", "a") as log:  # the next epoch begun: the line is the last one's
        log.write("2/2 - 1s - loss: 1.3\nEpoch 3/3\n")
    status = lease("status").stdout.splitlines()  # (the log's last lines still end it)
    assert status[0].startswith("training (pid ") and not status[1].startswith("epoch 2/3: step ")
    trainer = int((tmp_path / "runs" / "ci-cpu.pid").read_text())
    assert os.getpriority(os.PRIO_PROCESS, trainer) == 19
    group = Path(f"/proc/{trainer}/autogroup")  # where the kernel groups by session: the group's nice value too
    assert not group.exists() or group.read_text().split()[-2:] == ["nice", "19"]
    again = lease("start", *flags)
    assert again.returncode == 1 and "is training already" in again.stderr
    stale = "04_train.ipynb: file results/ci-cpu/history.csv it read has changed"
    stopped = lease("stop", STALE=stale)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not figure.exists()  # none drawn where the docs have none
    assert stopped.stdout.splitlines()[-3:] == [
        f"cpu_lease: kept; now: git add -A {kept.parent} && git commit -m \"ci-cpu: epoch N of the run (CPU session of "
        f"{stopped.stdout.split('CPU session of ')[1][:10]})\"",
        "cpu_lease: then make the notebooks that show the run again, and commit notebooks/ (tinyconv notebooks --check):",
        stale]
    status = lease("status").stdout
    assert "not training" in status and "epochs done: 1; the last took " in status and "val top-1 " in status
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["epoch"] == 1  # its best.keras is epoch 1's weights, the checkpoint's: left out, made on resume
    assert "best.keras" not in [entry["path"] for entry in manifest["files"]]
    assert [row["epoch"] for row in read_history(kept.parent / "history.csv")] == [0]
    log = (kept.parent / "leases" / "lease-01.log").read_text()
    assert log.startswith("cpu_lease ci-cpu, ") and "tensorflow" in log and "Epoch 2/3" in log

    # a missing state is not a reason to start over
    aside = tmp_path / "aside"
    kept.rename(aside)
    lost = lease("start", *flags, RUNS=str(tmp_path / "runs2"))
    assert lost.returncode == 1 and "holds the run but not its state" in lost.stderr
    aside.rename(kept)

    # the next session: a clean checkout, no runs/; the kept state is restored and the run finishes
    env["RUNS"] = str(tmp_path / "runs2")
    del env["SLEEPY_HANG_EPOCH"]
    assert lease("start", *flags).returncode == 0
    wait_until(lambda: (tmp_path / "runs2" / "ci-cpu" / "metrics.json").exists(), 240, "the run complete")
    wait_until(lambda: "not training" in lease("status").stdout, 60, "the trainer gone")
    # a second start in the session: the run, further along than the kept state, is continued with its log
    assert lease("start", *flags).returncode == 0
    wait_until(lambda: "not training" in lease("status").stdout, 120, "the second trainer gone")
    (tmp_path / "results" / "ci-cpu-h100").mkdir()  # another run of the name, a GPU lease's, drawn beside it
    shutil.copy(kept.parent / "history.csv", tmp_path / "results" / "ci-cpu-h100" / "history.csv")
    figure.parent.mkdir()
    figure.write_bytes(b"the figure of the session before")
    last = lease("stop")
    assert last.returncode == 0, last.stdout + last.stderr
    assert f"cpu_lease: redrew {figure}" in last.stdout
    assert f"git add -A {kept.parent} {figure} && git commit" in last.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not kept.exists() and (kept.parent / "metrics.json").is_file()
    history = read_history(kept.parent / "history.csv")
    assert [row["epoch"] for row in history] == [0, 1, 2]
    best_row = max(history, key=lambda row: row["val_top1"])  # the best of all three epochs, the first included
    assert read_model_metadata(tmp_path / "runs2" / "ci-cpu" / "best.keras")["epoch"] == best_row["epoch"] + 1
    sessions = [json.loads(line) for line in (kept.parent / "sessions.jsonl").read_text().splitlines()]
    assert [session["from_epoch"] for session in sessions] == [0, 1]
    assert sorted(path.name for path in (kept.parent / "leases").iterdir()) == ["lease-01.log", "lease-02.log"]
    second = (kept.parent / "leases" / "lease-02.log").read_text()  # both starts of the session, in order
    assert second.count("cpu_lease ci-cpu, ") == 2 and second.index("Epoch 3/3") < second.rindex("cpu_lease ci-cpu, ")
    assert "already holds this run, complete" in second.split("cpu_lease ci-cpu, ")[-1]
