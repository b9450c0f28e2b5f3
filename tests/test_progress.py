"""tinyconv.progress.progress_bar, the one bar every command draws: on stderr (stdout keeps a command's result),
nothing at all when disabled, gone when done unless asked to stay, and over an iterable as over a count."""

from __future__ import annotations

import warnings

from tinyconv.progress import progress_bar


def test_a_bar_draws_on_stderr_only_and_goes_when_done(capsys):
    with progress_bar(30, "decode", "img", mininterval=0) as bar:  # mininterval=0: draw every update
        for _ in range(3):
            bar.update(10)
    out, err = capsys.readouterr()
    assert out == "" and "decode" in err and "30/30" in err and "img" in err
    assert err.endswith("\r") and err.rsplit("\r", 2)[-2].strip() == ""  # leave=False: blanked at the end


def test_a_bar_that_stays_ends_its_line(capsys):
    with progress_bar(5, "download", "B", leave=True, unit_scale=True, initial=2) as bar:
        bar.update(3)
    err = capsys.readouterr().err
    assert "download" in err and err.endswith("\n") and "5.00/5.00" in err


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
