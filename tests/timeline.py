"""Seconds per test file and per worker, printed at the end of `make test`.

tests/conftest.py orders the files longest first (LONGEST_FIRST) so that the two pytest-xdist workers end together;
that list is only as good as the timings behind it, and they drift as tests change and from one VM to the next. This
plugin adds them up where the reports arrive (the main process under xdist; setup, call and teardown, so a
session fixture counts in the file whose test first asked for it) and prints the longest files and each worker's busy
seconds, so every CI log holds the timeline that the list is made from.
"""

from __future__ import annotations

from collections import defaultdict

SHOWN = 20  # the longest files printed; LONGEST_FIRST needs only the head of the list


class Timeline:
    """A pytest plugin: sums TestReport.duration by file and by xdist worker ("main" without xdist)."""

    def __init__(self):
        self.file_seconds: dict[str, float] = defaultdict(float)
        self.file_worker: dict[str, str] = {}
        self.worker_seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report):
        path = report.nodeid.split("::", 1)[0]
        node = getattr(report, "node", None)  # set by xdist's DSession on reports from a worker
        worker = node.gateway.id if node is not None else "main"
        self.file_seconds[path] += report.duration
        self.file_worker[path] = worker
        self.worker_seconds[worker] += report.duration

    def lines(self) -> list[str]:
        longest = sorted(self.file_seconds.items(), key=lambda kv: -kv[1])[:SHOWN]
        out = [f"{seconds:8.1f} s  {self.file_worker[path]:>4}  {path}" for path, seconds in longest]
        busy = ", ".join(f"{w} {s:.0f} s" for w, s in sorted(self.worker_seconds.items()))
        return out + [f"busy: {busy} (setup, call and teardown of every test; start-up and collection left out)"]

    def pytest_terminal_summary(self, terminalreporter):
        if not self.file_seconds:
            return
        terminalreporter.section("seconds per test file (tests/conftest.py LONGEST_FIRST follows these)")
        for line in self.lines():
            terminalreporter.write_line(line)


def pytest_configure(config):
    """Registers a Timeline where the reports of all workers arrive: the main process, not an xdist worker
    (tests/conftest.py calls this; `pytest -p timeline` loads it as a plugin on its own)."""
    if not hasattr(config, "workerinput") and not config.pluginmanager.has_plugin("tinyconv-timeline"):
        config.pluginmanager.register(Timeline(), "tinyconv-timeline")  # once, though both load it
