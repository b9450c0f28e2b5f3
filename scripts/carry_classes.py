"""Give a model file saved before tinyconv models carried their class list the list from its run's config.json.

    .venv/bin/python scripts/carry_classes.py models/seed-reference-e15.keras results/seed-reference-h200/config.json

Models trained since then carry it already (training.train.model_metadata, written by fileio.save_model); this
adds the same tinyconv.json to an older file, so `tinyconv predict/localize/export` need no dataset for its names.
The weights and Keras' own members are copied byte for byte; the file is replaced atomically, and only after the
new one loads with the same number of outputs as the list names.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

from tinyconv import fileio
from tinyconv.deploy.inference import load_keras_file
from tinyconv.errors import TinyconvError
from tinyconv.training.train import model_metadata


def carry_classes(model_path, config_path) -> dict:
    """Write model_metadata(config.json) into the .keras file at `model_path`; return it."""
    model_path, config_path = Path(model_path), Path(config_path)
    try:
        metadata = model_metadata(json.loads(config_path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise TinyconvError(f"{config_path}: not a run's config.json ({type(exc).__name__}: {exc})") from None
    outputs = int(load_keras_file(model_path).output_shape[-1])
    if outputs != len(metadata["wnids"]):
        raise TinyconvError(f"{config_path} names {len(metadata['wnids'])} classes, {model_path} has {outputs} outputs")
    with fileio.atomic_path(model_path, ".keras") as tmp:
        with zipfile.ZipFile(model_path) as source, zipfile.ZipFile(tmp, "w") as target:
            for info in source.infolist():
                if info.filename != fileio.MODEL_METADATA_NAME:  # an older list is replaced, not duplicated
                    target.writestr(info, source.read(info.filename))
            target.writestr(fileio.MODEL_METADATA_NAME, json.dumps(metadata))
        load_keras_file(tmp)  # the copy still loads before it replaces the original
    return metadata


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    try:
        result = carry_classes(sys.argv[1], sys.argv[2])
    except TinyconvError as exc:
        sys.exit(f"error: {exc}")
    print(f"{sys.argv[1]}: carries {len(result['wnids'])} classes ({result['preset']}, {result['profile']})")
