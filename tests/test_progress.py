"""tinyconv.progress.progress_bar, the one bar every command draws: on stderr (stdout keeps a command's result),
nothing at all when disabled, gone when done unless asked to stay, over an iterable as over a count, and into a log
(a file or pipe) rarely and with its last line kept."""

from __future__ import annotations

import io
import sys
import time
import warnings

from tinyconv import progress
from tinyconv.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


class KernelStream(io.StringIO):  # what a Jupyter kernel's sys.stderr is: not a terminal, redrawn in place
    __module__ = "ipykernel.iostream"


def stderr_as(monkeypatch, stream):
    """sys.stderr replaced inside the test itself: pytest's capture sets its own again between a fixture and the test."""
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_a_bar_draws_on_stderr_only_and_goes_when_done(monkeypatch, capsys):
    terminal = stderr_as(monkeypatch, Terminal())
    with progress_bar(30, "decode", "img", mininterval=0) as bar:  # mininterval=0: draw every update
        for _ in range(3):
            bar.update(10)
    err = terminal.getvalue()
    assert capsys.readouterr().out == "" and "decode" in err and "30/30" in err and "img" in err
    assert err.count("\r") >= 4  # the first draw, then each update
    assert err.endswith("\r") and err.rsplit("\r", 2)[-2].strip() == ""  # leave=False: blanked at the end


def test_a_bar_that_stays_ends_its_line(monkeypatch):
    terminal = stderr_as(monkeypatch, Terminal())
    with progress_bar(5, "download", "B", leave=True, unit_scale=True, initial=2) as bar:
        bar.update(3)
    err = terminal.getvalue()
    assert "download" in err and err.endswith("\n") and "5.00/5.00" in err


def test_into_a_log_a_bar_redraws_rarely_and_keeps_its_last_line(monkeypatch):
    """`tinyconv prepare 2> log` (a GPU lease's lease.log): 200 updates over 0.4 s, asked to redraw at every one,
    leave two draws (the first and the last), and the last stays as the log's record, ended by a newline."""
    log = stderr_as(monkeypatch, io.StringIO())
    with progress_bar(200, "decode", "img", mininterval=0) as bar:
        for _ in range(200):
            bar.update(1)
            time.sleep(0.002)
    err = log.getvalue()
    assert progress.LOG_INTERVAL_S >= 10
    assert err.count("\r") == 2 and "200/200" in err.rsplit("\r", 1)[-1] and err.endswith("\n"), repr(err)


def test_a_notebooks_stream_is_not_a_log(monkeypatch):
    stream = stderr_as(monkeypatch, KernelStream())
    with progress_bar(3, "predict", mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    err = stream.getvalue()
    assert "3/3" in err and err.count("\r") >= 4 and err.rsplit("\r", 2)[-2].strip() == ""  # as on a terminal


def test_disabled_draws_nothing_and_keeps_one_code_path(capsys):
    with progress_bar(10, "predict", enabled=False) as bar:
        bar.update(10)
    assert list(progress_bar(3, "extract", "file", enabled=False, iterable=["a", "b", "c"])) == ["a", "b", "c"]
    assert capsys.readouterr() == ("", "")


def test_over_an_iterable_it_yields_every_item_and_counts_them(capsys):
    items = list(progress_bar(4, "extract", "file", iterable=iter(range(4)), mininterval=0))
    assert items == [0, 1, 2, 3] and "4/4" in capsys.readouterr().err


def test_making_a_bar_raises_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with progress_bar(1, "x", enabled=False):
            pass
