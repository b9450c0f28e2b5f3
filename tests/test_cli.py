"""The `tinyconv` command's argument handling: recipe fields as flags, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tinyconv import cli


@pytest.mark.slow  # trains an epoch
def test_recipe_fields_work_as_flags(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main([
        "train", "--profile", "ci", "--epochs", "1", "--data-dir", str(synthetic_data_dir), "--out", str(out),
        "--lr", "0.002", "--mix-prob=0.5", "--set", "label_smoothing=0.1",
    ])
    assert rc == 0
    recipe = json.loads((out / "config.json").read_text())["train"]
    assert (recipe["lr"], recipe["mix_prob"], recipe["label_smoothing"], recipe["epochs"]) == (0.002, 0.5, 0.1, 1)
    printed = capsys.readouterr().out
    assert "done: val top-1" in printed and '"top1"' not in printed  # the summary line, not the metrics dump
    # --json: the metrics once more, as one object at the end (the run is complete: nothing is trained again)
    assert cli.main(["train", "--profile", "ci", "--epochs", "1", "--data-dir", str(synthetic_data_dir), "--out",
                     str(out), "--lr", "0.002", "--mix-prob=0.5", "--set", "label_smoothing=0.1", "--json"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("\n{") + 1:]) == json.loads((out / "metrics.json").read_text())


def test_train_request_reads_train_flags_as_train_does():
    """What benchmarks/gpu_profile.py --choose builds a GPU lease's train step from: the train call's flags, every kind
    of recipe flag included; the flags that only say where and how long (--out, --time-limit) set no recipe field."""
    flags = ["--preset", "seed", "--profile", "reference", "--epochs", "3", "--batch-size", "64", "--lr", "2e-3",
             "--set", "mix_prob=0.5", "--out", "/tmp/x", "--time-limit", "9"]
    assert cli.train_request(flags) == ("seed", "reference", {"epochs": 3, "batch_size": 64, "lr": 2e-3, "mix_prob": 0.5})
    assert cli.train_request([]) == (None, "quick", {})  # train's own defaults


def test_unknown_recipe_flag_is_a_one_line_error(synthetic_data_dir, tmp_path, capsys):
    rc = cli.main(["train", "--profile", "ci", "--data-dir", str(synthetic_data_dir), "--out", str(tmp_path / "r"),
                   "--learning-speed", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "unknown recipe field 'learning_speed'" in err
    assert not (tmp_path / "r").exists()


def test_extra_arguments_outside_train_are_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["info", "seed", "--lr", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --lr 1" in capsys.readouterr().err


def _unwritable_outs(tmp_path, read_only):
    """--out values that cannot be written: a file, a folder under a file, a folder in a read-only place."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    return [(a_file, "is a file, not a folder"), (a_file / "out", f"{a_file} is a file, not a folder"),
            (read_only / "out", f"in {read_only}")]


@pytest.mark.parametrize("command", ["train", "localize", "notebooks"])
def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(command, synthetic_data_dir, tmp_path,
                                                                             capsys, monkeypatch):
    """Each gave a traceback (NotADirectoryError, FileExistsError, PermissionError: train after loading the data,
    localize after running the model); now one line naming the folder, and nothing is written anywhere."""
    from unwritable import read_only_folder, snapshot

    from tinyconv.study import runner

    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    image = tmp_path / "image.png"
    image.write_bytes(b"")  # never read: the output is checked first
    (tmp_path / "model.keras").write_bytes(b"")  # the same (a missing one would be named first, before TensorFlow)
    argv = {"train": ["train", "--profile", "ci", "--epochs", "1", "--data-dir", str(synthetic_data_dir)],
            "localize": ["localize", str(tmp_path / "model.keras"), str(image)],
            "notebooks": ["notebooks", "--profile", "ci", "--only", "01"]}[command]
    with read_only_folder(tmp_path) as read_only:
        for out, message in _unwritable_outs(tmp_path, read_only):
            before = snapshot(tmp_path)
            assert cli.main([*argv, "--out", str(out)]) == 1
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and err.startswith("tinyconv: error: ") and "Traceback" not in err, err
            assert f"{out}: " in err and message in err, err
            assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "image.png"], ["localize", "image.png"],
                                     ["export", "--format", "onnx"]])
def test_a_missing_model_is_one_line_before_tensorflow_is_imported(command, tmp_path):
    """A mistyped model path is named at once (0.2 s), not after importing TensorFlow (4-6 s on 2 CPU cores): run
    where `import tensorflow` fails, the command still gives only its one line, exit 1."""
    repo = Path(__file__).resolve().parents[1]
    missing = tmp_path / "mistyped.keras"
    argv = [command[0], str(missing), *command[1:]]
    done = subprocess.run([sys.executable, str(repo / "tests" / "no_tensorflow.py"), "tinyconv", *argv], cwd=tmp_path,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == "", done.stderr[-2000:]
    assert done.stderr == f"tinyconv: error: {missing}: no such model file\n"
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("argv, flag", [
    (["train", "--time-limit", "0"], "--time-limit"),  # was: no limit at all
    (["train", "--time-limit", "-1"], "--time-limit"),  # was: stop after one epoch
    (["train", "--time-limit", "nan"], "--time-limit"),
    (["localize", "m.keras", "i.png", "--threshold", "1.5"], "--threshold"),  # was: every box the whole image
    (["localize", "m.keras", "i.png", "--threshold", "-0.1"], "--threshold"),
    (["localize", "m.keras", "i.png", "--threshold", "nan"], "--threshold"),
    (["bench", "--steps", "0"], "--steps"),
    (["bench", "--batch-size", "-8"], "--batch-size"),
    (["bench-data", "--seconds", "0"], "--seconds"),  # was: a report of nothing timed
    (["bench-data", "--seconds", "inf"], "--seconds"),  # was: timing forever
    (["bench-data", "--batch-size", "0"], "--batch-size"),
    (["predict", "m.keras", "i.png", "--top", "0"], "--top"),
    (["state", "pack", "run", "out", "--piece-mib", "0"], "--piece-mib"),
    (["state", "watch", "run", "out", "--pid", "0"], "--pid"),  # was: waiting forever (0 is this process group)
    (["state", "watch", "run", "out", "--pid", "1", "--interval", "0"], "--interval"),  # was: a busy loop
])
def test_nonsense_numbers_are_refused_by_argparse_in_one_line(argv, flag, capsys, monkeypatch):
    import tinyconv.bench
    import tinyconv.deploy.inference
    import tinyconv.study.localize
    import tinyconv.training.run_state
    import tinyconv.training.train

    def ran(*args, **kwargs):  # what each command would have started with the number (for minutes, or forever)
        pytest.fail(f"{argv[0]} ran with {flag} {argv[argv.index(flag) + 1]}")

    for module, name in [(tinyconv.training.train, "train"), (tinyconv.study.localize, "localize_images"),
                         (tinyconv.bench, "bench_model"), (tinyconv.bench, "bench_data"),
                         (tinyconv.deploy.inference, "predict"), (tinyconv.training.run_state, "pack_state"),
                         (tinyconv.training.run_state, "watch_state")]:
        monkeypatch.setattr(module, name, ran)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"tinyconv {argv[0]}") and f"error: argument {flag}: must be " in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_help_says_what_the_time_limit_and_threshold_take(capsys):
    for command, words in (("train", "MINUTES (> 0)"), ("localize", "THRESHOLD in [0, 1]")):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert words in " ".join(capsys.readouterr().out.split())


def test_every_argument_of_every_subcommand_says_what_it_is_in_help():
    """`--help` is the first place a newcomer looks: no flag or argument without a line of help."""
    import argparse

    from tinyconv.cli import build_parser

    silent = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                silent.append(" ".join([*path, *(action.option_strings or [action.dest])]))

    walk(build_parser(), ["tinyconv"])
    assert not silent, f"no help text: {silent}"


def test_the_conda_route_pins_what_pyproject_pins_and_registers_the_kernel():
    """environment.yml is the conda way in: its pins are pyproject.toml's dependencies, and its steps register the
    `tinyconv` kernel the notebooks name (it once kept a dropped test plugin and registered no kernel)."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "environment.yml").read_text()
    pins = sorted(re.findall(r"^\s+- ([A-Za-z0-9_.\-\[\]]+==[^\s#]+)\s*$", text, flags=re.M))
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert pins == sorted(project["dependencies"])
    assert re.search(r"ipykernel install --sys-prefix --name tinyconv\b", text)
    notebook = (root / "notebooks" / "04_train.ipynb").read_text()
    assert '"name": "tinyconv"' in notebook  # the kernel the notebooks ask for is the one registered


def test_main_gives_back_the_sigterm_handler_and_forked_workers_still_die_of_sigterm(capsys):
    """main turns SIGTERM into a Ctrl-C-like stop only while it runs (tests and scripts call it in their own process),
    and a process forked under it (prepare's decoding pool, which Pool.terminate() ends with SIGTERM) dies of SIGTERM
    as by default: one that raised instead left a pool waiting forever on its queue lock."""
    import os
    import signal
    import time

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *args: seen.append(args))
    try:
        assert cli.main(["info", "tiny", "--json"]) == 0
        assert signal.getsignal(signal.SIGTERM) is not cli._on_sigterm  # the caller's handler is back
        cli._sigterm_owner = os.getpid()
        signal.signal(signal.SIGTERM, cli._on_sigterm)  # as during a command
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    capsys.readouterr()


def test_resize_reaches_predict_and_localize_and_a_bad_value_is_refused(tmp_path, capsys, monkeypatch):
    """`--resize {crop,squash}` (default crop) is passed to predict and to localize; another value is argparse's
    one line, exit 2."""

    import tinyconv.deploy.inference
    import tinyconv.study.localize
    from tinyconv.deploy.inference import RESIZE_MODES

    model = tmp_path / "m.keras"
    model.write_bytes(b"")  # never read (the functions are replaced), but there: a missing model is named first
    asked = []
    monkeypatch.setattr(tinyconv.deploy.inference, "predict",
                        lambda model, images, **kwargs: asked.append(kwargs["resize"]) or [])
    for flags, mode in (([], "crop"), (["--resize", "squash"], "squash"), (["--resize=crop"], "crop")):
        assert cli.main(["predict", str(model), "i.png", *flags]) == 0
        assert asked.pop() == mode

    monkeypatch.setattr(tinyconv.study.localize, "localize_images",
                        lambda model, paths, **kwargs: asked.append(kwargs["resize"]) or [])
    for flags, mode in (([], "crop"), (["--resize", "squash"], "squash")):
        assert cli.main(["localize", str(model), "i.png", "--out", str(tmp_path / "maps"), *flags]) == 0
        assert asked.pop() == mode

    for command in ("predict", "localize"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "m.keras", "i.png", "--resize", "fit"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "argument --resize: invalid choice: 'fit' (choose from" in err[-1], err
        subparser = cli.build_parser()._subparsers._group_actions[0].choices[command]
        action = next(a for a in subparser._actions if "--resize" in a.option_strings)
        assert tuple(action.choices) == RESIZE_MODES and action.default == "crop"
        words = " ".join(subparser.format_help().split())
        assert "crop (the default) centre-crops it to a square, then resizes" in words
        assert "squash resizes the whole image" in words


def test_notebooks_only_without_a_name_is_refused_not_run_all(capsys, monkeypatch):
    """`--only` with no notebook named ran all seven (nargs="*" gave an empty list, read as no filter)."""
    from tinyconv.study import runner

    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    monkeypatch.setattr(cli, "run_notebooks", lambda *a, **k: pytest.fail("the notebooks ran"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["notebooks", "--profile", "ci", "--only"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "tinyconv notebooks: error: argument --only: expected at least one argument", err


def test_train_out_help_names_the_runs_root_train_really_uses(capsys, monkeypatch, tmp_path):
    """The help said runs/<preset>-<profile>; the run goes to <preset>-<profile> in $TINYCONV_RUNS_ROOT, else in
    the repository's runs/ (training.train.default_runs_root), whatever the current folder."""
    from tinyconv.training.train import default_runs_root

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    words = " ".join(capsys.readouterr().out.split())
    assert ("--out OUT run folder (default: <preset>-<profile> in $TINYCONV_RUNS_ROOT, else in the repository's "
            "runs/)") in words, words
    monkeypatch.delenv("TINYCONV_RUNS_ROOT", raising=False)
    monkeypatch.delenv("TINYCONV_RUNS_DIR", raising=False)
    assert default_runs_root() == Path(__file__).resolve().parents[1] / "runs"
    monkeypatch.setenv("TINYCONV_RUNS_ROOT", str(tmp_path))
    assert default_runs_root() == tmp_path


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the ignored interrupt, on purpose
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "tinyconv: interrupted"),
                                                (signal.SIGTERM, 143, "tinyconv: terminated (SIGTERM)")])
def test_a_stop_lost_in_a_destructor_still_stops_the_command_before_it_replaces_anything(tmp_path, monkeypatch, capsys,
                                                                                          signum, code, said):
    """Ctrl-C (or SIGTERM) that lands while Python runs a destructor (TensorFlow's converter, in C++, triggers many
    during an export) raises there, and Python ignores it: the command used to go on and replace its output, exit 0.
    The handler's record of it stops the command at the next replacement of a file, the old one kept."""
    import time

    from tinyconv import cli, fileio

    target = tmp_path / "export.tflite"
    target.write_text("old")

    went_on = []

    class LosesTheStop:
        def __del__(self):
            os.kill(os.getpid(), signum)
            time.sleep(0.05)  # the handler runs here, inside the destructor, and what it raises is ignored
            went_on.append("destructor")  # not reached

    def command(args):
        LosesTheStop()
        went_on.append("command")  # reached: the interrupt did not stop the command
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("new")
        return 0

    monkeypatch.setattr(cli, "cmd_state", command)
    assert cli.main(["state", "pack", str(tmp_path / "run"), str(tmp_path / "out")]) == code
    assert went_on == ["command"]
    assert capsys.readouterr().err.strip().splitlines()[-1] == said
    assert target.read_text() == "old" and sorted(path.name for path in tmp_path.iterdir()) == ["export.tflite"]
    assert signal.getsignal(signal.SIGINT) is not cli._on_sigint  # the caller's handlers are back


def test_an_error_that_follows_a_stop_request_is_reported_as_the_stop(tmp_path, monkeypatch, capsys):
    """An interrupt raised inside C code that calls back into Python can surface as another exception (a
    SystemError from TensorFlow's converter, seen once): after a stop request that is the interrupt, said in one
    line with its exit code; without one, an unexpected error still shows its traceback."""
    from tinyconv import cli, fileio

    def command(args):
        fileio.note_stop(signal.SIGINT)  # as the handler records it, before what it raised got mangled
        raise SystemError("Objects/listobject.c:338: bad argument to internal function")

    monkeypatch.setattr(cli, "cmd_state", command)
    assert cli.main(["state", "pack", str(tmp_path / "run"), str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip() == "tinyconv: interrupted"

    def broken(args):
        raise SystemError("a bug")

    monkeypatch.setattr(cli, "cmd_state", broken)
    with pytest.raises(SystemError, match="a bug"):
        cli.main(["state", "pack", str(tmp_path / "run"), str(tmp_path / "out")])
