"""The run's state between GPU leases (tinyconv/training/run_state.py, `tinyconv state`): pack a run folder into
checked pieces, refuse every damaged or foreign set in one line with nothing written, restore byte for byte. The
rehearsal of a whole lease (a JAX run killed mid-epoch, its state restored on a fresh machine and resumed there, with
the same history as an uninterrupted run) is tests/test_gpu_scripts.py's, through the lease script itself."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyconv.errors import TinyconvError
from tinyconv.training import run_state
from tinyconv.training.run_state import keep_state, pack_state, restore_state

REPO = Path(__file__).resolve().parents[1]
PIECE = 64 * 1024  # small pieces, so even the ci run's state is split


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _say_best_epoch(best: Path, epoch: int) -> None:
    """Make a best.keras say it holds epoch `epoch` (its tinyconv.json, as BestCheckpoint writes it)."""
    import zipfile

    from tinyconv.fileio import MODEL_METADATA_NAME, read_model_metadata

    metadata = {**(read_model_metadata(best) or {}), "epoch": epoch}
    with zipfile.ZipFile(best) as archive:
        entries = {name: archive.read(name) for name in archive.namelist() if name != MODEL_METADATA_NAME}
    with zipfile.ZipFile(best, "w") as archive:
        for name, data in {**entries, MODEL_METADATA_NAME: json.dumps(metadata).encode()}.items():
            archive.writestr(name, data)


@pytest.fixture
def run_copy(ci_run, tmp_path) -> Path:
    """A copy of the shared ci run (complete) with a backup/ as an unfinished run has it: metrics.json and
    model.keras gone, two checkpoints and the metadata naming both, and best.keras from epoch 1 (the best epoch is
    not the checkpoint's: the state holds it)."""
    run_dir = tmp_path / "runs" / "ci"
    shutil.copytree(ci_run[0], run_dir)
    _say_best_epoch(run_dir / "best.keras", 1)
    (run_dir / "metrics.json").unlink()
    (run_dir / "model.keras").unlink()
    backup = run_dir / "backup"
    backup.mkdir()
    old, new = backup / "epoch-0001.weights.h5", backup / "epoch-0002.weights.h5"
    old.write_bytes(os.urandom(150_000))
    new.write_bytes(os.urandom(200_000))
    previous = {"epoch": 1, "weights": old.name, "sha256": _sha(old)}
    (backup / "training_metadata.json").write_text(
        json.dumps({"epoch": 2, "weights": new.name, "sha256": _sha(new), "previous": previous}))
    return run_dir


def test_pack_and_restore_give_the_same_files(run_copy, tmp_path):
    out = tmp_path / "out"
    manifest = pack_state(run_copy, out, piece_bytes=PIECE)
    assert manifest["epoch"] == 2 and manifest["run"] == "ci" and not manifest["complete"]
    pieces = sorted(out.glob("state-*"))
    assert len(pieces) >= 3 and all(path.stat().st_size <= PIECE for path in pieces)
    assert all(path.name.startswith("state-e0002-") for path in pieces)
    assert sorted(path.name for path in out.iterdir()) == sorted([p["name"] for p in manifest["pieces"]] + ["manifest.json"])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for piece in manifest["pieces"]:
        assert _sha(out / piece["name"]) == piece["sha256"] and (out / piece["name"]).stat().st_size == piece["bytes"]
    paths = [entry["path"] for entry in manifest["files"]]
    assert paths == ["backup/epoch-0002.weights.h5", "backup/training_metadata.json", "best.keras", "config.json",
                     "history.csv", "sessions.jsonl"]  # only the newest checkpoint
    meta = json.loads((run_copy / "backup/training_metadata.json").read_text())

    restored = tmp_path / "fresh" / "ci"
    assert restore_state(out, restored)["epoch"] == 2
    before, after = _tree(run_copy), _tree(restored)
    assert set(after) == set(paths)
    for name in paths:
        if name != "backup/training_metadata.json":
            assert after[name] == before[name], name
    assert json.loads(after["backup/training_metadata.json"]) == {**{k: meta[k] for k in ("epoch", "weights", "sha256")},
                                                                   "previous": None}
    assert not list(restored.parent.glob(".*"))  # no temporary folder left

    # the next epoch replaces the pieces; packing the same state again gives the same names
    again = pack_state(run_copy, out, piece_bytes=PIECE)
    assert again == manifest and sorted(out.glob("state-*")) == pieces
    # a finished run: its metrics.json and model.keras travel, no backup
    shutil.rmtree(run_copy / "backup")
    shutil.copy(tmp_path / "fresh/ci/best.keras", run_copy / "model.keras")
    (run_copy / "metrics.json").write_text('{"epochs": 2}')
    done = pack_state(run_copy, out, piece_bytes=PIECE)
    assert done["complete"] and done["epoch"] == 2
    assert {p.name for p in out.glob("state-*")} == {p["name"] for p in done["pieces"]}  # the older set is gone
    restore_state(out, restored)  # the same run, same epoch, further along: replaced
    assert (restored / "metrics.json").exists() and not (restored / "backup").exists()
    with pytest.raises(TinyconvError, match="further than"):
        restore_state_older(run_copy, tmp_path, restored)


def restore_state_older(run_copy: Path, tmp_path: Path, restored: Path):
    """A state of epoch 1 restored over the complete run: refused."""
    older = tmp_path / "older"
    shutil.copytree(run_copy, older)
    (older / "metrics.json").unlink()
    (older / "backup").mkdir()
    weights = older / "backup" / "epoch-0001.weights.h5"
    weights.write_bytes(b"w" * 1000)
    (older / "backup/training_metadata.json").write_text(json.dumps({"epoch": 1, "weights": weights.name,
                                                                      "sha256": _sha(weights)}))
    pack_state(older, tmp_path / "older-out")
    restore_state(tmp_path / "older-out", restored)


def _damage_cases():
    def truncate(out, manifest):
        path = out / manifest["pieces"][1]["name"]
        path.write_bytes(path.read_bytes()[:-10])
        return path.name

    def flip(out, manifest):
        path = out / manifest["pieces"][0]["name"]
        data = bytearray(path.read_bytes())
        data[1000] ^= 1
        path.write_bytes(bytes(data))
        return path.name

    def missing(out, manifest):
        (out / manifest["pieces"][-1]["name"]).unlink()
        return manifest["pieces"][-1]["name"]

    def foreign(out, manifest):  # a piece of the same name from another epoch or run
        path = out / manifest["pieces"][0]["name"]
        path.write_bytes(os.urandom(path.stat().st_size))
        return path.name

    def bad_manifest(out, manifest):
        (out / "manifest.json").write_text((out / "manifest.json").read_text()[:-20])
        return "manifest.json"

    def manifest_lacks(out, manifest):
        (out / "manifest.json").write_text(json.dumps({**manifest, "pieces": "x"}))
        return "manifest.json"

    def no_manifest(out, manifest):
        (out / "manifest.json").unlink()
        return "manifest.json"

    return [truncate, flip, missing, foreign, bad_manifest, manifest_lacks, no_manifest]


@pytest.mark.parametrize("damage", _damage_cases(), ids=lambda f: f.__name__)
def test_damaged_state_is_refused_in_one_line_with_nothing_written(run_copy, tmp_path, damage):
    out = tmp_path / "out"
    manifest = pack_state(run_copy, out, piece_bytes=PIECE)
    named = damage(out, manifest)
    target = tmp_path / "fresh" / "ci"
    with pytest.raises(TinyconvError) as info:
        restore_state(out, target)
    message = str(info.value)
    assert "\n" not in message and named in message
    assert not (tmp_path / "fresh").exists()


def test_a_different_run_is_refused(run_copy, tmp_path):
    out = tmp_path / "out"
    pack_state(run_copy, out, piece_bytes=PIECE)
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    config = json.loads((other / "config.json").read_text())
    config["train"]["lr"] = config["train"]["lr"] * 2
    (other / "config.json").write_text(json.dumps(config))
    before = _tree(other)
    with pytest.raises(TinyconvError, match="holds a different run") as info:
        restore_state(out, other)
    assert "\n" not in str(info.value) and _tree(other) == before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(TinyconvError, match="holds no config.json"):
        restore_state(out, stranger)
    assert _tree(stranger) == {"notes.txt": b"mine"}


def test_a_best_model_of_the_checkpoints_own_epoch_stays_out_of_the_state(run_copy, tmp_path):
    """best.keras saved by the checkpoint's epoch holds the checkpoint's weights: the state leaves it out (10.9 of
    the seed's 43 MB) and training saves it again when it resumes (tests/test_run_control.py); one of an earlier
    epoch, or of a finished run, travels."""
    _say_best_epoch(run_copy / "best.keras", 2)
    manifest = pack_state(run_copy, tmp_path / "out", piece_bytes=PIECE)
    assert [entry["path"] for entry in manifest["files"]] == [
        "backup/epoch-0002.weights.h5", "backup/training_metadata.json", "config.json", "history.csv", "sessions.jsonl"]
    restored = tmp_path / "fresh" / "ci"
    (restored / "best.keras").parent.mkdir(parents=True)
    shutil.copytree(run_copy, restored, dirs_exist_ok=True)
    (restored / "backup" / "epoch-0002.weights.h5").unlink()
    (restored / "backup" / "training_metadata.json").write_text(json.dumps({"epoch": 1, "weights": "x", "sha256": "y"}))
    restore_state(tmp_path / "out", restored)  # an older best.keras there is the old state's: not kept beside
    assert not (restored / "best.keras").exists()

    shutil.rmtree(run_copy / "backup")  # finished: best.keras travels whatever its epoch
    shutil.copy(run_copy / "best.keras", run_copy / "model.keras")
    (run_copy / "metrics.json").write_text('{"epochs": 2}')
    done = pack_state(run_copy, tmp_path / "done", piece_bytes=PIECE)
    assert "best.keras" in [entry["path"] for entry in done["files"]]


def test_same_run_at_an_older_epoch_is_replaced_and_keeps_its_figures(run_copy, tmp_path):
    out = tmp_path / "out"
    pack_state(run_copy, out, piece_bytes=PIECE)
    older = tmp_path / "older"
    shutil.copytree(run_copy, older)
    shutil.rmtree(older / "backup")
    (older / "figures").mkdir(exist_ok=True)
    (older / "figures" / "mine.png").write_bytes(b"png")
    restore_state(out, older)
    assert json.loads((older / "backup/training_metadata.json").read_text())["epoch"] == 2
    assert (older / "figures" / "mine.png").read_bytes() == b"png"


def test_pack_waits_for_a_checkpoint_being_written(run_copy, tmp_path):
    (run_copy / "backup" / "epoch-0002.weights.h5").write_bytes(b"half")  # not the recorded sha256
    with pytest.raises(TinyconvError, match="does not match its recorded sha256"):
        pack_state(run_copy, tmp_path / "out", attempts=2, wait=0.01)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_cli_state_pack_restore_and_errors(run_copy, tmp_path, capsys):
    from tinyconv.cli import main

    out, target = tmp_path / "out", tmp_path / "fresh"
    assert main(["state", "pack", str(run_copy), str(out)]) == 0
    assert "epoch 2" in capsys.readouterr().out
    assert main(["state", "restore", str(out), str(target)]) == 0
    assert (target / "backup" / "epoch-0002.weights.h5").exists()
    assert main(["state", "restore", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinyconv: error: ") and "manifest.json" in err and "\n" not in err


def test_keep_makes_the_returned_state_the_kept_one_and_removes_it_once_complete(run_copy, tmp_path, capsys):
    """`state keep`: the one fixed place of a run's state between leases (results/NAME/state) takes each lease's
    returned state after checking it, never goes back to an older epoch or another run, and is removed once the
    run is complete, its small files kept beside it."""
    from tinyconv.cli import main

    returned, kept, run = tmp_path / "OUT" / "state", tmp_path / "results" / "ci" / "state", tmp_path / "here" / "ci"
    pack_state(run_copy, returned, piece_bytes=PIECE)
    (tmp_path / "OUT" / "lease.log").write_text("versions: python 3.12\nlease one\n")  # as gpu_train.sh's $OUT
    assert main(["state", "keep", str(returned), str(kept), "--run", str(run)]) == 0
    assert f"kept in {kept} (config and history beside it)" in capsys.readouterr().out
    assert _tree(kept) == _tree(returned)  # the pieces and the manifest, as returned
    assert json.loads((run / "backup/training_metadata.json").read_text())["epoch"] == 2
    # the curve so far and the config, readable without a restore, and the lease's log, filed once
    assert (kept.parent / "history.csv").read_bytes() == (run_copy / "history.csv").read_bytes()
    assert (kept.parent / "config.json").read_bytes() == (run_copy / "config.json").read_bytes()
    assert not (kept.parent / "metrics.json").exists()
    assert main(["state", "keep", str(returned), str(kept), "--run", str(run)]) == 0  # the same lease kept twice
    assert [p.name for p in (kept.parent / "leases").iterdir()] == ["lease-01.log"]
    assert (kept.parent / "leases" / "lease-01.log").read_text() == "versions: python 3.12\nlease one\n"
    capsys.readouterr()

    # an older lease's state must not replace it; a damaged piece and a different run are refused, nothing changed
    older = tmp_path / "older-out"
    shutil.copytree(run_copy, tmp_path / "older")
    meta = json.loads((tmp_path / "older/backup/training_metadata.json").read_text())
    (tmp_path / "older/backup/training_metadata.json").write_text(json.dumps({**meta["previous"], "previous": None}))
    pack_state(tmp_path / "older", older, piece_bytes=PIECE)
    before = _tree(kept)
    with pytest.raises(TinyconvError, match="further than the returned state's epoch 1"):
        keep_state(older, kept, tmp_path / "elsewhere")
    damaged = tmp_path / "damaged"
    shutil.copytree(returned, damaged)
    piece = sorted(damaged.glob("state-*"))[0]
    piece.write_bytes(piece.read_bytes()[:-1] + b"x")
    with pytest.raises(TinyconvError, match="does not match the sha256"):
        keep_state(damaged, kept, tmp_path / "elsewhere")
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    config = json.loads((other / "config.json").read_text())
    config["train"]["lr"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    pack_state(other, tmp_path / "other-out", piece_bytes=PIECE)
    with pytest.raises(TinyconvError, match="state of a different run"):
        keep_state(tmp_path / "other-out", kept, tmp_path / "elsewhere")
    assert _tree(kept) == before and not (tmp_path / "elsewhere").exists()

    # the last lease: the run is complete, the state goes, its small files stay beside where it was
    shutil.rmtree(run_copy / "backup")
    shutil.copy(run_copy / "best.keras", run_copy / "model.keras")
    (run_copy / "metrics.json").write_text('{"epochs": 2}')
    pack_state(run_copy, returned, piece_bytes=PIECE)
    (tmp_path / "OUT" / "lease.log").write_text("versions: python 3.12\nlease two\n")
    assert main(["state", "keep", str(returned), str(kept), "--run", str(run)]) == 0
    assert not kept.exists() and "removed" in capsys.readouterr().out
    assert sorted(p.name for p in kept.parent.iterdir()) == ["config.json", "history.csv", "leases", "metrics.json",
                                                             "sessions.jsonl"]
    assert sorted(p.name for p in (kept.parent / "leases").iterdir()) == ["lease-01.log", "lease-02.log"]
    assert (kept.parent / "metrics.json").read_text() == '{"epochs": 2}'
    assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()


def test_watch_packs_each_epoch_and_once_more_when_the_process_ends(run_copy, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    lines = []
    manifest = run_state.watch_state(run_copy, tmp_path / "out", sleeper.pid, interval=0.1, log=lines.append)
    sleeper.wait()
    assert manifest["epoch"] == 2 and len(lines) == 1


def _at_epoch_one(run_copy: Path, folder: Path) -> Path:
    """A copy of run_copy whose backup is its epoch-1 checkpoint, its history.csv still holding epochs 1 and 2: as a
    kill between epoch 2's history row and epoch 2's backup leaves a run."""
    shutil.copytree(run_copy, folder)
    meta = json.loads((folder / "backup/training_metadata.json").read_text())
    (folder / "backup/training_metadata.json").write_text(json.dumps({**meta["previous"], "previous": None}))
    return folder


def test_pack_cuts_the_history_to_the_epochs_of_its_checkpoint(run_copy, tmp_path):
    behind = _at_epoch_one(run_copy, tmp_path / "behind")
    assert len((behind / "history.csv").read_text().splitlines()) == 3  # header, epochs 1 and 2
    manifest = pack_state(behind, tmp_path / "out", piece_bytes=PIECE)
    assert manifest["epoch"] == 1
    restore_state(tmp_path / "out", tmp_path / "restored")
    lines = (tmp_path / "restored/history.csv").read_text().splitlines()
    assert lines == (behind / "history.csv").read_text().splitlines()[:2]  # the header and epoch 1's row, as written


def test_keep_refuses_a_run_started_afresh_even_with_the_kept_state_moved_aside(run_copy, tmp_path):
    """A lease that found no state to restore trains the run from epoch 1 again; its returned state is the same
    config at a later epoch, but its history is not the kept one's: refused, whether the kept state is in place or
    was moved aside (lease_prepare.sh) and not put back, and nothing changes."""
    kept = tmp_path / "results" / "ci" / "state"
    pack_state(_at_epoch_one(run_copy, tmp_path / "first"), tmp_path / "first-out", piece_bytes=PIECE)
    keep_state(tmp_path / "first-out", kept, tmp_path / "here")
    afresh = tmp_path / "afresh"
    shutil.copytree(run_copy, afresh)
    lines = (afresh / "history.csv").read_text().splitlines()
    cells = lines[1].split(",")
    cells[-1] = repr(float(cells[-1]) * 1.01)  # epoch 1 of another session: its images/s differ
    (afresh / "history.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    pack_state(afresh, tmp_path / "afresh-out", piece_bytes=PIECE)
    before = _tree(kept.parent)
    with pytest.raises(TinyconvError, match=r"afresh-out holds another run's history: its epoch 1 differs from "
                                            r".*state's \(a run started afresh"):
        keep_state(tmp_path / "afresh-out", kept, tmp_path / "elsewhere")
    shutil.move(kept, tmp_path / "aside")  # lease_prepare.sh moved it aside, and it was not put back
    with pytest.raises(TinyconvError, match=r"its epoch 1 differs from .*history.csv's"):
        keep_state(tmp_path / "afresh-out", kept, tmp_path / "elsewhere")
    shutil.move(tmp_path / "aside", kept)
    assert _tree(kept.parent) == before and not (tmp_path / "elsewhere").exists()
    # the run itself, one epoch further: it continues the kept history, and is kept
    pack_state(run_copy, tmp_path / "next-out", piece_bytes=PIECE)
    assert keep_state(tmp_path / "next-out", kept, tmp_path / "here")["epoch"] == 2


def test_pack_never_replaces_another_runs_state_or_a_later_epoch(run_copy, tmp_path, capsys):
    from tinyconv.cli import main

    out = tmp_path / "out"
    pack_state(run_copy, out, piece_bytes=PIECE)
    before = _tree(out)
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    config = json.loads((other / "config.json").read_text())
    config["train"]["lr"] *= 2
    (other / "config.json").write_text(json.dumps(config))
    assert main(["state", "pack", str(other), str(out)]) == 1
    assert capsys.readouterr().err.strip() == (f"tinyconv: error: {out} holds the packed state of another run "
                                               f"({out / 'manifest.json'} names another config.json); pack into "
                                               "another folder; nothing written")
    with pytest.raises(TinyconvError, match="holds this run at epoch 2, further than the run folder's epoch 1"):
        pack_state(_at_epoch_one(run_copy, tmp_path / "behind"), out, piece_bytes=PIECE)
    assert _tree(out) == before


def test_the_known_form_is_the_newest_sessions_on_the_same_kind_of_device(tmp_path):
    """A run that moves between CPU sessions and GPU leases keeps the form a GPU lease measured: only sessions on
    the same kind of device count, the newest of them, and a failed measurement there means measuring again."""
    from tinyconv.training.run_state import known_form

    h100, cpu = "1x NVIDIA H100 80GB HBM3", "CPU (2 cores)"
    sessions = tmp_path / "sessions.jsonl"

    def recorded(*entries) -> str | None:
        sessions.write_text("".join(json.dumps({"device": device, "depthwise_form": form}) + "\n"
                                    for device, form in entries))
        return known_form(sessions, h100)

    assert recorded((h100, "dense"), (cpu, "auto")) == "dense"  # a CPU session since does not hide it
    assert recorded((h100, "dense"), (cpu, "auto"), (h100, "pallas"), (cpu, "auto")) == "pallas"  # the newest
    assert recorded((h100, "dense"), ("1x NVIDIA H200", "shifted")) == "dense"
    assert recorded((cpu, "auto")) is None  # never on this kind of device
    assert recorded((h100, "dense"), (h100, "auto")) is None  # its newest measurement failed: measure again
    assert recorded() is None
    sessions.write_text("{not json\n")
    assert known_form(sessions, h100) is None
    assert known_form(tmp_path / "missing.jsonl", h100) is None


def _session_run(folder: Path, profile: str, classes: int) -> Path:
    """A run's kept files as results/NAME/ holds them: three sessions, the second killed before its first epoch."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"profile": profile, "wnids": [f"n{i}" for i in range(classes)]}))
    header = "epoch,loss,top1,top5,val_loss,val_top1,val_top5,lr,epoch_s,train_s,images_per_s\n"
    rows = [(0, 600.0, 500.0, 20.0), (1, 660.0, 600.0, 10.0), (2, 120.0, 100.0, 100.0)]  # epoch, epoch_s, train_s, img/s
    (folder / "history.csv").write_text(header + "".join(
        f"{e},4.0,0.1,0.3,4.1,{0.1 * (e + 1)},0.3,0.001,{es},{ts},{ips}\n" for e, es, ts, ips in rows))
    sessions = [("2026-12-06T22:35:06Z", 0, "CPU (2 cores)", "tensorflow", "float32"),
                ("2026-12-07T01:00:00Z", 2, "CPU (2 cores)", "tensorflow", "float32"),
                ("2026-12-07T02:00:00Z", 2, "NVIDIA H100 80GB HBM3", "jax", "mixed_bfloat16")]
    (folder / "sessions.jsonl").write_text("".join(
        json.dumps({"started": st, "from_epoch": fe, "device": dev, "backend": be, "dtype_policy": dt}) + "\n"
        for st, fe, dev, be, dt in sessions))
    return folder


def test_session_rows_say_what_each_session_trained_and_how_fast(tmp_path):
    rows = run_state.session_rows(_session_run(tmp_path / "run", "ci", 4))
    assert [row["epochs"] for row in rows] == [(1, 2), None, (3, 3)]
    first, killed, gpu = rows
    assert first["epoch_min"] == pytest.approx(630 / 60) and first["steps_h"] == pytest.approx(1100 / 3600)
    assert first["images_per_s"] == pytest.approx((500 * 20 + 600 * 10) / 1100)  # its images over its steps' time
    assert first["val_top1"] == pytest.approx(0.2) and gpu["val_top1"] == pytest.approx(0.3)
    assert killed["images_per_s"] is None and gpu["backend"] == "jax" and gpu["dtype_policy"] == "mixed_bfloat16"
    table = run_state.session_table(rows, {2: 0.25}).splitlines()
    assert table[2] == ("| 2026-12-06 22:35:06 | CPU (2 cores) | tensorflow, float32 | 1-2 | 10.5 | 0.31 | 14.5 | "
                        "20.00 % (the reference's: 25.00 %) |")
    assert table[3].endswith("| none completed |  |  |  |  |")
    assert table[4].startswith("| 2026-12-07 02:00:00 | NVIDIA H100 80GB HBM3 | jax, mixed_bfloat16 | 3 | 2.0 |")


def test_session_rows_name_a_missing_or_damaged_file(tmp_path):
    run = _session_run(tmp_path / "run", "ci", 4)
    history = (run / "history.csv").read_text()
    (run / "history.csv").write_text(history + "3,4.0,0.1\n")  # a row cut short
    with pytest.raises(TinyconvError, match=r"history\.csv is damaged or unreadable \(line 5: too few cells\)"):
        run_state.session_rows(run)
    (run / "history.csv").unlink()
    with pytest.raises(TinyconvError, match=r"history\.csv is missing: not a run folder"):
        run_state.session_rows(run)
    (run / "history.csv").write_text(history)
    (run / "sessions.jsonl").write_text("{not json\n")
    with pytest.raises(TinyconvError, match=r"sessions\.jsonl is unreadable \(JSONDecodeError"):
        run_state.session_rows(run)
    lines = _session_run(tmp_path / "again", "ci", 4).joinpath("sessions.jsonl").read_text().splitlines()
    for damaged, epoch in [({"started": "x"}, "None"), ([2], "None"), ({"from_epoch": "2"}, "'2'"),
                           ({"from_epoch": True}, "True"), ({"from_epoch": 7}, "7"), ({"from_epoch": -1}, "-1")]:
        (run / "sessions.jsonl").write_text("\n".join([lines[0], json.dumps(damaged), lines[2]]) + "\n")
        with pytest.raises(TinyconvError, match=r"sessions\.jsonl is damaged \(session 2: from_epoch " + re.escape(epoch)):
            run_state.session_rows(run)
    (run / "sessions.jsonl").write_text("\n".join([lines[0], lines[2], json.dumps({"from_epoch": 1})]) + "\n")
    with pytest.raises(TinyconvError, match=r"session 3: from_epoch 1 is not an epoch of its 3-epoch history\.csv, in"):
        run_state.session_rows(run)  # out of order


def test_state_sessions_prints_the_table_beside_the_reference_for_its_runs_and_names_a_missing_file(tmp_path):
    def sessions(folder):
        return subprocess.run([sys.executable, "-m", "tinyconv", "state", "sessions", str(folder)],
                              capture_output=True, text=True, timeout=60)

    reference = sessions(_session_run(tmp_path / "reference", "reference", 200))
    assert reference.returncode == 0, reference.stderr
    assert "| 1-2 |" in reference.stdout and "(the reference's: 18.06 %)" in reference.stdout  # its log, epoch 2
    other = sessions(_session_run(tmp_path / "quick", "quick", 10))
    assert other.returncode == 0 and "the reference's" not in other.stdout  # not comparable: no column
    (tmp_path / "quick" / "sessions.jsonl").unlink()
    missing = sessions(tmp_path / "quick")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"tinyconv: error: {tmp_path / 'quick' / 'sessions.jsonl'} is missing: not a run folder with its sessions "
        "recorded"]
