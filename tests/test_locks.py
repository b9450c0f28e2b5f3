"""Locks on shared folders (tinyconv.locks) and the zip-bomb bounds of download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tinyconv.data import download as download_module
from tinyconv.data.download import download_dataset
from tinyconv.errors import TinyconvError
from tinyconv.locks import folder_lock

REPO = Path(__file__).resolve().parents[1]

_HOLD = """
import sys, time
from tinyconv.locks import folder_lock
with folder_lock(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held_lock():
    """Start a process that holds the lock at the given path; yields a function(path) -> the process's pid."""
    processes = []

    def hold(path: Path) -> int:
        process = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process.pid

    yield hold
    for process in processes:
        process.kill()
        process.wait()


def test_a_second_holder_fails_at_once_naming_the_first(tmp_path, held_lock):
    pid = held_lock(tmp_path / "x.lock")
    start = time.monotonic()
    with pytest.raises(TinyconvError, match=rf"in use by process {pid} on .*lock .*x\.lock"):
        with folder_lock(tmp_path / "x.lock", "test"):
            pass
    assert time.monotonic() - start < 2  # refused, not waited for


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "x.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "started": 0}))
    with folder_lock(tmp_path / "x.lock", "test"):
        assert json.loads((tmp_path / "x.lock").read_text())["pid"] == os.getpid()
    assert f"taking over the test lock {tmp_path / 'x.lock'}" in capsys.readouterr().err
    assert (tmp_path / "x.lock").read_text() == ""  # released: empty, nothing to take over next time


def test_two_downloads_into_one_data_folder(tmp_path, held_lock, synthetic_data_dir):
    sys.path.insert(0, str(REPO / "tests"))
    from synthetic import zip_dataset

    zip_path = zip_dataset(synthetic_data_dir / "tiny-imagenet-200", tmp_path / "tiny.zip")
    data_dir = tmp_path / "data"
    pid = held_lock(data_dir / download_module.LOCK_NAME)
    with pytest.raises(TinyconvError, match=rf"download in .*data is in use by process {pid}"):
        download_dataset(data_dir, url=str(zip_path), progress=False)
    assert not (data_dir / "tiny-imagenet-200").exists()


def test_two_trainers_on_one_run_folder(tmp_path, held_lock, synthetic_data_dir):
    from tinyconv.training.train import LOCK_NAME, train

    run_dir = tmp_path / "run"
    progress = train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2}, time_limit=1e-4)
    assert progress["complete"] is False  # a run to resume: what a second trainer would find
    history = (run_dir / "history.csv").read_text()
    pid = held_lock(run_dir / LOCK_NAME)  # as the first trainer would, while it trains
    with pytest.raises(TinyconvError, match=rf"training run in .*run is in use by process {pid}"):
        train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2})
    assert (run_dir / "history.csv").read_text() == history  # the first trainer's files untouched


def test_two_prepares_of_one_cache(tmp_path, held_lock, synthetic_data_dir):
    import shutil

    from tinyconv.data.dataset import prepare

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "tiny-imagenet-200", data_dir / "tiny-imagenet-200")
    pid = held_lock(data_dir / "cache" / ".prepare.lock")
    with pytest.raises(TinyconvError, match=rf"dataset cache in .*cache is in use by process {pid}"):
        prepare(data_dir, progress=False)


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_a_zip_of_too_many_entries_is_refused_quickly(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "MAX_ENTRIES", 50)
    bomb = _zip(tmp_path / "many.zip", {f"tiny-imagenet-200/f{i}.txt": b"x" for i in range(60)})
    start = time.monotonic()
    with pytest.raises(TinyconvError, match="60 entries, more than the 50 allowed"):
        download_dataset(tmp_path / "data", url=str(bomb), progress=False)
    assert time.monotonic() - start < 5 and not (tmp_path / "data" / "tiny-imagenet-200").exists()


def test_a_highly_compressed_entry_is_refused(tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", {"tiny-imagenet-200/wnids.txt": b"\0" * (64 * 1024**2)})  # 64 MiB of zeros
    assert bomb.stat().st_size < 1024**2
    with pytest.raises(TinyconvError, match="compressed .*:1, more than 100:1 allowed: a zip bomb"):
        download_dataset(tmp_path / "data", url=str(bomb), progress=False)


def test_a_zip_declaring_too_much_in_all_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "MAX_UNCOMPRESSED_BYTES", 1000)
    big = _zip(tmp_path / "big.zip", {f"tiny-imagenet-200/f{i}.bin": os.urandom(600) for i in range(2)})
    with pytest.raises(TinyconvError, match="would unpack to .* GiB, more than"):
        download_dataset(tmp_path / "data", url=str(big), progress=False)


@pytest.mark.slow  # three training sessions
def test_a_resumed_run_removes_the_temporaries_a_killed_one_left(tmp_path, synthetic_data_dir):
    from tinyconv.training.train import train

    run_dir = tmp_path / "run"
    train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2}, time_limit=1e-4)
    stale = [run_dir / ".best.keras.99999.tmp.keras",
             run_dir / "backup" / ".epoch-0002.weights.h5.99999.tmp.weights.h5",
             run_dir / "figures" / ".curves.png.99999.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")  # what a kill during a save leaves
    metrics = train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2})
    assert metrics["epochs"] == 2
    assert not any(path.exists() for path in stale)

    # a kill while the finished run removed its backup/: the next call (nothing to train) clears the rest
    (run_dir / "backup").mkdir()
    (run_dir / "backup" / "epoch-0002.weights.h5").write_bytes(b"resume state of a finished run")
    (run_dir / ".metrics.json.99999.tmp").write_text("{")
    assert train(profile="ci", data_dir=synthetic_data_dir, out=run_dir, overrides={"epochs": 2}) == metrics
    assert not (run_dir / "backup").exists() and not (run_dir / ".metrics.json.99999.tmp").exists()


_HOLD_ON_A_FULL_DISK = """
import resource, signal, sys
from tinyconv.locks import folder_lock
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # a write past the limit fails with EFBIG instead of a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))   # no file may grow: every write fails for real, as on a full disk
with folder_lock(sys.argv[1], "test"):
    print("held", flush=True)
print("released", flush=True)
"""


def test_a_lock_is_taken_and_released_when_its_holder_details_cannot_be_written(tmp_path):
    result = subprocess.run([sys.executable, "-c", _HOLD_ON_A_FULL_DISK, str(tmp_path / "x.lock")], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["held", "released"] and (tmp_path / "x.lock").read_text() == ""


_SLOW_PREPARE = """
import sys, time
import tinyconv.data.dataset as dataset
decode = dataset._decode
def slow(path):  # each image takes 50 ms, so the kill lands while the workers decode
    time.sleep(0.05)
    return decode(path)
dataset._decode = slow
dataset.PARALLEL_MIN_IMAGES, dataset.DECODE_CHUNK = 1, 50  # two workers on the small synthetic set, 2.5 s a chunk
dataset.prepare(sys.argv[1], workers=2, progress=False)
"""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _decoding_workers(process: subprocess.Popen) -> list[int]:
    """The pids of the decoding workers of a slow prepare in `process`, once they have decoded for half a second."""
    deadline = time.monotonic() + 60
    workers = []
    while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
        workers = _children(process.pid)
    assert len(workers) >= 2, "the prepare never started its workers"
    time.sleep(0.5)
    return workers

@pytest.mark.kill
def test_a_prepare_killed_with_sigkill_leaves_no_workers_and_the_next_one_runs_at_once(tmp_path, synthetic_data_dir):
    """Its decoding workers end with it (they held its cache lock, so the next prepare was refused), and the next
    prepare, started at once, builds the cache and removes the killed one's temporaries."""
    import shutil
    import signal

    from tinyconv.data.dataset import cache_dir, prepare
    from tinyconv.processes import running

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "tiny-imagenet-200", data_dir / "tiny-imagenet-200")
    process = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE, str(data_dir)], cwd=REPO)
    workers = _decoding_workers(process)
    assert list(cache_dir(data_dir).glob(".*.tmp*")), "killed before it wrote any temporary"
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Pool workers notice a dead parent only once their chunk is done (seconds, for prepare's 1,000 images) and hold
    # its cache lock until then; they must end with it instead
    deadline = time.monotonic() + 1
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(pid) for pid in workers), "a worker of the killed prepare is still running"
    manifest = prepare(data_dir, workers=1, progress=False)  # at once: the lock is free
    assert manifest["splits"]["train"]["count"] == 100
    assert not list(cache_dir(data_dir).glob(".*.tmp*"))


_SLOW_PREPARE_CLI = """
import sys, time
import tinyconv.data.dataset as dataset
from tinyconv import cli
decode = dataset._decode
def slow(path):  # each image takes 50 ms, so Ctrl-C lands while the workers decode; each decoded one is logged
    time.sleep(0.05)
    image = decode(path)
    with open(sys.argv[2], "a") as log:
        log.write(path.name + "\\n")
    return image
dataset._decode = slow
dataset.PARALLEL_MIN_IMAGES, dataset.DECODE_CHUNK = 1, 10  # train's 100 images in 10 chunks of 0.5 s, two workers
sys.exit(cli.main(["prepare", "--data-dir", sys.argv[1]]))
"""


def test_ctrl_c_stops_a_parallel_prepare_within_a_chunk_in_one_line_and_leaves_nothing(tmp_path, synthetic_data_dir):
    """Ctrl-C in a terminal reaches every process of the command (its process group): the parent cancels the queued
    chunks, lets the running ones finish and says `interrupted`; no worker prints a traceback or stays behind, and no
    temporary is left. (multiprocessing.Pool, before, killed its workers mid-chunk.)"""
    import shutil
    import signal

    from tinyconv.data.dataset import cache_dir
    from tinyconv.processes import running

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "tiny-imagenet-200", data_dir / "tiny-imagenet-200")
    decoded = tmp_path / "decoded.txt"
    process = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE_CLI, str(data_dir), str(decoded)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers = _decoding_workers(process)
    os.killpg(process.pid, signal.SIGINT)  # as the terminal does: to the whole group
    stopped = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("the prepare did not stop within 30 s of Ctrl-C") from None
    assert time.monotonic() - stopped < 10  # the running chunks (0.5 s each) finish
    # every chunk begun was finished (none cut off mid-way), and those still queued never began
    count = len(decoded.read_text().split())
    assert count % 10 == 0 and 0 < count < 100, count
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "tinyconv: interrupted" and "Traceback" not in stderr, stderr[-2000:]
    assert not any(running(pid) for pid in workers)
    assert not list(cache_dir(data_dir).glob(".*.tmp*")) and not (cache_dir(data_dir) / "manifest.json").exists()


_FAILING_PREPARES = """
import sys
import tinyconv.data.dataset as dataset
from tinyconv.errors import TinyconvError
dataset.PARALLEL_MIN_IMAGES, dataset.DECODE_CHUNK = 0, 4  # 25 chunks of train: most are queued when one fails
for attempt in range(int(sys.argv[2])):
    try:
        dataset.prepare(sys.argv[1], splits=("train",), workers=2, progress=False, force=True)
    except TinyconvError as exc:
        print(str(exc).splitlines()[0].split(": ")[0], flush=True)
"""


def test_a_parallel_prepare_that_fails_stops_cleanly_every_time(tmp_path, synthetic_data_dir):
    """A chunk that fails ends the pool with chunks still queued and others running. multiprocessing.Pool's
    terminate() could then wait forever (CPython gh-96995; a CI run hung 15 minutes in test_dataset so, 2026-12-07);
    the executor cancels the queued chunks and waits for the running ones. Twenty failing prepares in a row, each
    the same one-line error, under a timeout that turns a hang into a failure."""
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "tiny-imagenet-200", data_dir / "tiny-imagenet-200")
    victim = data_dir / "tiny-imagenet-200" / "train" / "n04540053" / "images" / "n04540053_11.JPEG"
    victim.write_bytes(victim.read_bytes()[:300])
    try:
        result = subprocess.run([sys.executable, "-c", _FAILING_PREPARES, str(data_dir), "20"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError("a failing parallel prepare hung") from None
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"cannot decode {victim}"] * 20, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]


_KILLED_WORKER = """
import os, signal, sys
from pathlib import Path
import tinyconv.data.dataset as dataset
from tinyconv.errors import TinyconvError
decode = dataset._decode
def decode_or_die(path):
    if Path(path).name == "n04540053_11.JPEG":
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    return decode(path)
dataset._decode = decode_or_die  # forked workers see the patched module
dataset.PARALLEL_MIN_IMAGES, dataset.DECODE_CHUNK = 0, 16
try:
    dataset.prepare(sys.argv[1], splits=("train",), workers=2, progress=False)
except TinyconvError as exc:
    print(exc)
"""


def test_a_decoding_worker_killed_is_one_line_and_nothing_is_kept(tmp_path, synthetic_data_dir):
    """multiprocessing.Pool waited forever for the chunk of a worker that was killed (this test hung with it); the
    executor sees the pool broken, and prepare says so in one line, keeping nothing of the split."""
    import shutil

    from tinyconv.data.dataset import cache_dir

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "tiny-imagenet-200", data_dir / "tiny-imagenet-200")
    try:
        result = subprocess.run([sys.executable, "-c", _KILLED_WORKER, str(data_dir)], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("prepare waited forever for its killed worker") from None
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "prepare train: a decoding process ended abruptly (killed, or out of memory?); nothing was kept, run it again"]
    assert not list(cache_dir(data_dir).glob(".*.tmp*")) and not (cache_dir(data_dir) / "manifest.json").exists()

def _sigterm_action(_):
    import signal

    return "default" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else "a Python handler"


_SEEN = []  # [queue]: set by the test before the pool forks, so its workers inherit it


def _decode_and_report(task):
    _SEEN[0].put(_sigterm_action(None))
    return _ORIGINAL_DECODE[0](task)


_ORIGINAL_DECODE = []


def test_pool_workers_take_sigterms_default_action_whatever_the_caller_has(tmp_path, synthetic_data_dir, monkeypatch):
    """A Python SIGTERM handler in a decoding worker (inherited from the CLI) can miss Pool.terminate()'s SIGTERM when
    it lands as the worker blocks on the task queue's lock; the pool's parent then waits forever (a first `tinyconv
    evaluate` hung so after decoding val). Each worker of prepare's pool resets SIGTERM to its default action
    (processes.start_worker), whatever handler the caller installed."""
    import multiprocessing
    import shutil
    import signal

    import tinyconv.data.dataset as dataset
    from tinyconv.processes import start_worker

    from tinyconv import cli

    # the caller's handler, as `tinyconv evaluate` has it: cli.main's (a worker forked before start_worker has run
    # dies by it as by the default; one that ignored SIGTERM there would hang any pool, this one included)
    monkeypatch.setattr(cli, "_sigterm_owner", os.getpid())
    previous = signal.signal(signal.SIGTERM, cli._on_sigterm)
    try:
        with multiprocessing.get_context("fork").Pool(2, initializer=start_worker, initargs=(os.getpid(),)) as pool:
            assert set(pool.map(_sigterm_action, range(8))) == {"default"}

        seen = multiprocessing.get_context("fork").SimpleQueue()
        monkeypatch.setattr(sys.modules[__name__], "_SEEN", [seen])
        monkeypatch.setattr(sys.modules[__name__], "_ORIGINAL_DECODE", [dataset._decode_chunk])
        monkeypatch.setattr(dataset, "_decode_chunk", _decode_and_report)  # forked workers see the patched module
        monkeypatch.setattr(dataset, "PARALLEL_MIN_IMAGES", 1)
        data_dir = tmp_path / "data"
        shutil.copytree(synthetic_data_dir / "tiny-imagenet-200", data_dir / "tiny-imagenet-200")
        dataset.prepare(data_dir, splits=("train",), workers=2, progress=False)
        reports = []
        while not seen.empty():
            reports.append(seen.get())
        assert reports and set(reports) == {"default"}
    finally:
        signal.signal(signal.SIGTERM, previous)
