"""The papermill runner (tinyconv.study.runner) and the notebook series end to end on the real data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from tinyconv.study import params as notebook_params
from tinyconv.study import runner as notebooks
from tinyconv.errors import TinyconvError


def _write_notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tinyconv", "display_name": "Python (tinyconv)", "language": "python"}
    parameters = nbformat.v4.new_code_cell("value = 1")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), parameters]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nb, path)
    return path


def test_failing_notebook_is_named_with_its_cell(tmp_path, capsys):
    source = _write_notebook(
        tmp_path / "07_broken.ipynb",
        "print('value is', value)",
        "raise ValueError(f'boom {value}')\n# second line",
        "print('never')",
    )
    with pytest.raises(TinyconvError) as caught:
        notebooks.run_notebook(source, tmp_path / "out", {"value": 5}, progress=False)
    message = str(caught.value)
    # cells of the source: 1 markdown, 2 parameters, 3 print, 4 raise; the injected cell is not counted
    assert "07_broken.ipynb cell 4 " in message
    assert "failed: ValueError: boom 5" in message
    assert "\n" not in message
    executed = nbformat.read(tmp_path / "out" / "07_broken.ipynb", as_version=4)
    assert any(o.get("output_type") == "error" for c in executed.cells for o in c.get("outputs", []))
    printed = capsys.readouterr().out
    assert "[07_broken] cell 1/" in printed  # one line per cell when not on a terminal
    assert "value is 5" in printed  # the cells' output is streamed too
    assert not (tmp_path / "out" / ".07_broken.partial.ipynb").exists()


def test_run_notebooks_only_selects_and_rejects_unknown(tmp_path):
    assert [p.name for p in notebooks.select_notebooks(["03", "01"])] == ["01_download.ipynb", "03_build_model.ipynb"]
    assert [p.name for p in notebooks.select_notebooks()] == notebooks.notebook_names()
    with pytest.raises(TinyconvError, match="--only '99' matches no notebook"):
        notebooks.select_notebooks(["99"])


def test_every_numbered_notebook_is_discovered(tmp_path, monkeypatch):
    for name in ("07_localize.ipynb", "01_a.ipynb", "06_compare.ipynb", "scratch.ipynb", "6_x.ipynb"):
        _write_notebook(tmp_path / name, "print(1)")
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", tmp_path)
    assert notebooks.notebook_names() == ["01_a.ipynb", "06_compare.ipynb", "07_localize.ipynb"]
    assert [p.name for p in notebooks.select_notebooks(["07", "06"])] == ["06_compare.ipynb", "07_localize.ipynb"]
    assert {"01_download.ipynb", "05_analyze_kernels.ipynb"} <= set(notebooks.notebook_names(notebooks.REPO_ROOT / "notebooks"))


def test_resolve_profile(monkeypatch, capsys):
    assert notebook_params.resolve_profile("ci") == "ci"
    with pytest.raises(TinyconvError, match="unknown notebook profile 'fast'"):
        notebook_params.resolve_profile("fast")
    # this machine has no GPU: auto must not start a days-long full run
    if not notebook_params.has_gpu():
        assert notebook_params.resolve_profile("auto") == "quick"
        assert "no GPU" in capsys.readouterr().out
    monkeypatch.setattr(notebook_params, "has_gpu", lambda: True)
    assert notebook_params.resolve_profile("auto") == "full"
    monkeypatch.setattr(notebook_params, "has_gpu", lambda: False)
    assert notebook_params.resolve_profile("auto") == "quick"


def test_resolve_params_from_arguments_environment_and_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYCONV_PROFILE", raising=False)
    monkeypatch.delenv("TINYCONV_RUN_DIR", raising=False)
    monkeypatch.setenv("TINYCONV_DATA_DIR", str(tmp_path / "data"))
    params = notebook_params.resolve_params(run_dir=tmp_path / "run")
    assert params.profile == "quick"
    assert params.data_dir == tmp_path / "data"
    assert params.figures_dir.is_dir() and params.train_dir == tmp_path / "run" / "train"

    monkeypatch.setenv("TINYCONV_PROFILE", "ci")
    monkeypatch.setenv("TINYCONV_RUN_DIR", str(tmp_path / "env-run"))
    params = notebook_params.resolve_params()
    assert (params.profile, params.run_dir) == ("ci", tmp_path / "env-run")
    params = notebook_params.resolve_params(profile="quick", data_dir="data")  # arguments win; relative = repo
    assert params.profile == "quick" and params.data_dir == notebook_params.REPO_ROOT / "data"

    monkeypatch.delenv("TINYCONV_RUN_DIR")
    monkeypatch.setattr(notebook_params, "REPO_ROOT", tmp_path / "repo")
    assert notebook_params.resolve_params(profile="ci").run_dir == tmp_path / "repo" / "runs" / "notebooks-ci"


def test_display_path_hides_machine_prefixes(tmp_path):
    params = notebook_params.NotebookParams(profile="ci", data_dir=tmp_path / "data", run_dir=tmp_path / "run")
    assert params.show(tmp_path / "run" / "train" / "best.keras") == "<run_dir>/train/best.keras"
    assert params.show(tmp_path / "data" / "tiny-imagenet-200") == "<data_dir>/tiny-imagenet-200"
    assert params.show(notebooks.REPO_ROOT / "notebooks" / "x.ipynb") == "notebooks/x.ipynb"
    assert params.show(tmp_path / "elsewhere" / "f.txt") == ".../f.txt"


def test_strip_for_commit_removes_injected_cell_and_rejects_paths(tmp_path):
    source = _write_notebook(
        tmp_path / "08_ok.ipynb",
        "print('run dir is ' + str(value))",
        "import sys\nsys.stderr.write('I0000 00:00:1795629757.414043   13436 port.cc:153] oneDNN ops\\n');",
        "import sys\nsys.stderr.write('E0000 00:00:1795629763.664559   13436 cuda.cc:52] cuInit\\nkeep me\\n');",
    )
    executed = notebooks.run_notebook(source, tmp_path / "out", {"value": f"{tmp_path}/run"}, progress=False)
    with pytest.raises(TinyconvError, match="absolute path"):
        notebooks.strip_for_commit(executed, tmp_path / "clean.ipynb")
    clean = notebooks.strip_for_commit(executed, tmp_path / "clean.ipynb", replacements={str(tmp_path): "<tmp>"})
    nb = nbformat.read(clean, as_version=4)
    tags = [t for c in nb.cells for t in c.get("metadata", {}).get("tags", [])]
    assert "injected-parameters" not in tags and "parameters" in tags
    assert "run dir is <tmp>/run" in json.dumps(nb)
    assert "papermill" not in nb.metadata
    assert nb.cells[-2].outputs == []  # TensorFlow's native start-up log is dropped
    assert nb.cells[-1].outputs[0].text == "keep me\n"  # other stderr stays


@pytest.mark.parametrize("name", notebooks.notebook_names())
def test_committed_notebook_structure(name):
    """One `parameters` cell of literal assignments, resolved right after; clean committed outputs."""
    import ast

    nb = nbformat.read(notebooks.NOTEBOOK_DIR / name, as_version=4)
    assert nb.metadata.kernelspec.name == "tinyconv"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    cell = nb.cells[tagged[0]]
    assigned = {}
    for statement in ast.parse(cell.source).body:
        assert isinstance(statement, ast.Assign), f"{name}: only assignments in the parameters cell"
        assigned[statement.targets[0].id] = ast.literal_eval(statement.value)  # raises if not a literal
    assert {"data_dir", "profile", "run_dir"} <= set(assigned)
    assert "resolve_params(" in nb.cells[tagged[0] + 1].source
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", name
            assert "Traceback" not in output.get("text", ""), name
    assert not notebooks.find_machine_paths(nb), name


def test_a_cell_past_the_timeout_is_one_line_and_leaves_no_partial_copy(tmp_path):
    source = _write_notebook(tmp_path / "08_slow.ipynb", "print('ok')", "import time\ntime.sleep(60)")
    with pytest.raises(TinyconvError) as caught:
        notebooks.run_notebook(source, tmp_path / "out", {}, progress=False, cell_timeout=3)
    message = str(caught.value)
    # the notebook and the cell of the source (1 markdown, 2 parameters, 3 print, 4 sleep; no injected cell)
    assert "08_slow.ipynb cell 4 ran past the 3 s limit of a cell" in message and "\n" not in message
    assert list((tmp_path / "out").iterdir()) == []  # neither the executed copy nor a hidden partial one


def test_a_dead_kernel_is_one_line_and_leaves_no_partial_copy(tmp_path):
    source = _write_notebook(tmp_path / "09_dies.ipynb", "print('ok')", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    # with parameters papermill injects a cell after cell 2, which the source numbering does not count
    with pytest.raises(TinyconvError, match=r"09_dies.ipynb cell 4 lost its kernel"):
        notebooks.run_notebook(source, tmp_path / "out", {"value": 3}, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", notebooks.notebook_names())
def test_committed_outputs_come_from_the_committed_code(name):
    """The outputs a notebook carries were made by this version of tinyconv/ and of its own code cells
    (strip_for_commit records both hashes); otherwise re-make them: `tinyconv notebooks --profile quick
    --out notebooks`."""
    problem = notebooks.stale_outputs(notebooks.NOTEBOOK_DIR / name)
    assert problem is None, problem


def test_commit_mode_stamps_outputs_and_stale_outputs_detects_changes(tmp_path, monkeypatch):
    book = tmp_path / "notebooks"
    book.mkdir()
    source = _write_notebook(book / "01_one.ipynb", "print('profile', profile, 'reads', data_dir)")
    package = tmp_path / "package"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n")
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", book)
    monkeypatch.setattr(notebooks, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(notebooks, "PACKAGE_DIR", package)
    assert notebooks.stale_outputs(source) is None  # no outputs: nothing to be stale
    (tmp_path / "runs" / "notebooks-ci-commit").mkdir(parents=True)
    (tmp_path / "runs" / "notebooks-ci-commit" / "old").write_text("an earlier commit run")

    written = notebooks.run_notebooks("ci", book, data_dir=tmp_path / "data", progress=False)
    assert written == [source]
    nb = nbformat.read(source, as_version=4)
    assert "profile ci reads <data_dir>" in json.dumps(nb)  # the outputs landed, raw paths hidden
    assert "injected-parameters" not in json.dumps(nb)
    assert nb.metadata["tinyconv"]["profile"] == "ci"
    assert notebooks.stale_outputs(source) is None
    run_dir = tmp_path / "runs" / "notebooks-ci-commit"
    assert (run_dir / "01_one.ipynb").is_file() and not (run_dir / "old").exists()  # a fresh run

    (package / "mod.py").write_text("x = 2\n")  # the code changed after the outputs were made
    assert "another version of tinyconv/" in notebooks.stale_outputs(source)
    (package / "mod.py").write_text("x = 1\r\n")  # CRLF checkout of the same code
    assert notebooks.stale_outputs(source) is None
    nb.cells[-1].source = "print('edited')"
    nbformat.write(nb, source)
    assert "a code cell was edited" in notebooks.stale_outputs(source)
    del nb.metadata["tinyconv"]
    nbformat.write(nb, source)
    assert "carry no record" in notebooks.stale_outputs(source)


def test_a_failing_commit_run_leaves_the_committed_notebooks_alone(tmp_path, monkeypatch):
    book = tmp_path / "notebooks"
    book.mkdir()
    first = _write_notebook(book / "01_ok.ipynb", "print('fine')")
    _write_notebook(book / "02_bad.ipynb", "raise RuntimeError('no')")
    before = first.read_bytes()
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", book)
    monkeypatch.setattr(notebooks, "REPO_ROOT", tmp_path)
    with pytest.raises(TinyconvError, match="02_bad.ipynb cell 3"):
        notebooks.run_notebooks("ci", book, data_dir=tmp_path / "data", progress=False)
    assert first.read_bytes() == before


def test_source_hash_counts_only_files_git_tracks(tmp_path):
    import subprocess

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("a = 1\n")
    (package / "data.csv").write_text("x\n1\n")
    before = notebooks.source_hash(package)  # not a checkout: every file there
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "add", "pkg/a.py", "pkg/data.csv"], cwd=tmp_path, check=True)
    (package / "work_in_progress.py").write_text("b = 2\n")  # someone's module, not added yet
    assert [p.name for p in notebooks.package_files(package)] == ["a.py", "data.csv"]
    assert notebooks.source_hash(package) == before
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pkg"], cwd=tmp_path, check=True)
    assert notebooks.uncommitted_package_changes(package) == []
    (package / "a.py").write_text("a = 2\n")  # a tracked file's edit counts, and is reported as uncommitted
    assert notebooks.source_hash(package) != before
    assert notebooks.uncommitted_package_changes(package) == ["a.py"]
