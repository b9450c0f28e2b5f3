"""tinyconv: a reproducible, fast and readable ConvMixer-variant reference on Tiny ImageNet.

The package is layered; each layer imports only the ones below it (tests/test_architecture.py checks it):

    cli, bench       the `tinyconv` command and its throughput benchmarks
    study            what the notebooks compute and draw, localization, the notebook runner
    experiments      sweeps of training runs on Ray
    deploy           load a trained model, evaluate, predict, export
    training         the recipe, schedule, callbacks, train()
    model            configs and presets, the builder, the layers, the speed kernels
    data             download, the dataset and its cache, augmentation, the input pipelines
    runtime, fileio, locks, processes, errors
                     backend and device policy, atomic writes, folder locks, process liveness, TinyconvError

The everyday calls are here too, imported on first use (importing tinyconv does not import Keras or TensorFlow):

    import tinyconv
    model = tinyconv.build_model("seed")              # tinyconv.model.build
    tinyconv.model_info("seed")["params_total"]       # 2,644,712
    metrics = tinyconv.train(preset="tiny", profile="quick")          # tinyconv.training.train
    tinyconv.evaluate("runs/tiny-quick/best.keras")                  # tinyconv.deploy.inference
    tinyconv.predict("runs/tiny-quick/best.keras", ["photo.jpg"])

Once Keras is imported (by tinyconv or by you), tinyconv's layers, activations and schedules are registered with
it, so `import tinyconv` is all that plain `keras.saving.load_model("best.keras")` needs, on any backend.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import threading

__version__ = "0.1.0"

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.runtime import prefer_onednn  # noqa: E402  (stdlib only: no TensorFlow yet)

prefer_onednn()  # before any tinyconv module imports Keras, which imports TensorFlow

# name -> the module that defines it; imported by __getattr__ on first use (PEP 562)
_LAZY = {
    "build_model": "tinyconv.model.build",
    "model_info": "tinyconv.model.build",
    "get_config": "tinyconv.model.config",
    "PRESETS": "tinyconv.model.config",
    "make_config": "tinyconv.training.recipe",
    "PROFILES": "tinyconv.training.recipe",
    "train": "tinyconv.training.train",
    "evaluate": "tinyconv.deploy.inference",
    "predict": "tinyconv.deploy.inference",
    "load_run_model": "tinyconv.deploy.inference",
}

__all__ = ["TinyconvError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'tinyconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


# ----------------------------------------------------------------------------------- Keras serialization
# tinyconv's layers (the export's pixel layer among them), activations and schedules are registered with Keras by the
# modules that define them (@keras.saving.register_keras_serializable), so a .keras file that names one loads
# only in a process where that module has run. `import tinyconv` must stay free of Keras (it is what
# `tinyconv --help` and the TensorFlow-free processes import), and Keras offers no lookup hook for an
# unregistered name (it refuses to import the non-Keras module a saved config names), so the cue is Keras'
# own import: a sys.meta_path finder sees it and imports these modules right after it. Then
# `import tinyconv; keras.saving.load_model(path)` loads any tinyconv model on any backend (TensorFlow, JAX).
_SERIALIZABLE_MODULES = ("tinyconv.model.kernels", "tinyconv.model.layers", "tinyconv.training.schedule")


def _register_keras_objects() -> None:
    """Import the modules that register tinyconv's objects with Keras (once; Keras must be imported)."""
    global _registered
    if _registered:
        return
    _registered = True  # first: these imports pass through the finder's wrapped loaders again
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in _SERIALIZABLE_MODULES:
        importlib.import_module(name)


class _KerasImportWatch:
    """A sys.meta_path finder that finds nothing itself (it asks the finders after it) but wraps the loaders of
    `keras` and of tinyconv's modules, to register tinyconv's objects as soon as Keras is imported.

    Not while a tinyconv module is halfway through its own import (the one that imports Keras, say): the
    registering imports could then meet it half made (an ImportError for a name it defines further down), so
    they wait for the outermost tinyconv import in progress to finish.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.tinyconv_imports = 0  # tinyconv module imports in progress, all threads
        self.keras_imported = False

    def find_spec(self, name, path=None, target=None):
        if name != "keras" and not name.startswith("tinyconv."):
            return None
        finders = sys.meta_path
        for finder in finders[finders.index(self) + 1:] if self in finders else []:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        # a file loader instance belongs to one module: patching the instance touches no other module
        if isinstance(spec.loader, (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)):
            run = spec.loader.exec_module
            spec.loader.exec_module = (lambda module: self._keras(run, module)) if name == "keras" else (
                lambda module: self._tinyconv(run, module))
        return spec

    def _keras(self, run, module) -> None:
        run(module)
        with self.lock:
            self.keras_imported = True
            now = self.tinyconv_imports == 0
        if now:
            _register_keras_objects()

    def _tinyconv(self, run, module) -> None:
        with self.lock:
            self.tinyconv_imports += 1
        try:
            run(module)
        finally:
            with self.lock:
                self.tinyconv_imports -= 1
                now = self.tinyconv_imports == 0 and self.keras_imported
        if now:
            _register_keras_objects()


_registered = False
_FINDER = _KerasImportWatch()
if "keras" in sys.modules:  # imported before tinyconv: register now
    _register_keras_objects()
else:
    sys.meta_path.insert(0, _FINDER)
