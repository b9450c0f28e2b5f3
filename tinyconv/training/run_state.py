"""A run's resumable state as a few checked pieces, for the trip between GPU leases and back.

A GPU lease is killed at its time limit and only a handful of files of at most 16 MiB come back, so after every
epoch the run's complete resumable state is packed into `out_dir`: one uncompressed tar of the files a resume
reads, split into pieces named with the epoch and a content hash (`state-e0007-<hash8>.part00`, ...), then
`manifest.json` (written last, atomically) with each piece's and each file's bytes and sha256. Older pieces are
removed only after the new manifest is in place, so a kill at any moment leaves the old complete set or the new
one. `restore_state` checks everything before it writes anything and swaps the run folder in whole.

The state of a run folder (what `train` reads when it resumes or finds a finished run):
    config.json                        what the run is (compared on resume)
    history.csv                        the epochs so far (HistoryWriter, BestCheckpoint read it), cut to the
                                       checkpoint's epochs: a row the kill left of a later epoch is trained again
    sessions.jsonl                     one line per training session: device, dtype policy, depthwise form, versions
    backup/training_metadata.json      rewritten to name only the newest checkpoint (no "previous")
    backup/epoch-NNNN.weights.h5       that checkpoint: weights and optimizer state
    best.keras                         if present, so the best checkpoint survives; left out when it was saved
                                       by the checkpoint's own epoch (the run still improving): it is then the
                                       checkpoint's weights, and training saves it again from them when it
                                       resumes (callbacks.BestCheckpoint), 10.9 of the seed's 43 MB
    metrics.json, model.keras          if present: the run is complete (train() then only reports it)

Standard library and tinyconv.errors/fileio/processes/training.history only: no Keras, no TensorFlow (it runs beside training under JAX).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

from tinyconv.errors import TinyconvError
from tinyconv.fileio import (file_sha256, read_model_metadata, remove_path, replace_path, temporary_path, write_bytes,
                             write_json)
from tinyconv.processes import running
from tinyconv.training.history import read_history

PIECE_BYTES = 16 * 2**20  # the most one returned file may hold
MANIFEST_NAME = "manifest.json"
FORMAT = 1
METADATA = "backup/training_metadata.json"
_PLAIN_FILES = ("config.json", "history.csv", "sessions.jsonl", "best.keras", "metrics.json", "model.keras")
_COMPARED_KEYS = ("profile", "train", "model", "wnids")  # as tinyconv.training.train compares a run on resume
_STATE_NAMES = set(_PLAIN_FILES) | {"backup"}  # top-level names a restore replaces


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TinyconvError(f"{path} is damaged or unreadable ({type(exc).__name__})") from None


def _history_epochs(data: bytes) -> int:
    """Rows of a history.csv (the header line not counted)."""
    return max(0, len(_history_lines(data)) - 1)


def _history_lines(data: bytes) -> list[str]:
    """The non-empty lines of a history.csv, its header first."""
    return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]


def _history_before(data: bytes, epoch: int) -> bytes:
    """A history.csv cut to the rows of epochs before `epoch` (its first column; 0-based), header kept.

    Training writes an epoch's row before it backs the epoch up, so a kill between the two leaves one row the
    checkpoint has not reached; a resume trains that epoch again and replaces the row, and a packed state must not
    carry it into the repository's curve meanwhile."""
    lines = _history_lines(data)
    kept = lines[:1] + [line for line in lines[1:] if _row_epoch(line) < epoch]
    return ("\n".join(kept) + "\n").encode() if kept else data


def _history_rows(data: bytes) -> list[tuple]:
    """The rows of a history.csv as values: numbers compared as numbers (NaN equal to NaN), so that a row written
    again from its parsed values (HistoryWriter rewrites the file each epoch) equals the row it was read from."""
    def cell(text: str):
        try:
            value = float(text)
        except ValueError:
            return text.strip()
        return "nan" if value != value else value

    return [tuple(cell(text) for text in line.split(",")) for line in _history_lines(data)[1:]]


def _check_lineage(kept_history: bytes, returned_history: bytes, kept_name, returned_dir: Path) -> None:
    """Refuse a returned state whose history does not continue the kept one row for row.

    A resume carries the rows of the epochs it did not train over unchanged (times included), so a state that
    continues the kept run starts with the kept rows exactly; a run started afresh (say, a lease that found no state
    to restore) differs from its first row on, if only in its times."""
    kept, returned = _history_rows(kept_history), _history_rows(returned_history)
    for index, row in enumerate(kept):
        if index >= len(returned) or returned[index] != row:
            raise TinyconvError(f"{returned_dir} holds another run's history: its epoch {index + 1} differs from "
                                f"{kept_name}'s (a run started afresh instead of continuing it?); nothing changed")


def _row_epoch(line: str) -> float:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return float("inf")  # not a row of an epoch: not one the checkpoint has reached either


def _snapshot(run_dir: Path) -> tuple[int, bool, dict[str, bytes]]:
    """(epoch, complete, {path in the run folder: bytes}) read once; raises TinyconvError when the run folder has
    no completed epoch or is being written (the checkpoint does not match its metadata, the metadata changed)."""
    if not (run_dir / "config.json").is_file():
        raise TinyconvError(f"{run_dir} holds no config.json: not a run folder")
    meta_path = run_dir / METADATA
    meta_before = meta_path.read_bytes() if meta_path.is_file() else None
    files = {name: (run_dir / name).read_bytes() for name in _PLAIN_FILES if (run_dir / name).is_file()}
    complete = "metrics.json" in files
    if complete:
        return _history_epochs(files.get("history.csv", b"")), True, files
    if meta_before is None:
        raise TinyconvError(f"{run_dir} has no backed-up epoch yet ({meta_path} is missing); nothing to pack")
    try:
        meta = json.loads(meta_before)
        epoch, weights, sha = int(meta["epoch"]), str(meta["weights"]), str(meta["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TinyconvError(f"{meta_path} is damaged ({type(exc).__name__}); nothing packed") from None
    if Path(weights).name != weights:
        raise TinyconvError(f"{meta_path} names {weights!r}, not a file of {meta_path.parent}")
    try:
        data = (meta_path.parent / weights).read_bytes()
    except OSError:
        raise TinyconvError(f"{meta_path.parent / weights} is missing (training is writing the backup)") from None
    if _sha256(data) != sha:
        raise TinyconvError(f"{meta_path.parent / weights} does not match its recorded sha256 "
                            "(training is writing the backup)")
    if not meta_path.is_file() or meta_path.read_bytes() != meta_before:
        raise TinyconvError(f"{meta_path} changed while it was read (training is writing the backup)")
    files[f"backup/{weights}"] = data
    if "history.csv" in files:
        files["history.csv"] = _history_before(files["history.csv"], epoch)
    if "best.keras" in files and _best_epoch(files["best.keras"]) == epoch:
        del files["best.keras"]  # the checkpoint's weights: saved again from them on resume (the module's docstring)
    newest = {"epoch": epoch, "weights": weights, "sha256": sha, "previous": None}
    files[METADATA] = (json.dumps(newest, indent=2) + "\n").encode()
    return epoch, False, files


def _best_epoch(best: bytes) -> int | None:
    """The epoch (1-based) whose weights a best.keras holds, as BestCheckpoint records it; None if it says none."""
    try:
        return int((read_model_metadata(io.BytesIO(best)) or {}).get("epoch"))
    except (TypeError, ValueError):
        return None


def _tar(files: dict[str, bytes]) -> bytes:
    """One uncompressed tar of the files, reproducible (fixed order, times and owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def pack_state(run_dir, out_dir, piece_bytes: int = PIECE_BYTES, attempts: int = 5, wait: float = 0.5) -> dict:
    """Pack the resumable state of `run_dir` into `out_dir` as pieces of at most `piece_bytes` and a manifest.

    The checkpoint is checked against the sha256 its metadata records; while training is writing it, the read
    is tried again (`attempts` times, `wait` seconds apart). The pieces are written first (each atomically),
    manifest.json last, then the pieces the new manifest does not name are removed: a kill at any moment leaves
    the previous complete set or the new one. Returns the manifest.

    Raises:
        TinyconvError: no completed epoch yet, or the checkpoint never read whole.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if piece_bytes < 1:
        raise TinyconvError(f"piece size {piece_bytes} must be at least 1 byte")
    for attempt in range(attempts):
        try:
            epoch, complete, files = _snapshot(run_dir)
            break
        except (TinyconvError, OSError):
            if attempt == attempts - 1:
                raise
            time.sleep(wait)
    _check_pack_target(out_dir, files, epoch, complete)
    tar = _tar(files)
    prefix = f"state-e{epoch:04d}-{_sha256(tar)[:8]}"
    pieces = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyconvError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    for index, start in enumerate(range(0, max(len(tar), 1), piece_bytes)):
        chunk = tar[start:start + piece_bytes]
        name = f"{prefix}.part{index:02d}"
        write_bytes(out_dir / name, chunk)
        pieces.append({"name": name, "bytes": len(chunk), "sha256": _sha256(chunk)})
    manifest = {
        "format": FORMAT,
        "run": run_dir.name,
        "epoch": epoch,
        "complete": complete,
        "tar_bytes": len(tar),
        "tar_sha256": _sha256(tar),
        "pieces": pieces,
        "files": [{"path": name, "bytes": len(files[name]), "sha256": _sha256(files[name])} for name in sorted(files)],
    }
    write_json(out_dir / MANIFEST_NAME, manifest)
    keep = {piece["name"] for piece in pieces}
    for old in out_dir.glob("state-e*.part*"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return manifest


def _check_pack_target(out_dir: Path, files: dict[str, bytes], epoch: int, complete: bool) -> None:
    """Refuse to replace the state in `out_dir` by another run's, or by this run at an earlier epoch: the pieces
    there would be removed. A folder whose manifest cannot be read is refused too (it may be all that is left of
    a lease); an empty or new folder, or one holding this run's state at the same or an earlier epoch, is fine."""
    manifest_path = out_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return
    try:
        old = json.loads(manifest_path.read_text())
        old_epoch, old_complete = int(old["epoch"]), bool(old["complete"])
        old_config = next(entry for entry in old["files"] if entry["path"] == "config.json")["sha256"]
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        raise TinyconvError(f"{manifest_path} is unreadable: refusing to replace what {out_dir} holds; pack into "
                            "another folder") from None
    if old_config != _sha256(files["config.json"]):
        raise TinyconvError(f"{out_dir} holds the packed state of another run ({manifest_path} names another "
                            "config.json); pack into another folder; nothing written")
    if old_epoch > epoch or old_complete and not complete:
        raise TinyconvError(f"{out_dir} holds this run at epoch {old_epoch}{' (complete)' if old_complete else ''}, "
                            f"further than the run folder's epoch {epoch}; nothing written")


def _progress(run_dir: Path):
    """What changes when an epoch is backed up or the run completes: (metadata bytes, metrics.json present)."""
    try:
        meta = (run_dir / METADATA).read_bytes()
    except OSError:
        meta = None
    return meta, (run_dir / "metrics.json").is_file()


def watch_state(run_dir, out_dir, pid: int, interval: float = 1.0, piece_bytes: int = PIECE_BYTES,
                log=print) -> dict | None:
    """Pack the state of `run_dir` into `out_dir` each time an epoch is backed up (or the run completes), until
    process `pid` exits; then pack once more and return the last manifest (None if nothing could be packed)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    packed, manifest = None, None

    def attempt(final: bool):
        nonlocal packed, manifest
        progress = _progress(run_dir)
        if progress == packed or progress == (None, False):
            return
        try:
            manifest = pack_state(run_dir, out_dir, piece_bytes, attempts=5 if final else 1)
        except TinyconvError as exc:
            if final:
                log(f"state watch: {exc}")
            return
        packed = progress
        log(f"state watch: epoch {manifest['epoch']}{' (complete)' if manifest['complete'] else ''} packed into "
            f"{out_dir} as {len(manifest['pieces'])} piece(s), {manifest['tar_bytes']:,} bytes")

    while running(pid):
        attempt(final=False)
        time.sleep(interval)
    attempt(final=True)
    return manifest


def known_form(sessions_path, device: str) -> str | None:
    """The depthwise form the run's newest session on `device` trained with (sessions.jsonl), or None to measure.

    Only sessions on the same kind of device count, the newest of them: a run that moves between a CPU and a GPU
    lease keeps the GPU's measured form across the CPU sessions between. None when the run never trained on this
    kind of device, when that session's form is "auto" (its measurement failed or was never made), or when the
    file is missing or unreadable (a new run, or one from before sessions.jsonl).
    """
    try:
        lines = Path(sessions_path).read_text().splitlines()
        sessions = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    same = [entry for entry in sessions if isinstance(entry, dict) and entry.get("device") == device]
    form = same[-1].get("depthwise_form") if same else None
    return form if isinstance(form, str) and form != "auto" else None


def session_rows(run_dir) -> list[dict]:
    """What each training session of a run did, from its sessions.jsonl and history.csv: one dict per session,
    in order, with its `started`, `device`, `backend` and `dtype_policy` (as recorded), `epochs` ((first, last),
    1-based, or None for a session that ended before it completed one), `epoch_min` (the mean wall time of its
    epochs, validation included), `steps_h` (the hours its training steps took), `images_per_s` (its train images
    over those hours) and `val_top1` at its last epoch. The record a long run's results name per lease.

    Raises:
        TinyconvError: the folder lacks either file, or one is unreadable or damaged (one line naming it).
    """
    run_dir = Path(run_dir)
    sessions_path, history_path = run_dir / "sessions.jsonl", run_dir / "history.csv"
    for path in (sessions_path, history_path):
        if not path.is_file():
            raise TinyconvError(f"{path} is missing: not a run folder with its sessions recorded")
    try:
        sessions = [json.loads(line) for line in sessions_path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise TinyconvError(f"{sessions_path} is unreadable ({type(exc).__name__}: {exc})") from None
    history = read_history(history_path)  # a damaged one: TinyconvError naming it
    starts = []
    for number, entry in enumerate(sessions, 1):
        # every session appends its line as it starts, so a line without its first epoch is damage, not an old format
        epoch = entry.get("from_epoch") if isinstance(entry, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= len(history) \
                or (starts and epoch < starts[-1]):
            raise TinyconvError(f"{sessions_path} is damaged (session {number}: from_epoch {epoch!r} is not an epoch "
                                f"of its {len(history)}-epoch history.csv, in order)")
        starts.append(epoch)
    starts.append(len(history))
    rows = []
    for entry, start, end in zip(sessions, starts, starts[1:]):
        mine = [row for row in history if start <= row["epoch"] < end]
        steps_s = sum(row["train_s"] for row in mine)
        images = sum(row["images_per_s"] * row["train_s"] for row in mine)
        rows.append({
            **{key: entry.get(key) for key in ("started", "device", "backend", "dtype_policy")},
            "epochs": (start + 1, end) if mine else None,
            "epoch_min": sum(row["epoch_s"] for row in mine) / 60 / len(mine) if mine else None,
            "steps_h": steps_s / 3600 if mine else None,
            "images_per_s": images / steps_s if mine else None,
            "val_top1": mine[-1]["val_top1"] if mine else None,
        })
    return rows


def session_table(rows: list[dict], reference_top1: dict[int, float] | None = None) -> str:
    """session_rows as a Markdown table; `reference_top1` ({1-based epoch: val top-1}) adds the reference's
    figure at each session's last epoch."""
    head = ["started (UTC)", "device", "backend, dtype", "epochs", "min per epoch", "steps' hours", "train img/s",
            "val top-1 at its last epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        if row["epochs"] is None:
            cells = ["none completed", "", "", "", ""]
        else:
            first, last = row["epochs"]
            top1 = f"{100 * row['val_top1']:.2f} %"
            if reference_top1 and last in reference_top1:
                top1 += f" (the reference's: {100 * reference_top1[last]:.2f} %)"
            cells = [f"{first}-{last}" if last > first else f"{first}", f"{row['epoch_min']:.1f}",
                     f"{row['steps_h']:.2f}", f"{row['images_per_s']:,.1f}", top1]
        started = str(row["started"] or "?").replace("T", " ").rstrip("Z")
        lines.append("| " + " | ".join([started, str(row["device"]), f"{row['backend']}, {row['dtype_policy']}",
                                        *cells]) + " |")
    return "\n".join(lines)


def _manifest_problem(manifest) -> str | None:
    try:
        assert manifest["format"] == FORMAT, f"format {manifest.get('format')!r}"
        int(manifest["epoch"]), str(manifest["run"]), bool(manifest["complete"])
        for entry in manifest["pieces"] + manifest["files"]:
            key = "name" if "name" in entry else "path"
            int(entry["bytes"]), str(entry["sha256"]), str(entry[key])
        assert manifest["pieces"] and manifest["files"], "no pieces or no files"
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    return None


def _run_epoch(run_dir: Path) -> tuple[int, bool]:
    """(completed epochs, complete) of an existing run folder, from what a resume would read."""
    if (run_dir / "metrics.json").is_file():
        history = run_dir / "history.csv"
        return (_history_epochs(history.read_bytes()) if history.is_file() else 0), True
    try:
        return int(json.loads((run_dir / METADATA).read_text())["epoch"]), False
    except (OSError, ValueError, KeyError, TypeError):
        return 0, False


def _differences(old: dict, new: dict) -> list[str]:
    return [key for key in _COMPARED_KEYS if old.get(key) != new.get(key)]


def read_state(state_dir) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {path in the run folder: bytes}) of the pieces in `state_dir`, every one checked; nothing written.

    Checked: the manifest, each piece (present, its size, its sha256), the tar they join into, each file's sha256.
    Raises TinyconvError (one line naming the file) at the first thing that is missing, damaged or foreign.
    """
    state_dir = Path(state_dir)
    manifest_path = state_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise TinyconvError(f"{manifest_path} is missing: {state_dir} holds no packed run state")
    manifest = _read_json(manifest_path)
    problem = _manifest_problem(manifest) if isinstance(manifest, dict) else "not a JSON object"
    if problem:
        raise TinyconvError(f"{manifest_path} is damaged ({problem})")
    chunks = []
    for piece in manifest["pieces"]:
        path = state_dir / piece["name"]
        if Path(piece["name"]).name != piece["name"] or not path.is_file():
            raise TinyconvError(f"{path} is missing (the manifest of epoch {manifest['epoch']} names it)")
        data = path.read_bytes()
        if len(data) != int(piece["bytes"]):
            raise TinyconvError(f"{path} holds {len(data):,} bytes where the manifest says {int(piece['bytes']):,} "
                                "(truncated or from another epoch)")
        if _sha256(data) != piece["sha256"]:
            raise TinyconvError(f"{path} does not match the sha256 in {manifest_path} (damaged or from another run)")
        chunks.append(data)
    return manifest, _untar(b"".join(chunks), manifest, manifest_path)


def restore_state(state_dir, run_dir) -> dict:
    """Check the pieces in `state_dir` against their manifest and restore the state into `run_dir`; returns the manifest.

    Everything is checked before anything is written: the manifest, each piece (present, its size, its sha256),
    the tar they join into, each file's sha256. The files are extracted into a temporary folder beside `run_dir`
    and swapped in whole; other things in an existing `run_dir` of the same run (figures/, tb/) are kept.

    Raises:
        TinyconvError (one line naming the file): a missing, damaged or foreign piece or manifest; a `run_dir`
        that holds a different run, a run further along, or other files and no config.json.
    """
    state_dir, run_dir = Path(state_dir), Path(run_dir)
    manifest, files = read_state(state_dir)
    _check_target(run_dir, files, manifest)
    tmp = temporary_path(run_dir, ".restore")
    remove_path(tmp)
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        for entry in manifest["files"]:
            if file_sha256(tmp / entry["path"]) != entry["sha256"]:
                raise TinyconvError(f"{tmp / entry['path']} does not match its sha256 once written; nothing restored")
        if run_dir.is_dir():
            for item in run_dir.iterdir():
                if item.name not in _STATE_NAMES and not item.name.startswith("."):
                    (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        replace_path(tmp, run_dir)
    except OSError as exc:
        remove_path(tmp)
        raise TinyconvError(f"restoring {run_dir} failed: {exc.strerror or exc}; nothing was changed there") from None
    except BaseException:
        remove_path(tmp)
        raise
    return manifest


def _untar(tar: bytes, manifest: dict, manifest_path: Path) -> dict[str, bytes]:
    if manifest.get("tar_sha256") and _sha256(tar) != manifest["tar_sha256"]:
        raise TinyconvError(f"the pieces of {manifest_path} join into a tar that does not match its sha256")
    expected = {entry["path"]: entry for entry in manifest["files"]}
    files = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
            for member in archive.getmembers():
                name = member.name
                if not member.isfile() or name not in expected or name.startswith("/") or ".." in Path(name).parts:
                    raise TinyconvError(f"the pieces of {manifest_path} hold {name!r}, which the manifest does not list")
                files[name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TinyconvError(f"the pieces of {manifest_path} do not join into a readable tar ({type(exc).__name__})") from None
    for name, entry in expected.items():
        if name not in files:
            raise TinyconvError(f"the pieces of {manifest_path} lack {name}, which the manifest lists")
        if len(files[name]) != int(entry["bytes"]) or _sha256(files[name]) != entry["sha256"]:
            raise TinyconvError(f"{name} in the pieces of {manifest_path} does not match its sha256")
    if "config.json" not in files:
        raise TinyconvError(f"the pieces of {manifest_path} hold no config.json")
    return files


def _check_target(run_dir: Path, files: dict[str, bytes], manifest: dict) -> None:
    """Refuse a run folder that holds something else, or this run further along than the state."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise TinyconvError(f"{run_dir} is a file, not a run folder; nothing restored")
    config = run_dir / "config.json"
    if not config.is_file():
        if any(item for item in run_dir.iterdir() if not item.name.startswith(".")):
            raise TinyconvError(f"{run_dir} is not empty and holds no config.json; refusing to restore a run into it")
        return
    old, new = _read_json(config), json.loads(files["config.json"])
    differences = _differences(old, new) if isinstance(old, dict) else ["config.json"]
    if differences:
        raise TinyconvError(f"{config} holds a different run ({', '.join(differences)} differ); restore into another "
                            "folder; nothing restored")
    epoch, complete = _run_epoch(run_dir)
    if complete and not manifest["complete"] or epoch > int(manifest["epoch"]):
        raise TinyconvError(f"{run_dir} already holds this run at epoch {epoch}{' (complete)' if complete else ''}, "
                            f"further than the state's epoch {manifest['epoch']}; nothing restored")


# The small files of a run written beside its kept state after every lease, readable without restoring it (the
# curve so far for notebook 04 and docs/results.md), and what stays in the repository once the state is removed
# (results/NAME/; metrics.json only once the run is complete).
_KEPT_BESIDE = ("config.json", "history.csv", "sessions.jsonl", "metrics.json")
# The log a lease's call writes beside its returned state ($OUT/lease.log, scripts/gpu_train.sh): its phases, the
# chosen form, the device and the software versions; each lease's is kept in results/NAME/leases/ as lease-NN.log.
LEASE_LOG = "lease.log"


def keep_state(returned_dir, kept_dir, run_dir) -> dict:
    """A lease's returned state becomes the run's state in the repository; returns its manifest.

    `kept_dir` is the one fixed place a run's state lives between leases (results/seed-reference/state/): the
    next lease restores it and continues. Everything is checked first: the returned pieces (as `read_state`), that
    they hold the same run as the state kept there (or, with none kept, as the config.json beside it), no earlier
    epoch than it, and a history that continues the kept one row for row, so that a run started afresh is refused
    rather than taking the kept run's place. Then the returned state is restored
    into `run_dir` (the model and curves for this machine; as `restore_state`), and `kept_dir` is replaced by a copy of
    the returned pieces, whole or not at all. Beside it go the run's config.json and history.csv (and metrics.json
    once complete), and the lease's log when one lies beside the returned state (`lease.log`, as in the call's $OUT):
    into leases/lease-NN.log, numbered in order, the same log never twice. A complete run needs its state no more:
    `kept_dir` is removed (the models stay in `run_dir`; the repository's history grows by the state's size with
    each lease, so it goes as soon as it is not needed).

    Raises:
        TinyconvError (one line naming the file): a damaged returned state, a kept state of another run or further
        along, a `run_dir` that `restore_state` refuses.
    """
    returned_dir, kept_dir = Path(returned_dir), Path(kept_dir)
    manifest, files = read_state(returned_dir)
    if (kept_dir / MANIFEST_NAME).is_file():
        kept_manifest, kept_files = read_state(kept_dir)
        old, new = json.loads(kept_files["config.json"]), json.loads(files["config.json"])
        differences = _differences(old, new)
        if differences:
            raise TinyconvError(f"{kept_dir} holds the state of a different run ({', '.join(differences)} differ) than "
                                f"{returned_dir}; nothing changed")
        if int(kept_manifest["epoch"]) > int(manifest["epoch"]):
            raise TinyconvError(f"{kept_dir} holds this run at epoch {kept_manifest['epoch']}, further than the returned "
                                f"state's epoch {manifest['epoch']} ({returned_dir}); nothing changed")
        _check_lineage(kept_files.get("history.csv", b""), files.get("history.csv", b""), kept_dir, returned_dir)
    elif kept_dir.exists() and (not kept_dir.is_dir() or any(kept_dir.iterdir())):
        raise TinyconvError(f"{kept_dir} exists and holds no manifest.json: not a run state; nothing changed")
    elif (kept_dir.parent / "config.json").is_file():
        # no state kept, but the run's files are (a complete run, or a state moved aside and not put back): the
        # returned state must be the same run and continue their history
        beside = _read_json(kept_dir.parent / "config.json")
        differences = _differences(beside, json.loads(files["config.json"])) if isinstance(beside, dict) else ["all"]
        if differences:
            raise TinyconvError(f"{kept_dir.parent / 'config.json'} is another run's ({', '.join(differences)} differ) "
                                f"than {returned_dir}'s; nothing changed")
        history = kept_dir.parent / "history.csv"
        if history.is_file():
            _check_lineage(history.read_bytes(), files.get("history.csv", b""), history, returned_dir)
    restore_state(returned_dir, run_dir)
    try:
        # the state first, then the files beside it, which describe it; a complete run's state goes only once they
        # are written
        if not manifest["complete"]:
            tmp = temporary_path(kept_dir, ".keep")
            remove_path(tmp)
            tmp.mkdir(parents=True)
            for piece in manifest["pieces"]:
                shutil.copy2(returned_dir / piece["name"], tmp / piece["name"])
            shutil.copy2(returned_dir / MANIFEST_NAME, tmp / MANIFEST_NAME)
            replace_path(tmp, kept_dir)
        kept_dir.parent.mkdir(parents=True, exist_ok=True)
        for name in _KEPT_BESIDE:
            if name in files:
                write_bytes(kept_dir.parent / name, files[name])
        _keep_lease_log(returned_dir.parent / LEASE_LOG, kept_dir.parent / "leases")
        if manifest["complete"]:
            remove_path(kept_dir)
    except OSError as exc:
        remove_path(temporary_path(kept_dir, ".keep"))
        raise TinyconvError(f"keeping the state in {kept_dir} failed: {exc.strerror or exc}; {run_dir} holds it") from None
    return manifest


def _keep_lease_log(log: Path, folder: Path) -> None:
    """Copy a lease's log into `folder` as the next lease-NN.log, unless the same log is there already (keep run
    twice on one returned folder)."""
    if not log.is_file():
        return
    data = log.read_bytes()
    logs = sorted(folder.glob("lease-*.log")) if folder.is_dir() else []
    if any(path.read_bytes() == data for path in logs):
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(folder / f"lease-{len(logs) + 1:02d}.log", data)
