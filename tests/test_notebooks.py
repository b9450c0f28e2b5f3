"""The papermill runner (tinyconv.study.runner) and the notebook series end to end on the real data."""

from __future__ import annotations

import json
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


@pytest.mark.notebooks  # executes notebooks in Jupyter kernels
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


@pytest.mark.notebooks  # executes a notebook in a Jupyter kernel
def test_a_headless_run_prints_the_cells_but_not_the_kernels_own_chatter(tmp_path, capfd):
    """The kernel inherits the terminal: at ipykernel's default log level it writes `[IPKernelApp] WARNING |
    Kernel is running over TCP without encryption` there for every notebook (make run printed it seven times)."""
    source = _write_notebook(tmp_path / "08_ok.ipynb", "print('fine')")
    notebooks.run_notebook(source, tmp_path / "out", {}, progress=False)
    out, err = capfd.readouterr()
    assert "fine" in out and "[08_ok] cell" in out
    assert "IPKernelApp" not in out + err and "without encryption" not in out + err, err


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


def test_run_notebooks_gives_per_notebook_parameters_to_their_notebook_only(tmp_path, monkeypatch):
    """The ci series test runs 07 with kernel_sizes=[3] (its default [] trains nothing): notebook_parameters
    reaches the notebooks it names, on top of the common parameters, and no other."""
    given = {}

    def fake_run(notebook, out, parameters, **kwargs):
        given[notebook.name] = parameters
        return Path(out) / notebook.name

    monkeypatch.setattr(notebooks, "run_notebook", fake_run)
    monkeypatch.setattr(notebooks, "_record", lambda *args, **kwargs: None)
    notebooks.run_notebooks("ci", tmp_path / "out", data_dir=tmp_path / "data", only=["06", "07"], progress=False,
                            notebook_parameters={"07": {"kernel_sizes": [3]}})
    common = {"profile": "ci", "data_dir": str((tmp_path / "data").resolve()), "run_dir": str((tmp_path / "out").resolve())}
    assert given == {"06_compare.ipynb": common, "07_localize.ipynb": {**common, "kernel_sizes": [3]}}


def test_07_trains_no_kernel_variant_unless_asked():
    """07's kernel-size comparison trains one model per size (minutes each under quick): off by default, and its
    parameter says what it costs and how to turn it on."""
    nb = nbformat.read(notebooks.NOTEBOOK_DIR / "07_localize.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    line = next(line for line in cell.source.splitlines() if line.startswith("kernel_sizes"))
    assert line.startswith("kernel_sizes = []  #") and "10 min" in line and "[3, 13]" in line


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


def test_auto_says_how_to_use_a_gpu_the_backend_cannot(monkeypatch, capsys, tmp_path):
    """A GPU machine with tinyconv's CPU wheels: `make run` trains `quick` on the CPU, and says so, with what to
    install for JAX on the GPU the driver lists (/proc/driver/nvidia/gpus/<bus id>/, one folder a GPU)."""
    from tinyconv import runtime

    monkeypatch.setattr(notebook_params, "has_gpu", lambda: False)
    monkeypatch.setattr(runtime, "NVIDIA_GPUS", tmp_path / "nvidia" / "gpus")
    assert runtime.nvidia_gpus_present() == 0  # no driver: nothing to say
    assert notebook_params.resolve_profile("auto") == "quick"
    assert "NVIDIA" not in capsys.readouterr().out
    for bus in ("0000:17:00.0", "0000:65:00.0"):
        (runtime.NVIDIA_GPUS / bus).mkdir(parents=True)
    assert runtime.nvidia_gpus_present() == 2
    assert notebook_params.resolve_profile("auto") == "quick"
    said = capsys.readouterr().out
    from importlib.metadata import version

    assert said.startswith("profile auto -> quick: no GPU is visible") and "lists 2 GPU(s)" in said
    assert f'.venv/bin/pip install "jax[cuda13]=={version("jax")}"' in said and "KERAS_BACKEND=jax make run" in said


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


@pytest.mark.notebooks  # executes notebooks in Jupyter kernels
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


@pytest.mark.notebooks  # executes notebooks in Jupyter kernels
def test_a_cell_past_the_timeout_is_one_line_and_leaves_no_partial_copy(tmp_path):
    source = _write_notebook(tmp_path / "08_slow.ipynb", "print('ok')", "import time\ntime.sleep(60)")
    with pytest.raises(TinyconvError) as caught:
        notebooks.run_notebook(source, tmp_path / "out", {}, progress=False, cell_timeout=3)
    message = str(caught.value)
    # the notebook and the cell of the source (1 markdown, 2 parameters, 3 print, 4 sleep; no injected cell)
    assert "08_slow.ipynb cell 4 ran past the 3 s limit of a cell" in message and "\n" not in message
    assert list((tmp_path / "out").iterdir()) == []  # neither the executed copy nor a hidden partial one


@pytest.mark.notebooks  # executes notebooks in Jupyter kernels
def test_a_dead_kernel_is_one_line_and_leaves_no_partial_copy(tmp_path):
    source = _write_notebook(tmp_path / "09_dies.ipynb", "print('ok')", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    # with parameters papermill injects a cell after cell 2, which the source numbering does not count
    with pytest.raises(TinyconvError, match=r"09_dies.ipynb cell 4 lost its kernel"):
        notebooks.run_notebook(source, tmp_path / "out", {"value": 3}, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", notebooks.notebook_names())
def test_committed_outputs_come_from_the_committed_code(name):
    """The outputs a notebook carries were made by the code and files its record names, committed at its
    recorded commit and unchanged since (tinyconv.study.provenance); otherwise make them again:
    `tinyconv notebooks --profile quick --out notebooks --only NN`."""
    problem = notebooks.stale_outputs(notebooks.NOTEBOOK_DIR / name)
    assert problem is None, problem


def test_committed_records_name_what_each_notebook_loaded():
    """Each record lists the modules the notebook really ran: the parameters module, never the runner; 04's
    training core; 07 reads what 04 wrote; 05 analyses the shipped seed model, so it reads that file, not 04's run."""
    records = {name: nbformat.read(notebooks.NOTEBOOK_DIR / name, as_version=4).metadata.get("tinyconv", {})
               for name in notebooks.notebook_names()}
    for name, record in records.items():
        assert "tinyconv.study.params" in record.get("modules", {}), name
        assert "tinyconv.study.runner" not in record["modules"], name
        assert record.get("profile") == "quick" and len(record.get("commit", "")) == 40, name
    assert "tinyconv.training.train" in records["04_train.ipynb"]["modules"]
    assert "tinyconv.training.train" not in records["01_download.ipynb"]["modules"]
    assert "train" in records["04_train.ipynb"]["products"]
    assert "04_train.ipynb" in records["07_localize.ipynb"]["reads"]
    assert records["05_analyze_kernels.ipynb"]["reads"] == []
    assert "models/seed-reference-e15.keras" in records["05_analyze_kernels.ipynb"]["files"]
    # the folders where 04 looks for runs and 05 and 07 for models: a run or a model added there makes them stale
    assert {"seed-reference", "seed-reference-h100"} <= set(records["04_train.ipynb"]["listings"]["results"])
    assert "results/seed-reference/history.csv" in records["04_train.ipynb"]["files"]
    for name in ("05_analyze_kernels.ipynb", "07_localize.ipynb"):
        assert "seed-reference-e15.keras" in records[name]["listings"]["models"], name


def _git(repo: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


def _commit_all(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)


def test_committed_notebooks_stay_valid_for_docstrings_and_unused_code_but_not_for_code_04_ran(tmp_path, monkeypatch):
    """On a clone of this checkout: a docstring edit in a module every notebook loads, and a code edit in a
    module no notebook loads, leave every record valid; a code edit in a module 04 loaded names 04, the
    notebooks that loaded it too, and those that read 04's run (07) in `tinyconv notebooks --check`, no other."""
    from tinyconv.cli import main

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(notebooks.REPO_ROOT), str(clone))
    for name in notebooks.notebook_names():  # the committed notebooks as in this checkout
        (clone / "notebooks" / name).write_bytes((notebooks.NOTEBOOK_DIR / name).read_bytes())
    _git(clone, "add", "-A")
    _git(clone, "commit", "-qm", "notebooks as checked out", "--allow-empty")
    monkeypatch.setattr(notebooks, "REPO_ROOT", clone)
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", clone / "notebooks")
    assert notebooks.check_notebooks() == {}

    params = clone / "tinyconv" / "study" / "params.py"  # every notebook loads it
    params.write_text(params.read_text().replace('"""The parameters every notebook', '"""The parameters that every notebook', 1)
                      + "# a comment at the end\n")
    loaded = {name: nbformat.read(clone / "notebooks" / name, as_version=4).metadata["tinyconv"]["modules"]
              for name in notebooks.notebook_names()}
    unused = clone / "tinyconv" / "deploy" / "export.py"  # no notebook exports (its pixel layer is model.layers')
    assert not any("tinyconv.deploy.export" in modules for modules in loaded.values())
    unused.write_text(unused.read_text() + "\nUNUSED_BY_NOTEBOOKS = 1\n")
    _commit_all(clone, "a docstring, a comment and code no notebook loads")
    assert notebooks.check_notebooks() == {}

    train = clone / "tinyconv" / "training" / "train.py"
    loaders = {name for name, modules in loaded.items() if "tinyconv.training.train" in modules}
    assert "04_train.ipynb" in loaders and "01_download.ipynb" not in loaders
    train.write_text(train.read_text() + "\nCHANGED_FOR_THE_TEST = 1\n")
    _commit_all(clone, "code 04 ran")
    stale = notebooks.check_notebooks()
    readers = set(notebooks.provenance.readers(clone / "notebooks", "04_train.ipynb"))
    assert "07_localize.ipynb" in readers
    assert set(stale) == loaders | readers
    assert "module tinyconv.training.train it loaded has changed" in stale["04_train.ipynb"]
    assert "reads what 04_train.ipynb wrote" in stale["07_localize.ipynb"]
    assert main(["notebooks", "--check"]) == 1


def _mini_repo(tmp_path: Path) -> Path:
    """A git repository holding a copy of tinyconv/ (what the kernels import is the installed package, the
    same code), a tracked data file and two notebooks: 01 writes into the run folder, 02 reads it."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(notebooks.REPO_ROOT / "tinyconv", repo / "tinyconv", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "results").mkdir()
    (repo / "results" / "numbers.csv").write_text("a,b\n1,2\n")
    book = repo / "notebooks"
    book.mkdir()
    _write_notebook(book / "01_write.ipynb",
                    "from pathlib import Path\nfrom tinyconv.study.params import resolve_params\n"
                    "params = resolve_params(run_dir=run_dir, profile=profile)\n"
                    "print(open('../results/numbers.csv').read().split()[1])\n"  # the kernel runs in notebooks/
                    "print(sorted(path.name for path in Path('../results').glob('*')))\n"  # as 04 finds its runs
                    "(params.run_dir / 'made').mkdir(exist_ok=True)\n(params.run_dir / 'made' / 'x.txt').write_text('7')")
    _write_notebook(book / "02_read.ipynb",
                    "from pathlib import Path\nfrom tinyconv.training.reference import read_reference_curve\n"
                    "print(len(read_reference_curve()), (Path(run_dir) / 'made' / 'x.txt').read_text())")
    _git(tmp_path, "init", "-q", str(repo))
    _commit_all(repo, "mini")
    return repo


@pytest.mark.notebooks  # executes notebooks in Jupyter kernels
def test_a_commit_run_records_modules_files_reads_and_products(tmp_path, monkeypatch, capsys):
    from tinyconv.cli import main

    repo = _mini_repo(tmp_path)
    book = repo / "notebooks"
    monkeypatch.setattr(notebooks, "REPO_ROOT", repo)
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", book)
    run_dir = repo / "runs" / "notebooks-ci-commit"
    run_dir.mkdir(parents=True)
    (run_dir / "old").write_text("an earlier commit run")
    written = notebooks.run_notebooks("ci", book, data_dir=tmp_path / "data", progress=False)
    assert [p.name for p in written] == ["01_write.ipynb", "02_read.ipynb"]
    assert not (run_dir / "old").exists()  # a full commit run starts afresh
    first, second = (nbformat.read(p, as_version=4) for p in written)
    assert "tinyconv-provenance" not in json.dumps(first) and "injected-parameters" not in json.dumps(first)
    assert "1,2" in json.dumps(first.cells[-1].outputs) and "100 7" in json.dumps(second.cells[-1].outputs)
    one, two = first.metadata["tinyconv"], second.metadata["tinyconv"]
    assert one["commit"] == _git(repo, "rev-parse", "HEAD").strip() and one["profile"] == "ci"
    assert "tinyconv.study.params" in one["modules"] and "tinyconv.study.runner" not in one["modules"]
    assert "tinyconv.study.params" not in two["modules"] and "tinyconv.training.reference" in two["modules"]
    assert one["files"] == {"results/numbers.csv": notebooks.provenance.file_hash("x.csv", b"a,b\n1,2\n")}
    assert one["listings"] == {"results": ["numbers.csv"]} and two["listings"] == {}  # the glob, not the imports
    assert one["products"] == ["made"] and one["reads"] == [] and two["reads"] == ["01_write.ipynb"]
    assert notebooks.check_notebooks() == {}
    assert main(["notebooks", "--check"]) == 0

    (repo / "results" / "numbers.csv").write_text("a,b\n1,3\n")  # a file 01 read, changed and committed
    _commit_all(repo, "new numbers")
    stale = notebooks.check_notebooks()
    assert "file results/numbers.csv it read has changed" in stale["01_write.ipynb"]
    assert "reads what 01_write.ipynb wrote" in stale["02_read.ipynb"]
    capsys.readouterr()
    assert main(["notebooks", "--check"]) == 1
    printed = capsys.readouterr().out
    assert "01_write.ipynb: file results/numbers.csv" in printed and "--only 01 02" in printed

    # --only 01 makes 01 again and 02, which reads what 01 writes, after removing 01's old products
    (run_dir / "made" / "stale.txt").write_text("left by the earlier run")
    written = notebooks.run_notebooks("ci", book, data_dir=tmp_path / "data", only=["01"], progress=False)
    assert [p.name for p in written] == ["01_write.ipynb", "02_read.ipynb"]
    assert not (run_dir / "made" / "stale.txt").exists()
    assert "also re-running 02_read.ipynb: it reads what 01_write.ipynb writes" in capsys.readouterr().out
    assert notebooks.check_notebooks() == {}

    # a folder that appears where 01 looked: untracked, a clean clone would not have it; committed, 01 is stale
    (repo / "results" / "a-new-run").mkdir()
    (repo / "results" / "a-new-run" / "history.csv").write_text("epoch,val_top1\n0,0.5\n")
    assert notebooks.check_notebooks() == {}
    _commit_all(repo, "a new run folder")
    stale = notebooks.check_notebooks()
    assert "folder results/ it listed has changed (now also a-new-run)" in stale["01_write.ipynb"]
    assert "reads what 01_write.ipynb wrote" in stale["02_read.ipynb"]
    notebooks.run_notebooks("ci", book, data_dir=tmp_path / "data", only=["01"], progress=False)
    assert nbformat.read(book / "01_write.ipynb", as_version=4).metadata["tinyconv"]["listings"] == {
        "results": ["a-new-run", "numbers.csv"]}
    assert notebooks.check_notebooks() == {}

    nb = nbformat.read(book / "02_read.ipynb", as_version=4)  # an edited code cell
    nb.cells[-1].source += "\nprint('edited')"
    nbformat.write(nb, book / "02_read.ipynb")
    assert "a code cell was edited" in notebooks.check_notebooks()["02_read.ipynb"]
    del nb.metadata["tinyconv"]
    nbformat.write(nb, book / "02_read.ipynb")
    assert "carry no record" in notebooks.stale_outputs(book / "02_read.ipynb")


def test_a_record_of_uncommitted_code_is_not_true(tmp_path, monkeypatch):
    """The commit run refuses while tinyconv/ has uncommitted changes; a record whose hashes are not those
    of its commit (code changed, run, then the change committed) is named as such."""
    repo = _mini_repo(tmp_path)
    monkeypatch.setattr(notebooks, "REPO_ROOT", repo)
    monkeypatch.setattr(notebooks, "NOTEBOOK_DIR", repo / "notebooks")
    reference = repo / "tinyconv" / "training" / "reference.py"
    reference.write_text(reference.read_text() + "\nEDITED = 1\n")
    with pytest.raises(TinyconvError, match=r"tinyconv/ has uncommitted changes \(tinyconv/training/reference.py\)"):
        notebooks.run_notebooks("ci", repo / "notebooks", data_dir=tmp_path / "data", progress=False)
    assert not (repo / "runs").exists()  # refused before anything ran

    nb = nbformat.read(repo / "notebooks" / "02_read.ipynb", as_version=4)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="100 7\n")]
    nb.metadata["tinyconv"] = notebooks.provenance.make_record(repo, ["tinyconv", "tinyconv.training.reference"], [], nb=nb)
    recorded = nb.metadata["tinyconv"]["commit"]
    _commit_all(repo, "the edit, after the record was made from it")  # HEAD moves past the recorded commit
    problems = notebooks.provenance.check_record(nb, repo)
    assert problems == [f"module tinyconv.training.reference was not committed at {recorded[:12]} as it ran"]

    # a folder listed with a run folder git tracked (staged) but the recorded commit did not hold
    (repo / "results" / "late").mkdir()
    (repo / "results" / "late" / "history.csv").write_text("epoch\n0\n")
    _git(repo, "add", "results/late")
    provenance = notebooks.provenance
    listings = provenance.listed_folders(provenance.tracked_files(repo), ["results/", "tinyconv/study", "notebooks"])
    assert listings == {"results": ["late", "numbers.csv"]}  # the package's code and the notebooks are not listings
    nb.metadata["tinyconv"] = provenance.make_record(repo, ["tinyconv"], [], nb=nb, listings=listings)
    recorded = nb.metadata["tinyconv"]["commit"]
    _commit_all(repo, "the run folder, after the record was made with it")
    assert provenance.check_record(nb, repo) == [f"folder results/ was not committed at {recorded[:12]} as it was listed"]


def test_code_hash_ignores_docstrings_comments_and_layout_only():
    code_hash = notebooks.provenance.code_hash
    base = code_hash('"""Doc."""\nimport os\n\n\ndef f(x):\n    """Doc of f."""\n    return x + 1  # one more\n')
    assert base == code_hash('"""Other words."""\nimport os\ndef f(x):\n    # a comment\n    return (x + 1)\n')
    assert base != code_hash('"""Doc."""\nimport os\n\n\ndef f(x):\n    return x + 2\n')
    assert base != code_hash('"""Doc."""\nimport sys\n\n\ndef f(x):\n    return x + 1\n')
    assert code_hash('def g():\n    """only a docstring"""\n') == code_hash("def g():\n    pass\n")
    file_hash = notebooks.provenance.file_hash
    assert file_hash("a.csv", b"x\r\n1\r\n") == file_hash("a.csv", b"x\n1\n")
    assert file_hash("a.keras", b"x\r\n") != file_hash("a.keras", b"x\n")  # binary files byte for byte


@pytest.mark.notebooks  # executes notebooks in Jupyter kernels
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


def test_the_progress_log_shows_cells_and_their_output_but_not_the_provenance_record(capsys):
    """`make run` prints each cell's number and output; the runner's provenance line (the list of every file the
    kernel opened, hundreds of kB) belongs in the notebook's metadata, not on the user's terminal."""
    import logging

    from tinyconv.study import provenance

    log = notebooks._CellLog("04_train", 12)

    def emit(message: str) -> None:
        log.emit(logging.LogRecord("papermill", logging.INFO, __file__, 0, message, None, None))

    emit("Executing Cell 3-----------------")
    emit("val top-1 65.8%")
    emit(provenance.MARKER + '{"modules": ["tinyconv"], "opened": [["/a/b.py", false]]}')
    emit("Ending Cell 3-----------------")
    emit("Executing notebook with kernel: tinyconv")
    assert capsys.readouterr().out.splitlines() == ["[04_train] cell 3/12", "[04_train]   val top-1 65.8%"]
