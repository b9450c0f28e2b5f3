"""Where a committed notebook's outputs came from, and whether that is still the code and data of this checkout.

A notebook run by tinyconv.study.runner records, in its metadata under "tinyconv":

    commit           the commit checked out when it ran (the code it loaded must be committed there)
    profile          the recipe profile of the run
    code_cells_hash  its own code cells, in order
    modules          every tinyconv module the kernel had loaded at the end: name -> code_hash
    files            every file of the repository it opened for reading (models/, results/, package data):
                     path -> file_hash
    listings         every folder of the repository it listed (a glob, os.listdir) that git tracks files in,
                     outside the package's code and the notebooks: folder -> the names git tracks in it, so that
                     a folder that appears where a notebook looks (results/seed-reference*/) makes it stale too
    reads            the notebooks whose products in the run folder it opened (05 reads 04's train/)
    products         what it wrote into the run folder (top-level names), for a re-run to replace

`code_hash` hashes a module's syntax tree without docstrings (comments never reach the tree), so editing
a docstring, a comment or a module no notebook loads leaves every record valid; editing the code a
notebook ran invalidates that notebook and, through `reads`, the notebooks that read what it wrote.

    problems = check_record(nb, repo)          # [] when the record is true and still current
    stale = stale_notebooks(notebook_dir)      # {name: reason} over the series, readers of stale ones included
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path

# The notebook metadata key of the record.
KEY = "tinyconv"
# Tags of the two cells the runner adds around a notebook to take the record; never saved.
CELL_TAG = "tinyconv-provenance"
MARKER = "TINYCONV-PROVENANCE "
TEXT_SUFFIXES = {".py", ".csv", ".json", ".md", ".txt", ".toml", ".cfg", ".yml", ".yaml"}


# ----------------------------------------------------------------------------------------------- hashes


def code_hash(source: str | bytes) -> str:
    """sha256 of a module's syntax tree without docstrings: the same for any edit of comments, docstrings,
    blank lines or formatting, different for any change of what the code does."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def file_hash(path: str, content: bytes) -> str:
    """sha256 of a file's bytes, text files with line endings normalized (a CRLF checkout hashes the same)."""
    if Path(path).suffix in TEXT_SUFFIXES:
        content = content.replace(b"\r\n", b"\n")
    return hashlib.sha256(content).hexdigest()


def code_cells_hash(nb) -> str:
    """sha256 of a notebook's code cell sources, in order: an edited cell makes its outputs stale too."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.get("cell_type") == "code" and CELL_TAG not in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            digest.update(("".join(source) if isinstance(source, list) else source).encode() + b"\0")
    return digest.hexdigest()


def module_path(name: str) -> str:
    """`tinyconv.model.layers` -> `tinyconv/model/layers.py`, relative to the repository (the module form;
    `_module_file` picks a package's `__init__.py` where that is what the checkout has)."""
    parts = name.split(".")
    return "/".join(parts) + ".py"


def _module_file(repo: Path, name: str) -> str:
    plain = module_path(name)
    package = "/".join(name.split(".")) + "/__init__.py"
    return package if (repo / package).is_file() and not (repo / plain).is_file() else plain


# ----------------------------------------------------------------------------------------------- git


def head_commit(repo: Path) -> str | None:
    """The commit checked out in `repo`, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def tracked_files(repo: Path) -> set[str]:
    """Paths git tracks in `repo` (relative, POSIX); empty outside a checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return set()
    return {p for p in out.stdout.decode().split("\0") if p} if out.returncode == 0 else set()


def changed_since(repo: Path, paths) -> list[str]:
    """Which of `paths` differ in the working tree from the commit checked out (uncommitted edits)."""
    paths = sorted(set(paths))
    if not paths:
        return []
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *paths], cwd=repo,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


@lru_cache(maxsize=4096)
def _blob(repo: str, commit: str, path: str) -> bytes | None:
    out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True, timeout=60)
    return out.stdout if out.returncode == 0 else None


def _has_commit(repo: Path, commit: str) -> bool:
    out = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=repo, capture_output=True, timeout=30)
    return out.returncode == 0


# ----------------------------------------------------------------------------------------------- record


def start_cell_source(roots: list[str]) -> str:
    """The first cell the runner adds: an audit hook that notes every file opened and every folder listed
    (os.scandir, os.listdir: pathlib's and glob's globs) under `roots`."""
    return (
        "# tinyconv.study.provenance: notes which files this run opens and which folders it lists (not saved)\n"
        "import os as _os, sys as _sys\n"
        f"_tinyconv_roots = tuple(_os.path.join(r, '') for r in {roots!r})\n"
        "_tinyconv_opened = set()\n"
        "_tinyconv_listed = set()\n"
        "def _tinyconv_audit(event, args, _opened=_tinyconv_opened, _listed=_tinyconv_listed, _roots=_tinyconv_roots,\n"
        "                    _os=_os):\n"
        "    if event in ('os.scandir', 'os.listdir'):\n"
        "        folder = args[0] if args[0] is not None else '.'\n"
        "        if isinstance(folder, (str, bytes, _os.PathLike)):\n"
        "            folder = _os.path.join(_os.path.abspath(_os.fsdecode(folder)), '')\n"
        "            if folder.startswith(_roots):\n"
        "                _listed.add(folder)\n"
        "        return\n"
        "    if event != 'open' or not isinstance(args[0], (str, bytes, _os.PathLike)):\n"
        "        return\n"
        "    path = _os.path.abspath(_os.fsdecode(args[0]))\n"
        "    if path.startswith(_roots):\n"
        "        mode, flags = args[1], args[2] if len(args) > 2 else 0\n"
        "        write = any(c in mode for c in 'wax+') if isinstance(mode, str) else bool(flags & (_os.O_WRONLY | _os.O_RDWR))\n"
        "        _opened.add((path, write))\n"
        "_sys.addaudithook(_tinyconv_audit)\n"
    )


END_CELL_SOURCE = (
    "# tinyconv.study.provenance: what this run loaded and opened (this cell is not saved)\n"
    "import json as _json, sys as _sys\n"
    "print('" + MARKER + "' + _json.dumps({\n"
    "    'modules': sorted(m for m, v in list(_sys.modules.items())\n"
    "                      if (m == 'tinyconv' or m.startswith('tinyconv.')) and getattr(v, '__file__', None)),\n"
    "    'opened': sorted(_tinyconv_opened), 'listed': sorted(_tinyconv_listed)}))\n"
)


def read_end_cell(nb) -> dict | None:
    """What the end cell printed ({"modules": [...], "opened": [[path, write], ...], "listed": [folder/, ...]}), or
    None."""
    import json

    for cell in nb.cells:
        if CELL_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            for line in text.splitlines():
                if line.startswith(MARKER):
                    return json.loads(line[len(MARKER):])
    return None


def tracked_listing(tracked, folder: str) -> list[str]:
    """The names directly in `folder` (repository-relative, POSIX) under which git tracks a file: what a clean
    clone lists there."""
    prefix = folder.rstrip("/") + "/"
    return sorted({path[len(prefix):].split("/")[0] for path in tracked if path.startswith(prefix)})


def listed_folders(tracked, folders) -> dict[str, list[str]]:
    """{folder: tracked_listing} of the repository-relative `folders` a run listed that git tracks files in,
    leaving out the repository's root, the package's code (its modules are hashed as code) and the notebooks."""
    found = {}
    for folder in sorted({folder.strip("/") for folder in folders}):
        if folder in ("", ".") or folder.split("/")[0] in ("tinyconv", "notebooks"):
            continue
        names = tracked_listing(tracked, folder)
        if names:
            found[folder] = names
    return found


@lru_cache(maxsize=256)
def _tree_listing(repo: str, commit: str, folder: str) -> list[str] | None:
    out = subprocess.run(["git", "ls-tree", "--name-only", f"{commit}:{folder}"], cwd=repo, capture_output=True,
                         text=True, timeout=60)
    return sorted(out.stdout.split("\n")[:-1]) if out.returncode == 0 else None


def make_record(repo: Path, modules, files, commit: str | None = None, profile: str | None = None,
                reads=(), products=(), nb=None, listings: dict[str, list[str]] | None = None) -> dict:
    """The record of a run: the hash of each module and file as they are in `repo` now.

    Args:
        repo: the repository root.
        modules: tinyconv module names the run loaded.
        files: repository-relative paths of the files it read.
        listings: {folder: names} of the folders it listed (listed_folders).
        commit: the commit checked out (default: HEAD of `repo`).
        reads: names of the notebooks whose run-folder products it read; products: what it wrote there.
        nb: the notebook, for its code cells' hash.
    """
    repo = Path(repo)
    record = {
        "commit": commit or head_commit(repo),
        "profile": profile,
        "modules": {name: code_hash((repo / _module_file(repo, name)).read_bytes()) for name in sorted(set(modules))},
        "files": {path: file_hash(path, (repo / path).read_bytes()) for path in sorted(set(files))},
        "listings": {folder: list(names) for folder, names in sorted((listings or {}).items())},
        "reads": sorted(set(reads)),
        "products": sorted(set(products)),
    }
    if nb is not None:
        record["code_cells_hash"] = code_cells_hash(nb)
    return record


def check_record(nb, repo: Path) -> list[str]:
    """Why a notebook's record is false or out of date; [] when it is true and current.

    True: each module and file hashed as it was at the recorded commit (the code was committed when it ran).
    Current: the code cells, each module and file, and the names git tracks in each folder it listed, are the
    same now (a record made before listings were recorded has none to compare).
    """
    repo = Path(repo)
    record = nb.metadata.get(KEY) or {}
    if not record.get("modules"):
        return ["its outputs carry no record of the code that made them"]
    problems = []
    if record.get("code_cells_hash") != code_cells_hash(nb):
        problems.append("a code cell was edited after its outputs were made")
    commit = record.get("commit")
    known = bool(commit) and _has_commit(repo, commit)
    if not known:
        problems.append(f"its recorded commit {str(commit)[:12]} is not in this clone, so the record cannot be checked")
    for name, recorded in record["modules"].items():
        path = _module_file(repo, name)
        if not (repo / path).is_file():
            problems.append(f"module {name} it loaded no longer exists")
            continue
        if code_hash((repo / path).read_bytes()) != recorded:
            problems.append(f"module {name} it loaded has changed")
            continue
        if known:
            then = _blob(str(repo), commit, path)
            if then is None or code_hash(then) != recorded:
                problems.append(f"module {name} was not committed at {commit[:12]} as it ran")
    for path, recorded in record.get("files", {}).items():
        if not (repo / path).is_file():
            problems.append(f"file {path} it read no longer exists")
        elif file_hash(path, (repo / path).read_bytes()) != recorded:
            problems.append(f"file {path} it read has changed")
        elif known:
            then = _blob(str(repo), commit, path)
            if then is None or file_hash(path, then) != recorded:
                problems.append(f"file {path} was not committed at {commit[:12]} as it ran")
    listings = record.get("listings") or {}
    tracked = tracked_files(repo) if listings else set()
    for folder, recorded in listings.items():
        now = tracked_listing(tracked, folder)
        if now != recorded:
            came, went = sorted(set(now) - set(recorded)), sorted(set(recorded) - set(now))
            change = "; ".join(part for part in (f"now also {', '.join(came)}" if came else "",
                                                   f"no longer {', '.join(went)}" if went else "") if part)
            problems.append(f"folder {folder}/ it listed has changed ({change})")
        elif known and _tree_listing(str(repo), commit, folder) != recorded:
            problems.append(f"folder {folder}/ was not committed at {commit[:12]} as it was listed")
    return problems


def stale_notebooks(notebook_dir: Path, repo: Path, names: list[str] | None = None) -> dict[str, str]:
    """{notebook name: why its committed outputs are stale} over the numbered notebooks of a folder.

    A notebook with no outputs has nothing to be stale. A notebook that reads what a stale notebook wrote
    (its record's `reads`) is stale too, named with the one it reads.
    """
    import nbformat  # ~1.5 s to import: only for the check and the runner

    notebook_dir = Path(notebook_dir)
    names = names or sorted(p.name for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    stale: dict[str, str] = {}
    for name in names:  # in order: a notebook reads only earlier ones
        nb = nbformat.read(notebook_dir / name, as_version=4)
        if not any(cell.get("outputs") for cell in nb.cells):
            continue
        problems = check_record(nb, repo)
        upstream = [read for read in (nb.metadata.get(KEY) or {}).get("reads", []) if read in stale]
        if upstream:
            problems.append(f"it reads what {', '.join(upstream)} wrote, whose outputs are stale")
        if problems:
            stale[name] = "; ".join(problems)
    return stale


def readers(notebook_dir: Path, name: str) -> list[str]:
    """The notebooks whose records say they read what `name` wrote, directly or through another."""
    import nbformat

    found = [name]
    for path in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb")):
        if path.name in found:
            continue
        reads = (nbformat.read(path, as_version=4).metadata.get(KEY) or {}).get("reads", [])
        if set(reads) & set(found):
            found.append(path.name)
    return found[1:]
