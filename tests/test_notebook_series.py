"""The notebook series end to end on the real data with the `ci` profile, executed once per session.

One papermill run of all the numbered notebooks (`ci_series`, session-scoped) serves every test here:
`test_series_runs_on_real_data_with_the_ci_profile` checks the series and what it leaves (the training
run, the figures), and `test_notebook_cell` checks each code cell of each notebook the way
`pytest --nbval-lax notebooks` did (which executed every notebook a second time): the cell ran without an
error, and a cell marked for checking (a `check-output` or `nbval-check-output` tag, or a
`# NBVAL_CHECK_OUTPUT` comment line) printed what its committed copy carries (dataset counts, parameter
counts: the same under every profile), compared like nbval compares (streams merged by name, carriage returns
applied, images, metadata and execution counts left out, nothing else sanitized).
"""

from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from tinyconv.errors import TinyconvError
from tinyconv.study import runner as notebooks

pytestmark = [pytest.mark.notebooks, pytest.mark.realdata]

CHECK_TAGS = {"check-output", "nbval-check-output"}
CHECK_COMMENTS = {"NBVAL_CHECK_OUTPUT"}
IGNORE_TAGS = {"nbval-ignore-output"}
IGNORE_COMMENTS = {"NBVAL_IGNORE_OUTPUT", "PYTEST_VALIDATE_IGNORE_OUTPUT"}
# nbval's skip_compare (without --nbdime): output keys and MIME types it does not compare
SKIP_COMPARE = {"metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg"}


@dataclass
class Series:
    out: Path  # the executed notebooks, out/train/ and out/figures/
    executed: list[Path]  # what run_notebooks returned ([] when it raised)
    error: TinyconvError | None  # the first failure, naming its notebook and cell


@pytest.fixture(scope="session")
def ci_series(real_data_dir, tmp_path_factory) -> Series:
    """The numbered notebooks run once with papermill at the ci profile on the real data (do not modify)."""
    out = tmp_path_factory.mktemp("notebook-series") / "notebooks"
    # the kernels inherit this environment (nbval's kernels had the same setting from notebooks/conftest.py)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        try:
            # 07 trains no kernel-size variant by default (minutes each under quick): here one, for seconds
            executed = notebooks.run_notebooks("ci", out, data_dir=real_data_dir, progress=False,
                                               notebook_parameters={"07": {"kernel_sizes": [3]}})
        except TinyconvError as error:  # the per-cell tests still report the notebooks that ran
            return Series(out, [], error)
    return Series(out, executed, None)


def test_series_runs_on_real_data_with_the_ci_profile(ci_series):
    assert ci_series.error is None, str(ci_series.error)
    out, executed = ci_series.out, ci_series.executed
    assert [p.name for p in executed] == notebooks.notebook_names()
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert nb.metadata.kernelspec.name == "tinyconv"
    train = out / "train"
    for name in ("best.keras", "model.keras", "history.csv", "metrics.json", "config.json"):
        assert (train / name).is_file(), name
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    for expected in ("02_train_samples", "02_val_boxes", "03_block_diagram", "04_training", "05_stem_filters", "05_erf"):
        assert expected in figures, (expected, sorted(figures))
    assert all(p.stat().st_size > 2000 for p in (out / "figures").glob("*.png"))


# ------------------------------------------------------------------------------ per cell, like nbval


def _comment_markers(source: str) -> set[str]:
    """nbval's comment markers: a line that is only `# MARKER`."""
    return {line.strip().lstrip("#").strip() for line in source.splitlines() if line.strip().startswith("#")}


def checks_output(cell) -> bool:
    """Whether nbval --nbval-lax compares this cell's outputs (a tag, or a comment, which wins like in nbval)."""
    comments = _comment_markers(cell.source)
    if comments & CHECK_COMMENTS:
        return True
    if comments & IGNORE_COMMENTS:
        return False
    tags = cell.get("metadata", {}).get("tags", [])
    tags = set(tags) if isinstance(tags, list) else set()
    return bool(tags & CHECK_TAGS) and not tags & IGNORE_TAGS


def _code_cells(nb) -> list:
    """The code cells of a notebook, without the cell papermill injects after `parameters`."""
    return [c for c in nb.cells if c.cell_type == "code"
            and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


_CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


def coalesce_streams(outputs) -> list:
    """nbval's coalesce_streams on a copy: one output per stream name, a line's text before a lone `\\r` dropped.

    (nbval 0.11 also has a `\\b` step, but its loop never runs: it starts with equal lengths.)"""
    merged, streams = [], {}
    for output in copy.deepcopy(list(outputs)):
        if output.get("output_type") == "stream":
            if output["name"] in streams:
                streams[output["name"]]["text"] += output["text"]
                continue
            streams[output["name"]] = output
        merged.append(output)
    for output in streams.values():
        output["text"] = _CARRIAGE_RETURN.sub("", output["text"])
    return merged


def comparable(outputs) -> dict[str, list]:
    """nbval's view of a cell's outputs: for each compared key (a stream's name, a MIME type, ename...)
    the list of its values in order."""
    flat: dict[str, list] = {}
    for output in coalesce_streams(outputs):
        if output.get("output_type") == "stream":
            output = {"output_type": "stream", output["name"]: output["text"]}
        for key, value in output.items():
            if key in SKIP_COMPARE:
                continue
            if key == "data":
                for mime, data in value.items():
                    if mime not in SKIP_COMPARE:
                        flat.setdefault(mime, []).append(data)
            else:
                flat.setdefault(key, []).append(value)
    return flat


def _committed_cells() -> list[tuple[str, int]]:
    return [(name, number) for name in notebooks.notebook_names()
            for number in range(len(_read_code_cells(notebooks.NOTEBOOK_DIR / name)))]


@functools.lru_cache(maxsize=None)
def _read_code_cells(path: Path) -> list:
    """The code cells of a notebook file, read once per session (do not modify)."""
    return _code_cells(nbformat.read(path, as_version=4))


@pytest.mark.parametrize("name,number", _committed_cells(), ids=lambda v: v if isinstance(v, str) else f"Cell {v}")
def test_notebook_cell(ci_series, name, number):
    """Code cell `number` (counting code cells from 0, like nbval's `Cell N`) of notebook `name` ran in the
    ci series without an error, and prints what the committed notebook shows where the cell is marked."""
    committed = _read_code_cells(notebooks.NOTEBOOK_DIR / name)[number]
    stopped = f"; the series stopped at: {ci_series.error}" if ci_series.error else ""
    path = ci_series.out / name
    assert path.is_file(), f"{name} was not executed{stopped}"
    executed = _read_code_cells(path)[number]
    assert executed.source == committed.source, f"{name} Cell {number}: the executed copy has another cell here"
    errors = [o for o in executed.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name} Cell {number}: {errors[0]['ename']}: {errors[0]['evalue']}"
    if executed.source.strip():  # nbclient, like a kernel, runs no empty cell
        assert executed.get("execution_count") is not None, f"{name} Cell {number} did not run{stopped}"
    if committed.get("execution_count") is None:  # nbval: a reference cell that never ran is not compared
        assert not committed.get("outputs"), f"{name} Cell {number}: unrun reference cell has outputs"
        return
    if checks_output(committed):
        assert comparable(executed.outputs) == comparable(committed.outputs), f"{name} Cell {number}: outputs differ"


def test_checked_cells_are_found_by_comment_or_tag():
    code = nbformat.v4.new_code_cell
    assert checks_output(code("# NBVAL_CHECK_OUTPUT\nprint(1)"))
    assert checks_output(code("print(1)", metadata={"tags": ["check-output"]}))
    assert checks_output(code("print(1)", metadata={"tags": ["nbval-check-output"]}))
    assert not checks_output(code("print(1)  # NBVAL_CHECK_OUTPUT is mentioned, not a marker line"))
    assert not checks_output(code("print(1)", metadata={"tags": ["parameters"]}))
    assert not checks_output(code("# NBVAL_IGNORE_OUTPUT\nprint(1)", metadata={"tags": ["check-output"]}))
    # the committed notebooks mark some cells (dataset and parameter counts)
    marked = [(name, number) for name in notebooks.notebook_names()
              for number, cell in enumerate(_read_code_cells(notebooks.NOTEBOOK_DIR / name))
              if checks_output(cell)]
    assert marked


def test_outputs_compare_like_nbval():
    stream = nbformat.v4.new_output
    split = [stream("stream", name="stdout", text="a\n"), stream("stream", name="stderr", text="w\n"),
             stream("stream", name="stdout", text="50%\r100%\nb\n")]
    assert comparable(split) == {"stdout": ["a\n100%\nb\n"], "stderr": ["w\n"]}
    assert split[0]["text"] == "a\n"  # the outputs themselves are left alone
    shown = stream("display_data", data={"text/plain": "<Figure>", "image/png": "iVBOR"}, metadata={"a": 1})
    result = stream("execute_result", data={"text/plain": "3"}, execution_count=7)
    assert comparable([shown, result]) == {"text/plain": ["<Figure>", "3"]}
    assert comparable([stream("stream", name="stdout", text="1\n")]) != comparable([])
