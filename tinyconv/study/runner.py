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
from tinyconv.study.params import NOTEBOOK_DIR, REPO_ROOT, display_path, resolve_profile

KERNEL_NAME = "tinyconv"


def notebook_names(notebook_dir: Path | None = None) -> list[str]:
    """Every numbered notebook (`NN_name.ipynb`) of a folder (default NOTEBOOK_DIR), in order: the series is
    what is there, so a new chapter joins `tinyconv notebooks`, the tests and the commit check by being added."""
    return sorted(p.name for p in Path(notebook_dir or NOTEBOOK_DIR).glob("[0-9][0-9]_*.ipynb"))


# One cell may run this long before the runner gives up on it: generous, as the train cell of a `full` run
# on a GPU takes hours; a hung kernel is still reported instead of waiting forever.
CELL_TIMEOUT_S = 12 * 3600


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
        elif message and not message.startswith(_PAPERMILL_HEADERS):
            print(f"[{self.notebook}]   {message}", flush=True)


def _failed_cell_number(executed_nb, cell_index: int) -> int:
    """1-based position of a failed cell in the source notebook.

    `cell_index` counts cells of the executed notebook before papermill added its error banner cells,
    including its injected-parameters cell, which the source notebook does not have.
    """
    cells = [
        cell
        for cell in executed_nb.cells
        if "papermill-error-cell-tag" not in cell.get("metadata", {}).get("tags", [])
    ]
    injected = sum(
        1 for cell in cells[:cell_index] if "injected-parameters" in cell.get("metadata", {}).get("tags", [])
    )
    return cell_index - injected + 1


# Longer than 60 lines with its docstring: papermill's call with its error translation in one place.
def run_notebook(
    notebook: Path,
    out: Path,
    parameters: dict,
    progress: bool | None = None,
    cwd: Path | None = None,
    cell_timeout: float | None = CELL_TIMEOUT_S,
) -> Path:
    """Execute one notebook with papermill into `out/<name>`.

    Args:
        notebook: the source .ipynb.
        out: folder for the executed copy.
        parameters: values injected after the `parameters` cell.
        progress: a progress bar (True) or one line per cell (False); None: a bar on a terminal only.
        cwd: working directory of the kernel (default: the notebook's folder).
        cell_timeout: seconds one cell may run (None: no limit).
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

    handler = None
    logger = logging.getLogger("papermill")
    if not progress:
        total = len(nbformat.read(notebook, as_version=4).cells) + 1  # + papermill's parameters cell
        handler = _CellLog(notebook.stem, total)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    print(f"running {shown}", flush=True)
    try:
        papermill.execute_notebook(
            str(notebook),
            str(partial),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            progress_bar=progress,
            log_output=not progress,
            cwd=str(cwd or notebook.parent),
            execution_timeout=cell_timeout,
        )
    except (CellTimeoutError, DeadKernelError) as exc:
        cell = _running_cell(partial, nbformat)
        partial.unlink(missing_ok=True)
        what = (f"ran past the {cell_timeout:g} s limit of a cell" if isinstance(exc, CellTimeoutError)
                else "lost its kernel (it died: out of memory, or killed)")
        raise TinyconvError(f"{shown} {cell} {what}; nothing was written to {display_path(out)}") from None
    except PapermillExecutionError as exc:
        os.replace(partial, target)
        executed = nbformat.read(target, as_version=4)
        number = _failed_cell_number(executed, exc.cell_index)
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


def run_notebooks(profile: str, out, data_dir=None, only=None, progress: bool | None = None) -> list[Path]:
    """Run the numbered notebooks in order with papermill, stopping at the first failure.

    The executed copies, the training run (`out/train/`) and the figures (`out/figures/`) all go to `out`.
    When `out` is the notebooks folder itself, this produces the committed outputs instead (the one way
    they are made): the series runs afresh into `runs/notebooks-<profile>-commit/` and, once every notebook has
    succeeded, each executed copy is cleaned by `strip_for_commit` and stamped with the hash of the
    package source (`source_hash`) over its committed file; a failure leaves the committed notebooks as
    they were.

    Args:
        profile: "auto" (full with a GPU, else quick), "ci", "quick" or "full".
        out: folder for the executed notebooks and the run dir of the series (or the notebooks folder).
        data_dir: folder holding tiny-imagenet-200/ (None: tinyconv.data.dataset.default_data_dir()).
        only: None for all, else prefixes such as ["01", "03"].
        progress: a progress bar per notebook (True) or one line per cell (False); None: bar on a terminal.
    Returns:
        the executed notebooks, in order (the committed files when `out` is the notebooks folder).
    Raises:
        TinyconvError: naming the notebook and cell of the first failure.
    """
    profile = resolve_profile(profile)
    out = Path(out).resolve()
    commit = out == Path(NOTEBOOK_DIR).resolve()
    run_dir = out
    if commit:
        # Committed outputs come from a fresh run of the current code: a training run folder left by an
        # earlier commit run would be reused as "complete" instead of trained again.
        run_dir = Path(REPO_ROOT) / "runs" / f"notebooks-{profile}-commit"
        changed = uncommitted_package_changes()
        if changed:
            print(f"note: tinyconv/ differs from the last commit ({', '.join(changed[:5])}): commit those changes with "
                  "the notebooks, or their stamp will not match a clean checkout", flush=True)
        if run_dir.exists():
            print(f"removing the previous commit run {display_path(run_dir)}", flush=True)
            shutil.rmtree(run_dir)
    if data_dir is None:
        data_dir = default_data_dir()
    parameters = {"profile": profile, "data_dir": str(Path(data_dir).resolve()), "run_dir": str(run_dir)}
    executed = []
    for notebook in select_notebooks(only):
        executed.append(run_notebook(notebook, run_dir, parameters, progress=progress))
    if commit:
        # paths a library call printed raw are shown as the notebooks show them (params.show)
        hidden = {parameters["data_dir"]: "<data_dir>", str(run_dir): "<run_dir>"}
        executed = [strip_for_commit(path, Path(NOTEBOOK_DIR) / path.name, replacements=hidden, profile=profile)
                    for path in executed]
        print(f"committed outputs of {len(executed)} notebook(s) written to {display_path(out)} "
              f"(profile {profile}, source {source_hash()[:12]})", flush=True)
    else:
        print(f"executed {len(executed)} notebook(s) into {display_path(out)}", flush=True)
    return executed


# ------------------------------------------------------------------------------------ committed outputs

# The notebook metadata key under which strip_for_commit records where the outputs came from.
PROVENANCE_KEY = "tinyconv"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def source_hash(package_dir: Path | None = None) -> str:
    """sha256 of the package source (every `*.py` and the package data `*.csv` of `package_dir`).

    Each file contributes its name and its bytes with line endings normalized to LF, so a checkout with
    CRLF line endings hashes the same. In a git checkout only files git knows count (package_files), so a
    module someone has not added yet does not make the stamp differ from a clean checkout's. A change to any module changes the hash, so committed outputs made
    by other code are detected (`stale_outputs`).
    """
    import hashlib

    digest = hashlib.sha256()
    for path in package_files(Path(package_dir or PACKAGE_DIR)):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()


def package_files(package_dir: Path) -> list[Path]:
    """The `*.py` and `*.csv` files of the package folder, sorted: those git tracks (or has staged) when the
    folder is in a git checkout, else every one there (an installed copy)."""
    import subprocess

    on_disk = sorted(p for pattern in ("*.py", "*.csv") for p in package_dir.glob(pattern))
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "*.py", "*.csv"], cwd=package_dir, capture_output=True,
                                timeout=30, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout: the folder as it is
        return on_disk
    tracked = {Path(name).name for name in listed if name and "/" not in name}
    return [path for path in on_disk if path.name in tracked] if tracked else on_disk


def uncommitted_package_changes(package_dir: Path | None = None) -> list[str]:
    """Names of tracked package files whose working copy differs from the last commit (empty outside git)."""
    import subprocess

    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                                cwd=Path(package_dir or PACKAGE_DIR), capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:].rsplit("/", 1)[-1] for line in status.stdout.decode().splitlines() if line.strip()]


def code_cells_hash(nb) -> str:
    """sha256 of a notebook's code cell sources, in order: an edited cell makes its outputs stale too."""
    import hashlib

    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            digest.update(("".join(source) if isinstance(source, list) else source).encode() + b"\0")
    return digest.hexdigest()


def stale_outputs(path, package_dir: Path | None = None) -> str | None:
    """Why a committed notebook's outputs do not come from the committed code, or None when they do.

    A notebook without any output has nothing to be stale. Otherwise its metadata must carry the
    provenance strip_for_commit records: the hash of the package source and of its own code cells.

    Returns:
        one line naming the notebook, what differs and the command that makes the outputs again.
    """
    import nbformat  # ~1.5 s to import; only the commit path and its test need it

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if not any(cell.get("outputs") for cell in nb.cells):
        return None
    fix = "run `tinyconv notebooks --profile quick --out notebooks` to produce them from the current code"
    stamp = nb.metadata.get(PROVENANCE_KEY) or {}
    if not stamp.get("source_hash"):
        return f"{path.name}: its outputs carry no record of the code that made them; {fix}"
    if stamp["source_hash"] != source_hash(package_dir):
        return (f"{path.name}: its outputs were made by another version of tinyconv/ "
                f"(source {stamp['source_hash'][:12]}, the code is {source_hash(package_dir)[:12]}); {fix}")
    if stamp.get("code_cells_hash") != code_cells_hash(nb):
        return f"{path.name}: a code cell was edited after its outputs were made; {fix}"
    return None


def strip_for_commit(executed, target, replacements: dict[str, str] | None = None, profile: str | None = None) -> Path:
    """Copy an executed notebook for committing: drop papermill's injected cell and hide machine paths, and
    record where the outputs came from (metadata `tinyconv`: source_hash, code_cells_hash, profile).

    Args:
        executed: the executed .ipynb (e.g. from run_notebooks).
        target: where to write the cleaned copy (written beside, then renamed).
        replacements: extra literal substring -> replacement applied to outputs (e.g. a temp run dir).
        profile: the profile the outputs were made with, recorded beside the hashes.
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
    nb.metadata[PROVENANCE_KEY] = {
        "source_hash": source_hash(),
        "code_cells_hash": code_cells_hash(nb),
        "profile": profile,
    }
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
