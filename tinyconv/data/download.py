"""Fetch, check and safely extract the Tiny ImageNet zip.

`download_dataset` accepts the official URL (the default), any HTTP(S) mirror, a local path or a `file://` URL.
An HTTP download streams into `<data_dir>/tiny-imagenet-200.zip.part` and resumes from there with a Range
request when interrupted. Beside it, `tiny-imagenet-200.zip.part.json` records where those bytes came from
(URL, total size, the server's ETag and Last-Modified, the expected checksum), so a resume never joins the
bytes of two different files: a `.part` of another URL or checksum is discarded with a message, the resume
asks with `If-Range` (RFC 9110, section 13.1.5: the server sends the whole new file when its copy changed),
and a server that ignores If-Range is caught by comparing its validators with the recorded ones.

The zip is checked (md5 for the official URL, or the sha256/md5 you give), its entries are checked to stay
inside the target, and it is extracted into a temporary folder beside the target that is moved into place
only when complete. A downloaded zip is deleted once its contents are in
place (the dataset is what you need, not a second 240 MB copy); a local zip you point at is never touched.

A marker file `tiny-imagenet-200/.tinyconv-download.json` records the verified checksums, so running again
does nothing while the dataset is there.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tinyconv.errors import TinyconvError
from tinyconv.locks import folder_lock
from tinyconv.fileio import os_error_advice, os_error_reason, replace_path, temporary_path, write_json
from tinyconv.progress import progress_bar

DATASET_DIRNAME = "tiny-imagenet-200"
OFFICIAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
MARKER_NAME = ".tinyconv-download.json"
ZIP_NAME = f"{DATASET_DIRNAME}.zip"
PART_NAME = f"{ZIP_NAME}.part"  # the download in progress, in the data folder
PART_RECORD_NAME = f"{PART_NAME}.json"  # where the .part's bytes came from (see the module docstring)
LOCK_NAME = ".download.lock"  # in the data folder: one download into it at a time (tinyconv.locks)
CHUNK_BYTES = 1 << 20


# Longer than 60 lines with its docstring: the whole fetch-check-extract sequence, read top to bottom.
def download_dataset(
    data_dir: Path,
    url: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    *,
    retries: int = 3,
    timeout_s: float = 60.0,
) -> Path:
    """Make sure `data_dir/tiny-imagenet-200/` holds a verified, complete dataset and return that folder.

    Args:
        data_dir: folder that holds (or will hold) tiny-imagenet-200/; created if missing.
        url: HTTP(S) URL, `file://` URL or local path of the zip. Default: $TINYCONV_DATA_URL, else the
            official URL.
        sha256: expected sha256 (hex) of the zip.
        md5: expected md5 (hex) of the zip; the official md5 is used for the official URL when neither is given.
        progress: show tqdm progress bars.
        retries: how many times a dropped HTTP connection is resumed within this call.
        timeout_s: socket timeout of each HTTP request.

    Raises:
        TinyconvError: unwritable data dir, failed download, checksum mismatch, unreadable or unsafe zip.
    """
    data_dir = Path(data_dir).expanduser()
    url = url or os.environ.get("TINYCONV_DATA_URL") or OFFICIAL_URL
    requested = _expected_checksums(sha256=sha256, md5=md5)
    # The official md5 checks a fresh official download; a dataset already verified against another
    # checksum (e.g. a mirror's sha256) stays unless the caller asks for a different checksum explicitly.
    official = url in (OFFICIAL_URL, OFFICIAL_URL.replace("http://", "https://", 1))  # either form of it
    expected = requested or ({"md5": OFFICIAL_MD5} if official else {})
    root = data_dir / DATASET_DIRNAME

    _ensure_writable_dir(data_dir)
    if _already_there(root, requested, progress=progress):
        return root
    with folder_lock(data_dir / LOCK_NAME, "download"):  # a second download into data_dir fails at once
        _remove_stale_temporaries(data_dir)  # under the lock, every temporary is a dead process's
        if _already_there(root, requested, progress=progress):  # e.g. a dataset a kill had left moved aside
            return root
        return _download_and_extract(data_dir, url, expected, root, progress=progress, retries=retries,
                                     timeout_s=timeout_s)


def _already_there(root: Path, requested: dict, *, progress: bool) -> bool:
    """Whether root holds a dataset to keep: one extracted by hand, or one verified against `requested`."""
    if not _looks_complete(root):
        return False
    marker = _read_marker(root)
    if marker is None:
        # Extracted by hand (no marker): there is no zip to check it against, so keep it as it is.
        _say(progress, f"{root} is already there (extracted without tinyconv; delete it to download afresh)")
        return True
    if all(marker.get(algorithm) == value for algorithm, value in requested.items()):
        _say(progress, f"{root} is already downloaded and verified; nothing to do")
        return True
    return False


def _download_and_extract(data_dir: Path, url: str, expected: dict, root: Path, *, progress: bool, retries: int,
                          timeout_s: float) -> Path:
    """download_dataset's work once it holds the data folder's lock: fetch, check, extract into place."""
    local_zip = _local_path(url)
    if local_zip is not None:
        if not local_zip.is_file():
            raise TinyconvError(f"no such file: {local_zip}")
        zip_path, downloaded = local_zip, False
    elif _complete_part(data_dir, url, expected, progress=progress):
        # a kill during an earlier extraction left the whole download: no new request
        zip_path, downloaded = data_dir / PART_NAME, True
        _say(progress, f"{zip_path} is a complete download of {url}; extracting it")
    else:
        zip_path = _fetch(url, data_dir, expected, progress=progress, retries=retries, timeout_s=timeout_s)
        downloaded = True

    checksums = _file_checksums(zip_path, progress=progress)
    for algorithm, want in expected.items():
        if checksums[algorithm] != want:
            if downloaded:
                discard_part(data_dir)  # a bad download must not be resumed next time
            note = " (the download was removed; run again to fetch it afresh)" if downloaded else ""
            raise TinyconvError(
                f"checksum mismatch for {zip_path}: {algorithm} is {checksums[algorithm]}, expected {want}{note}"
            )
    if not expected:
        _say(progress, f"no checksum given for {url}; its sha256 is {checksums['sha256']} (recorded in the dataset's "
                       f"marker; pass --sha256 {checksums['sha256']} next time to check it)")

    try:
        _extract_into_place(zip_path, root, record={"source": url, **checksums}, progress=progress)
    except _WriteFailed as exc:  # disk full, no permission: the download is fine, keep it for the next run
        kept = f"; the download is kept in {zip_path}, run again once that is fixed" if downloaded else ""
        raise TinyconvError(f"{exc}{kept}") from None
    except TinyconvError:
        if downloaded:
            discard_part(data_dir)  # its contents are unusable; a fresh download is the only fix
        raise
    if downloaded:
        discard_part(data_dir)
    _say(progress, f"extracted to {root}")
    return root


# ------------------------------------------------------------------------------------------- checks


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def _expected_checksums(*, sha256: str | None, md5: str | None) -> dict[str, str]:
    expected = {}
    for algorithm, value, length in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is None:
            continue
        value = value.strip().lower()
        if len(value) != length or any(c not in "0123456789abcdef" for c in value):
            raise TinyconvError(f"--{algorithm} must be {length} hex digits, got {value!r}")
        expected[algorithm] = value
    return expected


def _ensure_writable_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyconvError(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise TinyconvError(f"data dir {data_dir} is not writable: {exc.strerror or exc}") from None


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _looks_complete(root: Path) -> bool:
    """A cheap layout check: the top-level files and folders of the official layout are there."""
    return (
        (root / "wnids.txt").is_file()
        and (root / "words.txt").is_file()
        and (root / "train").is_dir()
        and (root / "val").is_dir()
        and (root / "test").is_dir()
    )


def _file_checksums(path: Path, *, progress: bool) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as source, progress_bar(path.stat().st_size, "checksum", "B", enabled=progress,
                                                   unit_scale=True) as bar:
        while chunk := source.read(CHUNK_BYTES):
            sha256.update(chunk)
            md5.update(chunk)
            bar.update(len(chunk))
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


# ------------------------------------------------------------------------------------------- fetch


def _local_path(url: str) -> Path | None:
    """The local file behind `url` (a path or file:// URL), or None for a remote URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        raise TinyconvError(f"unsupported URL scheme {parsed.scheme!r} in {url} (use http, https, file or a path)")
    return Path(url).expanduser()


class _WriteFailed(TinyconvError):
    """Extraction failed writing (disk full, permissions), not because the zip is bad."""


def discard_part(data_dir: Path) -> None:
    """Remove the download in progress and its record (the .part first: a record without a .part is ignored)."""
    (Path(data_dir) / PART_NAME).unlink(missing_ok=True)
    (Path(data_dir) / PART_RECORD_NAME).unlink(missing_ok=True)


def read_part_record(data_dir: Path) -> dict | None:
    """The record of data_dir's .part (url, size, etag, last_modified, checksums), or None if none or unreadable."""
    try:
        record = json.loads((Path(data_dir) / PART_RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _note(message: str) -> None:
    # always shown, progress or not: the user should know when downloaded bytes are thrown away
    print(f"note: {message}", file=sys.stderr, flush=True)


def _complete_part(data_dir: Path, url: str, expected: dict, *, progress: bool) -> bool:
    """Whether data_dir holds a whole download of `url`: its checksums are the expected ones, or (no checksum
    known) its record says it came from `url` and has reached the size the server announced."""
    part = data_dir / PART_NAME
    if not part.is_file():
        return False
    record = read_part_record(data_dir)
    size = part.stat().st_size
    if record is not None and isinstance(record.get("size"), int) and size < record["size"]:
        return False  # a partial download: hashing it would only cost time
    if expected:
        checksums = _file_checksums(part, progress=progress)
        return all(checksums[algorithm] == want for algorithm, want in expected.items())
    return record is not None and record.get("url") == url and record.get("size") == size


def _check_part_source(data_dir: Path, url: str, expected: dict) -> None:
    """Discard (with a message) a .part that cannot be tied to `url` and the expected checksum."""
    part = data_dir / PART_NAME
    if not part.exists():
        (data_dir / PART_RECORD_NAME).unlink(missing_ok=True)  # a kill between the two removals
        return
    record = read_part_record(data_dir)
    reason = None
    if record is None:
        reason = f"there is no readable record of where its bytes came from ({PART_RECORD_NAME})"
    elif record.get("url") != url:
        reason = f"its bytes came from {record.get('url')}, not {url}"
    elif any(record.get(algorithm) not in (None, want) for algorithm, want in expected.items()):
        reason = "it was downloaded for another checksum"
    elif isinstance(record.get("size"), int) and part.stat().st_size > record["size"]:
        reason = f"it is larger than the {record['size']:,} bytes the server announced"
    if reason is not None:
        _note(f"discarding {part}: {reason}; downloading afresh")
        discard_part(data_dir)


def _fetch(url: str, data_dir: Path, expected: dict, *, progress: bool, retries: int, timeout_s: float) -> Path:
    """Download `url` to data_dir/tiny-imagenet-200.zip.part, resuming it; return the .part when complete."""
    part = data_dir / PART_NAME
    _check_part_source(data_dir, url, expected)
    attempt = restarts = 0
    while True:
        try:
            _fetch_once(url, data_dir, expected, progress=progress, timeout_s=timeout_s)
            return part
        except _SourceChanged:  # the .part is gone; starting over is no network failure, so no retry is used
            restarts += 1
            if restarts > 1:
                raise TinyconvError(f"the file at {url} changed again during the download; run again later") from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, bad status lines
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500 and exc.code != 408:
                raise TinyconvError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                reason = getattr(exc, "reason", None) or exc
                kept = (
                    f"{have} bytes kept in {part}, run again to resume"
                    if have
                    else "nothing downloaded; check the network, or pass --url with a local copy of the zip"
                )
                raise TinyconvError(f"download of {url} failed after {attempt} attempt(s): {reason}; {kept}") from None
            time.sleep(min(2.0 ** (attempt - 1), 10.0))


class _IncompleteDownload(OSError):
    pass


class _SourceChanged(Exception):
    """The server's file is no longer the one the .part holds the start of (discarded; _fetch starts over)."""


def _validators(headers) -> dict:
    """The server's validators of the file: ETag and Last-Modified (None where it sends none)."""
    return {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}


def _if_range(record: dict | None) -> str | None:
    # If-Range takes a strong ETag or a date (RFC 9110, 13.1.5); a weak ETag ("W/...") may not be used
    if not record:
        return None
    etag = record.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return record.get("last_modified")


def _changed(record: dict | None, validators: dict, total: int | None) -> str | None:
    """How the server's file differs from the one recorded for the .part (None when nothing says it does)."""
    if not record:
        return None
    for key, label in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        if record.get(key) and validators.get(key) and record[key] != validators[key]:
            return f"its {label} is now {validators[key]}, was {record[key]}"
    if isinstance(record.get("size"), int) and total is not None and record["size"] != total:
        return f"its size is now {total:,} bytes, was {record['size']:,}"
    return None


def _part_write_failed(part: Path, exc: OSError) -> TinyconvError:
    have = part.stat().st_size if part.exists() else 0
    kept = f"the {have:,} bytes downloaded so far are kept in it" if have else "nothing was downloaded yet"
    return TinyconvError(f"writing {part} failed: {os_error_reason(exc)}; {kept}, run again to resume once that "
                         f"is fixed{os_error_advice(exc)}")


# Longer than 60 lines: one request, from the headers it sends to the last byte it writes, read top to bottom.
def _fetch_once(url: str, data_dir: Path, expected: dict, *, progress: bool, timeout_s: float) -> None:
    part, record_path = data_dir / PART_NAME, data_dir / PART_RECORD_NAME
    offset = part.stat().st_size if part.exists() else 0
    record = read_part_record(data_dir) if offset else None
    headers = {"User-Agent": "tinyconv"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if _if_range(record):
            headers["If-Range"] = _if_range(record)  # a changed file comes back whole (200), not as a 206 tail
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is not a prefix the server can continue: start over
            _note(f"the server refused to resume {part} at byte {offset:,}; discarding it and starting over")
            discard_part(data_dir)
            raise _SourceChanged(f"server refused to resume at byte {offset}; starting over") from None
        raise
    with response:
        length = response.headers.get("Content-Length")
        validators = _validators(response.headers)
        if offset and response.status == 206 and _range_start(response.headers.get("Content-Range")) == offset:
            total = _range_total(response.headers.get("Content-Range"))
            total = total if total is not None else (offset + int(length) if length is not None else None)
            changed = _changed(record, validators, total)
            if changed:  # a server that ignores If-Range (or sends no validators for it): the tail of another file
                _note(f"the file at {url} changed since {part} was started ({changed}); discarding it")
                discard_part(data_dir)
                raise _SourceChanged(f"{url} changed; starting over")
            mode = "ab"
        else:  # a first request, a server without Range support, or If-Range saw a changed file
            if offset:
                why = _changed(record, validators, None) or "the server sent the whole file instead of the rest"
                _note(f"{part} cannot be resumed from {url} ({why}); downloading it afresh")
                part.unlink(missing_ok=True)  # before the new record: old bytes must never sit under it
            mode, offset, total = "wb", 0, int(length) if length is not None else None
            write_json(record_path, {"url": url, "size": total, **validators, **expected})
        received = offset
        try:
            # unbuffered: a failed write leaves no buffer for close() to fail on again; the .part stays a prefix
            sink = open(part, mode, buffering=0)
        except OSError as exc:
            raise _part_write_failed(part, exc) from None
        with sink, progress_bar(total, "download", "B", enabled=progress, leave=True, initial=offset,
                                unit_scale=True) as bar:
            while chunk := response.read(CHUNK_BYTES):  # network failures: OSError, retried by _fetch
                view = memoryview(chunk)
                try:
                    while view:
                        view = view[sink.write(view):]
                except OSError as exc:  # disk full, no permission: not a network failure, not retried
                    raise _part_write_failed(part, exc) from None
                received += len(chunk)
                bar.update(len(chunk))
    # http.client returns short reads without an error when the connection drops; compare with Content-Length.
    if total is not None and received != total:
        raise _IncompleteDownload(f"connection closed after {received} of {total} bytes")


def _range_total(content_range: str | None) -> int | None:
    # "bytes 100-199/200" -> 200 ("*" when the server does not know it)
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (AttributeError, IndexError, ValueError):
        return None


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-199/200" -> 100
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ extract


def _remove_stale_temporaries(data_dir: Path) -> None:
    """Clear what a killed run left under tinyconv.fileio's temporary names (only names of ours: the data folder
    may hold other files): extraction folders and a half-written .part record are removed; an old dataset moved
    aside (`.tiny-imagenet-200.<pid>.tmp`) goes back into place when a kill came before the new one was in place,
    and is removed otherwise."""
    root = data_dir / DATASET_DIRNAME
    for leftover in sorted(data_dir.glob(f".{DATASET_DIRNAME}.*.tmp*")):
        aside = leftover.is_dir() and re.fullmatch(rf"\.{re.escape(DATASET_DIRNAME)}\.\d+\.tmp", leftover.name)
        if aside and not root.exists() and _looks_complete(leftover):
            os.replace(leftover, root)
            print(f"note: put back {root}, which a killed download had moved aside", file=sys.stderr, flush=True)
        elif leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


# Bounds on what a zip may unpack to (zip bombs). Generous: the real dataset has 120,609 entries, 0.25 GB
# uncompressed, and its largest compression ratio (words.txt) is about 3.
MAX_ENTRIES = 500_000
MAX_UNCOMPRESSED_BYTES = 4 * 1024**3
MAX_RATIO = 100  # for entries over 1 MiB uncompressed; tiny entries may compress more without harm


def _safe_members(archive: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """Every entry of the zip, refusing any that would land outside the target folder, and zip bombs."""
    members = archive.infolist()
    if len(members) > MAX_ENTRIES:
        raise TinyconvError(f"{zip_path} holds {len(members):,} entries, more than the {MAX_ENTRIES:,} allowed: "
                            "not the Tiny ImageNet zip")
    total = sum(info.file_size for info in members)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise TinyconvError(f"{zip_path} would unpack to {total / 1024**3:.1f} GiB, more than the "
                            f"{MAX_UNCOMPRESSED_BYTES / 1024**3:.0f} GiB allowed: not the Tiny ImageNet zip")
    for info in members:
        if info.file_size > 1024**2 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise TinyconvError(f"entry {info.filename!r} of {zip_path} is compressed {info.file_size // max(info.compress_size, 1):,}:1, "
                                f"more than {MAX_RATIO}:1 allowed: a zip bomb, not the Tiny ImageNet zip")
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise TinyconvError(f"unsafe entry {info.filename!r} in {zip_path}: it points outside the dataset folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise TinyconvError(f"unsafe entry {info.filename!r} in {zip_path}: symbolic links are not extracted")
    return members


def _extract_into_place(zip_path: Path, root: Path, *, record: dict, progress: bool) -> None:
    staging = temporary_path(root.parent / f"{DATASET_DIRNAME}.extract")  # .tiny-imagenet-200.extract.<pid>.tmp
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
    except OSError as exc:
        raise _WriteFailed(f"creating {staging} failed: {os_error_reason(exc)}{os_error_advice(exc)}") from None
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = _safe_members(archive, zip_path)
                for info in progress_bar(len(members), "extract", "file", enabled=progress, iterable=members):
                    try:
                        archive.extract(info, staging)  # reading each entry checks its CRC
                    except zlib.error as exc:  # compressed data that does not inflate (a bad CRC is a BadZipFile)
                        raise TinyconvError(f"{zip_path} is damaged: entry {info.filename!r} does not decompress "
                                            f"({exc})") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise TinyconvError(f"{zip_path} is not a readable zip ({exc}); it may be truncated") from None
        except OSError as exc:
            if "CRC" in str(exc) or "Bad" in str(exc):
                raise TinyconvError(f"{zip_path} is damaged: {exc}") from None
            raise _WriteFailed(f"extracting {zip_path} into {staging} failed: {exc}") from None

        # The official zip holds tiny-imagenet-200/ at the top; accept a zip of its contents too.
        extracted = staging / DATASET_DIRNAME
        if not (extracted / "wnids.txt").is_file():
            extracted = staging
        if not _looks_complete(extracted):
            raise TinyconvError(
                f"{zip_path} does not hold the Tiny ImageNet layout "
                f"(expected {DATASET_DIRNAME}/ with wnids.txt, words.txt, train/, val/, test/)"
            )
        try:
            write_json(extracted / MARKER_NAME, record)
        except TinyconvError as exc:  # a write failure (disk full, ...), not a bad zip: the download is kept
            raise _WriteFailed(str(exc)) from None

        # Swap in the new dataset; an old one is moved aside first and deleted only once the new one is in place.
        # Aside under the bare temporary name (.tiny-imagenet-200.<pid>.tmp): _remove_stale_temporaries puts a
        # dataset left there by a kill back in place.
        try:
            replace_path(extracted, root, aside=temporary_path(root))
        except OSError as exc:  # permissions on the data folder, a busy folder on some file systems
            raise _WriteFailed(f"moving the extracted dataset into {root} failed: {os_error_reason(exc)}"
                               f"{'; the previous dataset is intact' if root.exists() else ''}"
                               f"{os_error_advice(exc)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
