"""predict's inputs (issue 13, part): huge images, 16-bit, alpha, float arrays, a model of another input shape;
centre-crop or squash; evaluate's progress; a model file alone, with no dataset (predict's stderr, localize)."""

from __future__ import annotations

import struct
import zlib

import keras
import numpy as np
import pytest
from PIL import Image

from tinyconv.errors import TinyconvError
from tinyconv.deploy.inference import ALPHA_BACKGROUND, as_uint8_images, load_image, predict
from tinyconv.fileio import read_model_metadata


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


# ------------------------------------------------------------------ resize: crop (default) or squash


def _three_bands(width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: red left third, blue right third, a green textured centre (so that a resize
    of the wrong region cannot match by accident)."""
    rng = np.random.default_rng(width * 1000 + height)
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 3] = (220, 20, 20)
    image[:, width - width // 3 :] = (20, 20, 220)
    centre = image[:, width // 3 : width - width // 3]
    centre[...] = (20, 200, 20)
    centre[..., 1] = rng.integers(120, 256, centre.shape[:2])
    return image


@pytest.mark.parametrize("width, height", [(240, 80), (241, 80), (80, 240)])  # wide, odd leftover, tall
def test_crop_resizes_the_centre_square_and_squash_the_whole_image(width, height, tmp_path):
    """An 800 x 400 bus squashed to 64 x 64 became a king penguin: by default an image is centre-cropped to a
    square first, and squash keeps the old whole-image resize."""
    from tinyconv.deploy.inference import centre_square

    pixels = _three_bands(width, height) if width >= height else _three_bands(height, width).transpose(1, 0, 2)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    crop, squash = load_image(path), load_image(path, resize="squash")
    assert np.array_equal(load_image(path, resize="crop"), crop)  # crop is the default
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    assert centre_square(width, height) == (left, top, left + side, top + side)
    square = Image.fromarray(pixels[top : top + side, left : left + side])
    assert np.array_equal(crop, np.asarray(square.resize((64, 64), Image.Resampling.BICUBIC)))
    whole = np.asarray(Image.fromarray(pixels).resize((64, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(squash, whole)
    assert not np.array_equal(crop, squash)
    if width > height:  # the red and blue thirds are in the squashed image only
        assert squash[:, :8, 0].mean() > 200 and squash[:, -8:, 2].mean() > 200
        assert crop[:, :8, 0].mean() < 60 and crop[:, -8:, 2].mean() < 60


def test_a_square_image_is_the_same_either_way_and_a_bad_mode_is_one_line(tmp_path):
    Image.fromarray(_three_bands(96, 96)).save(tmp_path / "square.png")
    assert np.array_equal(load_image(tmp_path / "square.png"), load_image(tmp_path / "square.png", "squash"))
    Image.fromarray(_three_bands(150, 50)).save(tmp_path / "wide.png")
    with pytest.raises(TinyconvError, match="unknown resize mode 'fit': choose one of crop, squash"):
        load_image(tmp_path / "wide.png", resize="fit")
    with pytest.raises(TinyconvError, match="unknown resize mode 'fit'"):
        predict("never-loaded.keras", [tmp_path / "wide.png"], resize="fit")
    assert np.array_equal(load_image(tmp_path / "wide.png"), load_image(tmp_path / "wide.png", "crop"))


def test_predict_resizes_files_as_asked(tmp_path, ci_run):
    run_dir, _ = ci_run  # only read
    Image.fromarray(_three_bands(240, 80)).save(tmp_path / "wide.png")
    for mode in ("crop", "squash"):
        from_file = predict(run_dir, [tmp_path / "wide.png"], top=4, resize=mode)[0]["top"]
        from_pixels = predict(run_dir, load_image(tmp_path / "wide.png", mode)[None], top=4)[0]["top"]
        assert from_file == from_pixels
    default = predict(run_dir, [tmp_path / "wide.png"], top=4)[0]["top"]
    assert default == predict(run_dir, [tmp_path / "wide.png"], top=4, resize="crop")[0]["top"]
    assert default != predict(run_dir, [tmp_path / "wide.png"], top=4, resize="squash")[0]["top"]


# ------------------------------------------------------------------ evaluate's progress


def test_evaluate_shows_a_bar_per_pass_on_stderr_and_gives_the_same_numbers(ci_run, synthetic_data_dir, capsys):
    from tinyconv.deploy.inference import evaluate

    run_dir, _ = ci_run  # only read: the ci run's 4 classes, 6 val images each
    quiet = evaluate(run_dir, data_dir=synthetic_data_dir, batch_size=10)
    assert capsys.readouterr().err == ""
    shown = evaluate(run_dir, data_dir=synthetic_data_dir, batch_size=10, progress=True)
    captured = capsys.readouterr()
    assert shown == quiet
    assert captured.out == ""  # stdout is left to the result (`tinyconv evaluate --json`)
    err = captured.err
    assert "val: " in err and "val, flipped: " in err and "/24 [" in err and "img" in err, err  # tqdm's bars
    no_tta = evaluate(run_dir, data_dir=synthetic_data_dir, tta=False, progress=True)
    assert "flipped" not in capsys.readouterr().err and no_tta["top1"] == quiet["top1"]


# ------------------------------------------------------------------ a model file alone, with no dataset


def _bare_model(ci_run, folder):
    """The ci run's best.keras alone in `folder` (no config.json beside it): it carries its class list."""
    import shutil

    run_dir, _ = ci_run
    folder.mkdir()
    shutil.copyfile(run_dir / "best.keras", folder / "model.keras")
    return folder / "model.keras"


NATIVE_LOG_WORDS = ("cuInit", "oneDNN", "cudart_stub", "cpu_feature_guard", "absl::InitializeLog",
                    "XNNPACK delegate")


@pytest.mark.slow  # two TensorFlow start-ups in subprocesses
def test_predict_from_the_command_line_prints_no_native_tensorflow_logs(ci_run, tmp_path):
    """`tinyconv predict` once printed TensorFlow's C++ start-up lines (oneDNN, cudart_stub, cpu_feature_guard,
    "failed call to cuInit") to stderr, the first two twice: libtensorflow_framework.so.2 and
    _pywrap_profiler_plugin.so each carry their own copy of TensorFlow's platform code, whose initializers print
    them as `import tensorflow` loads each library (one process, one import). TF_CPP_MIN_LOG_LEVEL does not reach
    those written before absl's logging starts (runtime.quiet_tensorflow hides the import instead);
    TINYCONV_TF_LOGS=1 shows them."""
    import os
    import subprocess
    import sys

    model = _bare_model(ci_run, tmp_path / "models")
    (tmp_path / "empty").mkdir()
    Image.fromarray(_three_bands(240, 80)).save(tmp_path / "bus.jpg")
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "TINYCONV_TF_LOGS")}  # as a user's shell has them
    env["TINYCONV_DATA_DIR"] = str(tmp_path / "empty")
    argv = [sys.executable, "-m", "tinyconv", "predict", str(model), str(tmp_path / "bus.jpg"), "--top", "2"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == str(tmp_path / "bus.jpg") and "2." in done.stdout
    assert not [line for line in done.stderr.splitlines() if any(word in line for word in NATIVE_LOG_WORDS)], \
        done.stderr
    assert done.stderr == ""
    shown = subprocess.run(argv, env={**env, "TINYCONV_TF_LOGS": "1"}, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and shown.stdout == done.stdout
    if not any(word in shown.stderr for word in NATIVE_LOG_WORDS):
        pytest.skip("this machine's TensorFlow prints no native start-up lines: nothing was hidden")


def test_localize_needs_no_dataset(ci_run, tmp_path, capsys, monkeypatch):
    """A model file that carries its class list localizes with TINYCONV_DATA_DIR an empty folder, as predict does."""
    from tinyconv import cli

    model = _bare_model(ci_run, tmp_path / "models")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TINYCONV_DATA_DIR", str(tmp_path / "empty"))
    Image.fromarray(_three_bands(240, 80)).save(tmp_path / "bus.jpg")
    assert cli.main(["localize", str(model), str(tmp_path / "bus.jpg"), "--out", str(tmp_path / "maps")]) == 0
    captured = capsys.readouterr()
    carried = read_model_metadata(model)
    line = captured.out.strip()
    assert line.startswith(f"{tmp_path / 'bus.jpg'}: ") and line.endswith("_cam.png"), line
    assert any(f"{name} ({wnid}, " in line for name, wnid in zip(carried["names"], carried["wnids"])), line
    assert [p.name for p in (tmp_path / "maps").iterdir()] == ["000_bus_cam.png"]
    assert captured.err == "" and list((tmp_path / "empty").iterdir()) == []


def test_a_users_own_tensorflow_log_level_is_kept(monkeypatch):
    """The CLI asks TensorFlow for warnings and errors only (TF_CPP_MIN_LOG_LEVEL=2) unless the user said
    otherwise."""
    import os

    from tinyconv import runtime

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    runtime.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    runtime.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


# ------------------------------------------------------------------ a run's config.json, a model without classes


NOT_UTF8_CONFIG = b'{"pad": "' + b"x" * 9000 + b'", "wnids": ["n02124075"\xff]}'  # past a text reader's first chunk


@pytest.mark.parametrize("content, words", [
    (NOT_UTF8_CONFIG, f"unreadable run config: not UTF-8 text (byte 0xff at offset {NOT_UTF8_CONFIG.index(255)})"),
    (b"[1]", "not a run config (a JSON object), but an array"),
    (b'{"wnids": 5}', "not a run config: its wnids is a number, not a list of strings"),
])
def test_a_run_config_that_is_not_utf8_or_not_an_object_is_one_line(tmp_path, ci_run, capsys, content, words):
    """`tinyconv predict RUN img`: a config.json beside the model that is not UTF-8 text, not a JSON object, or
    whose class list is not a list of strings is named in one line, not a UnicodeDecodeError or AttributeError."""
    import shutil

    from tinyconv import cli

    run_dir, _ = ci_run  # only read: its best.keras is copied
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copyfile(run_dir / "best.keras", folder / "model.keras")
    (folder / "config.json").write_bytes(content)
    Image.fromarray(_three_bands(80, 80)).save(tmp_path / "img.png")
    assert cli.main(["predict", str(folder), str(tmp_path / "img.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tinyconv: error: {folder / 'config.json'}: {words}"), lines


def test_a_model_without_a_class_list_is_named_by_its_path_with_advice_the_cli_can_follow(tmp_path, ci_run, capsys):
    """`tinyconv predict m/bare img`: the refusal names the model file (not the Keras model's name) and does not
    advise passing its classes, which the command line cannot."""
    import zipfile

    from tinyconv import cli

    run_dir, _ = ci_run  # only read
    folder = tmp_path / "bare"
    folder.mkdir()
    older = folder / "model.keras"  # the run's model without the class list it carries, and no config.json
    with zipfile.ZipFile(run_dir / "best.keras") as source, zipfile.ZipFile(older, "w") as target:
        for item in source.infolist():
            if item.filename != "tinyconv.json":
                target.writestr(item, source.read(item.filename))
    Image.fromarray(_three_bands(80, 80)).save(tmp_path / "img.png")
    for model in (folder, older):
        assert cli.main(["predict", str(model), str(tmp_path / "img.png")]) == 1
        captured = capsys.readouterr()
        assert captured.err.strip().splitlines() == [
            f"tinyconv: error: {older}: a model of 4 classes that carries no class list (an older file, without its "
            "run's config.json): put that config.json beside it (in Python, evaluate() also takes the list as "
            "`classes=`)"]
