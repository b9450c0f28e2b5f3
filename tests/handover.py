"""A run handed from one backend to the other, for tests/test_jax_parity.py.

`dump` loads a run folder's resume checkpoint as `tinyconv train` does on resume and saves every variable it sets:
the model and its optimizer built and compiled by `tinyconv.training.train`, the checkpoint loaded by the run's
ResumableBackup, and OUT.npz mapping each variable's path (model weights, BatchNorm statistics, DropPath's random
state, the optimizer's step count and both Adam slots of every weight) to its value. Two backends that restore the
same checkpoint must give the same file: a slot restored onto another weight, or a random state left at its start,
shows as a difference.

    python tests/no_tensorflow.py handover RUN DATA_DIR OVERRIDES_JSON FOLDER

is the JAX leg of the hand-over, in one process (each JAX process costs seconds to start), in mixed_bfloat16 as on
the GPUs: dump RUN as restored (FOLDER/to-jax-jax.npz), train it one epoch on, hand it back (packed, restored into
FOLDER/tf-3) and dump that as JAX restores it (FOLDER/to-tf-jax.npz).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import keras
import numpy as np


def dump(run_dir, data_dir, overrides: dict, out) -> dict[str, np.ndarray]:
    from tinyconv.training.callbacks import ResumableBackup
    from tinyconv.training.train import compiled_model, load_data, plan_run, start_folder

    config = json.loads((Path(run_dir) / "config.json").read_text())
    plan = plan_run(config["preset"], config["profile"], data_dir, run_dir, overrides)
    assert plan.state == "resume", plan.state
    data = load_data(plan)
    start_folder(plan, data)  # the precision and XLA setting compiled_model reads; writes nothing on a resume
    model = compiled_model(plan, data.steps_per_epoch)
    backup = ResumableBackup(plan.run_dir / "backup")
    backup.set_model(model)
    backup.on_train_begin()
    # Keras numbers the names of optimizers and random generators by how many the process made before (a checkpoint
    # stores them by their layer, not by that name): the numbers are left out of the paths
    named = [(re.sub(r"/seed_generator_[0-9]+/", "/seed_generator/", variable.path), variable)
             for variable in model.variables]
    named += [(f"optimizer/{variable.path.split('/', 1)[-1]}", variable) for variable in model.optimizer.variables]
    values = {}
    for path, variable in named:
        assert path not in values, f"two variables at {path}"
        values[path] = keras.ops.convert_to_numpy(variable)
    np.savez(out, **values)
    return values


def hand_over(run_dir, folder, name) -> Path:
    """The run's state packed as a lease returns it and restored into a fresh folder, as the next machine gets it."""
    from tinyconv.training.run_state import pack_state, restore_state

    pieces = Path(folder) / f"{name}-pieces"
    pack_state(run_dir, pieces)
    restore_state(pieces, Path(folder) / name)
    return Path(folder) / name


def jax_leg(run_dir, data_dir, overrides: dict, folder) -> None:
    from tinyconv import runtime
    from tinyconv.training.train import train

    # in bf16, as the GPUs train (runtime.precision_policy gives it for "auto" on compute capability >= 8): the
    # float32 checkpoint restored into a mixed_bfloat16 model, an epoch trained so, and its checkpoint handed back
    runtime.precision_policy = lambda setting: "mixed_bfloat16"
    folder = Path(folder)
    dump(run_dir, data_dir, overrides, folder / "to-jax-jax.npz")
    config = json.loads((Path(run_dir) / "config.json").read_text())
    progress = train(preset=config["preset"], profile=config["profile"], data_dir=data_dir, out=run_dir,
                     overrides=overrides, time_limit=1e-6)
    assert progress["complete"] is False and progress["epochs"] == 2, progress
    dump(hand_over(run_dir, folder, "tf-3"), data_dir, overrides, folder / "to-tf-jax.npz")
    print("jax leg done")


if __name__ == "__main__":
    run_dir, data_dir, overrides, folder = sys.argv[1:]
    jax_leg(run_dir, data_dir, json.loads(overrides), folder)
