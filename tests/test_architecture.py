"""The architecture as a checked contract (docs/architecture.md).

- the layers (pyproject.toml `[tool.importlinter]`, run with lint-imports): a module imports only from the layers
  below its own, directly or through others;
- no import cycle between any two tinyconv modules, inside a subpackage too (grimp, which lint-imports builds on);
- the modules that must load without TensorFlow (`tinyconv --help`, the notebooks' first cell, Ray's sweep driver)
  do not import TensorFlow or Keras at module level;
- `import tinyconv` is light, and its lazy names are the functions of their modules.

Both import checks read every import statement, those inside functions included: a deferred import is still an
import, it only runs later.
"""

from __future__ import annotations

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
    "tinyconv.data.download",
    "tinyconv.data.dataset",
    "tinyconv.data.augment_config",       # the recipe's augmentation fields, read by --help
    "tinyconv.model.config",              # PRESETS for --help and `--preset` choices
    "tinyconv.training.recipe",           # TrainConfig, PROFILES: the recipe flags of --help
    "tinyconv.training.overrides",
    "tinyconv.training.reference",
    "tinyconv.experiments.sweep",         # the sweep's driver (Ray's workers import TensorFlow per trial)
    "tinyconv.experiments.ray_session",
    "tinyconv.experiments.results",
    "tinyconv.study.params",              # the notebooks' first import: sets TF_CPP_MIN_LOG_LEVEL before TensorFlow
    "tinyconv.study.measures",
    "tinyconv.study.runner",              # `tinyconv notebooks`: papermill in this process, TensorFlow in the kernels
]
HEAVY = ("tensorflow", "keras")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


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
    assert "1 kept, 0 broken" in done.stdout, done.stdout[-3000:]


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
