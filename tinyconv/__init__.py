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
"""

from __future__ import annotations

import importlib

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
