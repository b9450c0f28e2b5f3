"""The parameters every notebook resolves in its first cells, and where its figures go.

Every notebook has one cell tagged `parameters` (literal values, `None` meaning "use the default") and
calls `resolve_params(...)` right after it, so a notebook opened in Jupyter or run by papermill
(tinyconv.study.runner) resolves the same way:

    profile   argument, else $TINYCONV_PROFILE, else "quick"
    data_dir  argument, else $TINYCONV_DATA_DIR, else <repo>/data   (tinyconv.data.dataset.default_data_dir)
    run_dir   argument, else $TINYCONV_RUN_DIR, else <repo>/runs/notebooks-<profile>

Layout of a run dir: `train/` is the training run folder written by 04 (07 reads it, and 05 when no seed model
is shipped), `figures/` holds every figure the notebooks save as PNG, and the executed notebooks sit at the top
when the runner wrote them. This module is what the notebooks import; the runner (papermill) is not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tinyconv import fileio
from tinyconv.data.dataset import default_data_dir
from tinyconv.errors import TinyconvError
from tinyconv.runtime import backend, has_gpu, nvidia_gpus_present, quiet_tensorflow
from tinyconv.training.recipe import PROFILES

# The notebooks import this module first; TensorFlow's C++ start-up chatter would otherwise land in their
# outputs (kernels inherit the variable, so papermill runs are quiet too).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"


@dataclass(frozen=True)
class NotebookParams:
    """The resolved parameters of one notebook run.

    Attributes:
        profile: "ci", "quick" or "full" (the recipe profile of tinyconv.training.train).
        data_dir: the folder that holds (or will hold) tiny-imagenet-200/.
        run_dir: where this series of notebooks writes: train/ (the training run) and figures/.
    """

    profile: str
    data_dir: Path
    run_dir: Path

    @property
    def train_dir(self) -> Path:
        """The training run folder written by 04_train and read by 05."""
        return self.run_dir / "train"

    @property
    def figures_dir(self) -> Path:
        """Where the notebooks save their figures as PNG."""
        return self.run_dir / "figures"

    def show(self, path) -> str:
        """`path` as a string without this machine's absolute prefixes, for printing in notebooks.

        Paths under the run dir print as `<run_dir>/...`, under the data dir as `<data_dir>/...`, under
        the repository relative to it; anything else prints only its name.
        """
        return display_path(path, data_dir=self.data_dir, run_dir=self.run_dir)

    def describe(self) -> str:
        """One line naming the profile and where things are read and written (no absolute paths)."""
        return (
            f"profile={self.profile}  data_dir={display_path(self.data_dir)}  "
            f"run_dir={display_path(self.run_dir)}"
        )


def display_path(path, data_dir=None, run_dir=None) -> str:
    """A printable form of `path` that hides the absolute prefix of this machine.

    Args:
        path: any path.
        data_dir: when `path` is inside it, the result is `<data_dir>/relative`.
        run_dir: when `path` is inside it, the result is `<run_dir>/relative` (checked first).
    Returns:
        `<run_dir>/...`, `<data_dir>/...`, a path relative to the repository, or `.../<name>`.
    """
    path = Path(path).resolve()
    for label, base in (("<run_dir>", run_dir), ("<data_dir>", data_dir), (None, REPO_ROOT)):
        if base is None:
            continue
        try:
            relative = path.relative_to(Path(base).resolve())
        except ValueError:
            continue
        if label is None:
            return relative.as_posix() or "."
        return label if str(relative) == "." else f"{label}/{relative.as_posix()}"
    return f".../{path.name}"


def resolve_params(data_dir=None, profile=None, run_dir=None) -> NotebookParams:
    """Fill in the parameters a notebook left as None from the environment, then from the defaults.

    Args:
        data_dir: folder holding tiny-imagenet-200/ (None: $TINYCONV_DATA_DIR, else <repo>/data).
        profile: "ci", "quick", "full" or "auto" (None: $TINYCONV_PROFILE, else "quick").
        run_dir: output folder of the series (None: $TINYCONV_RUN_DIR, else <repo>/runs/notebooks-<profile>).
    Returns:
        NotebookParams with absolute paths; run_dir/figures/ exists afterwards.
    Raises:
        TinyconvError: for an unknown profile.
    """
    quiet_tensorflow()  # the first cell of every notebook: keep TensorFlow's native start-up lines out of it
    profile = profile or os.environ.get("TINYCONV_PROFILE") or "quick"
    profile = resolve_profile(profile, verbose=False)
    if data_dir is None:
        data_dir = default_data_dir()
    run_dir = run_dir or os.environ.get("TINYCONV_RUN_DIR") or REPO_ROOT / "runs" / f"notebooks-{profile}"
    # Relative paths mean "relative to the repository", wherever the kernel was started.
    data_dir, run_dir = (Path(p) if Path(p).is_absolute() else REPO_ROOT / p for p in (data_dir, run_dir))
    params = NotebookParams(profile=profile, data_dir=data_dir, run_dir=run_dir)
    params.figures_dir.mkdir(parents=True, exist_ok=True)
    return params


def save_figure(fig, params: NotebookParams, name: str) -> None:
    """Save a matplotlib figure as `<run_dir>/figures/<name>.png` (written beside, then renamed).

    Returns None, so that a notebook cell ending with this call shows only the figure (no path).
    """
    target = params.figures_dir / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    fileio.save_figure(fig, target, dpi=110, bbox_inches="tight")


def _jax_version() -> str:
    """The installed jax's version (its CUDA build must be the same version), read without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jax")
    except PackageNotFoundError:
        return "<the version pyproject.toml pins>"


def resolve_profile(profile: str, verbose: bool = True) -> str:
    """Turn "auto" into a concrete profile: "full" when a GPU is visible, else "quick".

    A 100-epoch `full` run on a few CPU cores would take days, so without a GPU `auto` picks `quick`.

    Args:
        profile: "auto", "ci", "quick" or "full".
        verbose: print which profile "auto" chose and why.
    Raises:
        TinyconvError: for any other value.
    """
    if profile in PROFILES:
        return profile
    if profile != "auto":
        raise TinyconvError(f"unknown notebook profile {profile!r}: expected auto, {', '.join(PROFILES)}")
    if has_gpu():
        chosen, why = "full", "a GPU is visible"
    else:
        chosen, why = "quick", "no GPU is visible (the 100-epoch full recipe would take days on a CPU)"
        gpus = nvidia_gpus_present()
        if gpus:  # the machine has GPUs that this backend's build cannot use: say how to use them
            why += (f"; yet this machine's NVIDIA driver lists {gpus} GPU(s), which the {backend()} backend here "
                    f"cannot use: for JAX on them, `.venv/bin/pip install \"jax[cuda13]=={_jax_version()}\"` "
                    "(cuda12 for an older driver) and `KERAS_BACKEND=jax make run` (README, \"On a GPU: JAX\")")
    if verbose:
        print(f"profile auto -> {chosen}: {why}", flush=True)
    return chosen
