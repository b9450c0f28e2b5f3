"""The models the repository ships (models/) work out of the box: each carries its class list, so `tinyconv
predict` names classes with no dataset anywhere; scripts/carry_classes.py gives an older file that list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyconv import fileio
from tinyconv.errors import TinyconvError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "models").glob("*.keras"))
sys.path.insert(0, str(ROOT / "scripts"))
from carry_classes import carry_classes  # noqa: E402


def test_the_repository_ships_a_model():
    assert SHIPPED, "models/ holds no .keras file"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_model_carries_a_class_list_that_fits_its_outputs_and_its_size_limit(path):
    assert path.stat().st_size <= 16 * 2**20
    metadata = fileio.read_model_metadata(path)
    assert metadata is not None, f"{path.name} carries no class list: run scripts/carry_classes.py on it"
    assert len(metadata["wnids"]) == len(metadata["names"]) == len(metadata["words"]) == 200
    assert len(set(metadata["wnids"])) == 200 and all(w.startswith("n") for w in metadata["wnids"])
    with zipfile.ZipFile(path) as archive:  # the output width, read from the Keras config without building it
        config = json.loads(archive.read("config.json"))
    dense = [layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense"]
    assert dense[-1]["config"]["units"] == len(metadata["wnids"])


@pytest.mark.slow
def test_predict_with_a_shipped_model_in_an_empty_folder_with_no_dataset(tmp_path):
    """The README's first try: a photo, the shipped model, no data/ and no dataset anywhere."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    env = {**os.environ, "TINYCONV_DATA_DIR": str(tmp_path / "no-data"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "tinyconv", "predict", str(SHIPPED[0]), "photo.jpg"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metadata = fileio.read_model_metadata(SHIPPED[0])
    ranks = [line.split() for line in done.stdout.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 6)}]
    assert len(ranks) == 5 and all(line[-1].strip("()") in metadata["wnids"] for line in ranks), done.stdout
    assert not (tmp_path / "no-data").exists()  # nothing looked for, nothing made


def _without_class_list(source: Path, target: Path) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename != fileio.MODEL_METADATA_NAME:
                new.writestr(info, old.read(info.filename))


def test_carry_classes_gives_an_older_file_its_runs_list_and_keeps_everything_else(ci_run, tmp_path):
    run_dir, _ = ci_run
    older = tmp_path / "older.keras"
    _without_class_list(run_dir / "model.keras", older)
    assert fileio.read_model_metadata(older) is None
    with zipfile.ZipFile(older) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}

    carried = carry_classes(older, run_dir / "config.json")
    assert fileio.read_model_metadata(older) == carried == fileio.read_model_metadata(run_dir / "model.keras")
    with zipfile.ZipFile(older) as archive:
        assert {name: archive.read(name) for name in members} == members  # weights and config byte for byte
        assert archive.namelist().count(fileio.MODEL_METADATA_NAME) == 1
    carry_classes(older, run_dir / "config.json")  # again: replaced, not added twice
    with zipfile.ZipFile(older) as archive:
        assert archive.namelist().count(fileio.MODEL_METADATA_NAME) == 1


def test_carry_classes_refuses_a_list_of_another_length_and_leaves_the_file(ci_run, tmp_path):
    run_dir, _ = ci_run
    older = tmp_path / "older.keras"
    _without_class_list(run_dir / "model.keras", older)
    before = older.read_bytes()
    doc = json.loads((run_dir / "config.json").read_text())
    for key in ("wnids", "names", "words"):
        doc[key] = doc[key][:-1]
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(TinyconvError, match="names 3 classes, .* has 4 outputs"):
        carry_classes(older, tmp_path / "config.json")
    assert older.read_bytes() == before
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TinyconvError, match="not a run's config.json"):
        carry_classes(older, tmp_path / "bad.json")
