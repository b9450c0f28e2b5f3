"""Export a trained model for deployment: TensorFlow SavedModel, TFLite (optionally quantized) or ONNX, each
checked against the Keras model on the spot.

    report = export_model("runs/seed-full/best.keras", "onnx")     # writes runs/seed-full/best.onnx
    print(format_export(report))                                    # the parity check, and accuracy if quantized

Every exported model has the same interface (docs/deploy.md):
    input   `pixels`: uint8 [B, 64, 64, 3], RGB, 0..255, channels last; any batch size. The preprocessing
            (x / 255, then (x - ImageNet mean) / std) is inside the graph, so a deployer feeds raw pixels.
    output  `logits`: float32 [B, K], no softmax (apply one for probabilities; the order of the classes is the
            order of the class list the file carries).
    classes the model's class list and this interface as JSON (`tinyconv.json`): inside the SavedModel folder,
            in the ONNX file's metadata_props (key `tinyconv`), and for TFLite in a zip appended to the
            flatbuffer, the way TFLite model metadata packs associated files (the interpreter ignores it).
            `tinyconv.deploy.inference.read_exported_metadata` reads all three.

The check runs the exported file with its own runtime (TensorFlow, the TFLite interpreter, ONNX Runtime) on a
fixed batch of real val images (CHECK_IMAGES, evenly spaced over the model's val set) and compares its logits
with the Keras model's: max |exported - keras| / max |keras| must stay within FLOAT32_TOLERANCE for float32
exports, and a quantized TFLite must agree on every top-1 class; its val accuracy beside the Keras model's is
measured and reported. A float32 export that fails its check is not written.

Without the dataset (a model file that carries its class list exports anywhere) the check runs on the real
images shipped with tinyconv instead (SHIPPED_CHECK_IMAGES: 12 val images, the first colour image of 12 classes
spread over wnids.txt, as lossless PNGs named <wnid>_<val file>.png, 107 kB), and the report says which images it used. What needs the dataset itself is
refused or left out in one line: int8-full's calibration on train images, val accuracy.

An export never destroys what it did not make (check_output): it replaces only an earlier export of its format,
and that only when asked (force=True, `--force`); never the model itself, its run folder, or any other file.

Converters: Keras 3's own `model.export` for the SavedModel and ONNX (which runs tf2onnx on TensorFlow), and
TensorFlow's TFLiteConverter on that SavedModel, with its post-training quantizations (QUANTIZATIONS):
    float16    float16 weights, float32 compute.
    int8       int8 weights, float32 activations ("dynamic-range" quantization: the kernels quantize the
               activations on the fly per batch, so no calibration data and no fixed activation ranges).
               Meets the 100 % top-1 check on the seed; the one to use for a smaller, faster CPU file.
    int8-full  int8 weights and activations ("full-integer", Jacob et al., "Quantization and Training of Neural
               Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018): activation ranges
               calibrated on CALIBRATION_IMAGES train images, float fallback for ops without an int8 kernel.
               For integer-only accelerators; on the seed it misses the check (docs/deploy.md has the numbers).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np

from tinyconv import fileio
from tinyconv.data.augment import IMAGENET_MEAN, IMAGENET_STD
from tinyconv.data.dataset import dataset_root, default_data_dir, load_split
from tinyconv.model.layers import PixelNormalization  # the exported graph's first layer
from tinyconv.errors import TinyconvError
from tinyconv.model.fast_path import inference_graph
from tinyconv.deploy.inference import (
    EXPORT_FORMATS,
    EXPORT_METADATA_KEY,
    accuracy_report,
    check_input_shape,
    load_exported,
    load_run_model,
    model_classes,
    predict_logits,
    read_exported_metadata,
    softmax,
)

FORMATS = EXPORT_FORMATS  # ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("float16", "int8", "int8-full")  # TFLite post-training quantization (see the module docstring)
QUANTIZATION_KINDS = {  # what each choice quantizes, as format_export prints it
    "float16": "float16 weights, float32 compute",
    "int8": "int8 weights, float32 activations",
    "int8-full": "int8 weights and activations, calibrated",
}
FLOAT32_TOLERANCE = 1e-4  # max |exported - keras| / max |keras| on the check batch
CHECK_IMAGES = 64  # the fixed batch of val images of the parity check
# the check's images where there is no dataset: real photos, like the val images, so that the logits compared are
# those of the inputs a deployed model meets; package data (pyproject.toml, [tool.setuptools.package-data])
SHIPPED_CHECK_IMAGES = Path(__file__).resolve().parent / "check_images"  # <wnid>_val_<i>.png, 64 x 64 RGB
CALIBRATION_IMAGES = 256  # train images (never val) that calibrate int8-full activation ranges (1,000 did no
# better on the seed: 71.9 % top-1 agreement against 70.3 %, docs/deploy.md)
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"


def deploy_model(model: keras.Model) -> keras.Model:
    """`model` behind a uint8 pixel input: [B, 64, 64, 3] uint8 -> logits [B, K] float32 (inference only)."""
    pixels = keras.Input(tuple(model.input_shape[1:]), dtype="uint8", name=INPUT_NAME)
    logits = model(PixelNormalization(name="normalize")(pixels), training=False)
    logits = keras.layers.Identity(name=OUTPUT_NAME, dtype="float32")(logits)
    # a dict output: the signatures' output key is then "logits" (a bare tensor is "output_0" in the SavedModel and
    # TFLite signatures); the runners in tinyconv.deploy.inference take the first output, whatever its name
    return keras.Model(pixels, {OUTPUT_NAME: logits}, name=f"{model.name}_deploy")


def export_metadata(classes, source, fmt: str, quantize: str | None) -> dict:
    """The JSON an exported file carries: its interface and class list (see the module docstring)."""
    return {
        "format": fmt,
        "quantize": quantize,
        "source": str(source),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, 64, 64, 3], "layout": "NHWC, RGB, 0..255",
                  "preprocessing": "inside the graph: x / 255, then (x - mean) / std",
                  "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [None, len(classes.wnids)],
                   "meaning": "logits (no softmax), one per class in the order of wnids"},
        "wnids": classes.wnids,
        "names": classes.names,
        "words": classes.words,
    }


def default_output(model_path, fmt: str, quantize: str | None = None) -> Path:
    """Beside the model file: best.keras -> best.onnx, best.tflite, best.float16.tflite, best_savedmodel/."""
    model_path = Path(model_path)
    stem = model_path.stem if model_path.suffix == ".keras" else model_path.name
    folder = model_path.parent
    if fmt == "savedmodel":
        return folder / f"{stem}_savedmodel"
    return folder / (f"{stem}.{quantize}.{fmt}" if quantize else f"{stem}.{fmt}")


SAVEDMODEL_ENTRIES = {"saved_model.pb", "fingerprint.pb", "keras_metadata.pb", "variables", "assets",
                      fileio.MODEL_METADATA_NAME}  # what write_savedmodel + attach_metadata put in the folder
TFLITE_IDENTIFIER = b"TFL3"  # a TFLite flatbuffer's file identifier, bytes 4..8
ONNX_FIRST_BYTE = b"\x08"  # an ONNX ModelProto starts with ir_version (field 1, a varint): tag byte 0x08


def export_kind(fmt: str) -> str:
    """"a SavedModel export", "a tflite export", "an onnx export": for messages."""
    return "a SavedModel export" if fmt == "savedmodel" else f"{'an' if fmt == 'onnx' else 'a'} {fmt} export"


def is_earlier_export(path: Path, fmt: str) -> bool:
    """Whether `path` is what export_model wrote for `fmt`, so that replacing it destroys nothing else: the
    format's own signature (TFLite's identifier, ONNX's first field, a SavedModel's saved_model.pb), the
    tinyconv.json of that format inside, and for a SavedModel folder nothing besides what the export writes.
    Anything else (a run folder, a .keras file, another tool's file, a folder someone added notes to) is not."""
    try:
        if fmt == "savedmodel":
            if not (path.is_dir() and (path / "saved_model.pb").is_file()):
                return False
            if any(entry.name not in SAVEDMODEL_ENTRIES for entry in path.iterdir()):
                return False
            variables = path / "variables"
            if variables.is_dir() and any(not e.name.startswith("variables.") for e in variables.iterdir()):
                return False
        else:
            if not path.is_file():
                return False
            with open(path, "rb") as handle:
                head = handle.read(8)
            if (fmt == "tflite" and head[4:8] != TFLITE_IDENTIFIER) or (fmt == "onnx" and head[:1] != ONNX_FIRST_BYTE):
                return False
        metadata = read_exported_metadata(path, fmt)
    except (OSError, TinyconvError):  # unreadable or damaged: not something export can vouch for
        return False
    return isinstance(metadata, dict) and metadata.get("format") == fmt


def _replaces_source(out: Path, source: Path) -> bool:
    """Whether writing `out` would replace `source`: the same file by any spelling, symbolic or hard link, or a
    folder above it (the run folder)."""
    with contextlib.suppress(OSError):
        if out.exists() and os.path.samefile(out, source):
            return True
    resolved, source = out.resolve(), source.resolve()
    return resolved == source or resolved in source.parents


def check_output(out: Path, fmt: str, source: Path | None = None, force: bool = False) -> None:
    """One line naming `out`, before minutes of conversion, when the export may not or cannot go there.

    An export never destroys what it did not make: it never replaces its own `source` (by any spelling or link,
    nor a folder holding it), nor an existing path that is not an earlier export of `fmt` (is_earlier_export),
    even with `force`; an earlier export is replaced only with `force`. A symbolic link is refused (the rename
    would replace the link, not its target), and `out` must be writable (fileio.check_writable).
    """
    if source is not None and _replaces_source(out, source):
        where = "holds" if out.resolve() in Path(source).resolve().parents else "is"
        raise TinyconvError(f"{out}: {where} the model being exported ({source}); choose another --out")
    if out.is_symlink():  # the rename would replace the link, not what it points to (and fails on a folder's link)
        raise TinyconvError(f"{out}: is a symbolic link; name the file itself (or another path) as --out")
    fileio.check_writable(out, export_kind(fmt), folder=fmt == "savedmodel", make_parents=False)
    if out.exists():
        if not is_earlier_export(out, fmt):
            raise TinyconvError(f"{out}: exists and is not an earlier {fmt} export of tinyconv; refusing to replace "
                                "it, with or without --force: choose another --out")
        if not force:
            raise TinyconvError(f"{out}: holds an earlier {fmt} export; pass --force to replace it")


# ----------------------------------------------------------------------------------------- converters


def write_savedmodel(deploy: keras.Model, folder: Path) -> None:
    """Keras' SavedModel export: the `serve` endpoint (also `serving_default`) maps pixels to logits."""
    deploy.export(str(folder), format="tf_saved_model", verbose=False)


def write_tflite(deploy: keras.Model, path: Path, quantize: str | None = None, calibration=None) -> None:
    """TFLiteConverter on the SavedModel: float32; float16 weights; int8 weights with float activations
    (`int8`); or int8 weights and activations with float fallback for ops without an int8 kernel (`int8-full`,
    activation ranges calibrated on `calibration`, uint8 [N, 64, 64, 3])."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        write_savedmodel(deploy, Path(tmp) / "savedmodel")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "savedmodel"), signature_keys=["serve"])
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":  # no representative dataset: weights only, activations stay float
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "int8-full":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        flatbuffer = converter.convert()
    path.write_bytes(flatbuffer)


def write_onnx(deploy: keras.Model, path: Path) -> None:
    """Keras' ONNX export (tf2onnx on TensorFlow)."""
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *deploy.input_shape[1:]], tf.uint8, name=INPUT_NAME)]
    with warnings.catch_warnings():
        # Keras' patch_tf2onnx (keras/src/export/tf2onnx_lib.py) asks hasattr(np, "object"), which NumPy 2 answers
        # with this FutureWarning on every export: the file is right, the line is noise (and an error under -W error)
        warnings.filterwarnings("ignore", message="In the future `np.object` will be defined", category=FutureWarning)
        deploy.export(str(path), format="onnx", verbose=False, input_signature=signature)


def attach_metadata(path: Path, fmt: str, metadata: dict) -> None:
    """Store `metadata` in the exported artifact, as each format allows (see the module docstring)."""
    text = json.dumps(metadata, default=fileio.json_default)
    if fmt == "savedmodel":
        (path / fileio.MODEL_METADATA_NAME).write_text(text)
    elif fmt == "tflite":
        with zipfile.ZipFile(path, "a") as archive:  # appended after the flatbuffer
            archive.writestr(fileio.MODEL_METADATA_NAME, text)
    else:
        import onnx

        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = EXPORT_METADATA_KEY, text
        onnx.save(proto, str(path))


# --------------------------------------------------------------------------------------------- checks


def check_images(data_dir, wnids) -> np.ndarray:
    """The fixed check batch: CHECK_IMAGES val images of the model's classes, evenly spaced (uint8)."""
    val = load_split(data_dir, "val", classes=wnids)
    index = np.linspace(0, len(val.images) - 1, min(CHECK_IMAGES, len(val.images))).astype(int)
    return np.ascontiguousarray(val.images[index])


def shipped_check_images() -> np.ndarray:
    """The check images shipped with tinyconv (SHIPPED_CHECK_IMAGES): uint8 [12, 64, 64, 3] val images of 12
    classes of Tiny ImageNet, in the order of their file names (<wnid>_<val file>.png)."""
    from PIL import Image

    paths = sorted(SHIPPED_CHECK_IMAGES.glob("*.png"))
    try:
        if not paths:
            raise FileNotFoundError(SHIPPED_CHECK_IMAGES)
        images = np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8) for path in paths])
    except (OSError, ValueError) as exc:  # a broken installation: say which folder, not a traceback
        raise TinyconvError(f"{SHIPPED_CHECK_IMAGES}: the check images shipped with tinyconv are missing or "
                            f"unreadable ({type(exc).__name__}); reinstall tinyconv or pass --data-dir") from None
    if images.shape[1:] != (64, 64, 3):
        raise TinyconvError(f"{SHIPPED_CHECK_IMAGES}: holds images of {images.shape[1:]}, not 64 x 64 RGB")
    return np.ascontiguousarray(images)


def parity_images(data_dir, wnids) -> tuple[np.ndarray, str]:
    """(the check batch, what it is for messages): CHECK_IMAGES val images of the model's classes when the
    dataset is there (check_images), else the images shipped with tinyconv."""
    if dataset_root(data_dir).is_dir():  # a dataset that is there but broken is its own one-line error
        images = check_images(data_dir, wnids)
        return images, f"{len(images)} val images"
    images = shipped_check_images()
    return images, f"{len(images)} images shipped with tinyconv (no dataset in {data_dir})"


def calibration_images(data_dir, wnids) -> np.ndarray:
    """CALIBRATION_IMAGES train images of the model's classes, evenly spaced: int8-full calibration never sees
    val."""
    train = load_split(data_dir, "train", classes=wnids)
    index = np.linspace(0, len(train.images) - 1, min(CALIBRATION_IMAGES, len(train.images))).astype(int)
    return np.ascontiguousarray(train.images[index])


def relative_difference(exported: np.ndarray, reference: np.ndarray) -> float:
    """max |exported - reference| / max |reference|: the largest error on the scale of the logits."""
    return float(np.max(np.abs(exported - reference)) / max(float(np.max(np.abs(reference))), 1e-12))


def parity(exported: np.ndarray, reference: np.ndarray) -> dict:
    """Max relative difference and top-1 agreement of two logit arrays [N, K]."""
    return {
        "images": int(len(reference)),
        "max_relative_difference": relative_difference(exported, reference),
        "top1_agreement": float(np.mean(exported.argmax(-1) == reference.argmax(-1))),
    }


# --------------------------------------------------------------------------------------------- export


def export_model(model_or_path, fmt: str, out=None, quantize: str | None = None, data_dir=None,
                 val_accuracy: bool | None = None, force: bool = False, progress: bool = False) -> dict:
    """Export a model (a .keras file, a run folder or a keras.Model) and check the result on the spot.

    Args:
        model_or_path: what `tinyconv.deploy.inference.load_run_model` takes.
        fmt: "savedmodel", "tflite" or "onnx".
        out: the file (a folder for "savedmodel"); default: beside the model (`default_output`).
        quantize: None, or one of QUANTIZATIONS: "float16", "int8", "int8-full" (TFLite only).
        data_dir: the folder holding tiny-imagenet-200/ (the check's val images; int8-full calibration images).
            Without a dataset there, the check runs on the images shipped with tinyconv (parity_images).
        val_accuracy: also measure val top-1 of the Keras model and the export (default: when quantized and
            the dataset is there).
        force: replace an earlier export of `fmt` at `out` (never anything else: see check_output).
        progress: say each step on stderr as it starts, once the checks of the model and `out` have passed
            (converting takes from seconds to a minute), with tqdm bars over the val images when val accuracy is
            measured.
    Returns:
        {"format", "quantize", "out", "bytes", "check": {"images", "checked_on", "max_relative_difference",
         "top1_agreement", "passed", "criterion"}, "val": None or {"images", "keras_top1", "exported_top1",
         "drop"}, "val_skipped": None or why val accuracy was not measured}
    Raises TinyconvError (nothing written) for a bad format, an unwritable `out`, an `out` that is the model or
    its folder or anything but an earlier export of `fmt` (that one too without `force`), a float32 export
    whose check fails, or int8-full or val_accuracy=True without the dataset.
    """
    if fmt not in FORMATS:
        raise TinyconvError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise TinyconvError(f"unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if quantize is not None and fmt != "tflite":
        raise TinyconvError(f"--quantize applies to the tflite format only, not {fmt}")
    say = _step if progress else (lambda text: None)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    have_data = dataset_root(data_dir).is_dir()
    if not have_data and (quantize == "int8-full" or val_accuracy):
        needs = "int8-full calibrates on train images" if quantize == "int8-full" else "--val-accuracy measures on val"
        raise TinyconvError(f"{needs}: no tiny-imagenet-200/ in {data_dir}; pass --data-dir or set $TINYCONV_DATA_DIR")
    model, run, path = load_run_model(model_or_path)
    check_input_shape(model, path)
    if out is None:
        if path is None:
            raise TinyconvError("exporting a keras.Model needs an output path (out=...)")
        out = default_output(path, fmt, quantize)
    out = Path(out)
    check_output(out, fmt, path, force)
    classes = model_classes(model, run, data_dir, path=path)
    metadata = export_metadata(classes, path or model.name, fmt, quantize)
    images, checked_on = parity_images(data_dir, classes.wnids)
    calibration = calibration_images(data_dir, classes.wnids) if quantize == "int8-full" else None
    val_skipped = None
    if val_accuracy is None and quantize is not None and not have_data:
        val_skipped = f"no dataset in {data_dir}"

    deploy = deploy_model(model)
    # written under a temporary name (a file, or a folder for a SavedModel) and moved onto `out` only once
    # checked: a failed or refused export leaves nothing behind, and an OS failure is one line naming `out`
    with fileio.atomic_path(out, f".{fmt}" if fmt != "savedmodel" else "") as tmp:
        # traced with ops the converter knows (fast_path.inference_graph): Erfc is no ONNX op, Erf no TFLite builtin
        with inference_graph("erf" if fmt == "onnx" else "tensorflow"):
            say(f"converting to {fmt}" + (f" ({quantize})" if quantize else "")
                + (f", calibrated on {len(calibration)} train images" if calibration is not None else ""))
            if fmt == "savedmodel":
                write_savedmodel(deploy, tmp)
            elif fmt == "tflite":
                write_tflite(deploy, tmp, quantize, calibration)
            else:
                write_onnx(deploy, tmp)
            attach_metadata(tmp, fmt, metadata)
        say(f"checking it against the Keras model on {checked_on}")
        exported = load_exported(tmp, fmt)
        check = {**parity(exported.logits(images), predict_logits(model, images)), "checked_on": checked_on}
        if quantize:
            check["criterion"] = "top-1 agreement 100%"
            check["passed"] = check["top1_agreement"] == 1.0
        else:
            check["criterion"] = f"max relative difference <= {FLOAT32_TOLERANCE:g}"
            check["passed"] = check["max_relative_difference"] <= FLOAT32_TOLERANCE
            if not check["passed"]:
                raise TinyconvError(
                    f"{out}: the {fmt} export differs from the Keras model by {check['max_relative_difference']:.2e} "
                    f"(relative, on {checked_on}), more than {FLOAT32_TOLERANCE:g}; not written")
        val = None
        if val_accuracy if val_accuracy is not None else (quantize is not None and have_data):
            say("measuring val top-1 of the Keras model and of the export")
            val = val_accuracies(model, exported, data_dir, classes, progress=progress)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.is_dir() else out.stat().st_size
    return {"format": fmt, "quantize": quantize, "out": str(out), "bytes": int(size), "classes": len(classes.wnids),
            "check": check, "val": val, "val_skipped": val_skipped}


def _step(text: str) -> None:
    """One line on stderr as a step of an export starts: the conversions take from seconds to a minute with no
    output of their own (stdout keeps the report, which --json makes one JSON object)."""
    print(f"export: {text}", file=sys.stderr, flush=True)


def val_accuracies(model, exported, data_dir, classes, progress: bool = False) -> dict:
    """Val top-1 of the Keras model and of the exported one, on every val image of the model's classes;
    progress=True: a tqdm bar on stderr for each."""
    val = load_split(data_dir, "val", classes=classes.wnids)
    labels = np.asarray(val.labels, dtype=np.int64)
    keras_logits = predict_logits(model, val.images, progress=progress, desc="val, keras")
    keras_top1 = accuracy_report(softmax(keras_logits), labels, classes)["top1"]
    exported_logits = exported.logits(val.images, progress=progress, desc=f"val, {exported.format}")
    exported_top1 = accuracy_report(softmax(exported_logits), labels, classes)["top1"]
    return {"images": int(len(labels)), "keras_top1": keras_top1, "exported_top1": exported_top1,
            "drop": keras_top1 - exported_top1}


def format_export(report: dict) -> str:
    """What was written and the check's result, as a few lines."""
    check = report["check"]
    quantize = report["quantize"]
    kind = report["format"] + (f" ({quantize}: {QUANTIZATION_KINDS[quantize]})" if quantize else "")
    lines = [
        f"exported {kind}: {report['out']} ({report['bytes'] / 1e6:.1f} MB, {report['classes']} classes)",
        "input: pixels uint8 [B, 64, 64, 3] RGB 0..255 (preprocessing inside); output: logits float32 "
        f"[B, {report['classes']}] (no softmax); the class list is carried in the file",
        f"parity checked on {check.get('checked_on') or str(check['images']) + ' val images'}: "
        f"max relative difference {check['max_relative_difference']:.2e}, "
        f"top-1 agreement {check['top1_agreement']:.1%} ({check['criterion']}: "
        f"{'passed' if check['passed'] else 'NOT MET'})",
    ]
    val = report.get("val")
    if val:
        lines.append(f"val top-1 on {val['images']} images: keras {val['keras_top1']:.2%}, exported "
                     f"{val['exported_top1']:.2%} (drop {val['drop'] * 100:+.2f} points)")
    elif report.get("val_skipped"):
        lines.append(f"val top-1 not measured: {report['val_skipped']}")
    return "\n".join(lines)
