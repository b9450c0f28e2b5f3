"""The architecture as a checked contract (docs/architecture.md).

- the layers (pyproject.toml `[tool.importlinter]`, run with lint-imports): a module imports only from the layers
  below its own, directly or through others;
- no import cycle between any two tinyconv modules, inside a subpackage too (grimp, which lint-imports builds on);
- the modules that must load without TensorFlow (`tinyconv --help`, the notebooks' first cell, Ray's sweep driver)
  do not import TensorFlow or Keras at module level;
- `import tinyconv` is light, and its lazy names are the functions of their modules.

Both import checks read every import statement, those inside functions included: a deferred import is still an
import, it only runs later.

docs/architecture.md shows the package graph that `package_graph()` draws from the same imports; to redraw it:

    .venv/bin/python tests/test_architecture.py
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import tinyconv

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "tinyconv"

# Importing each of these must not import TensorFlow or Keras (or JAX's Keras path would pay for it):
TENSORFLOW_FREE = [
    "tinyconv",                           # the lazy API (see test_import_tinyconv_is_light)
    "tinyconv.cli",                       # `tinyconv --help`, download, verify, prepare, notebooks, sweep
    "tinyconv.errors",
    "tinyconv.runtime",                   # must load before TensorFlow to quiet its start-up
    "tinyconv.fileio",
    "tinyconv.locks",
    "tinyconv.processes",
    "tinyconv.checks",                    # the configs' value checks, read by --help's recipe
    "tinyconv.progress",                  # tqdm only when a bar is made
    "tinyconv.data.download",
    "tinyconv.data.dataset",
    "tinyconv.data.augment_config",       # the recipe's augmentation fields, read by --help
    "tinyconv.model.config",              # PRESETS for --help and `--preset` choices
    "tinyconv.training.recipe",           # TrainConfig, PROFILES: the recipe flags of --help
    "tinyconv.training.overrides",
    "tinyconv.training.reference",
    "tinyconv.training.history",          # history.csv: read by scripts/plot_reference_runs.py and `state sessions`
    "tinyconv.training.run_state",        # `tinyconv state watch` beside training on the GPU machine (JAX only)
    "tinyconv.experiments.sweep",         # the sweep's driver (Ray's workers import TensorFlow per trial)
    "tinyconv.experiments.ray_session",
    "tinyconv.experiments.results",
    "tinyconv.study.params",              # the notebooks' first import: sets TF_CPP_MIN_LOG_LEVEL before TensorFlow
    "tinyconv.study.measures",
    "tinyconv.study.runner",              # `tinyconv notebooks`: papermill in this process, TensorFlow in the kernels
    "tinyconv.study.provenance",          # `tinyconv notebooks --check`
]
HEAVY = ("tensorflow", "keras")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


# The layers top to bottom, as pyproject.toml's contract has them (a row of names: independent siblings)
LAYERS = [["cli"], ["bench"], ["study"], ["experiments", "deploy"], ["training"], ["model"], ["data"],
          ["runtime", "fileio", "locks", "processes", "checks", "progress"], ["errors"]]


def _unit(module: str) -> str | None:
    """The subpackage or top-level module of tinyconv that a module belongs to (None: the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def deferred_imports() -> list[tuple[str, int, str]]:
    """(module, line, imported module) of every import statement inside a function of tinyconv."""
    found = []
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    found += [(name, node.lineno, alias.name) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    found.append((name, node.lineno, "." * node.level + (node.module or "")))
    return sorted(set(found))  # a function nested in a function is walked twice


def package_graph() -> str:
    """Which layer imports which, from grimp's graph; (name): only through imports inside functions."""
    graph = _graph()
    deferred = {(module, line) for module, line, _ in deferred_imports()}
    order = [unit for row in LAYERS for unit in row]
    edges: dict[str, dict[str, bool]] = {unit: {} for unit in order}  # importer -> imported -> any top-level import
    for module in graph.modules:
        source = _unit(module)
        if source not in edges:
            continue  # tinyconv/__init__.py and __main__.py, the entry points
        for imported in graph.find_modules_directly_imported_by(module):
            target = _unit(imported)
            if target in edges and target != source:
                lines = [d["line_number"] for d in graph.get_import_details(importer=module, imported=imported)]
                top = any((module, line) not in deferred for line in lines)
                edges[source][target] = edges[source].get(target, False) or top
    rows = []
    for unit in order:
        targets = [t if edges[unit][t] else f"({t})" for t in order if t in edges[unit]]
        rows.append(f"{unit:<12} -> {' '.join(targets) or '-'}")
    return "\n".join(rows)


def _where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
    return f"{importer} -> {imported} (line {', '.join(map(str, lines)) or '?'})"


def test_layers_contract():
    """lint-imports with pyproject.toml's contract: no import from a lower layer to a higher one."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(REPO / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        "an import breaks tinyconv's layers (pyproject.toml [tool.importlinter]; docs/architecture.md):\n"
        + done.stdout[-6000:] + done.stderr[-3000:])
    assert " kept, 0 broken" in done.stdout, done.stdout[-3000:]


def test_no_import_cycles():
    """No tinyconv module reaches itself through its imports (function-local imports count)."""
    graph = _graph()
    cycles = {}
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is None:
                continue
            cycle = (module, *back)  # module -> imported -> ... -> module
            ring = cycle[:-1]
            start = ring.index(min(ring))
            key = ring[start:] + ring[:start]  # one entry per cycle, whichever module it was found from
            cycles.setdefault(key, [_where(graph, a, b) for a, b in zip(cycle, cycle[1:])])
    assert not cycles, "import cycles between tinyconv modules:\n" + "\n".join(
        "  " + "  =>  ".join(steps) for steps in cycles.values())


def test_the_graph_counts_function_local_imports():
    """What the two checks above rely on: grimp sees imports inside functions (cli imports train in cmd_train)."""
    graph = _graph()
    assert graph.direct_import_exists(importer="tinyconv.cli", imported="tinyconv.training.train")
    assert graph.direct_import_exists(importer="tinyconv.training.train", imported="tinyconv.data.pipeline")


def test_tensorflow_free_modules_do_not_import_tensorflow():
    """Each module imported in turn in one fresh process; the first one that brings in TensorFlow or Keras is named."""
    code = f"""
import importlib, json, sys
for name in {TENSORFLOW_FREE!r}:
    importlib.import_module(name)
    heavy = [m for m in {HEAVY!r} if m in sys.modules]
    if heavy:
        print(json.dumps([name, heavy]))
        break
else:
    print(json.dumps(None))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    culprit = json.loads(done.stdout.strip().splitlines()[-1])
    assert culprit is None, (f"importing {culprit[0]} imports {' and '.join(culprit[1])} at module level; "
                             "defer that import into the function that needs it")


def test_import_tinyconv_is_light():
    """`import tinyconv` and its TensorFlow-free lazy names (configs, presets, profiles) import no TensorFlow/Keras."""
    code = ("import sys, tinyconv; names = dir(tinyconv); "
            "tinyconv.get_config('seed'); tinyconv.PRESETS; tinyconv.make_config('ci'); tinyconv.PROFILES; "
            f"print([m for m in {HEAVY!r} if m in sys.modules], 'build_model' in names)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]", "True"], done.stdout + done.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(tinyconv._LAZY))
def test_lazy_names_are_their_modules_objects(name):
    module = importlib.import_module(tinyconv._LAZY[name])
    value = getattr(tinyconv, name)
    assert value is getattr(module, name)
    if callable(value):
        assert value.__module__ == module.__name__  # defined there, not re-exported from elsewhere
    assert name in tinyconv.__all__ and name in dir(tinyconv)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        tinyconv.no_such_name  # noqa: B018
    assert not hasattr(tinyconv, "build_models")  # hasattr() too: a near miss of a lazy name is not one


def test_docs_show_the_current_package_graph():
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert package_graph() in doc, ("docs/architecture.md's package graph is out of date; redraw it with "
                                    "`.venv/bin/python tests/test_architecture.py`:\n" + package_graph())


if __name__ == "__main__":
    print(package_graph())
    counts: dict[str, int] = {}
    for _, _, imported in deferred_imports():
        kind = ("tinyconv" if imported.startswith(("tinyconv", ".")) else
                "tensorflow/keras" if imported.split(".")[0] in HEAVY else "other")
        counts[kind] = counts.get(kind, 0) + 1
    print(f"\nimports inside functions: {sum(counts.values())} ({counts})")
