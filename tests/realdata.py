"""The real Tiny ImageNet for tests, fetched once per test session through the real download path.

`ensure_real_data()` serves the shared zip over HTTP on 127.0.0.1 (with Range, ETag and If-Range support), runs the real
`download_dataset` against that URL with the shared sha256, prepares the uint8 cache and returns the data dir.
The result is cached for the life of the process, and shared by the processes of a test session (pytest-xdist's
workers) through a folder named by tests/conftest.py.

`serve_file()` is the small HTTP server behind it; tests also use it to cut a connection mid-download.
"""

from __future__ import annotations

import atexit
import email.utils
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ZIP_NAME = "tiny-imagenet-200.zip"

_real_data_dir: Path | None = None
_lock = threading.Lock()


def shared_zip_path() -> Path:
    """The assembled real zip: $TINYCONV_SHARED_ZIP, else the path printed by ../shared/data/assemble."""
    override = os.environ.get("TINYCONV_SHARED_ZIP")
    if override:
        return Path(override)
    printed = subprocess.run(
        [str(SHARED_DATA / "assemble")], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(printed.splitlines()[-1])


def shared_sha256() -> str:
    """The expected sha256 of the real zip, from ../shared/data/tiny-imagenet-200.zip.sha256."""
    return (SHARED_DATA / f"{ZIP_NAME}.sha256").read_text().split()[0]


@dataclass
class FileServer:
    """A running single-file HTTP server.

    `requests` records (method, Range header or None) per request, `if_range` the If-Range header (or None) per
    request, `bytes_sent` the body bytes served in all. `replace(path)` serves another file at the same URL from
    the next request on (the source changed: new ETag and Last-Modified).
    """

    url: str
    server: http.server.ThreadingHTTPServer
    thread: threading.Thread
    state: dict
    requests: list = field(default_factory=list)
    if_range: list = field(default_factory=list)

    @property
    def bytes_sent(self) -> int:
        return self.state["bytes_sent"]

    def replace(self, path: Path) -> None:
        self.state["file"] = _served_file(Path(path), generation=self.state["file"]["generation"] + 1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _served_file(path: Path, generation: int = 0) -> dict:
    size = path.stat().st_size
    # a strong ETag per file served; Last-Modified a second apart per generation (HTTP dates have 1 s resolution)
    return {"path": path, "size": size, "etag": f'"{size:x}-{generation}"',
            "last_modified": email.utils.formatdate(1_700_000_000 + generation, usegmt=True),
            "generation": generation}


def serve_file(path: Path, *, cut_after: int | None = None, honor_range: bool = True, validators: bool = True,
               honor_if_range: bool = True) -> FileServer:
    """Serve `path` at http://127.0.0.1:PORT/<name> from a daemon thread.

    Args:
        path: the file to serve.
        cut_after: when set, the first GET sends only this many body bytes and then drops the connection
            (later requests are served in full), to test resuming.
        honor_range: when False, Range headers are ignored (200 with the whole file), like some servers.
        validators: send ETag and Last-Modified (False: like servers that send neither).
        honor_if_range: when False, If-Range is ignored (a Range request always gets a 206), like some servers.
    """
    path = Path(path)
    requests: list = []
    if_range: list = []
    state = {"cut_pending": cut_after is not None, "file": _served_file(path), "bytes_sent": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            range_header = self.headers.get("Range")
            requests.append(("GET", range_header))
            if_range.append(self.headers.get("If-Range"))
            if self.path.lstrip("/") != path.name:
                self.send_error(404)
                return
            served = state["file"]
            size = served["size"]
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            # RFC 9110 13.1.5: a Range with an If-Range that does not match the current file is answered in full
            condition = self.headers.get("If-Range")
            current = condition in (served["etag"], served["last_modified"]) if condition is not None else True
            if honor_range and match and int(match.group(1)) < size and (current or not honor_if_range):
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes" if honor_range else "none")
            if validators:
                self.send_header("ETag", served["etag"])
                self.send_header("Last-Modified", served["last_modified"])
            self.end_headers()
            limit = size - start
            if state["cut_pending"]:
                state["cut_pending"] = False
                limit = min(limit, cut_after)
            with open(served["path"], "rb") as source:
                source.seek(start)
                remaining = limit
                while remaining > 0:
                    chunk = source.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
                    state["bytes_sent"] += len(chunk)
            if limit < size - start:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up (tests do) is no error
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # shutdown() waits for the loop's next poll: at the default 0.5 s that was half a second of every download test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    return FileServer(url=url, server=server, thread=thread, state=state, requests=requests, if_range=if_range)


SHARED_DIR_VAR = "TINYCONV_TEST_REALDATA_DIR"


def _download_and_prepare(data_dir: Path) -> None:
    from tinyconv.data.dataset import prepare
    from tinyconv.data.download import download_dataset

    served = serve_file(shared_zip_path())
    try:
        download_dataset(data_dir, url=served.url, sha256=shared_sha256(), progress=False)
    finally:
        served.close()
    prepare(data_dir, progress=False)


def ensure_real_data() -> Path:
    """Download (from a local HTTP server), verify, extract and prepare the real dataset once.

    Once per test session when $TINYCONV_TEST_REALDATA_DIR names a folder (tests/conftest.py sets it before
    pytest-xdist starts its workers, and removes the folder at the end): the first process to need the data
    prepares it there under an exclusive lock, the others wait for it and use it. Without it, once per process
    in a temporary folder removed at exit.

    Returns:
        the data dir that holds tiny-imagenet-200/ and cache/ (do not modify).
    """
    global _real_data_dir
    with _lock:
        if _real_data_dir is not None:
            return _real_data_dir
        shared = os.environ.get(SHARED_DIR_VAR)
        if shared:
            import fcntl

            data_dir = Path(shared)
            data_dir.mkdir(parents=True, exist_ok=True)
            ready = data_dir.with_name(data_dir.name + ".prepared")  # beside it: the data dir holds only the data
            with open(data_dir.with_name(data_dir.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
                if not ready.exists():
                    for leftover in data_dir.iterdir():  # a process that failed or died halfway
                        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
                    _download_and_prepare(data_dir)
                    ready.write_text("")
        else:
            data_dir = Path(tempfile.mkdtemp(prefix="tinyconv-realdata-"))
            atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
            _download_and_prepare(data_dir)
        _real_data_dir = data_dir
        return data_dir
