"""Run the numbered notebooks headless with papermill, and make their committed outputs.

    run_notebooks("quick", "runs/nb")          # execute every notebook into runs/nb/ (train/, figures/ beside)
    run_notebooks("quick", "notebooks")        # the committed outputs: a fresh run, cleaned and recorded

The notebooks themselves import tinyconv.study.params (their parameters), not this module: the runner's
code is no part of what a notebook shows.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path

from tinyconv import fileio
from tinyconv.data.dataset import default_data_dir
from tinyconv.errors import TinyconvError
from tinyconv.study import provenance
from tinyconv.study.params import NOTEBOOK_DIR, REPO_ROOT, display_path, resolve_profile

KERNEL_NAME = "tinyconv"


def notebook_names(notebook_dir: Path | None = None) -> list[str]:
    """Every numbered notebook (`NN_name.ipynb`) of a folder (default NOTEBOOK_DIR), in order: the series is
    what is there, so a new chapter joins `tinyconv notebooks`, the tests and the commit check by being added."""
    return sorted(p.name for p in Path(notebook_dir or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


# One cell may run this long before the runner gives up on it: generous, as the train cell of a `full` run
# on a GPU takes hours; a hung kernel is still reported instead of waiting forever.
CELL_TIMEOUT_S = 12 * 3600
# The kernel's own log (IPKernelApp's, not the cells' output, which papermill shows) goes to the terminal of a
# headless run; at its default level ipykernel >= 7 warns there once per notebook that the local kernel's TCP
# sockets are not encrypted, which says nothing about the run. Errors of the kernel app still show.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def select_notebooks(only=None, notebook_dir: Path | None = None) -> list[Path]:
    """The notebooks to run, in order.

    Args:
        only: None for all, else prefixes or names such as ["01", "03"] or ["04_train"].
    Raises:
        TinyconvError: when a prefix matches no notebook.
    """
    notebook_dir = Path(notebook_dir or NOTEBOOK_DIR)
    names = notebook_names(notebook_dir)
    if not names:
        raise TinyconvError(f"no numbered notebooks found in {notebook_dir}")
    if not only:
        return [Path(notebook_dir) / name for name in names]
    chosen = []
    for prefix in only:
        matches = [name for name in names if name.startswith(prefix)]
        if not matches:
            raise TinyconvError(f"--only {prefix!r} matches no notebook in {display_path(notebook_dir)}")
        chosen.extend(name for name in matches if name not in chosen)
    return [Path(notebook_dir) / name for name in names if name in chosen]


_PAPERMILL_HEADERS = ("Executing notebook", "Input Notebook", "Output Notebook", "Working directory")


class _CellLog(logging.Handler):
    """Prints papermill's per-cell log (and the cells' own output) as plain lines, for logs and CI."""

    def __init__(self, notebook: str, total_cells: int):
        super().__init__(level=logging.INFO)
        self.notebook = notebook
        self.total_cells = total_cells

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().rstrip()
        if message.startswith("Ending Cell "):
            return
        if message.startswith("Executing Cell "):
            number = message[len("Executing Cell ") :].strip("-")
            print(f"[{self.notebook}] cell {number}/{self.total_cells}", flush=True)
        elif message.startswith(provenance.MARKER):
            return  # the runner's own record of what the kernel loaded and read: for the notebook, not the log
        elif message and not message.startswith(_PAPERMILL_HEADERS):
            print(f"[{self.notebook}]   {message}", flush=True)


def _failed_cell_number(executed_nb, cell_index: int) -> int:
    """1-based position of a failed cell in the source notebook.

    `cell_index` counts cells of the executed notebook before papermill added its error banner cells,
    including its injected-parameters cell and the runner's provenance cells, which the source notebook does
    not have.
    """
    cells = [
        cell
        for cell in executed_nb.cells
        if "papermill-error-cell-tag" not in cell.get("metadata", {}).get("tags", [])
    ]
    added = {"injected-parameters", provenance.CELL_TAG}
    injected = sum(1 for cell in cells[:cell_index] if added & set(cell.get("metadata", {}).get("tags", [])))
    return cell_index - injected + 1


# Longer than 60 lines with its docstring: papermill's call with its error translation in one place.
def run_notebook(
    notebook: Path,
    out: Path,
    parameters: dict,
    progress: bool | None = None,
    cwd: Path | None = None,
    cell_timeout: float | None = CELL_TIMEOUT_S,
    record_roots: list[Path] | None = None,
) -> Path:
    """Execute one notebook with papermill into `out/<name>`.

    Args:
        notebook: the source .ipynb.
        out: folder for the executed copy.
        parameters: values injected after the `parameters` cell.
        progress: a progress bar (True) or one line per cell (False); None: a bar on a terminal only.
        cwd: working directory of the kernel (default: the notebook's folder).
        cell_timeout: seconds one cell may run (None: no limit).
        record_roots: folders whose opened files the run notes (tinyconv.study.provenance); the executed
            copy's metadata then holds what the kernel loaded and opened (`observed`); None: no record.
    Returns:
        the executed copy.
    Raises:
        TinyconvError: "notebooks/NAME cell N (In [M]) failed: Error: message" when a cell raises (the
            executed copy with the traceback is still written); one line naming the notebook and cell when a
            cell runs past `cell_timeout` or the kernel dies (no partial copy is left).
    """
    # papermill and nbformat take ~1.7 s to import, and every notebook imports this module in its first cell
    import nbformat
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / notebook.name
    partial = fileio.temporary_path(target, ".ipynb")  # papermill wants the .ipynb suffix
    if progress is None:
        progress = sys.stdout.isatty()
    shown = display_path(notebook)

    source = nbformat.read(notebook, as_version=4)
    if record_roots is not None:
        tag = {"tags": [provenance.CELL_TAG]}
        start = provenance.start_cell_source([str(Path(root).resolve()) for root in record_roots])
        source.cells.insert(0, nbformat.v4.new_code_cell(start, metadata=tag))
        source.cells.append(nbformat.v4.new_code_cell(provenance.END_CELL_SOURCE, metadata=dict(tag)))
    handler = None
    logger = logging.getLogger("papermill")
    if not progress:
        total = len(source.cells) + 1  # + papermill's parameters cell
        handler = _CellLog(notebook.stem, total)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    print(f"running {shown}", flush=True)
    try:
        papermill.execute_notebook(
            source,
            str(partial),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            progress_bar=progress,
            log_output=not progress,
            cwd=str(cwd or notebook.parent),
            execution_timeout=cell_timeout,
            extra_arguments=KERNEL_ARGUMENTS,
        )
    except (CellTimeoutError, DeadKernelError) as exc:
        cell = _running_cell(partial, nbformat)
        partial.unlink(missing_ok=True)
        what = (f"ran past the {cell_timeout:g} s limit of a cell" if isinstance(exc, CellTimeoutError)
                else "lost its kernel (it died: out of memory, or killed)")
        raise TinyconvError(f"{shown} {cell} {what}; nothing was written to {display_path(out)}") from None
    except PapermillExecutionError as exc:
        executed = nbformat.read(partial, as_version=4)
        number = _failed_cell_number(executed, exc.cell_index)
        executed.cells = [cell for cell in executed.cells
                          if provenance.CELL_TAG not in cell.get("metadata", {}).get("tags", [])]
        nbformat.write(executed, partial)
        os.replace(partial, target)
        evalue = (str(exc.evalue).strip().splitlines() or [""])[0]
        raise TinyconvError(
            f"{shown} cell {number} (In [{exc.exec_count}]) failed: {exc.ename}: {evalue} "
            f"(executed copy: {display_path(target)})"
        ) from None
    except NoSuchKernel:
        raise TinyconvError(
            f"{shown} needs the Jupyter kernel {KERNEL_NAME!r}: run `make setup` (or "
            f"`python -m ipykernel install --sys-prefix --name {KERNEL_NAME}`)"
        ) from None
    finally:
        if handler is not None:
            logger.removeHandler(handler)
    if record_roots is not None:
        executed = nbformat.read(partial, as_version=4)
        observed = provenance.read_end_cell(executed)
        executed.cells = [cell for cell in executed.cells
                          if provenance.CELL_TAG not in cell.get("metadata", {}).get("tags", [])]
        executed.metadata["observed"] = observed
        nbformat.write(executed, partial)
    os.replace(partial, target)
    return target


def _running_cell(partial: Path, nbformat) -> str:
    """'cell N' (numbered as in the source notebook) for the cell that was running when execution stopped.

    papermill saves its copy when a cell starts and again in a `finally` when it ends, which marks even a
    timed-out or orphaned cell "completed"; the cell that was running is the last one with a start time.
    Returns 'before its first cell' when no cell had started (the kernel died while starting).
    """
    try:
        executed = nbformat.read(partial, as_version=4)
    except Exception:  # no copy yet (papermill writes it when the first cell starts) or half-written
        return "before its first cell"
    started = [
        index
        for index, cell in enumerate(executed.cells)
        if cell.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return "before its first cell"
    return f"cell {_failed_cell_number(executed, started[-1])}"


def run_notebooks(profile: str, out, data_dir=None, only=None, progress: bool | None = None,
                  notebook_parameters: dict | None = None) -> list[Path]:
    """Run the numbered notebooks in order with papermill, stopping at the first failure.

    The executed copies, the training run (`out/train/`) and the figures (`out/figures/`) all go to `out`;
    each executed copy records what it loaded, read and wrote (tinyconv.study.provenance).
    When `out` is the notebooks folder itself, this produces the committed outputs instead (the one way
    they are made): the series runs into `runs/notebooks-<profile>-commit/` from the committed code and,
    once every notebook has succeeded, each executed copy is cleaned by `strip_for_commit`, its record
    naming the commit, over its committed file; a failure leaves the committed notebooks as they were.
    With `only`, a commit run re-runs those notebooks and every notebook that reads what they write (07
    reads 04's run), beside the products the others left in the commit run folder.

    Args:
        profile: "auto" (full with a GPU, else quick), "ci", "quick" or "full".
        out: folder for the executed notebooks and the run dir of the series (or the notebooks folder).
        data_dir: folder holding tiny-imagenet-200/ (None: tinyconv.data.dataset.default_data_dir()).
        only: None for all, else prefixes such as ["01", "03"].
        progress: a progress bar per notebook (True) or one line per cell (False); None: bar on a terminal.
        notebook_parameters: {notebook name or prefix such as "07": {parameter: value}}, given to the notebooks
            it matches on top of profile, data_dir and run_dir (the ci test runs 07 with kernel_sizes=[3]).
    Returns:
        the executed notebooks, in order (the committed files when `out` is the notebooks folder).
    Raises:
        TinyconvError: naming the notebook and cell of the first failure; in commit mode, before anything
            runs, when tinyconv/ has uncommitted changes (the record names the commit the code is at).
    """
    profile = resolve_profile(profile)
    out = Path(out).resolve()
    commit = out == Path(NOTEBOOK_DIR).resolve()
    run_dir = out
    selected = select_notebooks(only)
    if commit:
        changed = provenance.changed_since(Path(REPO_ROOT), ["tinyconv"])
        if changed:
            raise TinyconvError(f"tinyconv/ has uncommitted changes ({', '.join(changed[:5])}): commit them first, "
                                "then make the committed outputs (their record names the commit the code is at)")
        run_dir = Path(REPO_ROOT) / "runs" / f"notebooks-{profile}-commit"
    # one line naming the folder before anything runs or is removed, not a traceback from the first notebook's mkdir
    fileio.check_writable(run_dir, "the executed notebooks", folder=True)
    if commit:
        selected = _commit_selection(selected, run_dir, full=not only)
    if data_dir is None:
        data_dir = default_data_dir()
    parameters = {"profile": profile, "data_dir": str(Path(data_dir).resolve()), "run_dir": str(run_dir)}
    tracked = provenance.tracked_files(Path(REPO_ROOT))
    products = _committed_products(run_dir) if commit else {}
    executed = []
    for notebook in selected:
        before = _snapshot(run_dir)
        own = {name: value for prefix, values in (notebook_parameters or {}).items()
               if notebook.name.startswith(prefix) for name, value in values.items()}
        path = run_notebook(notebook, run_dir, {**parameters, **own}, progress=progress,
                            record_roots=[REPO_ROOT, run_dir])
        made = _products(before, _snapshot(run_dir))
        products[notebook.name] = made
        _record(path, run_dir, profile, made, products, tracked)
        executed.append(path)
    if commit:
        # paths a library call printed raw are shown as the notebooks show them (params.show)
        hidden = {parameters["data_dir"]: "<data_dir>", str(run_dir): "<run_dir>"}
        executed = [strip_for_commit(path, Path(NOTEBOOK_DIR) / path.name, replacements=hidden)
                    for path in executed]
        made_at = provenance.head_commit(Path(REPO_ROOT)) or "?"
        print(f"committed outputs of {len(executed)} notebook(s) written to {display_path(out)} "
              f"(profile {profile}, commit {made_at[:12]})", flush=True)
    else:
        print(f"executed {len(executed)} notebook(s) into {display_path(out)}", flush=True)
    return executed


def _commit_selection(selected: list[Path], run_dir: Path, full: bool) -> list[Path]:
    """The notebooks a commit run makes, with their earlier products removed from the commit run folder.

    All of them: a fresh run folder (a training run left by an earlier commit run would be reused as
    "complete" instead of trained again). Some: those, the notebooks that read what they write, and any
    notebook they read whose products are missing here.
    """
    if full:
        if run_dir.exists():
            print(f"removing the previous commit run {display_path(run_dir)}", flush=True)
            shutil.rmtree(run_dir)
        return selected
    names = [path.name for path in selected]
    for name in list(names):
        for reader in provenance.readers(NOTEBOOK_DIR, name):
            if reader not in names:
                print(f"also re-running {reader}: it reads what {name} writes", flush=True)
                names.append(reader)
    committed = _committed_products(run_dir)
    for name in list(names):
        for upstream in _committed_record(name).get("reads", []):
            missing = [p for p in committed.get(upstream, []) if not (run_dir / p).exists()]
            if upstream not in names and (missing or upstream not in committed):
                print(f"also re-running {upstream}: {name} reads what it writes, which is not in "
                      f"{display_path(run_dir)}", flush=True)
                names.append(upstream)
    for name in names:
        for product in committed.get(name, []):
            target = run_dir / product
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return [path for path in select_notebooks() if path.name in names]


def _committed_record(name: str) -> dict:
    import nbformat

    path = Path(NOTEBOOK_DIR) / name
    return (nbformat.read(path, as_version=4).metadata.get(provenance.KEY) or {}) if path.is_file() else {}


def _committed_products(run_dir: Path) -> dict[str, list[str]]:
    """{notebook: what its committed record says it wrote into the run folder}."""
    return {name: _committed_record(name).get("products", []) for name in notebook_names()}


def _snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file under the run folder: relative path -> (mtime_ns, size)."""
    if not run_dir.exists():
        return {}
    return {path.relative_to(run_dir).as_posix(): (path.stat().st_mtime_ns, path.stat().st_size)
            for path in run_dir.rglob("*") if path.is_file()}


def _products(before: dict, after: dict) -> list[str]:
    """What a notebook wrote into the run folder: a top-level folder it created as one entry (train),
    otherwise each file it created or changed (figures/04_training.png); executed copies are the runner's."""
    new_tops = {path.split("/")[0] for path in after if "/" in path} - {path.split("/")[0] for path in before}
    made = set()
    for path, stat in after.items():
        if before.get(path) == stat or ("/" not in path and path.endswith(".ipynb")):
            continue
        top = path.split("/")[0]
        made.add(top if top in new_tops else path)
    return sorted(made)


def _record(path: Path, run_dir: Path, profile: str, made: list[str], products: dict, tracked: set) -> None:
    """Turn what the kernel observed into the notebook's record (relative paths only) in its metadata."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    observed = nb.metadata.pop("observed", None) or {"modules": [], "opened": [], "listed": []}
    repo, run_dir = Path(REPO_ROOT).resolve(), run_dir.resolve()
    files, reads = set(), set()
    for opened, write in observed["opened"]:
        opened = Path(opened)
        if write:
            continue
        if opened.is_relative_to(run_dir):
            relative = opened.relative_to(run_dir).as_posix()
            reads.update(name for name, made_there in products.items() if name != path.name and any(
                relative == p or relative.startswith(p + "/") for p in made_there))
        elif opened.is_relative_to(repo):
            relative = opened.relative_to(repo).as_posix()
            code = relative.startswith("tinyconv/") and relative.endswith(".py")  # a module: hashed as code
            if relative in tracked and not code and not relative.startswith("notebooks/"):
                files.add(relative)
    listed = []
    for folder in observed.get("listed", []):
        folder = Path(folder)
        if folder.is_relative_to(repo) and not folder.is_relative_to(run_dir):
            listed.append(folder.relative_to(repo).as_posix())
    nb.metadata[provenance.KEY] = provenance.make_record(
        repo, observed["modules"], files, profile=profile, reads=reads, products=made,
        listings=provenance.listed_folders(tracked, listed))
    nbformat.write(nb, path)


# ------------------------------------------------------------------------------------ committed outputs


def stale_outputs(path) -> str | None:
    """Why a committed notebook's outputs do not come from this checkout's code and files, or None.

    Returns:
        one line naming the notebook, what differs and the command that makes the outputs again.
    """
    path = Path(path)
    stale = provenance.stale_notebooks(path.parent, Path(REPO_ROOT),
                                       names=[n for n in notebook_names(path.parent) if n <= path.name])
    if path.name not in stale:
        return None
    return f"{path.name}: {stale[path.name]}; {remake_command([path.name])}"


def remake_command(names: list[str]) -> str:
    prefixes = " ".join(name[:2] for name in names)
    return f"run `tinyconv notebooks --profile quick --out notebooks --only {prefixes}` to make them again"


def check_notebooks(notebook_dir: Path | None = None) -> dict[str, str]:
    """{notebook: why its committed outputs are stale} (empty when every record holds), for `notebooks --check`."""
    return provenance.stale_notebooks(Path(notebook_dir or NOTEBOOK_DIR), Path(REPO_ROOT))


def strip_for_commit(executed, target, replacements: dict[str, str] | None = None) -> Path:
    """Copy an executed notebook for committing: drop papermill's injected cell and hide machine paths; the
    record the run made (metadata `tinyconv`, tinyconv.study.provenance) gains the hash of its code cells.

    Args:
        executed: the executed .ipynb (e.g. from run_notebooks).
        target: where to write the cleaned copy (written beside, then renamed).
        replacements: extra literal substring -> replacement applied to outputs (e.g. a temp run dir).
    Returns:
        the cleaned notebook path.
    Raises:
        TinyconvError: when an output still holds an error or an absolute path of this machine.
    """
    import nbformat  # ~1.5 s to import; not needed by the notebooks that import this module

    nb = nbformat.read(executed, as_version=4)
    nb.cells = [
        cell
        for cell in nb.cells
        if not {"injected-parameters", "papermill-error-cell-tag"} & set(cell.get("metadata", {}).get("tags", []))
    ]
    replacements = dict(replacements or {})
    replacements.setdefault(str(REPO_ROOT) + "/", "")
    replacements.setdefault(str(REPO_ROOT), ".")
    for cell in nb.cells:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if "outputs" in cell:
            cell["outputs"] = [output for output in map(_without_native_logs, cell["outputs"]) if output is not None]
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                raise TinyconvError(f"{executed}: cell has an error output: {output.get('ename')}")
            if "text" in output:
                output["text"] = _replace_all(output["text"], replacements)
            for key, value in output.get("data", {}).items():
                if key.startswith("text/") and isinstance(value, str):
                    output["data"][key] = _replace_all(value, replacements)
    nb.metadata.pop("papermill", None)
    record = nb.metadata.get(provenance.KEY)
    if record is not None:
        record["code_cells_hash"] = provenance.code_cells_hash(nb)
    leftover = find_machine_paths(nb)
    if leftover:
        raise TinyconvError(f"{executed}: an absolute path is left in the notebook: {leftover[0][:160]}")
    text = nbformat.writes(nb)
    target = Path(target)
    fileio.write_text(target, text)
    return target


MACHINE_PATH_MARKERS = ("/root/", "/tmp/", "/work/", "/home/", "/private/", "/Users/")


def find_machine_paths(nb) -> list[str]:
    """Lines of cell sources and text outputs that contain an absolute path of a machine (not images).

    Args:
        nb: an nbformat NotebookNode.
    Returns:
        the offending lines, empty when the notebook is clean.
    """
    texts = []
    for cell in nb.cells:
        texts.append(cell.get("source", ""))
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.extend(value for key, value in output.get("data", {}).items() if key.startswith("text/"))
            texts.extend(output.get("traceback", []))
    found = []
    for text in texts:
        text = "".join(text) if isinstance(text, list) else text
        found.extend(line.strip() for line in text.splitlines() if any(m in line for m in MACHINE_PATH_MARKERS))
    return found


# TensorFlow's C++ start-up lines (oneDNN, CUDA probing) go to the kernel's stderr before absl logging is
# initialised, so TF_CPP_MIN_LOG_LEVEL cannot silence them; they are noise in a committed notebook.
_NATIVE_LOG = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*)$"
)


def _without_native_logs(output):
    """A stderr stream output without TensorFlow's native log lines (None when nothing else is left)."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return output
    text = output["text"] if isinstance(output["text"], str) else "".join(output["text"])
    kept = [line for line in text.splitlines(keepends=True) if not _NATIVE_LOG.match(line.rstrip("\n"))]
    if not "".join(kept).strip():
        return None
    output["text"] = "".join(kept)
    return output


def _replace_all(text: str, replacements: dict[str, str]) -> str:
    for old, new in sorted(replacements.items(), key=lambda item: -len(item[0])):
        text = text.replace(old, new)
    return text
