"""download_dataset: local and HTTP sources, resume, checksums, safe extraction, and nothing lost on failure.

Bad-input cases use small synthetic zips (fast); the real zip goes through the same code in the shared
`real_data_dir` fixture (tests/realdata.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from realdata import serve_file
from synthetic import make_synthetic_dataset, zip_dataset
from tinyconv.data.download import MARKER_NAME, download_dataset
from tinyconv.errors import TinyconvError

REPO = Path(__file__).resolve().parents[1]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_zip(tmp_path_factory) -> Path:
    """A small synthetic dataset zipped like the official zip (3 classes, 8 train + 2 val each, 3 test)."""
    folder = tmp_path_factory.mktemp("small-zip")
    root = make_synthetic_dataset(folder / "src", num_classes=3, train_per_class=8, val_per_class=2, test_count=3)
    return zip_dataset(root, folder / "tiny-imagenet-200.zip")


@pytest.fixture(scope="module")
def other_zip(tmp_path_factory) -> Path:
    """A second, different valid dataset zip (another seed)."""
    folder = tmp_path_factory.mktemp("other-zip")
    root = make_synthetic_dataset(
        folder / "src", num_classes=3, train_per_class=8, val_per_class=2, test_count=3, seed=9
    )
    return zip_dataset(root, folder / "tiny-imagenet-200.zip")


def tree_snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under folder."""
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(data_dir: Path) -> list[str]:
    """Anything but the dataset itself and the (empty once released) lock file: temporary folders, partial
    downloads, stray zips."""
    return sorted(p.name for p in data_dir.iterdir() if p.name not in ("tiny-imagenet-200", ".download.lock"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinyconv", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # stderr may also hold progress bars; the error is one line, the last one
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("tinyconv: error: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0]


# ------------------------------------------------------------------------------------------ sources


def test_local_zip_is_checked_extracted_and_left_alone(tmp_path, small_zip):
    digest = sha256_of(small_zip)
    root = download_dataset(tmp_path / "data", url=str(small_zip), sha256=digest, progress=False)
    assert root == tmp_path / "data" / "tiny-imagenet-200"
    assert (root / "wnids.txt").read_text().split() == ["n02124075", "n04067472", "n04540053"]
    assert len(list((root / "train").glob("*/images/*.JPEG"))) == 24
    assert json.loads((root / MARKER_NAME).read_text())["sha256"] == digest
    assert small_zip.is_file() and sha256_of(small_zip) == digest  # the user's zip is not moved or deleted
    assert leftovers(tmp_path / "data") == []

    # Running again does nothing: the marker records the verified checksum, the source is not read.
    before = tree_snapshot(root)
    missing_source = tmp_path / "gone.zip"
    assert download_dataset(tmp_path / "data", url=str(missing_source), sha256=digest, progress=False) == root
    assert tree_snapshot(root) == before


def test_file_url_and_md5(tmp_path, small_zip):
    md5 = hashlib.md5(small_zip.read_bytes()).hexdigest()
    root = download_dataset(tmp_path / "data", url=small_zip.as_uri(), md5=md5, progress=False)
    assert (root / "val" / "val_annotations.txt").is_file()


def test_http_download_verifies_and_keeps_no_zip_copy(tmp_path, small_zip):
    served = serve_file(small_zip)
    try:
        root = download_dataset(tmp_path / "data", url=served.url, sha256=sha256_of(small_zip), progress=False)
    finally:
        served.close()
    assert served.requests == [("GET", None)]
    assert (root / "test" / "images" / "test_2.JPEG").is_file()
    assert leftovers(tmp_path / "data") == []  # neither the .part nor a second copy of the zip


# --------------------------------------------------------------------------------------------- resume


def test_dropped_connection_resumes_on_the_next_run(tmp_path, small_zip):
    cut = small_zip.stat().st_size // 2
    served = serve_file(small_zip, cut_after=cut)
    data_dir = tmp_path / "data"
    try:
        with pytest.raises(TinyconvError, match=rf"{cut} bytes kept in .*tiny-imagenet-200\.zip\.part, run again"):
            download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False, retries=0)
        assert (data_dir / "tiny-imagenet-200.zip.part").stat().st_size == cut
        assert not (data_dir / "tiny-imagenet-200").exists()

        root = download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False, retries=0)
    finally:
        served.close()
    assert served.requests == [("GET", None), ("GET", f"bytes={cut}-")]
    assert json.loads((root / MARKER_NAME).read_text())["sha256"] == sha256_of(small_zip)
    assert leftovers(data_dir) == []


def test_dropped_connection_is_resumed_within_one_run(tmp_path, small_zip):
    cut = 1000
    served = serve_file(small_zip, cut_after=cut)
    try:
        download_dataset(tmp_path / "data", url=served.url, sha256=sha256_of(small_zip), progress=False, retries=2)
    finally:
        served.close()
    assert served.requests == [("GET", None), ("GET", f"bytes={cut}-")]


def test_server_that_ignores_range_starts_over(tmp_path, small_zip, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    served = serve_file(small_zip, honor_range=False, validators=False)
    (data_dir / "tiny-imagenet-200.zip.part").write_bytes(b"not the start of the zip" * 10)
    (data_dir / "tiny-imagenet-200.zip.part.json").write_text(json.dumps({"url": served.url, "size": None}))
    try:
        download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False)
    finally:
        served.close()
    assert served.requests == [("GET", "bytes=240-")]  # asked to resume, got the whole file, wrote it afresh
    assert "(the server sent the whole file instead of the rest); downloading it afresh" in capsys.readouterr().err
    assert leftovers(data_dir) == []


# ----------------------------------------------------------- the .part's record: one source, never two


def cut_download(data_dir: Path, served, cut: int, **kwargs) -> None:
    """A first run whose connection drops after `cut` bytes (no retries): leaves a .part and its record."""
    with pytest.raises(TinyconvError, match=rf"{cut} bytes kept in .*\.part, run again"):
        download_dataset(data_dir, url=served.url, progress=False, retries=0, **kwargs)


def test_a_part_records_its_source_and_the_resume_asks_with_if_range(tmp_path, small_zip):
    data_dir = tmp_path / "data"
    cut = small_zip.stat().st_size // 3
    served = serve_file(small_zip, cut_after=cut)
    try:
        cut_download(data_dir, served, cut, sha256=sha256_of(small_zip))
        record = json.loads((data_dir / "tiny-imagenet-200.zip.part.json").read_text())
        etag = record["etag"]
        assert record == {"url": served.url, "size": small_zip.stat().st_size, "etag": etag,
                          "last_modified": record["last_modified"], "sha256": sha256_of(small_zip)}
        assert etag and record["last_modified"].endswith("GMT")
        download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False, retries=0)
    finally:
        served.close()
    assert served.requests == [("GET", None), ("GET", f"bytes={cut}-")] and served.if_range == [None, etag]
    assert served.bytes_sent == small_zip.stat().st_size  # every byte once
    assert leftovers(data_dir) == []  # the record goes with the .part


@pytest.mark.parametrize("honor_if_range", [True, False], ids=["if-range", "server-ignores-if-range"])
def test_a_source_that_changed_since_the_part_is_downloaded_afresh(tmp_path, small_zip, other_zip, capsys,
                                                                   honor_if_range):
    # no checksum (a mirror): only the record can tell that the server's file is no longer the .part's
    data_dir = tmp_path / "data"
    cut = small_zip.stat().st_size // 3
    served = serve_file(small_zip, cut_after=cut, honor_if_range=honor_if_range)
    try:
        cut_download(data_dir, served, cut)
        served.replace(other_zip)  # the mirror now holds another file at the same URL
        root = download_dataset(data_dir, url=served.url, progress=False, retries=0)
    finally:
        served.close()
    # the new file whole, never the old file's start joined to the new file's tail
    assert json.loads((root / MARKER_NAME).read_text())["sha256"] == sha256_of(other_zip)
    err = capsys.readouterr().err
    if honor_if_range:  # the server answered the If-Range with the whole new file
        assert served.requests == [("GET", None), ("GET", f"bytes={cut}-")]
        assert "cannot be resumed" in err and "ETag is now" in err
    else:  # the server sent a 206 tail of the new file: caught by its ETag, discarded, asked again
        assert served.requests == [("GET", None), ("GET", f"bytes={cut}-"), ("GET", None)]
        assert "changed since" in err and "ETag is now" in err and "discarding it" in err
    assert leftovers(data_dir) == []


def test_a_part_of_another_url_or_without_a_record_is_discarded_with_a_message(tmp_path, small_zip, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    served = serve_file(small_zip)
    try:
        (data_dir / "tiny-imagenet-200.zip.part").write_bytes(small_zip.read_bytes()[:500])
        (data_dir / "tiny-imagenet-200.zip.part.json").write_text(json.dumps({"url": "http://elsewhere/x.zip"}))
        download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False)
        assert "its bytes came from http://elsewhere/x.zip, not " + served.url in capsys.readouterr().err

        shutil.rmtree(data_dir / "tiny-imagenet-200")
        (data_dir / "tiny-imagenet-200.zip.part").write_bytes(small_zip.read_bytes()[:500])  # no record at all
        download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False)
        assert "no readable record of where its bytes came from" in capsys.readouterr().err
    finally:
        served.close()
    assert served.requests == [("GET", None), ("GET", None)]  # never a Range on bytes of unknown origin
    assert leftovers(data_dir) == []


def test_a_complete_part_without_checksum_is_extracted_by_its_record_without_a_request(tmp_path, small_zip,
                                                                                       monkeypatch):
    import errno

    data_dir = tmp_path / "data"
    served = serve_file(small_zip)
    real_extract = zipfile.ZipFile.extract

    def disk_full(self, member, path=None, pwd=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        monkeypatch.setattr(zipfile.ZipFile, "extract", disk_full)
        with pytest.raises(TinyconvError, match="the download is kept in"):
            download_dataset(data_dir, url=served.url, progress=False)  # a mirror, no checksum given
        monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)
        root = download_dataset(data_dir, url=served.url, progress=False)
    finally:
        served.close()
    assert served.requests == [("GET", None)] and served.bytes_sent == small_zip.stat().st_size
    assert json.loads((root / MARKER_NAME).read_text())["sha256"] == sha256_of(small_zip)
    assert leftovers(data_dir) == []


# ----------------------------------------------------------- write failures while downloading the .part


class FailingPart:
    """A .part opened for writing that takes `room` more bytes, then fails like a full disk."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        import errno

        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.handle.write(bytes(data[: self.room]))
        self.room -= written
        return written

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_disk_full_while_downloading_is_one_line_and_the_part_is_kept_for_the_resume(tmp_path, small_zip, monkeypatch):
    from tinyconv.data import download as download_module

    data_dir = tmp_path / "data"
    room = small_zip.stat().st_size // 2 + 123
    served = serve_file(small_zip)

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return FailingPart(handle, room) if str(path).endswith(".part") else handle

    try:
        monkeypatch.setattr(download_module, "open", open_on_a_full_disk, raising=False)
        with pytest.raises(TinyconvError) as failure:
            download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False, retries=3)
        message = str(failure.value)
        assert "\n" not in message and message.startswith(f"writing {data_dir / 'tiny-imagenet-200.zip.part'} failed: "
                                                          "No space left on device")
        assert f"the {room:,} bytes downloaded so far are kept in it" in message and message.endswith("free some space")
        assert served.requests == [("GET", None)]  # a full disk is not a network failure: no retries
        assert (data_dir / "tiny-imagenet-200.zip.part").read_bytes() == small_zip.read_bytes()[:room]

        monkeypatch.undo()
        download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False)
    finally:
        served.close()
    assert served.requests == [("GET", None), ("GET", f"bytes={room}-")]  # resumed where the disk filled up
    assert leftovers(data_dir) == []


def test_an_unwritable_part_is_one_line_from_the_command(tmp_path, small_zip, monkeypatch, capsys):
    from tinyconv.data import download as download_module
    from tinyconv.cli import main

    data_dir = tmp_path / "data"
    served = serve_file(small_zip)

    def open_without_permission(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part"):
            raise PermissionError(13, "Permission denied")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(download_module, "open", open_without_permission, raising=False)
    try:
        assert main(["download", "--url", served.url, "--data-dir", str(data_dir)]) == 1
    finally:
        served.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"tinyconv: error: writing {data_dir / 'tiny-imagenet-200.zip.part'} failed: Permission denied; "
                       "nothing was downloaded yet, run again to resume once that is fixed; check its permissions")
    assert served.requests == [("GET", None)]


# ------------------------------------------------------------------------------------------ bad input


def test_checksum_mismatch_leaves_nothing_and_says_so(tmp_path, small_zip):
    served = serve_file(small_zip)
    data_dir = tmp_path / "data"
    try:
        mismatch = r"checksum mismatch for .*\.part: sha256 is [0-9a-f]{64}, expected 0{64}"
        with pytest.raises(TinyconvError, match=mismatch):
            download_dataset(data_dir, url=served.url, sha256="0" * 64, progress=False)
    finally:
        served.close()
    assert leftovers(data_dir) == [] and not (data_dir / "tiny-imagenet-200").exists()

    result = run_cli("download", "--url", str(small_zip), "--md5", "f" * 32, "--data-dir", str(data_dir))
    assert_one_line_error(result, "checksum mismatch", str(small_zip), "expected " + "f" * 32)


def test_failed_replacement_keeps_the_good_dataset(tmp_path, small_zip, other_zip):
    data_dir = tmp_path / "data"
    root = download_dataset(data_dir, url=str(small_zip), sha256=sha256_of(small_zip), progress=False)
    before = tree_snapshot(root)
    # asking for another dataset whose checksum does not match: the existing one stays, byte for byte
    with pytest.raises(TinyconvError, match="checksum mismatch"):
        download_dataset(data_dir, url=str(other_zip), sha256="1" * 64, progress=False)
    assert tree_snapshot(root) == before and leftovers(data_dir) == []
    # a matching, different dataset replaces it completely
    download_dataset(data_dir, url=str(other_zip), sha256=sha256_of(other_zip), progress=False)
    assert tree_snapshot(root) != before
    assert json.loads((root / MARKER_NAME).read_text())["sha256"] == sha256_of(other_zip)
    assert leftovers(data_dir) == []


def test_truncated_zip_is_refused(tmp_path, small_zip):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(small_zip.read_bytes()[: small_zip.stat().st_size * 2 // 3])
    data_dir = tmp_path / "data"
    with pytest.raises(TinyconvError, match=r"truncated\.zip is not a readable zip .*truncated"):
        download_dataset(data_dir, url=str(truncated), progress=False)
    assert leftovers(data_dir) == [] and not (data_dir / "tiny-imagenet-200").exists()
    result = run_cli("download", "--url", str(truncated), "--data-dir", str(data_dir))
    assert_one_line_error(result, "truncated.zip is not a readable zip")


def damaged_deflate_zip(source: Path, target: Path) -> Path:
    """A copy of the zip `source` whose words.txt holds a deflate stream that does not decompress: the first byte
    of its data becomes 0xFF, a final block of the reserved type 3 ("invalid block type"), not a CRC mismatch."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo("tiny-imagenet-200/words.txt")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    name_length, extra_length = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_length + extra_length] = 0xFF  # past the local file header
    target.write_bytes(bytes(data))
    return target


def test_a_zip_whose_compressed_data_is_damaged_is_one_line_and_a_bad_download_is_discarded(tmp_path, small_zip):
    damaged = damaged_deflate_zip(small_zip, tmp_path / "damaged.zip")
    before = sha256_of(damaged)
    data_dir = tmp_path / "data"
    with pytest.raises(TinyconvError, match=r"damaged\.zip is damaged: .*invalid block type"):
        download_dataset(data_dir, url=str(damaged), progress=False)
    assert leftovers(data_dir) == [] and not (data_dir / "tiny-imagenet-200").exists()
    assert sha256_of(damaged) == before  # the user's zip is left as it is
    result = run_cli("download", "--url", str(damaged), "--data-dir", str(data_dir))
    assert_one_line_error(result, "damaged.zip is damaged", "invalid block type")

    # downloaded without a checksum to catch it first: the .part goes, so that the next run fetches afresh
    served = serve_file(damaged)
    try:
        with pytest.raises(TinyconvError, match=r"\.part is damaged: .*invalid block type"):
            download_dataset(data_dir, url=served.url, progress=False)
    finally:
        served.close()
    assert leftovers(data_dir) == [] and not (data_dir / "tiny-imagenet-200").exists()


@pytest.mark.parametrize("bad_name", ["tiny-imagenet-200/../escaped.txt", "/tmp/tinyconv-absolute.txt"])
def test_zip_entry_outside_the_target_is_refused(tmp_path, small_zip, bad_name):
    evil = tmp_path / "evil.zip"
    evil.write_bytes(small_zip.read_bytes())
    with zipfile.ZipFile(evil, "a") as archive:
        archive.writestr(zipfile.ZipInfo(bad_name), b"should never be written")
    data_dir = tmp_path / "data"
    good = download_dataset(data_dir, url=str(small_zip), sha256=sha256_of(small_zip), progress=False)
    before = tree_snapshot(good)
    with pytest.raises(TinyconvError, match=rf"unsafe entry '{bad_name}' in .*evil\.zip"):
        download_dataset(data_dir, url=str(evil), sha256=sha256_of(evil), progress=False)
    assert tree_snapshot(good) == before and leftovers(data_dir) == []
    assert not (data_dir / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/tinyconv-absolute.txt").exists()


def test_zip_without_the_layout_is_refused(tmp_path):
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("photos/cat.jpg", b"not tiny imagenet")
    with pytest.raises(TinyconvError, match="does not hold the Tiny ImageNet layout"):
        download_dataset(tmp_path / "data", url=str(wrong), progress=False)
    assert leftovers(tmp_path / "data") == []


def test_unwritable_data_dir_is_a_clear_error(tmp_path, small_zip):
    # Tests run as root, for whom permission bits do not stop writes; a data dir *under a regular file*
    # cannot be created by anyone (ENOTDIR), which is the same "cannot write here" case for the user.
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a folder")
    data_dir = blocker / "data"
    with pytest.raises(TinyconvError, match=r"cannot create data dir .*a-file/data: Not a directory"):
        download_dataset(data_dir, url=str(small_zip), progress=False)
    result = run_cli("download", "--url", str(small_zip), "--data-dir", str(data_dir))
    assert_one_line_error(result, "cannot create data dir", str(data_dir))
    assert blocker.read_text() == "I am a file, not a folder"


def test_missing_local_zip_and_bad_checksum_syntax(tmp_path):
    with pytest.raises(TinyconvError, match=r"no such file: .*nothing\.zip"):
        download_dataset(tmp_path / "data", url=str(tmp_path / "nothing.zip"), progress=False)
    with pytest.raises(TinyconvError, match="--sha256 must be 64 hex digits"):
        download_dataset(tmp_path / "data", url=str(tmp_path / "nothing.zip"), sha256="abc", progress=False)


def test_interrupted_extraction_leaves_the_old_dataset_and_no_temporaries(tmp_path, small_zip, other_zip, monkeypatch):
    data_dir = tmp_path / "data"
    root = download_dataset(data_dir, url=str(small_zip), sha256=sha256_of(small_zip), progress=False)
    before = tree_snapshot(root)
    real_extract = zipfile.ZipFile.extract
    calls = {"n": 0}

    def extract_then_interrupt(self, member, path=None, pwd=None):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # Ctrl-C half way through the extraction
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", extract_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        download_dataset(data_dir, url=str(other_zip), sha256=sha256_of(other_zip), progress=False)
    assert tree_snapshot(root) == before and leftovers(data_dir) == []


# ------------------------------------------------------------------ extraction failures keep the download


def test_disk_full_during_extraction_keeps_the_verified_download_for_the_next_run(tmp_path, small_zip, monkeypatch):
    import errno

    data_dir = tmp_path / "data"
    served = serve_file(small_zip)
    real_extract = zipfile.ZipFile.extract
    calls = {"n": 0}

    def extract_until_the_disk_is_full(self, member, path=None, pwd=None):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_extract(self, member, path, pwd)

    try:
        monkeypatch.setattr(zipfile.ZipFile, "extract", extract_until_the_disk_is_full)
        with pytest.raises(TinyconvError, match=r"No space left on device; the download is kept in .*\.part, run again"):
            download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False)
        assert sha256_of(data_dir / "tiny-imagenet-200.zip.part") == sha256_of(small_zip)
        monkeypatch.undo()
        root = download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False)
    finally:
        served.close()
    assert served.requests == [("GET", None)]  # the second run sent no request: it extracted the kept download
    assert (root / "wnids.txt").is_file() and leftovers(data_dir) == []


def test_a_complete_part_left_by_a_kill_is_checked_and_used_without_a_request(tmp_path, small_zip):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copyfile(small_zip, data_dir / "tiny-imagenet-200.zip.part")  # a kill during extraction left it whole
    served = serve_file(small_zip)
    try:
        root = download_dataset(data_dir, url=served.url, sha256=sha256_of(small_zip), progress=False)
    finally:
        served.close()
    assert served.requests == [] and (root / "wnids.txt").is_file() and leftovers(data_dir) == []


def test_a_dataset_a_killed_replacement_left_moved_aside_is_put_back(tmp_path, small_zip, capsys):
    data_dir = tmp_path / "data"
    root = download_dataset(data_dir, url=str(small_zip), sha256=sha256_of(small_zip), progress=False)
    before = tree_snapshot(root)
    # a kill between moving the old dataset aside and moving the new one in (process 99999, now dead)
    root.rename(data_dir / ".tiny-imagenet-200.99999.tmp")
    (data_dir / ".tiny-imagenet-200.extract.99999.tmp").mkdir()  # its half-done extraction
    missing_source = tmp_path / "gone.zip"
    assert download_dataset(data_dir, url=str(missing_source), sha256=sha256_of(small_zip), progress=False) == root
    assert tree_snapshot(root) == before and leftovers(data_dir) == []
    assert "put back" in capsys.readouterr().err


@pytest.mark.parametrize("site", ["marker", "swap"])
def test_a_write_failure_after_extraction_keeps_the_download_and_the_old_dataset(tmp_path, small_zip, other_zip,
                                                                                  monkeypatch, site):
    import errno
    import os

    data_dir = tmp_path / "data"
    root = download_dataset(data_dir, url=str(small_zip), sha256=sha256_of(small_zip), progress=False)
    before = tree_snapshot(root)
    real_replace = os.replace

    def replace(src, dst):
        if (site == "marker" and Path(dst).name == MARKER_NAME) or (site == "swap" and Path(dst) == root
                                                                     and ".extract." in str(src)):
            raise OSError(errno.EACCES if site == "swap" else errno.ENOSPC, "injected")
        return real_replace(src, dst)

    served = serve_file(other_zip)
    try:
        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(TinyconvError, match=r"injected.*; the download is kept in .*\.part, run again"):
            download_dataset(data_dir, url=served.url, sha256=sha256_of(other_zip), progress=False)
        monkeypatch.undo()
        assert tree_snapshot(root) == before  # the old dataset, whole
        assert sha256_of(data_dir / "tiny-imagenet-200.zip.part") == sha256_of(other_zip)
        download_dataset(data_dir, url=served.url, sha256=sha256_of(other_zip), progress=False)
    finally:
        served.close()
    assert served.requests == [("GET", None)]  # the kept download was used
    assert json.loads((root / MARKER_NAME).read_text())["sha256"] == sha256_of(other_zip)
    assert leftovers(data_dir) == []
