"""A .keras file saved before the layers were renamed and moved (tests/data/legacy_tiny.keras) still loads and
gives the logits it gave then: the registered serialization names ("tinyconv>BatchNormalization", ...) are kept."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import tinyconv.model.layers  # noqa: E402,F401  (registers the custom layers and activations)

DATA = Path(__file__).resolve().parent / "data"


def test_model_saved_by_the_old_layout_loads_with_the_same_logits():
    model = keras.saving.load_model(DATA / "legacy_tiny.keras", safe_mode=True)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")  # the input it was saved with
    logits = np.asarray(model(x, training=False))
    np.testing.assert_allclose(logits, np.load(DATA / "legacy_tiny_logits.npy"), atol=1e-5)


# ------------------------------------------------------------------- saved under TensorFlow, loaded under JAX

_PLAIN_KERAS_LOAD = """
import sys
from pathlib import Path

import numpy as np

import tinyconv  # all a process needs: its import makes Keras' import register tinyconv's objects
import keras

folder = Path(sys.argv[1])
x = np.load(folder / "x.npy")
models = {path.stem: keras.saving.load_model(path) for path in [*sorted(folder.glob("*.keras")), *map(Path, sys.argv[2:])]}
print("backend", keras.config.backend(), "tensorflow" in sys.modules)

from tinyconv.deploy.inference import in_float32  # after loading: compares the models in float32 (no bf16 on a CPU)

for stem, model in models.items():
    np.save(folder / f"{stem}.jax.npy", np.asarray(in_float32(model)(x, training=False)))
"""


@pytest.mark.jax
def test_a_model_saved_under_tensorflow_loads_under_jax_after_import_tinyconv(tmp_path):
    """`import tinyconv` is enough for plain keras.saving.load_model under JAX (no TensorFlow in that process) of the
    committed seed model and of a seed and a variant saved here under TensorFlow; each gives TensorFlow's logits."""
    import os
    import subprocess
    import sys

    from tinyconv import fileio
    from tinyconv.deploy.inference import in_float32
    from tinyconv.model.build import build_model

    repo = DATA.parents[1]
    reference = repo / "models" / "seed-reference-e15.keras"
    x = np.random.default_rng(0).uniform(-2.0, 2.0, (2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = {reference.stem: keras.saving.load_model(reference)}
    for preset in ("seed", "tiny-down-haar"):
        keras.utils.set_random_seed(0)
        expected[preset] = build_model(preset)
        fileio.save_model(expected[preset], tmp_path / f"{preset}.keras")
    logits = {stem: np.asarray(in_float32(model)(x, training=False)) for stem, model in expected.items()}

    (tmp_path / "plain_keras_load.py").write_text(_PLAIN_KERAS_LOAD)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo)])}
    done = subprocess.run([sys.executable, str(repo / "tests" / "no_tensorflow.py"), "plain_keras_load", str(tmp_path),
                           str(reference)], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "backend jax False" in done.stdout  # JAX, and TensorFlow never imported
    for stem, here in logits.items():
        there = np.load(tmp_path / f"{stem}.jax.npy")
        assert np.std(here) > 1e-3 * np.max(np.abs(here)), stem  # not a degenerate output
        assert np.max(np.abs(there - here)) / np.max(np.abs(here)) <= 1e-4, stem


def test_every_module_that_registers_keras_objects_is_imported_with_keras():
    """tinyconv registers its Keras objects by importing the modules that define them (tinyconv/__init__.py): a
    new module with a @register_keras_serializable must be on that list, or its objects load only by chance."""
    import tinyconv

    package = DATA.parents[1] / "tinyconv"
    decorator = re.compile(r"^\s*@[\w.]*register_keras_serializable\b", re.MULTILINE)
    registering = {".".join(path.relative_to(package.parent).with_suffix("").parts)
                   for path in package.rglob("*.py") if decorator.search(path.read_text(encoding="utf-8"))}
    assert registering and registering == set(tinyconv._SERIALIZABLE_MODULES)


def _damaged_copies(folder):
    """(file, what its message says) for the kinds of damage a .keras file meets: cut short, another file
    renamed, a flipped byte inside the weights, a zip of something else."""
    import zipfile

    source = (DATA / "legacy_tiny.keras").read_bytes()
    truncated = folder / "truncated.keras"
    truncated.write_bytes(source[: len(source) // 2])
    text = folder / "notes.keras"
    text.write_text("not a model")
    flipped = folder / "flipped.keras"
    with zipfile.ZipFile(DATA / "legacy_tiny.keras") as archive:
        weights = archive.getinfo("model.weights.h5")
    data = bytearray(source)
    data[weights.header_offset + 30 + len(weights.filename) + weights.compress_size // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    other = folder / "other.keras"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "a zip, not a model")
    return [(truncated, "truncated: a zip whose end is missing"), (text, "not a zip archive"),
            (flipped, "its member model.weights.h5 fails its CRC check"),
            (other, "a zip without config.json and model.weights.h5")]


def test_a_damaged_keras_file_is_one_line_saying_so_for_every_command(tmp_path, synthetic_data_dir, capsys):
    """evaluate, predict, export and localize load a .keras through one function and say the same line: the file is
    damaged or not a model (not Keras' "File not found" about a file that exists)."""
    from PIL import Image

    from tinyconv import cli

    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(image)
    data = ["--data-dir", str(synthetic_data_dir)]
    for path, why in _damaged_copies(tmp_path):
        expected = f"tinyconv: error: {path} is damaged or not a Keras model file ({why})"
        for argv in (["evaluate", str(path)], ["predict", str(path), str(image)],
                     ["export", str(path), "--format", "onnx", "--out", str(tmp_path / "x.onnx")],
                     ["localize", str(path), str(image), "--out", str(tmp_path / "figures")]):
            assert cli.main([*argv, *data]) == 1, argv
            captured = capsys.readouterr()
            assert captured.err.strip() == expected, (argv, captured.err)
