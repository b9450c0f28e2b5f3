"""The per-file timeline that `make test` prints (tests/timeline.py), which LONGEST_FIRST in conftest follows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_the_timeline_adds_up_each_files_seconds_on_its_worker(tmp_path):
    # Two files on two xdist workers, as `make test` runs them; one sleeps, so its seconds have a lower bound.
    (tmp_path / "test_slow_one.py").write_text("import time\n\ndef test_a():\n    time.sleep(0.4)\n\n"
                                               "def test_b():\n    time.sleep(0.2)\n")
    (tmp_path / "test_quick_one.py").write_text("def test_c():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-p", "timeline",
                          "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "seconds per test file" in text
    rows = {m["path"]: (float(m["s"]), m["worker"])
            for m in re.finditer(r"^\s*(?P<s>[\d.]+) s\s+(?P<worker>gw\d)\s+(?P<path>\S+)$", text, re.M)}
    assert set(rows) == {"test_slow_one.py", "test_quick_one.py"}, text
    assert rows["test_slow_one.py"][0] >= 0.6  # both of its tests' sleeps, in one file's sum
    assert rows["test_slow_one.py"][0] > rows["test_quick_one.py"][0]
    assert list(rows)[0] == "test_slow_one.py"  # longest first
    busy = re.search(r"^busy: (.*) \(", text, re.M)
    assert busy, text
    workers = dict(re.findall(r"(gw\d) (\d+) s", busy.group(1)))
    assert set(workers) <= {"gw0", "gw1"} and rows["test_slow_one.py"][1] in workers


def test_the_timeline_is_printed_once_when_a_conftest_and_p_timeline_both_load_it(tmp_path):
    # tests/conftest.py calls timeline.pytest_configure; `pytest -p timeline tests/...` loads it again as a plugin.
    # Both at once stopped pytest with "Plugin name already registered" before fb99c2f.
    (tmp_path / "conftest.py").write_text("import timeline\n\n\ndef pytest_configure(config):\n"
                                          "    timeline.pytest_configure(config)\n")
    (tmp_path / "test_one.py").write_text("def test_a():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "timeline", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("seconds per test file") == 1, out.stdout
