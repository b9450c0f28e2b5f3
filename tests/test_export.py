"""tinyconv export (issue 14): each format round-trips with its own runtime, carries its classes, takes raw
pixels; predict serves exported files with the same output; bad input is one line; the inference-only graph
(folded BatchNorms) computes what the model computes."""

from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np
import pytest

from tinyconv import cli
from tinyconv.data.dataset import load_split, selected_classes
from tinyconv.errors import TinyconvError
from tinyconv.deploy.export import (FLOAT32_TOLERANCE, QUANTIZATION_KINDS, QUANTIZATIONS, check_images, export_model,
                             format_export, relative_difference)
from tinyconv.fileio import save_model
from tinyconv.deploy.inference import exported_format, load_exported, predict, predict_logits, read_exported_metadata
from tinyconv.model.build import build_model
from weights import randomize_statistics

CLASSES = 4


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory, synthetic_data_dir):
    """A small `tiny` model of the synthetic dataset's first 4 classes, saved with its class list."""
    folder = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    model = build_model("tiny", widths=(16, 32, 64), depths=(1, 1, 1), num_classes=CLASSES)
    randomize_statistics(model)
    wnids, names, words = selected_classes(synthetic_data_dir, CLASSES)
    path = folder / "small.keras"
    save_model(model, path, {"wnids": wnids, "names": names, "words": [words[w] for w in wnids]})
    return path


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_each_format_round_trips_with_its_runtime_and_carries_its_classes(fmt, small_model_file,
                                                                          synthetic_data_dir, tmp_path):
    out = tmp_path / ("small_savedmodel" if fmt == "savedmodel" else f"small.{fmt}")
    report = export_model(small_model_file, fmt, out=out, data_dir=synthetic_data_dir)
    assert report["check"]["passed"] and report["check"]["max_relative_difference"] <= FLOAT32_TOLERANCE
    assert "max relative difference" in format_export(report)
    assert exported_format(out) == fmt and not list(tmp_path.glob(".*tmp*"))  # no temporaries left

    # reloaded here with the format's runtime, on raw uint8 pixels, it computes the Keras model's logits
    model = keras.saving.load_model(small_model_file)
    images = load_split(synthetic_data_dir, "val").images[:9]  # a batch size the check did not use
    exported = load_exported(out)
    got, want = exported.logits(images), predict_logits(model, images)
    assert got.shape == (9, CLASSES) and got.dtype == np.float32
    assert relative_difference(got, want) <= FLOAT32_TOLERANCE
    metadata = read_exported_metadata(out)
    assert metadata["wnids"] == selected_classes(synthetic_data_dir, CLASSES)[0]
    assert metadata["input"]["dtype"] == "uint8" and metadata["output"]["name"] == "logits"
    # and the file's own signature names them so: a user who asks for the output by name gets the logits
    assert _io_names(out, fmt) == (["pixels"], ["logits"])

    # predict gives the same answer from the exported file as from the .keras file
    from_keras, from_export = predict(small_model_file, images, top=3), predict(out, images, top=3)
    assert [[g["wnid"] for g in r["top"]] for r in from_export] == [[g["wnid"] for g in r["top"]] for r in from_keras]
    for a, b in zip(from_export, from_keras):
        assert np.allclose([g["probability"] for g in a["top"]], [g["probability"] for g in b["top"]], atol=1e-5)


def _io_names(path, fmt: str) -> tuple[list[str], list[str]]:
    """The input and output names of an exported file, as its own runtime's signature gives them."""
    if fmt == "savedmodel":
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return list(serve.structured_input_signature[1]), list(serve.structured_outputs)
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        signature = Interpreter(model_path=str(path)).get_signature_list()["serve"]
        return signature["inputs"], signature["outputs"]
    import onnx

    graph = onnx.load(str(path)).graph
    return [tensor.name for tensor in graph.input], [tensor.name for tensor in graph.output]


def _op_output_dtypes(path) -> set[str]:
    """The dtypes of every op's outputs in a .tflite file: float32 only when the activations stay float."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return {np.dtype(tensors[i]["dtype"]).name for op in interpreter._get_ops_details() for i in op["outputs"]}


def _has_int8_weights(path) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    return any(t["dtype"] == np.int8 for t in Interpreter(model_path=str(path)).get_tensor_details())


@pytest.mark.parametrize("quantize", QUANTIZATIONS)
def test_each_quantization_round_trips_and_reports_agreement_and_val_accuracy(quantize, small_model_file,
                                                                              synthetic_data_dir, tmp_path):
    out = tmp_path / f"small.{quantize}.tflite"
    report = export_model(small_model_file, "tflite", out=out, quantize=quantize, data_dir=synthetic_data_dir)
    assert report["quantize"] == quantize and report["check"]["criterion"] == "top-1 agreement 100%"
    assert report["check"]["passed"] == (report["check"]["top1_agreement"] == 1.0)
    assert report["check"]["images"] == len(check_images(synthetic_data_dir, read_exported_metadata(out)["wnids"]))
    assert read_exported_metadata(out)["quantize"] == quantize
    val = report["val"]
    assert val["images"] == CLASSES * 6 and 0.0 <= val["exported_top1"] <= 1.0
    assert val["drop"] == pytest.approx(val["keras_top1"] - val["exported_top1"])
    printed = format_export(report)
    assert "val top-1 on 24 images" in printed and QUANTIZATION_KINDS[quantize] in printed

    # reloaded, the file computes what the check saw, and quantizes what its name says
    model = keras.saving.load_model(small_model_file)
    images = check_images(synthetic_data_dir, read_exported_metadata(out)["wnids"])
    got, want = load_exported(out).logits(images), predict_logits(model, images)
    assert got.shape == want.shape and got.dtype == np.float32
    assert relative_difference(got, want) == pytest.approx(report["check"]["max_relative_difference"], rel=1e-5)
    assert relative_difference(got, want) < 0.5  # quantized, not broken
    dtypes = _op_output_dtypes(out)
    if quantize == "int8":  # weights int8, every activation float32
        assert _has_int8_weights(out) and dtypes == {"float32"}
    elif quantize == "int8-full":  # activations int8 between the input's cast and the output's dequantize
        assert "int8" in dtypes
    else:
        assert "int8" not in dtypes and not _has_int8_weights(out)


def test_cli_export_and_predict_an_exported_file(small_model_file, synthetic_data_dir, tmp_path, capsys):
    image = tmp_path / "cat.png"
    from PIL import Image

    Image.fromarray(load_split(synthetic_data_dir, "val").images[0]).save(image)
    out = tmp_path / "small.onnx"
    assert cli.main(["export", str(small_model_file), "--format", "onnx", "--out", str(out),
                     "--data-dir", str(synthetic_data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "parity checked on 24 val images: " in printed and "passed" in printed
    assert cli.main(["predict", str(out), str(image), "--json"]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert cli.main(["predict", str(small_model_file), str(image), "--json"]) == 0
    from_keras = json.loads(capsys.readouterr().out)
    assert [g["wnid"] for g in from_onnx[0]["top"]] == [g["wnid"] for g in from_keras[0]["top"]]


def _one_line_error(capsys, argv, pattern, after_steps=False):
    """`argv` fails with one line; after_steps: after the progress lines of the steps export began."""
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    if after_steps:
        steps = err.splitlines()[:-1]
        assert steps and all(step.startswith("export: ") for step in steps), err
        err = err.splitlines()[-1]
    assert err.count("\n") == 0 and err.startswith("tinyconv: error: "), err
    assert pattern in err, err


def test_bad_input_is_one_line(small_model_file, synthetic_data_dir, tmp_path, capsys):
    data = ["--data-dir", str(synthetic_data_dir)]
    _one_line_error(capsys, ["export", str(small_model_file), "--format", "pt", *data], "unknown export format 'pt'")
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("not a model")
    _one_line_error(capsys, ["export", str(not_a_model), "--format", "onnx", *data],
                    "notes.keras is damaged or not a Keras model file (not a zip archive)")
    _one_line_error(capsys, ["export", str(tmp_path / "missing.keras"), "--format", "onnx", *data], "no such model")
    _one_line_error(capsys, ["export", str(small_model_file), "--format", "onnx", "--out",
                             str(tmp_path / "no" / "such" / "x.onnx"), *data], "does not exist")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    _one_line_error(capsys, ["export", str(small_model_file), "--format", "tflite", "--out",
                             str(a_file / "x.tflite"), *data], "is a file, not a folder")
    _one_line_error(capsys, ["export", str(small_model_file), "--format", "savedmodel", "--out", str(a_file), *data],
                    "is a file, not a folder (for a SavedModel export)")
    _one_line_error(capsys, ["export", str(small_model_file), "--format", "onnx", "--quantize", "int8", *data],
                    "tflite format only")
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x00garbage")
    _one_line_error(capsys, ["predict", str(fake), str(tmp_path / "none.png")], "no such image")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(image)
    _one_line_error(capsys, ["predict", str(fake), str(image)], "fake.onnx")


def test_the_inference_gelu_computes_what_training_computes(monkeypatch):
    """kernels.gelu at inference (one XLA-fused kernel) and for export equals the training graph's GELU."""
    import tensorflow as tf

    from tinyconv.model import fast_path, kernels

    x = tf.constant(np.linspace(-8.0, 8.0, 4001, dtype=np.float32).reshape(1, 1, -1, 1))
    want = keras.ops.gelu(x, approximate=False).numpy()
    assert np.abs(kernels.gelu_fused(x).numpy() - want).max() <= 1e-6
    for form in fast_path.GELU_FORMS:
        with fast_path.inference_graph(form):
            assert np.abs(kernels.gelu(x).numpy() - want).max() <= 1e-6

    keras.utils.set_random_seed(1)
    model = build_model("tiny", widths=(16, 32, 64), depths=(1, 1, 1), num_classes=CLASSES)
    randomize_statistics(model, seed=1)
    images = np.random.default_rng(1).normal(size=(8, 64, 64, 3)).astype("float32")
    calls, fused = [], kernels.gelu_fused
    monkeypatch.setattr(kernels, "gelu_fused", lambda v, *a: calls.append(1) or fused(v, *a))
    fast = model.predict_on_batch(images)  # predict: training=False, the fused GELU
    assert calls  # the inference path was taken
    monkeypatch.setattr(fast_path, "keras_training_phase", lambda: None)  # as in training: the custom-gradient GELU
    model.make_predict_function(force=True)
    assert np.abs(model.predict_on_batch(images) - fast).max() <= 1e-5 * np.abs(fast).max()


def test_a_float_export_that_fails_its_check_is_not_written(small_model_file, synthetic_data_dir, tmp_path,
                                                             monkeypatch):
    from tinyconv.deploy import export

    monkeypatch.setattr(export, "FLOAT32_TOLERANCE", -1.0)  # no export can meet it
    out = tmp_path / "small_savedmodel"
    with pytest.raises(TinyconvError, match=r"differs from the Keras model by .* not written"):
        export_model(small_model_file, "savedmodel", out=out, data_dir=synthetic_data_dir)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary


def _run_folder(model_file, folder):
    """A run folder as training leaves it: the model, its resume backup, its history."""
    folder.mkdir()
    shutil.copy(model_file, folder / "model.keras")
    (folder / "backup").mkdir()
    (folder / "backup" / "epoch-0001.weights.h5").write_bytes(b"weights of epoch 1")
    (folder / "history.csv").write_text("epoch,loss\n1,2.0\n")
    return folder


def _foreign_onnx(path):
    """A valid ONNX model that tinyconv did not write (no tinyconv metadata): another tool's file."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(path))


def test_export_never_replaces_what_it_did_not_make(small_model_file, synthetic_data_dir, tmp_path, capsys):
    """Each of these was replaced by `tinyconv export ... --out PATH` with exit 0 (a whole run folder, the model
    being exported, any file); now each is one line naming PATH, with or without --force, and nothing changes."""
    from unwritable import snapshot

    run = _run_folder(small_model_file, tmp_path / "run")
    other_run = _run_folder(small_model_file, tmp_path / "other-run")
    (tmp_path / "notes.txt").write_text("my notes")
    (tmp_path / "link.keras").symlink_to(run / "model.keras")
    (tmp_path / "run-link").symlink_to(run)
    (tmp_path / "dangling.onnx").symlink_to(tmp_path / "nowhere.onnx")
    os.link(run / "model.keras", tmp_path / "hard.keras")
    _foreign_onnx(tmp_path / "other-tool.onnx")
    (tmp_path / "fake.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))  # the identifier, no tinyconv export
    fake = tmp_path / "fake_savedmodel"  # an earlier export's layout, plus a file someone added
    fake.mkdir()
    (fake / "saved_model.pb").write_bytes(b"")
    (fake / "tinyconv.json").write_text(json.dumps({"format": "savedmodel"}))
    (fake / "notes.md").write_text("how I deployed it")
    source = "is the model being exported"
    cases = [
        (run, "savedmodel", run, "holds the model being exported"),  # the run folder: backup, history, model
        (run, "onnx", run / "model.keras", source),
        (run / "model.keras", "onnx", tmp_path / "run" / ".." / "run" / "model.keras", source),  # another spelling
        (run, "tflite", tmp_path / "link.keras", source),  # a symbolic link to it
        (run, "onnx", tmp_path / "hard.keras", source),  # a hard link
        (run, "savedmodel", tmp_path / "run-link", "holds the model being exported"),
        (run, "savedmodel", other_run, "is not an earlier savedmodel export"),  # another run folder
        (run, "tflite", tmp_path / "notes.txt", "is not an earlier tflite export"),
        (run, "onnx", other_run / "model.keras", "is not an earlier onnx export"),
        (run, "onnx", tmp_path / "other-tool.onnx", "is not an earlier onnx export"),
        (run, "tflite", tmp_path / "fake.tflite", "is not an earlier tflite export"),
        (run, "savedmodel", fake, "is not an earlier savedmodel export"),
        (run, "onnx", tmp_path / "dangling.onnx", "is a symbolic link"),  # the rename would replace the link
    ]
    before = snapshot(tmp_path)
    for model, fmt, out, message in cases:
        for force in ([], ["--force"]):
            argv = ["export", str(model), "--format", fmt, "--out", str(out), *force,
                    "--data-dir", str(synthetic_data_dir)]
            _one_line_error(capsys, argv, f"tinyconv: error: {out}: ")
            _one_line_error(capsys, argv, message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_an_earlier_export_is_replaced_only_with_force_and_kept_when_the_new_one_fails(
        fmt, small_model_file, synthetic_data_dir, tmp_path, capsys, monkeypatch):
    from tinyconv.deploy import export
    from unwritable import snapshot

    out = tmp_path / ("small_savedmodel" if fmt == "savedmodel" else f"small.{fmt}")
    argv = ["export", str(small_model_file), "--format", fmt, "--out", str(out), "--data-dir", str(synthetic_data_dir)]
    assert cli.main(argv) == 0 and read_exported_metadata(out)["format"] == fmt
    capsys.readouterr()
    first = snapshot(tmp_path)
    _one_line_error(capsys, argv, f"{out}: holds an earlier {fmt} export; pass --force to replace it")
    assert snapshot(tmp_path) == first
    capsys.readouterr()
    assert cli.main([*argv, "--force"]) == 0 and export.is_earlier_export(out, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # replaced in place: no temporary, no old copy
    if fmt == "savedmodel":  # a failed export leaves the earlier one as it was (the folder swap is the risky one)
        replaced = snapshot(tmp_path)
        monkeypatch.setattr(export, "FLOAT32_TOLERANCE", -1.0)  # no export can meet it
        _one_line_error(capsys, [*argv, "--force"], "not written", after_steps=True)
        assert snapshot(tmp_path) == replaced


def test_export_help_names_force():
    assert "--force" in cli.build_parser()._subparsers._group_actions[0].choices["export"].format_help()


def test_an_onnx_export_warns_nothing(small_model_file, synthetic_data_dir, tmp_path, capsys):
    """A clean `tinyconv export --format onnx` prints no library warning: Keras' tf2onnx patch asked NumPy 2 for
    np.object and printed its FutureWarning on every export (an error under `python -W error::FutureWarning`)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, each time, whatever filters ran before
        assert cli.main(["export", str(small_model_file), "--format", "onnx", "--out", str(tmp_path / "small.onnx"),
                         "--data-dir", str(synthetic_data_dir)]) == 0
    assert [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught] == []
    assert "Warning" not in capsys.readouterr().err


# ------------------------------------------------------------------------------ without the dataset


def test_the_shipped_check_images_are_real_val_images_and_package_data():
    """The parity check's images where there is no dataset: uint8 [12, 64, 64, 3], 12 classes, in the wheel."""
    import tomllib
    from pathlib import Path

    from tinyconv.deploy.export import SHIPPED_CHECK_IMAGES, shipped_check_images

    images = shipped_check_images()
    assert images.dtype == np.uint8 and images.shape == (12, 64, 64, 3)
    paths = sorted(SHIPPED_CHECK_IMAGES.glob("*.png"))
    assert sum(path.stat().st_size for path in paths) < 150_000
    names = [path.stem.split("_", 1) for path in paths]  # <wnid>_val_<i>
    assert len({wnid for wnid, _ in names}) == 12 and all(wnid.startswith("n") and val.startswith("val_")
                                                          for wnid, val in names)
    assert all(image.std() > 10 for image in images)  # photos, not blank frames
    assert not any(np.array_equal(image[..., 0], image[..., 1]) for image in images)  # colour ones
    root = Path(__file__).resolve().parents[1]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert f"{SHIPPED_CHECK_IMAGES.name}/*.png" in package_data["tinyconv.deploy"]
    assert SHIPPED_CHECK_IMAGES.parent == root / "tinyconv" / "deploy"


def test_export_without_a_dataset_checks_on_the_shipped_images(small_model_file, tmp_path, capsys, monkeypatch):
    """A model file that carries its class list exports with TINYCONV_DATA_DIR an empty folder; the report says
    the parity check ran on the images shipped with tinyconv, and stderr says each step as it starts."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TINYCONV_DATA_DIR", str(empty))
    out = tmp_path / "small_savedmodel"
    assert cli.main(["export", str(small_model_file), "--format", "savedmodel", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert (f"parity checked on 12 images shipped with tinyconv (no dataset in {empty}): max relative difference"
            in captured.out), captured.out
    assert "passed" in captured.out
    assert captured.err.splitlines() == [
        "export: converting to savedmodel",
        f"export: checking it against the Keras model on 12 images shipped with tinyconv (no dataset in {empty})"]
    assert read_exported_metadata(out)["wnids"] == json.loads(
        __import__("zipfile").ZipFile(small_model_file).read("tinyconv.json"))["wnids"]
    assert list(empty.iterdir()) == []  # nothing downloaded or cached there

    report = export_model(small_model_file, "savedmodel", out=tmp_path / "again", data_dir=empty)
    assert report["check"]["images"] == 12 and "shipped with tinyconv" in report["check"]["checked_on"]
    assert report["val"] is None and report["val_skipped"] is None  # float32: val accuracy is not asked for


def test_what_needs_the_dataset_says_so_in_one_line_without_it(small_model_file, tmp_path, capsys):
    """int8-full calibrates on train images and --val-accuracy measures on val: one line before the model loads;
    a quantized export skips its default val accuracy and says so."""
    empty = tmp_path / "empty"
    empty.mkdir()
    data = ["--data-dir", str(empty)]
    _one_line_error(capsys, ["export", str(small_model_file), "--format", "tflite", "--quantize", "int8-full",
                             *data], f"int8-full calibrates on train images: no tiny-imagenet-200/ in {empty}")
    _one_line_error(capsys, ["export", str(small_model_file), "--format", "onnx", "--val-accuracy", *data],
                    f"--val-accuracy measures on val: no tiny-imagenet-200/ in {empty}")
    assert list(tmp_path.iterdir()) == [empty]
    report = export_model(small_model_file, "tflite", out=tmp_path / "small.int8.tflite", quantize="int8",
                          data_dir=empty)
    assert report["val"] is None and report["val_skipped"] == f"no dataset in {empty}"
    assert report["check"]["checked_on"].startswith("12 images shipped with tinyconv")
    assert f"val top-1 not measured: no dataset in {empty}" in format_export(report)
