"""The papermill runner (tinyconv.notebooks) and the notebook series end to end on the real data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from tinyconv import notebooks
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
    assert len(notebooks.select_notebooks()) == 5
    with pytest.raises(TinyconvError, match="--only '09' matches no notebook"):
        notebooks.select_notebooks(["09"])


def test_resolve_profile(monkeypatch, capsys):
    assert notebooks.resolve_profile("ci") == "ci"
    with pytest.raises(TinyconvError, match="unknown notebook profile 'fast'"):
        notebooks.resolve_profile("fast")
    # this machine has no GPU: auto must not start a days-long full run
    if not notebooks.has_gpu():
        assert notebooks.resolve_profile("auto") == "quick"
        assert "no GPU" in capsys.readouterr().out
    monkeypatch.setattr(notebooks, "has_gpu", lambda: True)
    assert notebooks.resolve_profile("auto") == "full"
    monkeypatch.setattr(notebooks, "has_gpu", lambda: False)
    assert notebooks.resolve_profile("auto") == "quick"


def test_resolve_params_from_arguments_environment_and_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYCONV_PROFILE", raising=False)
    monkeypatch.delenv("TINYCONV_RUN_DIR", raising=False)
    monkeypatch.setenv("TINYCONV_DATA_DIR", str(tmp_path / "data"))
    params = notebooks.resolve_params(run_dir=tmp_path / "run")
    assert params.profile == "quick"
    assert params.data_dir == tmp_path / "data"
    assert params.figures_dir.is_dir() and params.train_dir == tmp_path / "run" / "train"

    monkeypatch.setenv("TINYCONV_PROFILE", "ci")
    monkeypatch.setenv("TINYCONV_RUN_DIR", str(tmp_path / "env-run"))
    params = notebooks.resolve_params()
    assert (params.profile, params.run_dir) == ("ci", tmp_path / "env-run")
    params = notebooks.resolve_params(profile="quick", data_dir="data")  # arguments win; relative = repo
    assert params.profile == "quick" and params.data_dir == notebooks.REPO_ROOT / "data"

    monkeypatch.delenv("TINYCONV_RUN_DIR")
    monkeypatch.setattr(notebooks, "REPO_ROOT", tmp_path / "repo")
    assert notebooks.resolve_params(profile="ci").run_dir == tmp_path / "repo" / "runs" / "notebooks-ci"


def test_display_path_hides_machine_prefixes(tmp_path):
    params = notebooks.NotebookParams(profile="ci", data_dir=tmp_path / "data", run_dir=tmp_path / "run")
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


@pytest.mark.slow
def test_series_runs_on_real_data_with_the_ci_profile(real_data_dir, tmp_path):
    out = tmp_path / "notebooks"
    executed = notebooks.run_notebooks("ci", out, data_dir=real_data_dir, progress=False)
    assert [p.name for p in executed] == list(notebooks.NOTEBOOKS)
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert nb.metadata.kernelspec.name == "tinyconv"
    train = out / "train"
    for name in ("best.keras", "model.keras", "history.csv", "metrics.json", "config.json"):
        assert (train / name).is_file(), name
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    for expected in ("02_train_samples", "02_val_boxes", "03_stage_costs", "04_history", "05_stem_filters", "05_erf"):
        assert expected in figures, (expected, sorted(figures))
    assert all(p.stat().st_size > 2000 for p in (out / "figures").glob("*.png"))


@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
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
    assert re.search(r"08_slow.ipynb (cell 4|a cell) ran past the 3 s limit of a cell", message) and "\n" not in message
    assert list((tmp_path / "out").iterdir()) == []  # neither the executed copy nor a hidden partial one


def test_a_dead_kernel_is_one_line_and_leaves_no_partial_copy(tmp_path):
    source = _write_notebook(tmp_path / "09_dies.ipynb", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(TinyconvError, match=r"09_dies.ipynb (cell 3|a cell) lost its kernel"):
        notebooks.run_notebook(source, tmp_path / "out", {}, progress=False)
    assert list((tmp_path / "out").iterdir()) == []
