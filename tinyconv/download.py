"""Fetch, check and safely extract the Tiny ImageNet zip.

`download_dataset` accepts the official URL (the default), any HTTP(S) mirror, a local path or a `file://` URL.
An HTTP download streams into `<data_dir>/tiny-imagenet-200.zip.part` and resumes from there with a Range
request when interrupted. The zip is checked (md5 for the official URL, or the sha256/md5 you give), its
entries are checked to stay inside the target, and it is extracted into a temporary folder beside the
target that is moved into place only when complete. A downloaded zip is deleted once its contents are in
place (the dataset is what you need, not a second 240 MB copy); a local zip you point at is never touched.

A marker file `tiny-imagenet-200/.tinyconv-download.json` records the verified checksums, so running again
does nothing while the dataset is there.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tinyconv.errors import TinyconvError
from tinyconv.locks import folder_lock
from tinyconv.fileio import temporary_path, write_json

DATASET_DIRNAME = "tiny-imagenet-200"
OFFICIAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
MARKER_NAME = ".tinyconv-download.json"
ZIP_NAME = f"{DATASET_DIRNAME}.zip"
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
    if _looks_complete(root):
        marker = _read_marker(root)
        if marker is None:
            # Extracted by hand (no marker): there is no zip to check it against, so keep it as it is.
            _say(progress, f"{root} is already there (extracted without tinyconv; delete it to download afresh)")
            return root
        if all(marker.get(algorithm) == value for algorithm, value in requested.items()):
            _say(progress, f"{root} is already downloaded and verified; nothing to do")
            return root
    with folder_lock(data_dir / LOCK_NAME, "download"):  # a second download into data_dir fails at once
        return _download_and_extract(data_dir, url, expected, root, progress=progress, retries=retries,
                                     timeout_s=timeout_s)


def _download_and_extract(data_dir: Path, url: str, expected: dict, root: Path, *, progress: bool, retries: int,
                          timeout_s: float) -> Path:
    """download_dataset's work once it holds the data folder's lock: fetch, check, extract into place."""
    _remove_stale_temporaries(data_dir)  # under the lock, every temporary is a dead process's

    local_zip = _local_path(url)
    if local_zip is not None:
        if not local_zip.is_file():
            raise TinyconvError(f"no such file: {local_zip}")
        zip_path, downloaded = local_zip, False
    elif expected and _complete_part(data_dir, expected, progress=progress):
        # a kill during an earlier extraction left the whole, verified download: no new request
        zip_path, downloaded = data_dir / f"{ZIP_NAME}.part", True
        _say(progress, f"{zip_path} is a complete download with the expected checksum; extracting it")
    else:
        zip_path, downloaded = _fetch(url, data_dir, progress=progress, retries=retries, timeout_s=timeout_s), True

    checksums = _file_checksums(zip_path, progress=progress)
    for algorithm, want in expected.items():
        if checksums[algorithm] != want:
            if downloaded:
                zip_path.unlink(missing_ok=True)  # a bad download must not be resumed next time
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
            zip_path.unlink(missing_ok=True)  # its contents are unusable; a fresh download is the only fix
        raise
    if downloaded:
        zip_path.unlink(missing_ok=True)
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
    from tqdm.auto import tqdm  # late: inside a notebook its import warns unless tinyconv.notebooks filtered it

    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as source, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc="checksum", disable=not progress, leave=False
    ) as bar:
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


def _complete_part(data_dir: Path, expected: dict, *, progress: bool) -> bool:
    """Whether data_dir holds a .part whose checksums are the expected ones (a whole download)."""
    part = data_dir / f"{ZIP_NAME}.part"
    if not part.is_file():
        return False
    checksums = _file_checksums(part, progress=progress)
    return all(checksums[algorithm] == want for algorithm, want in expected.items())


def _fetch(url: str, data_dir: Path, *, progress: bool, retries: int, timeout_s: float) -> Path:
    """Download `url` to data_dir/tiny-imagenet-200.zip.part, resuming it; return the .part when complete."""
    part = data_dir / f"{ZIP_NAME}.part"
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, progress=progress, timeout_s=timeout_s)
            return part
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


def _fetch_once(url: str, part: Path, *, progress: bool, timeout_s: float) -> None:
    from tqdm.auto import tqdm  # late: inside a notebook its import warns unless tinyconv.notebooks filtered it

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "tinyconv"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is not a prefix the server can continue: start over
            part.unlink()
            raise _IncompleteDownload(f"server refused to resume at byte {offset}; starting over") from None
        raise
    with response:
        length = response.headers.get("Content-Length")
        if offset and response.status == 206 and _range_start(response.headers.get("Content-Range")) == offset:
            mode, total = "ab", offset + int(length) if length is not None else None
        else:
            mode, offset, total = "wb", 0, int(length) if length is not None else None  # Range ignored
        received = offset
        with open(part, mode) as sink, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc="download", disable=not progress
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):
                sink.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # http.client returns short reads without an error when the connection drops; compare with Content-Length.
    if total is not None and received != total:
        raise _IncompleteDownload(f"connection closed after {received} of {total} bytes")


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-199/200" -> 100
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


# ------------------------------------------------------------------------------------------ extract


def _remove_stale_temporaries(data_dir: Path) -> None:
    """Remove extraction folders a killed run left behind (tinyconv.fileio's temporary names; never the dataset)."""
    for leftover in data_dir.glob(f".{DATASET_DIRNAME}.*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


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
    from tqdm.auto import tqdm  # late: inside a notebook its import warns unless tinyconv.notebooks filtered it

    staging = temporary_path(root.parent / f"{DATASET_DIRNAME}.extract")  # .tiny-imagenet-200.extract.<pid>.tmp
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = _safe_members(archive, zip_path)
                for info in tqdm(members, desc="extract", unit="file", disable=not progress, leave=False):
                    archive.extract(info, staging)  # reading each entry checks its CRC
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
        write_json(extracted / MARKER_NAME, record)

        # Swap in the new dataset; an old one is moved aside first and deleted only once the new one is in place.
        previous = None
        if root.exists():
            previous = temporary_path(root)  # .tiny-imagenet-200.<pid>.tmp
            os.replace(root, previous)
        try:
            os.replace(extracted, root)
        except OSError:
            if previous is not None:
                os.replace(previous, root)
            raise
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
