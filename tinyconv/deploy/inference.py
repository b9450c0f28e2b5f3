"""Using a trained model: load a run's model and class list, logits, evaluate on val, predict images.

    result = evaluate("runs/tiny-quick")                      # top-1/top-5/per-class on val, with flip TTA
    print(format_predictions(predict("runs/tiny-quick", ["cat.jpg"])))

The accuracy computation (`topk_hits`, `per_class_mean`) and the class-name mapping (`model_classes`) are
written once here; evaluate and tinyconv.study.analysis (notebook 05) both use them.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops
from PIL import Image, ImageOps, UnidentifiedImageError

from tinyconv import fileio, runtime
import tinyconv.model.layers  # noqa: F401  (registers the custom layers, so saved models load)
import tinyconv.training.schedule  # noqa: F401  (registers WarmupCosine, the saved optimizer's schedule)
from tinyconv.data.dataset import OFFICIAL_COUNTS, default_data_dir, load_split, selected_classes
from tinyconv.errors import TinyconvError
from tinyconv.data.augment import normalize
from tinyconv.progress import progress_bar

# ------------------------------------------------------------------------------------------ loading


def _resolve_model_path(path: Path) -> Path:
    if path.is_dir():
        for name in ("model.keras", "best.keras"):
            if (path / name).exists():
                return path / name
        raise TinyconvError(f"{path} holds no model.keras or best.keras")
    if not path.exists():
        raise TinyconvError(f"{path}: no such model file")
    if path.suffix != ".keras":
        raise TinyconvError(f"{path}: not a .keras model file")
    return path


KERAS_FILE_MEMBERS = ("config.json", "model.weights.h5")  # what every .keras zip that Keras 3 writes holds


def load_keras_file(path) -> keras.Model:
    """keras.saving.load_model(path) (safe mode), or one TinyconvError "<path> is damaged or not a Keras model
    file (why)": every .keras that tinyconv loads (evaluate, predict, export, localize, the notebooks) comes here.

    The zip is checked first (each member's CRC too: 7 ms for the seed's 11 MB) because Keras reports a truncated
    or foreign file as "File not found" for a file that exists, and reads a member that is damaged inside with an
    HDF5 error stack or not at all.
    """
    path = Path(path)

    def damaged(why: str) -> TinyconvError:
        return TinyconvError(f"{path} is damaged or not a Keras model file ({why})")

    try:
        with open(path, "rb") as file:
            head = file.read(4)
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            # a zip's directory is at its end: a file that starts like a zip but has none was cut short
            raise damaged("truncated: a zip whose end is missing" if head == b"PK\x03\x04" else
                          "not a zip archive") from None
        with archive:
            names = set(archive.namelist())
            missing = [name for name in KERAS_FILE_MEMBERS if name not in names]
            if missing:
                raise damaged(f"a zip without {' and '.join(missing)}")
            try:
                bad = archive.testzip()  # the first member whose data does not match its CRC, if any
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a member cut short or not deflate data
                raise damaged(f"a damaged zip: {exc}") from None
            if bad is not None:
                raise damaged(f"its member {bad} fails its CRC check")
    except OSError as exc:
        raise damaged(f"unreadable: {fileio.os_error_reason(exc)}") from None
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # an intact zip Keras still refuses: a foreign layer, a config of another version
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise damaged(f"{type(exc).__name__}: {first_line}".rstrip(": ")) from None


def load_run_model(model_or_path):
    """(keras.Model, run config dict or None, model path or None) for a model, a .keras file or a run folder.

    The run config is the config.json beside the model file (class list and names). A model trained in
    mixed precision computes in float32 where there is no GPU (see `in_float32`).
    """
    if isinstance(model_or_path, keras.Model):
        return model_or_path, None, None

    path = _resolve_model_path(Path(model_or_path))
    model = load_keras_file(path)
    if not runtime.has_gpu():
        model = in_float32(model)
    config_path = path.parent / "config.json"
    run = fileio.read_model_metadata(path)  # the class list the file carries; a run's config.json wins
    if config_path.exists():
        try:
            run = json.loads(config_path.read_bytes().decode("utf-8"))  # decoded whole: exc.start is the offset
        except UnicodeDecodeError as exc:  # a ValueError too: said in the words the dataset's text files use
            raise TinyconvError(f"{config_path}: unreadable run config: {fileio.not_utf8(exc)}") from None
        except (OSError, ValueError) as exc:  # ValueError: not JSON
            raise TinyconvError(f"{config_path}: unreadable run config ({exc})") from None
        # the class list is read from it as lists of strings: anything else would fail later, far from the file
        if not isinstance(run, dict):
            raise TinyconvError(f"{config_path}: not a run config (a JSON object), but {_json_kind(run)}")
        for key in ("wnids", "names", "words"):
            if run.get(key) is not None and not (isinstance(run[key], list) and all(isinstance(item, str)
                                                                                    for item in run[key])):
                raise TinyconvError(f"{config_path}: not a run config: its {key} is {_json_kind(run[key])}, "
                                    "not a list of strings")
    return model, run, path


def _json_kind(value) -> str:
    """What a parsed JSON value is, in JSON's words ("an array", "a number"), for one-line refusals."""
    if isinstance(value, list) and value and not all(isinstance(item, str) for item in value):
        return "an array holding other things than strings"
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "true or false", int: "a number",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def in_float32(model: keras.Model) -> keras.Model:
    """`model` itself if it computes in float32, else a copy with the same weights whose layers all do.

    A model trained under mixed_bfloat16 or mixed_float16 keeps float32 weights but computes in 16 bits;
    a CPU has no fast 16-bit convolutions (evaluating the seed took minutes instead of seconds), and
    float32 is the more exact of the two, so inference without a GPU runs the copy.
    """
    config = model.get_config()

    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and str(node.get("config", {}).get("name", "")).startswith("mixed_"):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [to_float32(value) for value in node]
        return node

    converted = to_float32(config)
    if converted == config:
        return model
    copy = model.__class__.from_config(converted)
    copy.set_weights(model.get_weights())
    return copy


def check_input_shape(model: keras.Model, path=None) -> None:
    """One line, not a Keras traceback, for a model that does not take [B, 64, 64, 3] images."""
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if shape != (64, 64, 3):
        raise TinyconvError(f"{path or model.name}: the model takes inputs of shape {shape or model.input_shape}, "
                            "not the 64 x 64 RGB images of Tiny ImageNet")


@dataclass
class ClassList:
    """The classes of a model's outputs, in output order: wnids, short names and full words.txt entries."""

    wnids: list[str]
    names: list[str]
    words: list[str]


def model_classes(model, run: dict | None, data_dir=None, classes=None, *, path=None) -> ClassList:
    """The class list of a model's outputs: from its run config or the list the model file carries, else
    `classes`, else all of wnids.txt when the model has that many outputs. A model of fewer outputs without a
    class list is refused rather than given the first K names (which would be wrong for any other subset).
    `path`: the model file, which the refusal names (else the model's Keras name).
    Raises TinyconvError when the list does not match the outputs."""
    num_outputs = int(model.output_shape[-1])
    if run and run.get("wnids"):
        wnids = list(run["wnids"])
        names = list(run.get("names") or wnids)
        words = list(run.get("words") or names)
    else:
        if classes is None and num_outputs != OFFICIAL_COUNTS["classes"]:
            # no --classes on the command line: the advice is what works there, and evaluate()'s argument for Python
            raise TinyconvError(
                f"{path or model.name}: a model of {num_outputs} classes that carries no class list (an older file, "
                "without its run's config.json): put that config.json beside it (in Python, evaluate() also takes "
                "the list as `classes=`)"
            )
        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        wnids, names, words_by_wnid = selected_classes(data_dir, classes if classes is not None else num_outputs)
        words = [words_by_wnid[wnid] for wnid in wnids]
    if len(wnids) != num_outputs:
        raise TinyconvError(f"the model has {num_outputs} outputs but its class list names {len(wnids)} classes")
    return ClassList(wnids, names, words)


def predict_logits(model, images: np.ndarray, batch_size: int = 256, flip: bool = False, *, progress: bool = False,
                   desc: str | None = None) -> np.ndarray:
    """Logits [N, K] for uint8 images [N, 64, 64, 3] (an array or memmap); flip=True mirrors them left-right first.

    On any backend: batches are read and normalised one at a time, so a memmap is never loaded whole.
    progress=True shows a tqdm bar on stderr, counted in images and advanced per batch, labelled `desc`
    (default "predict", or "predict, flipped"): 10,000 val images take minutes on 2 CPU cores.
    """
    batches = _NormalizedBatches(images, batch_size, flip)
    if not progress:
        return np.asarray(model.predict(batches, verbose=0), dtype=np.float32)
    with progress_bar(len(images), desc or ("predict, flipped" if flip else "predict")) as bar:
        # Keras' own bar (verbose=1) goes to stdout, which --json keeps for the result: this one writes to stderr
        callback = _BarCallback(bar, len(images), batches.batch_size)
        return np.asarray(model.predict(batches, verbose=0, callbacks=[callback]), dtype=np.float32)


class _BarCallback(keras.callbacks.Callback):
    """Advances a progress bar by each predicted batch's images (the last batch may be short)."""

    def __init__(self, bar, total: int, batch_size: int):
        super().__init__()
        self.bar, self.total, self.batch_size = bar, int(total), int(batch_size)

    def on_predict_batch_end(self, batch, logs=None):
        self.bar.update(min(self.batch_size, self.total - self.bar.n))


class _NormalizedBatches(keras.utils.PyDataset):
    """images[i*B:(i+1)*B], normalised (and mirrored when `flip`), as model inputs."""

    def __init__(self, images, batch_size: int, flip: bool):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.batch_size, self.flip = images, int(batch_size), bool(flip)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int):
        x = normalize(np.ascontiguousarray(self.images[index * self.batch_size : (index + 1) * self.batch_size]))
        return (ops.flip(x, axis=2) if self.flip else x,)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [N, K] (lists become float64 arrays; arrays keep their dtype)."""
    logits = np.asarray(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------ exported models
# Files written by tinyconv.deploy.export: the same interface in each format (uint8 pixels in, logits out, the class
# list carried inside). Loading and running them lives here, beside the Keras path, so that predict serves both.

EXPORT_FORMATS = ("savedmodel", "tflite", "onnx")
EXPORT_METADATA_KEY = "tinyconv"  # the ONNX metadata_props key that holds the export's JSON


def exported_format(path) -> str | None:
    """"onnx", "tflite" or "savedmodel" for an exported model's path (by suffix; a folder with saved_model.pb),
    None for anything else (a .keras file, a run folder)."""
    path = Path(path)
    if path.suffix in (".onnx", ".tflite"):
        return path.suffix[1:]
    if path.is_dir() and (path / "saved_model.pb").exists():
        return "savedmodel"
    return None


def read_exported_metadata(path, fmt: str | None = None) -> dict | None:
    """The JSON (interface and class list) an exported model carries, or None."""
    path, fmt = Path(path), fmt or exported_format(path)
    try:
        if fmt == "savedmodel":
            return json.loads((path / fileio.MODEL_METADATA_NAME).read_text())
        if fmt == "tflite":
            return fileio.read_model_metadata(path)  # the zip appended to the flatbuffer
        if fmt == "onnx":
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            entries = {entry.key: entry.value for entry in proto.metadata_props}
            return json.loads(entries[EXPORT_METADATA_KEY]) if EXPORT_METADATA_KEY in entries else None
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged file: protobuf, JSON and zip readers each raise their own kind
        raise TinyconvError(f"{path}: unreadable {fmt} model ({type(exc).__name__})") from None
    return None


class ExportedModel:
    """An exported model run by its own runtime: TensorFlow (SavedModel), the TFLite interpreter or ONNX Runtime.

    `logits(images)`: uint8 [N, 64, 64, 3] -> float32 [N, K], in batches of `batch_size`; `run(batch)`: one call.
    Attributes: `path`, `format`, `metadata` (the carried JSON or None), `num_classes`.
    """

    def __init__(self, path, fmt: str, batch_size: int = 64):
        self.path, self.format, self.batch_size = Path(path), fmt, int(batch_size)
        self.metadata = read_exported_metadata(self.path, fmt)
        try:
            self._run = {"savedmodel": self._savedmodel, "tflite": self._tflite, "onnx": self._onnx}[fmt]()
        except TinyconvError:
            raise
        except Exception as exc:  # a damaged or foreign file: one line, whatever the runtime raised
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise TinyconvError(f"{self.path}: cannot load the {fmt} model ({type(exc).__name__}: {message})") from None
        self.num_classes = int(self.logits(np.zeros((1, 64, 64, 3), np.uint8)).shape[-1])

    def _savedmodel(self):
        import tensorflow as tf

        serve = tf.saved_model.load(str(self.path)).signatures["serving_default"]
        name = list(serve.structured_input_signature[1])[0]
        return lambda x: next(iter(serve(**{name: tf.constant(x)}).values())).numpy()

    def _tflite(self):
        try:  # LiteRT, TFLite's runtime since tf.lite.Interpreter was deprecated (tinyconv[deploy] installs it)
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tensorflow.lite import Interpreter

        interpreter = Interpreter(model_path=str(self.path), num_threads=os.cpu_count())
        with runtime.native_logs_hidden():  # the first allocation applies XNNPACK and prints "INFO: Created
            interpreter.allocate_tensors()  # TensorFlow Lite XNNPACK delegate for CPU." on stderr; later ones do not
        source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
        shape = [None]

        def run(x):
            if shape[0] != x.shape:  # resize only when the batch changes: it reallocates every tensor
                interpreter.resize_tensor_input(source, x.shape)
                interpreter.allocate_tensors()
                shape[0] = x.shape
            interpreter.set_tensor(source, x)
            interpreter.invoke()
            return interpreter.get_tensor(target).copy()

        return run

    def _onnx(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are not the user's business
        session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of one batch (uint8 [B, 64, 64, 3], C-contiguous) in a single call of the runtime."""
        return self._run(batch)

    def logits(self, images, *, progress: bool = False, desc: str | None = None) -> np.ndarray:
        """Logits float32 [N, K] of uint8 images [N, 64, 64, 3], in batches; progress=True: a tqdm bar on stderr
        labelled `desc` (default: the format)."""
        batches = []
        with progress_bar(len(images), desc or self.format, enabled=progress) as bar:
            for i in range(0, len(images), self.batch_size):
                batch = np.ascontiguousarray(images[i : i + self.batch_size], dtype=np.uint8)
                batches.append(np.asarray(self._run(batch), np.float32))
                bar.update(len(batch))
        return np.concatenate(batches) if batches else np.zeros((0, self.num_classes), np.float32)


def load_exported(path, fmt: str | None = None, batch_size: int = 64) -> ExportedModel:
    """An exported model (tinyconv.deploy.export) ready to run; fmt defaults to `exported_format(path)`."""
    path = Path(path)
    if not path.exists():
        raise TinyconvError(f"{path}: no such model file")
    fmt = fmt or exported_format(path)
    if fmt not in EXPORT_FORMATS:
        raise TinyconvError(f"{path}: not an exported model (.onnx, .tflite or a SavedModel folder)")
    return ExportedModel(path, fmt, batch_size)


# ------------------------------------------------------------------------------------------ accuracy


def topk_hits(scores, labels, k: int = 1) -> np.ndarray:
    """Whether each row's label is among its k highest scores (logits or probabilities): bool [N]."""
    ranked = np.argsort(-np.asarray(scores), axis=-1, kind="stable")[:, :k]  # [N, k]; ties: the lower class
    return (ranked == np.asarray(labels)[:, None]).any(axis=-1)


def per_class_mean(hits, labels, num_classes: int) -> np.ndarray:
    """Mean of `hits` [N] over the rows of each class: float64 [num_classes] (NaN for a class without rows)."""
    labels = np.asarray(labels)
    total = np.bincount(labels, weights=np.asarray(hits, dtype=np.float64), minlength=num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def topk_accuracy(labels, logits, k: int = 1) -> float:
    """Share of rows whose label is among the k largest logits."""
    return float(topk_hits(logits, labels, k).mean())


def per_class_accuracy(labels, predictions, num_classes: int) -> np.ndarray:
    """Top-1 accuracy per class from predicted classes [N]: float64 [num_classes] (NaN for an empty class)."""
    labels = np.asarray(labels)
    return per_class_mean(np.asarray(predictions) == labels, labels, num_classes)


def accuracy_report(probs: np.ndarray, labels: np.ndarray, classes: ClassList) -> dict:
    """{"top1", "top5", "per_class": [{wnid, name, images, top1, top5}]}; top-5 is top-K below 5 classes."""
    num_classes = len(classes.wnids)
    hits1 = topk_hits(probs, labels, 1)
    hits5 = topk_hits(probs, labels, min(5, probs.shape[-1]))
    top1, top5 = per_class_mean(hits1, labels, num_classes), per_class_mean(hits5, labels, num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    per_class = [
        {"wnid": wnid, "name": name, "images": int(counts[i]), "top1": float(top1[i]), "top5": float(top5[i])}
        for i, (wnid, name) in enumerate(zip(classes.wnids, classes.names))
    ]
    return {"top1": float(hits1.mean()), "top5": float(hits5.mean()), "per_class": per_class}


def evaluate(model_or_path, data_dir=None, tta: bool = True, *, classes=None, batch_size: int = 256,
             progress: bool = False) -> dict:
    """Top-1, top-5 and per-class accuracy on the official val images of the model's classes.

    Args:
        model_or_path: a keras.Model, a .keras file or a run folder (its model.keras). The class list comes
            from the run's config.json; a bare model uses `classes` or the first K classes of wnids.txt.
        data_dir: the folder holding tiny-imagenet-200/ (default: tinyconv.data.dataset.default_data_dir()).
        tta: also score the average of the softmax of x and of x flipped left-right.
        classes: for a model without a run config: None (first K) or a list of wnids.
        progress: a tqdm bar on stderr for each pass over val ("val", then "val, flipped" for TTA); the
            numbers are the same either way.
    Returns:
        {"model", "classes", "images", "top1", "top5", "per_class": [{wnid, name, images, top1, top5}],
         "tta": {"top1", "top5", "per_class"} or None}; accuracies are fractions.
    """
    model, run, path = load_run_model(model_or_path)
    check_input_shape(model, path)
    class_list = model_classes(model, run, data_dir, classes, path=path)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    val = load_split(data_dir, "val", classes=class_list.wnids)
    labels = np.asarray(val.labels, dtype=np.int64)
    probs = softmax(predict_logits(model, val.images, batch_size, progress=progress, desc="val"))  # [N, K]
    result = {
        "model": str(path) if path else model.name,
        "classes": len(class_list.wnids),
        "images": int(len(labels)),
        **accuracy_report(probs, labels, class_list),
        "tta": None,
    }
    if tta:
        flipped = softmax(predict_logits(model, val.images, batch_size, flip=True, progress=progress,
                                         desc="val, flipped"))
        result["tta"] = accuracy_report((probs + flipped) / 2.0, labels, class_list)
    return result


def format_evaluation(result: dict, rows: int = 10) -> str:
    """A readable summary: overall top-1/top-5 (with TTA if present) and the worst and best classes."""
    lines = [f"model: {result['model']}   classes: {result['classes']}   val images: {result['images']}"]
    line = f"top-1 {result['top1']:.2%}   top-5 {result['top5']:.2%}"
    tta = result.get("tta")
    if tta:
        line += f"   with flip TTA: top-1 {tta['top1']:.2%}   top-5 {tta['top5']:.2%}"
    lines.append(line)
    per_class = sorted(result["per_class"], key=lambda c: (c["top1"], c["wnid"]))
    if len(per_class) <= 2 * rows:
        lines.append("per-class top-1:")
        shown = [("", per_class)]
    else:
        shown = [(f"worst {rows}", per_class[:rows]), (f"best {rows}", per_class[-rows:])]
    for heading, entries in shown:
        if heading:
            lines.append(f"per-class top-1, {heading}:")
        for entry in entries:
            lines.append(f"  {entry['top1']:7.1%}  {entry['name']} ({entry['wnid']}, {entry['images']} images)")
    return "\n".join(lines)


# Images larger than this are refused before they are decoded (PIL's own bomb check only warns up to ~179 MP,
# after which it raises a traceback): 50 MP is a 8,660 x 5,770 photo, far beyond any use at 64 x 64.
MAX_IMAGE_PIXELS = 50_000_000
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
IMAGE_SIZE = 64  # the side of the square images every tinyconv model takes (check_input_shape)

# How a photo of another aspect becomes a square IMAGE_SIZE image. "crop", the default: the centred square of
# side min(width, height), then resized: objects keep the proportions they have in the photo (and in the
# training images); what lies beyond that square is not seen. "squash": the whole photo resized to the square:
# nothing is cut off, but everything is stretched or squeezed (an 800 x 400 bus, squeezed to half its width,
# was taken for a king penguin).
RESIZE_MODES = ("crop", "squash")  # `tinyconv predict/localize --resize` offers the same (tests/test_cli.py)


def check_resize(mode) -> str:
    """`mode` if it is one of RESIZE_MODES, else one TinyconvError line."""
    if mode not in RESIZE_MODES:
        raise TinyconvError(f"unknown resize mode {mode!r}: choose one of {', '.join(RESIZE_MODES)}")
    return mode


def load_image(path, resize: str = "crop") -> np.ndarray:
    """A JPEG or PNG of any size as uint8 [64, 64, 3] RGB (EXIF rotation applied, resized with antialiasing).

    resize: "crop" (default: the centred square, then resized) or "squash" (the whole image resized, its
    aspect lost); see RESIZE_MODES.
    16-bit images are scaled to 8 bits (not clipped); transparency is composited on white (ALPHA_BACKGROUND);
    images over MAX_IMAGE_PIXELS are refused before decoding.
    """
    check_resize(resize)
    path = Path(path)
    if not path.exists():
        raise TinyconvError(f"{path}: no such image file")
    if path.is_dir():
        raise TinyconvError(f"{path}: is a folder, not an image file")
    try:
        with _open_unchecked(path) as picture:
            if picture.format not in ("JPEG", "PNG", "MPO"):
                raise TinyconvError(f"{path}: a {picture.format} image; only JPEG and PNG are supported")
            width, height = picture.size
            if width * height > MAX_IMAGE_PIXELS:
                raise TinyconvError(f"{path}: {width} x {height} pixels, more than the {MAX_IMAGE_PIXELS:,} this "
                                    "command decodes; downscale it first")
            return _to_rgb64(ImageOps.exif_transpose(picture), resize)
    except Image.DecompressionBombError:
        raise TinyconvError(f"{path}: too many pixels to decode safely") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise TinyconvError(f"{path}: not a readable JPEG or PNG image ({type(exc).__name__})") from None


def _open_unchecked(path):
    """Image.open without PIL's own pixel check (a traceback past ~179 MP): load_image checks the size itself."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _to_rgb64(picture, resize: str = "crop") -> np.ndarray:
    """Any PIL image -> uint8 [64, 64, 3]: 16-bit scaled to 8, alpha composited, centre-cropped to a square
    (resize="crop") and resized (bicubic)."""
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit integer) grayscale
        values = np.asarray(picture, dtype=np.float64)
        top = 65535.0 if picture.mode != "I" or values.max() > 255 else 255.0
        picture = Image.fromarray(np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8), mode="L")
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        picture = Image.alpha_composite(background, rgba)
    picture = picture.convert("RGB")
    if resize == "crop":
        picture = picture.crop(centre_square(*picture.size))
    picture = picture.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(picture, dtype=np.uint8)


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The PIL box (left, top, right, bottom; right and bottom exclusive) of the largest centred square of an
    image: side min(width, height), an odd leftover pixel going to the right or bottom."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def as_uint8_images(images: np.ndarray) -> np.ndarray:
    """Images [N, 64, 64, 3] as uint8: uint8 as is, floats in [0, 1] scaled by 255; anything else refused."""
    if images.ndim != 4 or images.shape[1:] != (64, 64, 3):
        raise TinyconvError(f"images must be [N, 64, 64, 3], got {images.dtype} {images.shape}")
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if images.size and (np.nanmin(images) < 0.0 or np.nanmax(images) > 1.0 or np.isnan(images).any()):
            raise TinyconvError("float images must lie in [0, 1] (pass uint8 for 0..255 pixels), got values in "
                                f"[{np.nanmin(images):.3g}, {np.nanmax(images):.3g}]")
        return np.rint(images * 255.0).astype(np.uint8)
    raise TinyconvError(f"images must be uint8 or float in [0, 1], got {images.dtype}")


def predict(model_or_path, images, data_dir=None, top: int = 5, skip_unreadable: bool = False,
            resize: str = "crop") -> list[dict]:
    """The `top` most likely classes, with names, for each image.

    Args:
        model_or_path: a keras.Model, a .keras file, a run folder, or a model written by `tinyconv export`
            (.onnx, .tflite, SavedModel folder; run by ONNX Runtime, the TFLite interpreter, TensorFlow).
        images: a path or a list of paths to JPEG/PNG files of any size (made 64x64 RGB as `resize` says), or
            an array [N, 64, 64, 3] of uint8 or of floats in [0, 1].
        data_dir: only needed for a model without a run config.json (names come from words.txt).
        top: how many classes per image.
        skip_unreadable: an image file that cannot be read (missing, damaged, not JPEG or PNG, too large) gives
            {"image": path, "error": why} in its place and the others are predicted; by default it raises
            TinyconvError. With no readable image at all the model is not loaded.
        resize: how a file's image becomes a square: "crop" (the centred square, then resized) or "squash"
            (the whole image resized, its proportions lost); see RESIZE_MODES. Arrays are used as given.
    Returns:
        one dict per image, in order: {"image": path or index, "top": [{"rank", "wnid", "name", "words",
        "probability"}]}, or {"image", "error"} for an image skipped as unreadable
    """
    if top < 1:
        raise TinyconvError(f"top must be >= 1, got {top}")
    check_resize(resize)
    errors = {}  # position -> why, for the images skipped as unreadable
    if isinstance(images, np.ndarray):
        pixels, labels = as_uint8_images(images), [str(i) for i in range(len(images))]
    else:
        paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        if not paths:
            raise TinyconvError("no images given")
        loaded = []
        for i, p in enumerate(paths):
            try:
                loaded.append(load_image(p, resize))
            except TinyconvError as exc:
                if not skip_unreadable:
                    raise
                errors[i] = str(exc)
        labels = [str(p) for p in paths]
        if not loaded:
            return [{"image": label, "error": errors[i]} for i, label in enumerate(labels)]
        pixels = np.stack(loaded)  # [N readable, 64, 64, 3]
    if not isinstance(model_or_path, keras.Model) and exported_format(model_or_path):
        exported = load_exported(model_or_path)  # an .onnx, .tflite or SavedModel from tinyconv export
        classes = model_classes(_ClassCount(exported), exported.metadata, data_dir)
        probs = softmax(exported.logits(pixels))  # [N, K]
    else:
        model, run, path = load_run_model(model_or_path)
        check_input_shape(model, path)
        classes = model_classes(model, run, data_dir, path=path)
        probs = softmax(predict_logits(model, pixels, batch_size=64))  # [N, K]
    wnids, names, words = classes.wnids, classes.names, classes.words
    results = []
    rows = iter(probs)  # one row per readable image, in order
    for i, label in enumerate(labels):
        if i in errors:
            results.append({"image": label, "error": errors[i]})
            continue
        row = next(rows)
        ranked = np.argsort(-row)[: min(top, len(wnids))]
        results.append(
            {
                "image": label,
                "top": [
                    {
                        "rank": rank + 1,
                        "wnid": wnids[i],
                        "name": names[i],
                        "words": words[i],
                        "probability": float(row[i]),
                    }
                    for rank, i in enumerate(ranked)
                ],
            }
        )
    return results


class _ClassCount:
    """What model_classes reads of a model (its name and output width), for an exported model."""

    def __init__(self, exported: ExportedModel):
        self.name = str(exported.path)
        self.output_shape = (None, exported.num_classes)


def format_predictions(result: list[dict]) -> str:
    """One block per image: rank, probability, name and wnid (images skipped as unreadable are left out)."""
    lines = []
    for entry in result:
        if "error" in entry:
            continue
        lines.append(entry["image"])
        for guess in entry["top"]:
            lines.append(f"  {guess['rank']}. {guess['probability']:6.1%}  {guess['name']} ({guess['wnid']})")
    return "\n".join(lines)
