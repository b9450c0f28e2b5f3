"""Atomic file writes: every file tinyconv writes goes to a temporary name beside its target and is renamed
into place, so a kill at any moment leaves either the old file or the new one, never half of one.

One temporary-name scheme for the whole package: `.<name>.<pid>.tmp` in the target's folder, plus a suffix
where the writer insists on one (Keras wants `.keras` / `.weights.h5`, papermill `.ipynb`).
`remove_temporaries(folder)` clears what a killed process left behind. A folder (a SavedModel export) is
written the same way: `atomic_path` yields a temporary name the caller fills with a file or a folder, and
`replace_path` swaps it in (an old folder is moved aside first, since a rename cannot replace a non-empty one).
`check_writable` is the one check of an output path before any work: one line naming it when it cannot be written.
`note_stop`/`stop_requested`: a Ctrl-C or SIGTERM the CLI's handlers saw, so that no file is replaced after the user
asked to stop, even where the interrupt itself was lost.

No TensorFlow or Keras import here: `tinyconv download` writes through this module and must start fast.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from tinyconv.errors import TinyconvError


# The signals the CLI's handlers saw (tinyconv.cli.main). A handler raises KeyboardInterrupt where the signal lands,
# which is almost always where the command is; but when it lands while Python runs a destructor or a garbage
# collector's callback (TensorFlow's converter, in C++, triggers many), Python prints "Exception ignored" and the
# command goes on as if never asked to stop. Recorded here, the request is not lost: atomic_path asks before
# it replaces a file, and the CLI before it reports success.
_stops: list[int] = []


def note_stop(signum: int) -> None:
    """Record that the user asked the command to stop (a signal handler calls it before it raises)."""
    _stops.append(int(signum))


def stop_requested() -> int | None:
    """The first stop signal recorded since clear_stops (None when none was)."""
    return _stops[0] if _stops else None


def clear_stops() -> None:
    """Forget recorded stops (the CLI's main, at the start and end of each command: tests call it in one process)."""
    _stops.clear()


def not_utf8(exc: UnicodeDecodeError) -> str:
    """What a UnicodeDecodeError means to the person whose file it is: "not UTF-8 text (byte 0xff at offset 12)"
    (the dataset's text files, run configs and sweep files say it alike)."""
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def temporary_path(path, suffix: str = "") -> Path:
    """The temporary name for writing `path`: `.<name>.<pid>.tmp<suffix>` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def remove_temporaries(folder, pid: int | None = None) -> None:
    """Delete the temporary files in `folder` (of process `pid` only, when given)."""
    pattern = f".*.{pid}.tmp*" if pid is not None else ".*.*.tmp*"
    for leftover in Path(folder).glob(pattern):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


_ADVICE = {errno.ENOSPC: "free some space", errno.EROFS: "the file system is read-only",
           errno.EACCES: "check its permissions", errno.EPERM: "check its permissions",
           errno.EDQUOT: "the disk quota is full", errno.EFBIG: "the file size limit (ulimit -f) is reached"}


def os_error_reason(exc: OSError) -> str:
    """The OS's words for a failed write ("No space left on device"), without the errno number, on one line.

    Some libraries put pages into strerror (HDF5: the whole error stack, newlines included); then the errno's
    own words stand for it."""
    reason = exc.strerror or str(exc)
    if "\n" in reason and exc.errno:
        return os.strerror(exc.errno)
    return " ".join(reason.split())


def os_error_advice(exc: OSError) -> str:
    """"; free some space" and the like for the everyday write failures, "" for others (for one-line messages)."""
    advice = _ADVICE.get(exc.errno, "")
    return f"; {advice}" if advice else ""


def check_writable(path, what: str, *, folder: bool = False, make_parents: bool = True) -> None:
    """Raise one TinyconvError naming `path` when `what` (a file, or with `folder` a folder) cannot be written
    there; leaves nothing behind. Every command that writes an output calls it before any minutes of work.

    Refused: `path` of the other kind (a file where a folder goes, or the reverse), a file on the way to it
    (`notes.txt/run`), a missing parent folder when the writer does not create it (`make_parents=False`), and a
    place the process cannot create a file in (no permission, a read-only mount). Whether an existing `path` may be
    replaced is the caller's business (tinyconv.deploy.export.check_output).
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kinds = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
        raise TinyconvError(f"{path}: is {kinds[0]}, not {kinds[1]} (for {what})")
    # where the write really happens: the folder itself if it exists, else the nearest existing folder above it
    # (in which the missing ones will be made)
    target = path if folder and path.is_dir() else path.parent
    place = Path(os.path.abspath(target))
    while not place.exists() and place.parent != place:
        if not make_parents:
            raise TinyconvError(f"{path}: cannot write {what}: folder {target} does not exist")
        place = place.parent
    if not place.is_dir():
        raise TinyconvError(f"{path}: cannot write {what}: {place} is a file, not a folder")
    probe = temporary_path(place / "write-check", ".probe")  # remove_temporaries clears it after a kill
    try:  # a real write, not os.access: permissions and read-only mounts both show here, for root too
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)  # another process's remove_temporaries may have taken it already
    except OSError as exc:
        raise TinyconvError(f"{path}: cannot write {what}: {os_error_reason(exc)} in {place}"
                            f"{os_error_advice(exc)}") from None


def remove_path(path) -> None:
    """Delete a file or a folder (with what it holds), if there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(new, path, aside=None) -> None:
    """Move the finished `new` (a file or a folder) onto `path`, atomically for a file.

    A rename cannot replace a non-empty folder, so a folder at `path` is first moved `aside` (default: the
    temporary name `temporary_path(path, ".old")`), the new one renamed into place, and the old one deleted only
    then; if the second rename fails, the old one goes back. At every moment `path` is the old version or the
    new one, or (between the two renames, for a folder) absent with the old one intact under `aside`.
    Raises the OSError of a failed rename.
    """
    new, path = Path(new), Path(path)
    if not (path.is_dir() and not path.is_symlink()):
        os.replace(new, path)
        return
    aside = Path(aside) if aside is not None else temporary_path(path, ".old")
    os.replace(path, aside)
    try:
        os.replace(new, path)
    except OSError:
        os.replace(aside, path)
        raise
    remove_path(aside)


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path to write, a file or a folder; on success move it onto `path` (`replace_path`), on
    failure remove it.

    What is at `path` is never touched until the new one is complete. An OS failure (disk full, read-only
    file system, no permission) becomes one TinyconvError naming the target, for every write site at once.
    """
    path = Path(path)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        if stop_requested():  # a Ctrl-C or SIGTERM whose interrupt was lost on the way: the old version stays
            raise KeyboardInterrupt
        replace_path(tmp, path)
    except OSError as exc:
        remove_path(tmp)
        kept = "the previous version is intact" if path.exists() else "nothing was written"
        raise TinyconvError(f"writing {path} failed: {os_error_reason(exc)}; {kept}{os_error_advice(exc)}") from None
    except BaseException:
        remove_path(tmp)
        raise


def write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def json_default(value):
    """json.dumps `default=` for numpy scalars and paths."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def file_sha256(path) -> str:
    """The sha256 (hex) of a file, read in 1 MiB pieces (a backup's weights, a lease's state pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path, obj, indent: int = 2) -> None:
    """Write `obj` as JSON (numpy scalars and paths allowed) to `path` atomically."""
    write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


MODEL_METADATA_NAME = "tinyconv.json"  # inside a .keras zip: the class list and preprocessing (read_model_metadata)


def save_model(model, path, metadata: dict | None = None) -> None:
    """`model.save` atomically (Keras needs the `.keras` suffix on the temporary name too).

    `metadata` (JSON) is stored inside the .keras zip as tinyconv.json, so a model file carries its class list
    and preprocessing even without its run folder; Keras ignores the extra member when loading.
    """
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
        if metadata is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(MODEL_METADATA_NAME, json.dumps(metadata, default=json_default))


def read_model_metadata(path) -> dict | None:
    """The tinyconv.json a .keras file carries (save_model's metadata), or None (older files, other tools')."""
    try:
        with zipfile.ZipFile(path) as archive:
            if MODEL_METADATA_NAME not in archive.namelist():
                return None
            return json.loads(archive.read(MODEL_METADATA_NAME))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


def save_weights(model, path) -> None:
    """`model.save_weights` atomically (Keras needs the `.weights.h5` suffix on the temporary name too).

    The free space is checked first: HDF5 does not fail cleanly on a full disk (a flood of errors from its
    object destructors, then a segmentation fault at exit, seen on a full tmpfs), so it must not start a file
    that cannot fit.
    """
    with atomic_path(path, ".weights.h5") as tmp:
        need = weights_file_bytes(model)
        free = shutil.disk_usage(tmp.parent).free
        if free < need:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (about {need / 1e6:.1f} MB needed, "
                                        f"{free / 1e6:.1f} MB free)")
        model.save_weights(tmp)


def weights_file_bytes(model) -> int:
    """An upper estimate of the size of `model.save_weights`' file: the model's and its optimizer's variables,
    plus HDF5's bookkeeping (measured: under 1 kB per variable; 2 kB is counted) and 64 kB for the file."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    total = 64 * 1024
    for variable in variables:
        try:
            itemsize = np.dtype(str(variable.dtype)).itemsize
        except TypeError:  # bfloat16 and other types numpy does not name: count 4 bytes
            itemsize = 4
        total += int(np.prod(variable.shape)) * itemsize + 2048
    return total


def save_figure(fig, path, **savefig_kwargs) -> None:
    """`fig.savefig` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig_kwargs)
