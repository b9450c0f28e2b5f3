"""tinyconv sweep: the spec file and its one-line errors, the results helpers, a real sweep on Ray Tune that is
SIGKILLed and resumed without rerunning its finished trial and leaves no Ray process behind, and notebook 06."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from killing import kill_when  # tests/ (conftest puts it on sys.path)
from tinyconv import processes
from tinyconv.experiments import ray_session, sweep
from tinyconv.experiments import results as sweep_results
from tinyconv.cli import main
from tinyconv.errors import TinyconvError

REPO = Path(__file__).resolve().parents[1]
CI_SPEC = REPO / "experiments" / "ci.toml"


def _spec(tmp_path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- spec


GOOD = """
profile = "ci"
seeds = [0, 1]
[budget]
epochs = 2
[base]
lr = 2e-3
[[trials]]
name = "base"
[[trials]]
preset = "seed"
[grid]
"model.kernel_sizes" = [[5, 3, 3], [7, 3, 3]]
model.se_reductions = [0]
"""


def test_spec_expands_trials_with_typed_overrides_seed_by_seed(tmp_path):
    spec = sweep.load_spec(_spec(tmp_path, GOOD))
    names = [trial.name for trial in spec.trials]
    assert names == [
        "base-s0", "seed-s0", "kernel_sizes-5.3.3_se_reductions-0-s0", "kernel_sizes-7.3.3_se_reductions-0-s0",
        "base-s1", "seed-s1", "kernel_sizes-5.3.3_se_reductions-0-s1", "kernel_sizes-7.3.3_se_reductions-0-s1",
    ]
    trial = spec.trials[2]
    assert trial.overrides == {"lr": 2e-3, "epochs": 2, "seed": 0,
                               "model_overrides": {"kernel_sizes": [5, 3, 3], "se_reductions": 0}}
    assert trial.point == {"model.kernel_sizes": [5, 3, 3], "model.se_reductions": 0}
    assert spec.trials[1].overrides["preset"] == "seed"
    assert (spec.epochs, spec.seconds, spec.variants()[0]) == (2, None, "base")
    seconds = sweep.load_spec(_spec(tmp_path, GOOD.replace("epochs = 2", "seconds = 90"), "s.toml"))
    assert (seconds.seconds, seconds.epochs) == (90.0, 1)  # the schedule stays the profile's (ci: 1 epoch)


BAD = [
    ("unknown model field", '[grid]\n"model.stemm" = ["conv"]', "grid.model.stemm", "unknown model field 'stemm'"),
    ("unknown recipe field", "[base]\nlearning_rate = 1e-3", "base.learning_rate", "unknown recipe field"),
    ("unknown top-level field", "[grid]\nlr = [1e-3]", "sed", "unknown sweep field", {"profile": "sed = [0]\nprofile"}),
    ("unknown preset", '[[trials]]\npreset = "resnet-huge"', "trials[0].preset", "unknown preset 'resnet-huge'"),
    ("wrong value type", '[grid]\nlr = ["fast"]', "grid.lr", "expected a number"),
    ("inconsistent model", '[grid]\n"model.widths" = [[8, 16]]', "grid (widths-8.16)", "stage"),
    ("empty grid", "[grid]", "grid", "the grid is empty"),
    ("empty grid list", '[grid]\n"model.kernel_sizes" = []', "grid.model.kernel_sizes", "non-empty list"),
    ("no trials", "", "grid", "no trials"),
    ("zero epochs", "[grid]\nlr = [1e-3]", "budget.epochs", "positive integer", {"epochs = 1": "epochs = 0"}),
    ("negative seconds", "[grid]\nlr = [1e-3]", "budget.seconds", "positive number", {"epochs = 1": "seconds = -5"}),
    ("unknown budget field", "[grid]\nlr = [1e-3]", "budget.minutes", "unknown budget field", {"epochs = 1": "minutes = 5"}),
    ("missing budget", "[grid]\nlr = [1e-3]", "budget", "missing", {"[budget]\nepochs = 1\n": ""}),
    ("seed per trial", "[grid]\nseed = [1, 2]", "grid.seed", "list it in seeds"),
    ("duplicate name", '[[trials]]\nname = "a"\n[[trials]]\nname = "a"', "trials[1]", "a second trial named 'a'"),
    # model and recipe values that were a traceback at load, or a raw error in a Ray trial once Ray had started
    ("model field of the wrong type", '[grid]\n"model.widths" = ["abc"]', "grid.model.widths", "expected an integer"),
    ("model field out of range", '[grid]\n"model.depths" = [[0, 0, 0]]', "grid (depths-0.0.0)",
     "model config field 'depths' must be a list of integers >= 1, got [0, 0, 0]"),
    ("model bool garbage", '[grid]\n"model.gelu_approximate" = ["abc"]', "grid.model.gelu_approximate",
     "expected true or false"),
    ("model number garbage", '[[trials]]\nmodel.bn_epsilon = "abc"', "trials[0].model.bn_epsilon", "expected a number"),
    ("infinite lr", "[grid]\nlr = [inf]", "grid (lr-inf)", "recipe field 'lr' must be a number > 0, got inf"),
    ("derived model field", '[grid]\n"model.num_classes" = [10]', "grid (num_classes-10)", "use classes=K"),
    ("seed Keras refuses", "[grid]\nlr = [1e-3]", "seeds", "'seed' must be an integer in [0, 4294967295]",
     {"profile": "seeds = [4294967296]\nprofile"}),
    # a TOML list where a name goes: was `TypeError: unhashable type: 'list'`
    ("profile a list", "[grid]\nlr = [1e-3]", "profile", "unknown profile ['ci']",
     {'profile = "ci"': 'profile = ["ci"]'}),
    ("baseline a list", "[grid]\nlr = [1e-3]", "baseline", "no variant named ['a']",
     {"profile": 'baseline = ["a"]\nprofile'}),
    ("seeds of lists", "[grid]\nlr = [1e-3]", "seeds", "expected a list of distinct integers",
     {"profile": "seeds = [[0]]\nprofile"}),
    ("preset a list", '[[trials]]\npreset = ["seed"]', "trials[0].preset", "unknown preset ['seed']"),
]


@pytest.mark.parametrize("case", BAD, ids=[case[0] for case in BAD])
def test_bad_spec_is_one_line_naming_file_and_field(tmp_path, case):
    _, body, where, message, *edits = case
    text = 'profile = "ci"\n[budget]\nepochs = 1\n' + body + "\n"
    for old, new in (edits[0] if edits else {}).items():
        text = text.replace(old, new)
    path = _spec(tmp_path, text)
    with pytest.raises(TinyconvError) as caught:
        sweep.load_spec(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: {where}: ") and message in text and "\n" not in text, text


def test_bad_spec_on_the_command_line_exits_1_without_traceback(tmp_path, capsys):
    path = _spec(tmp_path, 'profile = "ci"\n[budget]\nepochs = 1\n[grid]\n"model.nope" = [1]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tinyconv: error: {path}: grid.model.nope: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written for a spec that does not load


def test_a_spec_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_bytes(b'profile = "ci"\ndescription = "caf\xe9"\n[budget]\nepochs = 1\n[grid]\nlr = [1e-3]\n')  # Latin-1
    with pytest.raises(TinyconvError) as caught:
        sweep.load_spec(path)
    assert str(caught.value) == f"{path}: not a TOML sweep file: not UTF-8 text (byte 0xe9 at offset 33)"
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"tinyconv: error: {caught.value}\n"
    assert not (tmp_path / "out").exists()


def _sweep_fields() -> list[tuple[str, object]]:
    """(key, TOML value) for every recipe and model field a sweep may set, generated from the dataclasses so that a
    new field is covered: a word and a negative number, of no field's type or range."""
    import dataclasses

    from tinyconv.model.config import ModelConfig
    from tinyconv.training.recipe import field_types

    keys = [key for key in field_types() if key not in sweep.RESERVED]
    keys += [f"model.{f.name}" for f in dataclasses.fields(ModelConfig)]
    return [(key, value) for key in keys for value in ("abc", -1)]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test, instead of starting Ray, if a sweep gets that far."""
    def refuse(*args, **kwargs):
        raise AssertionError("the sweep started Ray")

    monkeypatch.setattr(sweep, "start_ray", refuse)


@pytest.mark.parametrize("key, value", _sweep_fields(), ids=[f"{k}={v}" for k, v in _sweep_fields()])
def test_every_field_with_a_garbage_value_is_one_line_before_ray(key, value, synthetic_data_dir, tmp_path, capsys,
                                                                 no_ray):
    text = f'profile = "ci"\n[budget]\nepochs = 1\n[[trials]]\n"{key}" = {json.dumps(value)}\n'
    path = _spec(tmp_path, text)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--data-dir", str(synthetic_data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyconv: error: ") and err.count("\n") == 1, err
    if key == "classes" and value == "abc":  # a list of wnids, checked against the data dir before Ray
        assert "unknown class wnid(s) abc" in err and str(synthetic_data_dir) in err, err
    else:
        assert err.startswith(f"tinyconv: error: {path}: trials[0]") and key.removeprefix("model.") in err, err
    assert not out.exists()


def _sweep_cases(tmp_path: Path, synthetic_data_dir: Path) -> dict:
    """name -> (extra arguments, expected fragment) of the sweep's hostile data dirs, folders and CPU counts."""
    (tmp_path / "file").write_text("not a folder")
    return {
        "no data dir": (["--data-dir", str(tmp_path / "nowhere")], f"no tiny-imagenet-200/ in {tmp_path / 'nowhere'}"),
        "a data dir without the dataset": (["--data-dir", str(tmp_path)], f"no tiny-imagenet-200/ in {tmp_path}"),
        "out is a file": (["--out", str(tmp_path / "file")], f"{tmp_path / 'file'}: is a file, not a folder"),
        "out under a file": (["--out", str(tmp_path / "file" / "x")], f"{tmp_path / 'file'} is a file, not a folder"),
        "zero CPUs": (["--num-cpus", "0"], "--num-cpus must be a positive number of CPUs, got 0"),
        "negative CPUs": (["--num-cpus", "-2"], "--num-cpus must be a positive number of CPUs, got -2"),
    }


@pytest.mark.parametrize("case", ["no data dir", "a data dir without the dataset", "out is a file", "out under a file",
                                  "zero CPUs", "negative CPUs"])
def test_bad_data_dir_out_folder_or_cpus_is_one_line_before_ray_and_writes_nothing(case, synthetic_data_dir, tmp_path,
                                                                                   capsys, no_ray):
    spec = _spec(tmp_path, 'profile = "ci"\n[budget]\nepochs = 1\n[[trials]]\nname = "base"\n')
    extra, fragment = _sweep_cases(tmp_path, synthetic_data_dir)[case]
    before = sorted(tmp_path.rglob("*"))
    args = ["sweep", str(spec), "--out", str(tmp_path / "out"), "--data-dir", str(synthetic_data_dir)]
    assert main(args + extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyconv: error: ") and fragment in err and err.count("\n") == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # no sweep folder, no sweep.json


def test_an_unwritable_out_folder_is_one_line_before_ray(synthetic_data_dir, tmp_path, capsys, no_ray, monkeypatch):
    """Permissions are not a test's to set (root writes anywhere): a write in the folder fails as a read-only one."""
    import errno

    spec = _spec(tmp_path, 'profile = "ci"\n[budget]\nepochs = 1\n[[trials]]\nname = "base"\n')
    locked = tmp_path / "locked"
    locked.mkdir()
    real_write = Path.write_bytes

    def write_bytes(self, data):
        if self.parent == locked:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert main(["sweep", str(spec), "--out", str(locked / "out"), "--data-dir", str(synthetic_data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tinyconv: error: {locked / 'out'}: cannot write the sweep folder: ") and err.count("\n") == 1
    assert f"Read-only file system in {locked}" in err, err
    assert not list(locked.iterdir())  # no sweep folder, no probe left behind


# ------------------------------------------------------------------------------------------- results


def test_pareto_front_noise_and_results_round_trip(tmp_path):
    assert sorted(sweep_results.pareto_front([(1, 0.5), (2, 0.6), (3, 0.55), (2, 0.6), (0.5, 0.4)])) == [0, 1, 3, 4]
    rows = []
    for seed, noise in ((0, -0.01), (1, 0.01)):
        for variant, top1 in (("base", 0.50), ("close", 0.505), ("far", 0.60)):
            row = {column: "" for column in sweep_results.RESULT_COLUMNS}
            row.update(trial=f"{variant}-s{seed}", variant=variant, seed=seed, status="done", top1=top1 + noise,
                       params=1000, macs=2000, train_img_s=100.0, preset="tiny",
                       overrides="" if variant == "base" else f"model.kernel_sizes=[{len(variant)}, 3, 3]")
            rows.append(row)
    rows.append({**rows[0], "trial": "late-s0", "variant": "late", "status": "pending", "top1": ""})
    sweep_results.write_results(rows, tmp_path)
    back = sweep_results.read_results(tmp_path / "results.csv")
    assert [r["trial"] for r in back] == [r["trial"] for r in rows]
    assert back[2]["top1"] == pytest.approx(0.59) and back[-1]["top1"] is None and back[0]["params"] == 1000
    summary = sweep_results.variant_summary(back)
    assert [s["variant"] for s in summary] == ["base", "close", "far"]
    assert sweep_results.pooled_sd(summary) == pytest.approx(0.02 ** 0.5 * 0.1, rel=1e-6)  # sd of (x-0.01, x+0.01)
    verdicts = {c["variant"]: c["exceeds"] for c in sweep_results.compare_to_baseline(summary)}
    assert verdicts == {"base": False, "close": False, "far": True}
    report = sweep_results.format_noise_report(back)
    assert "`far`: +10.00 points" in report and "Within the noise** (1): `close`" in report
    assert [value for value, _ in sweep_results.setting_series(back, "model.kernel_sizes")] == [5, 3, 5, 3]
    md = (tmp_path / "results.md").read_text()
    assert md.count("| far-s") == 2 and "| late-s0 | tiny |" in md and "pending" in md
    # the noise is estimated (3 degrees of freedom here), so the test's false-alarm rate is Student's, not 5 %;
    # with two variants compared, Bonferroni's threshold is given too, and `far` (t = 10 / 1.41 = 7.1) passes it
    dof = 3
    assert sweep_results.pooled_dof(summary) == dof
    p = sweep_results.two_sided_p(2.0, dof)
    assert p == pytest.approx(0.1393, abs=1e-4)  # t with 3 dof: far from the normal curve's 0.0455
    assert f"which noise alone does with probability {p:.3f} (Student's t, 3 degrees of freedom)" in report
    strict = sweep_results.bonferroni_z(2, dof)
    assert strict == pytest.approx(4.177, abs=1e-3)  # t(3) quantile at 1 - 0.05 / 4
    assert (f"2 variants were each compared with the baseline, so about {2 * p:.1f} of them would pass" in report
            and f"Bonferroni's stricter {strict:.2f} times the noise" in report and "all of those beyond the noise "
            "remain: `far` (7.1x)" in report)
    with pytest.raises(TinyconvError, match=r"baseline 'nope' has no finished trial in these results; variants: "
                                            r"base, close, far"):
        sweep_results.compare_to_baseline(summary, "nope")


# ---------------------------------------------------------------------------------------- Ray sweep


def _ray_leftovers(session: dict) -> list[str]:
    """Processes of the sweep's Ray instance still alive, found without tinyconv.experiments.sweep's own scan: any process
    whose command line holds its temp dir (gcs_server, raylet, log monitor, ...), any process carrying its
    marker, and Ray's agents (ray::*) of its raylets."""
    found = []
    marker = f"{ray_session.MARKER_VAR}={session['marker']}".encode()
    raylets = {f"RAY_RAYLET_PID={pid}".encode() for pid in session["raylets"]}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if session["temp_dir"].encode() in cmdline or marker in environ or raylets.intersection(environ):
            command = cmdline.replace(b"\0", b" ")[:80].decode(errors="replace")
            found.append(f"{proc.name} {command}")
    return found


def _wait_for_no_leftovers(session: dict, seconds: float = 60) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _ray_leftovers(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.kill
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds Ray's processes through /proc (Linux)")
def test_sweep_on_ray_resumes_after_sigkill_without_rerunning_and_leaves_no_ray(synthetic_data_dir, tmp_path):
    pytest.importorskip("ray", reason="the sweep extra (tinyconv[sweep]) is installed by make test")
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "tinyconv", "sweep", str(CI_SPEC), "--out", str(out),
            "--data-dir", str(synthetic_data_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = sweep.trial_file(out, "base-s0")

    # 1. SIGKILL the sweep (its Ray driver) as soon as its first trial is done
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    session, alive = {}, []

    def first_trial_done() -> bool:  # and what of Ray is alive at that moment, before the kill
        if sweep.trial_status(out, "base-s0") != "done":
            return False
        session.update(json.loads((out / ray_session.SESSION_FILE).read_text()))
        alive[:] = _ray_leftovers(session)
        return True

    kill_when(process, first_trial_done, 300, "the first trial's end")
    assert session["raylets"] and alive, "the session file names no live Ray process"
    assert _wait_for_no_leftovers(session) == [], "Ray processes outlived the killed sweep"
    assert not Path(session["temp_dir"]).exists()
    done_metrics = (out / "base-s0" / "metrics.json").read_bytes()
    done_mtime = (out / "base-s0" / "metrics.json").stat().st_mtime_ns
    assert not (out / "results.csv").exists()

    # 2. the same command again: the two other trials run (a killed one resumes), the finished one does not
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 trials (3 variants x 1 seeds), 1 already done" in result.stdout
    assert "base-s0: training" not in result.stdout
    assert (out / "base-s0" / "metrics.json").read_bytes() == done_metrics
    assert (out / "base-s0" / "metrics.json").stat().st_mtime_ns == done_mtime
    assert (out / "logs" / "base-s0.log").read_text().count("--- ") == 1  # one session of that trial, ever
    rows = sweep_results.read_results(out / "results.csv")
    assert [row["trial"] for row in rows] == ["base-s0", "kernel_sizes-5.3.3-s0", "tiny-down-haar-s0"]
    for row in rows:
        assert row["status"] == "done" and 0.0 <= row["top1"] <= 1.0 and row["params"] > 0 and row["macs"] > 0
        assert row["train_img_s"] > 0 and row["wall_s"] > 0 and row["device"]
        assert (out / row["run_dir"] / "metrics.json").is_file()
    assert [row["preset"] for row in rows] == ["tiny", "tiny", "tiny-down-haar"]
    assert rows[1]["k1"] == 5 and rows[0]["k1"] == 9 and (rows[0]["down"], rows[2]["down"]) == ("grouped_conv", "haar")
    assert rows[1]["macs"] < rows[0]["macs"]  # a 5x5 stage-1 kernel costs fewer MACs than 9x9
    md = (out / "results.md").read_text()
    assert sum(line.startswith("| ") and "-s0 |" in line for line in md.splitlines()) == 3
    second = json.loads(first.read_text())
    assert second["status"] == "done"
    assert _wait_for_no_leftovers(session, 5) == [] and not (out / ray_session.SESSION_FILE).exists()
    assert not list(Path("/tmp").glob("tcray-*")) or all(
        p.name != Path(session["temp_dir"]).name for p in Path("/tmp").glob("tcray-*"))

    # 3. once more: every trial is done, Ray is not even started
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "3 already done" in result.stdout and "starting Ray" not in result.stdout


# ---------------------------------------------------------------------------- trial resources, --address


def test_trial_resources_one_gpu_per_trial_else_one_whole_node_per_trial():
    # one machine with 2 GPUs: a GPU and half the CPUs per trial, two at once
    assert ray_session.trial_resources({"CPU": 16, "GPU": 2}) == ({"cpu": 8, "gpu": 1}, 2)
    assert ray_session.trial_resources({"CPU": 16.0, "GPU": 2.0}, [{"CPU": 16.0, "GPU": 2.0}]) == ({"cpu": 8, "gpu": 1}, 2)
    # a CPU-only machine: one trial at a time with every core
    assert ray_session.trial_resources({"CPU": 2}) == ({"cpu": 2}, 1)
    assert ray_session.trial_resources({"CPU": 2.0}, [{"CPU": 2.0, "memory": 1e9}]) == ({"cpu": 2}, 1)
    # a cluster whose head has no GPU: the CPUs per GPU are a GPU node's (8), not the cluster's (40 / 2 = 20,
    # which no node has: Ray would never place the trial)
    head, workers = {"CPU": 8.0}, [{"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0}]
    assert ray_session.trial_resources({"CPU": 40.0, "GPU": 4.0}, [head, *workers]) == ({"cpu": 8, "gpu": 1}, 4)
    # GPU nodes of different shapes: the CPUs that go with one GPU on the poorest
    mixed = [{"CPU": 32.0, "GPU": 4.0}, {"CPU": 12.0, "GPU": 4.0}]
    assert ray_session.trial_resources({"CPU": 44.0, "GPU": 8.0}, mixed) == ({"cpu": 3, "gpu": 1}, 8)
    # CPU-only nodes of different sizes: the smallest node's CPUs per trial, as many as fit on each node
    assert ray_session.trial_resources({"CPU": 8.0}, [{"CPU": 2.0}, {"CPU": 3.0}, {"CPU": 3.0}]) == ({"cpu": 2}, 3)
    assert ray_session.trial_resources({"CPU": 6.0}, [{"CPU": 2.0}, {"CPU": 4.0}, {"memory": 1e9}]) == ({"cpu": 2}, 3)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_address_where_nothing_listens_is_one_line_at_once(tmp_path, capsys):
    pytest.importorskip("ray", reason="the sweep extra (tinyconv[sweep]) is installed by make test")
    spec = _spec(tmp_path, 'profile = "ci"\n[budget]\nepochs = 1\n[[trials]]\nname = "base"\n')
    address = f"127.0.0.1:{_free_port()}"  # ray.init would keep trying it for minutes
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--address", address]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tinyconv: error: cannot join the Ray cluster at {address}: nothing answers at ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sweep.trial_status(tmp_path / "out", "base-s0") == "pending"


def _ray_pids(session: dict, name: str) -> list[int]:
    return [int(line.split()[0]) for line in _ray_leftovers(session)
            if Path(f"/proc/{line.split()[0]}/comm").read_text().strip() == name]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds Ray's processes through /proc (Linux)")
def test_sweep_joins_an_existing_ray_cluster_and_leaves_it_running(synthetic_data_dir, tmp_path):
    pytest.importorskip("ray", reason="the sweep extra (tinyconv[sweep]) is installed by make test")
    port = _free_port()
    # A one-CPU head of our own, found by a marker in its processes' environment (as the sweep marks its own).
    # Token authentication, Ray's default for `ray start --head` where ~/.ray/auth_token exists, with a token
    # of this test's (not written to ~/.ray): the sweep joins with RAY_AUTH_MODE=token and the same token.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    session = {"marker": f"test-{os.getpid()}-{time.time_ns()}", "raylets": [],
               "temp_dir": tempfile.mkdtemp(prefix="tcrayt-", dir="/tmp")}  # a short path: Ray's unix sockets
    ray_cli = Path(sys.executable).with_name("ray")
    try:
        started = subprocess.run(
            [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={session['temp_dir']}", "--object-store-memory=100000000"],
            env={**env, ray_session.MARKER_VAR: session["marker"]}, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        session["raylets"] = _ray_pids(session, "raylet")
        head = session["raylets"] + _ray_pids(session, "gcs_server")
        assert len(head) == 2, _ray_leftovers(session)

        spec = _spec(tmp_path, 'profile = "ci"\nseeds = [0]\n[budget]\nepochs = 1\n[[trials]]\nname = "base"\n')
        out = tmp_path / "sweep"
        logs = Path(session["temp_dir"]) / "session_latest" / "logs"
        assert logs.is_dir() and not list(logs.glob("python-core-driver-*"))
        result = subprocess.run([sys.executable, "-m", "tinyconv", "sweep", str(spec), "--out", str(out),
                                 "--data-dir", str(synthetic_data_dir), "--address", f"127.0.0.1:{port}"],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert f"starting Ray at 127.0.0.1:{port}" in result.stdout
        assert "{'cpu': 1} per trial, 1 at a time" in result.stdout  # the cluster's one CPU, not this machine's
        rows = sweep_results.read_results(out / "results.csv")
        assert [(row["trial"], row["status"]) for row in rows] == [("base-s0", "done")]
        assert 0.0 <= rows[0]["top1"] <= 1.0 and rows[0]["params"] > 0 and rows[0]["device"]
        assert (out / "base-s0" / "metrics.json").is_file()
        assert "| base-s0 |" in (out / "results.md").read_text()
        # the sweep drove this head (its driver's log is in the head's session), not a Ray of its own
        assert len(list(logs.glob("python-core-driver-*"))) == 1
        assert not (out / ray_session.SESSION_FILE).exists()

        # the cluster is not the sweep's: it is still up, and still answers
        assert all(processes.running(pid) for pid in head), "the sweep stopped the cluster it joined"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        # `ray stop --force` would stop every Ray of this user on the machine (other tests', other sweeps'):
        # stop only this head's processes
        ray_session.stop_processes(int(line.split()[0]) for line in _ray_leftovers(session))
        left = _wait_for_no_leftovers(session, 30)
        shutil.rmtree(session["temp_dir"], ignore_errors=True)
    assert left == [], "Ray processes of the test's head are left"


# ------------------------------------------------------------------------------------------ notebook


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_06_runs_on_a_small_results_file(tmp_path):
    import nbformat

    from tinyconv.study import runner as notebooks

    results = sweep_results.example_results(tmp_path / "sweep")
    executed = notebooks.run_notebook(notebooks.NOTEBOOK_DIR / "06_compare.ipynb", tmp_path / "out",
                                      {"profile": "ci", "run_dir": str(tmp_path / "run"), "results": str(results)},
                                      progress=False)
    nb = nbformat.read(executed, as_version=4)
    text = json.dumps([cell.get("outputs", []) for cell in nb.cells])
    assert "Beyond the noise" in text and "kernel_sizes-3.3.3" in text and "NO SWEEP RESULTS" not in text
    figures = {path.stem for path in (tmp_path / "run" / "figures").glob("06_*.png")}
    assert figures == {"06_accuracy_vs_cost", "06_kernel_size", "06_axial_kernel_size", "06_variant_spread"}
    shown = sum("image/png" in output.get("data", {}) for cell in nb.cells for output in cell.get("outputs", []))
    assert shown == 4  # each figure is also shown in the notebook, not only saved


def test_ray_private_get_node_is_where_the_patient_raylet_start_patches_it():
    """ray_session._patient_raylet_start replaces Ray's private ray._private.services.get_node, which
    ray._private.node polls while the raylet registers (Ray 2.60). It falls back to Ray's own 30 s when that
    moves, without a word; this fails, naming what moved, when a Ray upgrade changes it."""
    pytest.importorskip("ray", reason="the sweep extra (tinyconv[sweep]) is installed by make test")
    import inspect

    import ray

    try:
        from ray._private import node, services
    except ImportError as exc:
        pytest.fail(f"Ray {ray.__version__} moved ray._private.services or .node ({exc}): "
                    "update ray_session._patient_raylet_start")
    original = getattr(services, "get_node", None)
    assert callable(original), (f"Ray {ray.__version__} has no ray._private.services.get_node: "
                                "update ray_session._patient_raylet_start")
    assert "services.get_node(" in inspect.getsource(node), (
        f"Ray {ray.__version__}'s node start-up no longer polls services.get_node through the module: "
        "patching it has no effect; update ray_session._patient_raylet_start")
    with ray_session._patient_raylet_start(1.0, "no-such-marker"):
        assert services.get_node is not original  # patched for the start-up
    assert services.get_node is original  # and put back
