"""predict's inputs (issue 13, part): huge images, 16-bit, alpha, float arrays, a model of another input shape."""

from __future__ import annotations

import struct
import zlib

import keras
import numpy as np
import pytest
from PIL import Image

from tinyconv.errors import TinyconvError
from tinyconv.deploy.inference import ALPHA_BACKGROUND, as_uint8_images, load_image, predict


def _png_claiming(path, width: int, height: int):
    """A PNG whose header says width x height (a 1x1 image with its IHDR rewritten): no huge file needed."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start : start + 17])))
    path.write_bytes(bytes(data))
    return path


def test_a_huge_image_is_refused_before_decoding(tmp_path):
    path = _png_claiming(tmp_path / "huge.png", 20_000, 20_000)
    with pytest.raises(TinyconvError, match=r"huge.png: 20000 x 20000 pixels, more than the 50,000,000"):
        load_image(path)


def test_a_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    gradient = (np.linspace(0, 65535, 128 * 128).reshape(128, 128)).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "deep.png")  # a 16-bit PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    Image.fromarray((gradient // 257).astype(np.uint8), mode="L").save(tmp_path / "flat.png")
    deep, flat = load_image(tmp_path / "deep.png"), load_image(tmp_path / "flat.png")
    assert np.abs(deep.astype(int) - flat.astype(int)).max() <= 1  # the 8-bit version, not 99.6 % white
    assert deep.min() < 10 and deep.max() > 245


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 200  # red where opaque
    rgba[:32, :, 3] = 255  # top half opaque, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    image = load_image(tmp_path / "alpha.png")
    assert tuple(image[10, 10]) == (200, 0, 0)
    assert tuple(image[60, 10]) == ALPHA_BACKGROUND  # not the black of the dropped alpha


def test_float_arrays_in_unit_range_are_scaled_and_others_refused():
    floats = np.full((2, 64, 64, 3), 0.5, np.float32)
    assert as_uint8_images(floats).dtype == np.uint8 and as_uint8_images(floats)[0, 0, 0, 0] == 128  # not 0
    with pytest.raises(TinyconvError, match=r"float images must lie in \[0, 1\]"):
        as_uint8_images(floats * 255)
    with pytest.raises(TinyconvError, match="uint8 or float"):
        as_uint8_images(floats.astype(np.int32))
    with pytest.raises(TinyconvError, match=r"\[N, 64, 64, 3\]"):
        as_uint8_images(np.zeros((2, 32, 32, 3), np.uint8))


def test_a_model_of_another_input_shape_gives_one_line(tmp_path):
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs)))
    model.save(tmp_path / "small.keras")
    with pytest.raises(TinyconvError, match=r"small.keras: the model takes inputs of shape \(32, 32, 3\)"):
        predict(tmp_path / "small.keras", np.zeros((1, 64, 64, 3), np.uint8))


def test_a_bare_model_file_carries_its_classes_and_an_older_one_is_refused(tmp_path, synthetic_data_dir, ci_run):
    import json
    import shutil
    import zipfile

    from tinyconv.fileio import read_model_metadata

    run_dir, _ = ci_run  # the session's ci run (tests/conftest.py), only read: best.keras is copied
    config = json.loads((run_dir / "config.json").read_text())
    bare = tmp_path / "elsewhere" / "model.keras"
    bare.parent.mkdir()
    shutil.copyfile(run_dir / "best.keras", bare)  # without its run's config.json
    carried = read_model_metadata(bare)
    assert carried["wnids"] == config["wnids"] and carried["input"]["size"] == [64, 64, 3]
    image = np.zeros((1, 64, 64, 3), np.uint8)
    result = predict(bare, image, top=4)
    assert {guess["wnid"] for guess in result[0]["top"]} == set(config["wnids"])
    # the same file without the class list (as files saved before it existed): refused, not given wrong names
    older = tmp_path / "older.keras"
    with zipfile.ZipFile(bare) as source, zipfile.ZipFile(older, "w") as target:
        for item in source.infolist():
            if item.filename != "tinyconv.json":
                target.writestr(item, source.read(item.filename))
    with pytest.raises(TinyconvError, match="a model of 4 classes that carries no class list"):
        predict(older, image, data_dir=synthetic_data_dir)


def test_an_unreadable_image_among_others_is_named_and_the_others_predicted(tmp_path, ci_run, capsys):
    """`tinyconv predict RUN a b bad c missing`: a, b and c predicted as when given alone, bad and missing named on
    stderr (one line each), exit 1; with --json the list holds both, in order; the library raises by default."""
    import json

    from tinyconv import cli

    run_dir, _ = ci_run  # only read
    rng = np.random.default_rng(0)
    good = [tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"]
    for path in good:
        Image.fromarray(rng.integers(0, 256, (80, 70, 3), dtype=np.uint8)).save(path)
    bad, missing = tmp_path / "bad.jpg", tmp_path / "missing.png"
    bad.write_text("not an image")
    images = [good[0], good[1], bad, good[2], missing]
    errors = [f"tinyconv: error: {bad}: not a readable JPEG or PNG image (UnidentifiedImageError)",
              f"tinyconv: error: {missing}: no such image file"]

    assert cli.main(["predict", str(run_dir), *map(str, good), "--top", "2", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)

    assert cli.main(["predict", str(run_dir), *map(str, images), "--top", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == errors
    blocks = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert blocks == [str(path) for path in good]

    assert cli.main(["predict", str(run_dir), *map(str, images), "--top", "2", "--json"]) == 1
    captured = capsys.readouterr()
    entries = json.loads(captured.out)
    assert captured.err.strip().splitlines() == errors
    assert [entry["image"] for entry in entries] == [str(path) for path in images]
    assert [entries[i] for i in (0, 1, 3)] == alone  # the same predictions as without the bad ones
    assert [entries[2], entries[4]] == [{"image": str(bad), "error": errors[0].removeprefix("tinyconv: error: ")},
                                        {"image": str(missing), "error": "no such image file".join(
                                            [f"{missing}: ", ""])}]

    assert cli.main(["predict", str(run_dir), str(bad)]) == 1  # none readable: no model loaded, the same line
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == errors[:1]
    with pytest.raises(TinyconvError, match="bad.jpg: not a readable"):
        predict(run_dir, [good[0], bad])  # the library raises unless asked to skip
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    assert "others are predicted, and the exit status is then 1" in " ".join(capsys.readouterr().out.split())
