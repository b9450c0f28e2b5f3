"""Tiny ImageNet on disk: layout, labels, verification, class subsets and the uint8 cache.

The official layout (what the zip holds):

    tiny-imagenet-200/
      wnids.txt                          the 200 classes, one wnid per line: this order defines the labels
      words.txt                          wnid<TAB>comma-separated names (82,115 wnids, not only the 200)
      train/<wnid>/images/<wnid>_<i>.JPEG            500 per class
      val/images/val_<i>.JPEG + val/val_annotations.txt (file<TAB>wnid<TAB>box)   10,000
      test/images/test_<i>.JPEG                     10,000, unlabeled
The widespread re-organised variant with val/<wnid>/images/ is read too (the folder is the label).

`prepare` decodes the images of the splits it is asked for once into raw uint8 `.npy` arrays under
`data_dir/cache/` (about 1.23 GB for train, 123 MB each for val and test) with a manifest that ties them to the
source listing; `load_split` memory-maps them, so later runs start in well under a second and never decode a
JPEG again. A split is cached when first needed (`load_split` prepares it, saying so in one line): evaluating a
model decodes val alone, not the 100,000 train images as well.

At about 900 lines this module is over the project's ~500-line guide, on purpose: listing, decoding, verifying
and caching share the private listing and decoding helpers (`_list_relative`, `_decode_all`) and one notion of
the layout; split apart, those helpers would have to become a public API of their own for no reader's benefit.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from tinyconv.errors import TinyconvError
from tinyconv.fileio import not_utf8, os_error_advice, os_error_reason, remove_temporaries, temporary_path, write_json
from tinyconv.locks import folder_lock
from tinyconv.processes import start_worker
from tinyconv.progress import progress_bar

DATASET_DIRNAME = "tiny-imagenet-200"
CACHE_DIRNAME = "cache"
MANIFEST_NAME = "manifest.json"
# 2 (2026-12-06): JPEGs decoded as TensorFlow's decode_jpeg decodes them by default (libjpeg-turbo's fast integer
# DCT), which the reference notebook used; version 1 decoded with Pillow (the accurate DCT): 63 % of pixel values
# differ, by about one level. A version-1 cache is stale and is decoded again.
CACHE_VERSION = 2
IMAGE_SIZE = 64
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
# The published dataset: used by verify() to tell "the real Tiny ImageNet, complete" from other datasets.
OFFICIAL_COUNTS = {"classes": 200, "train_per_class": 500, "val": 10_000, "test": 10_000}
# Below this many images decoding stays in-process: starting worker processes costs more than it saves.
PARALLEL_MIN_IMAGES = 2_000
DECODE_CHUNK = 1_000
# verify lists at most this many problems, one line each, and counts the rest: a dataset that is wrong
# throughout (a wrong folder, a failed extraction) would otherwise print a line for each of its 120,000 images
VERIFY_MAX_PROBLEMS = 50


# ------------------------------------------------------------------------------------------- layout


def default_data_dir() -> Path:
    """$TINYCONV_DATA_DIR, else the repository's data/ folder."""
    override = os.environ.get("TINYCONV_DATA_DIR")
    return Path(override).expanduser() if override else Path(__file__).resolve().parents[2] / "data"


def dataset_root(data_dir: Path) -> Path:
    """data_dir / "tiny-imagenet-200"."""
    return Path(data_dir) / DATASET_DIRNAME


def require_root(data_dir: Path) -> Path:
    root = dataset_root(data_dir)
    if not root.is_dir():
        raise TinyconvError(f"no {DATASET_DIRNAME}/ in {Path(data_dir)}; run `tinyconv download` first")
    return root


def read_dataset_text(path: Path) -> str:
    """A text file of the dataset (wnids.txt, words.txt, val_annotations.txt) as UTF-8; TinyconvError naming it when
    it cannot be read or is not UTF-8 text (a damaged or foreign file: a decoding error would escape as a traceback)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TinyconvError(f"cannot read {path}: {os_error_reason(exc)}") from None
    try:
        return data.decode("utf-8")  # callers split it with splitlines(): \r\n and \r end lines too
    except UnicodeDecodeError as exc:
        raise TinyconvError(f"{path} is {not_utf8(exc)}") from None


def read_wnids(root: Path) -> list[str]:
    """The class wnids in the order of wnids.txt (label i is wnids[i])."""
    path = Path(root) / "wnids.txt"
    if not path.is_file():
        raise TinyconvError(f"missing wnids.txt in {root}")
    wnids = [line.strip() for line in read_dataset_text(path).splitlines() if line.strip()]
    if not wnids:
        raise TinyconvError(f"{path} lists no classes")
    seen = set()
    for number, wnid in enumerate(wnids, start=1):
        if wnid in seen:
            raise TinyconvError(f"duplicate wnid {wnid} in {path} line {number}")
        seen.add(wnid)
    return wnids


def read_words(root: Path) -> dict[str, str]:
    """wnid -> the full words.txt entry (comma-separated synonyms)."""
    path = Path(root) / "words.txt"
    if not path.is_file():
        raise TinyconvError(f"missing words.txt in {root}")
    words = {}
    for line in read_dataset_text(path).splitlines():
        wnid, _, entry = line.partition("\t")
        if wnid.strip():
            words[wnid.strip()] = entry.strip()
    return words


def class_names(root: Path, wnids: list[str]) -> list[str]:
    """A short readable name per wnid: the first synonym of its words.txt entry (the wnid if it has none)."""
    words = read_words(root)
    return [(words.get(wnid) or wnid).split(",")[0].strip() for wnid in wnids]


def select_classes(all_wnids: list[str], classes) -> list[str]:
    """The wnids of a subset, in label order.

    Args:
        all_wnids: every wnid, in wnids.txt order.
        classes: None (all), an int K (the first K of wnids.txt) or a list of wnids (kept in the given order).
    """
    if classes is None:
        return list(all_wnids)
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 1 <= classes <= len(all_wnids):
            raise TinyconvError(f"classes must be between 1 and {len(all_wnids)}, got {classes}")
        return list(all_wnids[: int(classes)])
    if isinstance(classes, str):
        classes = [name.strip() for name in classes.split(",") if name.strip()]
    selected = list(classes)
    known = set(all_wnids)
    unknown = [wnid for wnid in selected if wnid not in known]
    if unknown:
        raise TinyconvError(f"unknown class wnid(s) {', '.join(unknown)}: not in wnids.txt")
    if len(set(selected)) != len(selected) or not selected:
        raise TinyconvError(f"classes must be a non-empty list of distinct wnids, got {selected}")
    return selected


def selected_classes(data_dir: Path, classes) -> tuple[list[str], list[str], dict[str, str]]:
    """(wnids, short names, full words.txt entries by wnid) of the classes `classes` selects (see select_classes)."""
    root = require_root(data_dir)  # no dataset at all: say how to get one, not that wnids.txt is missing
    wnids = select_classes(read_wnids(root), classes)
    words = read_words(root)
    return wnids, class_names(root, wnids), {wnid: words.get(wnid, wnid) for wnid in wnids}


def val_layout(root: Path) -> str:
    """"official" (val/images/ + val_annotations.txt) or "by_class" (val/<wnid>/images/)."""
    val = Path(root) / "val"
    if (val / "images").is_dir():
        return "official"
    if val.is_dir() and any((entry / "images").is_dir() for entry in val.iterdir() if entry.is_dir()):
        return "by_class"
    raise TinyconvError(f"missing val/images/ (or val/<wnid>/images/) in {root}")


def _parse_box(fields: list[str]) -> tuple[int, int, int, int] | None:
    try:
        x0, y0, x1, y1 = (int(value) for value in fields)
        return x0, y0, x1, y1
    except ValueError:
        return None


def _val_entries(root: Path) -> list[tuple[str, str, tuple | None, str]]:
    """(file name, wnid, box or None, where) per val image; `where` names the line or folder it came from."""
    root = Path(root)
    annotations = root / "val" / "val_annotations.txt"
    if val_layout(root) == "by_class":
        boxes = {}
        if annotations.is_file():  # some re-organised copies keep it: use it for the boxes only
            for line in read_dataset_text(annotations).splitlines():
                fields = line.split("\t")
                if len(fields) == 6:
                    boxes[fields[0]] = _parse_box(fields[2:])
        entries = []
        for folder in sorted((root / "val").iterdir()):
            if (folder / "images").is_dir():
                for name in _image_names(folder / "images"):
                    entries.append((name, folder.name, boxes.get(name), f"val/{folder.name}/images/"))
        return entries
    if not annotations.is_file():
        raise TinyconvError(f"missing val/val_annotations.txt in {root}")
    entries = []
    for number, line in enumerate(read_dataset_text(annotations).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        box = _parse_box(fields[2:6]) if len(fields) == 6 else None
        if len(fields) != 6 or box is None:
            raise TinyconvError(
                f"malformed line {number} in {annotations}: expected file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1"
            )
        entries.append((fields[0], fields[1], box, f"{annotations} line {number}"))
    return entries


def read_val_annotations(root: Path) -> dict[str, tuple[str, tuple[int, int, int, int] | None]]:
    """val file name -> (wnid, box (x0, y0, x1, y1)); reads val_annotations.txt or the val/<wnid>/images/ variant.

    In the by-class variant without val_annotations.txt the box is None.
    """
    return {name: (wnid, box) for name, wnid, box, _ in _val_entries(root)}


def _natural_key(name: str):
    # "val_10.JPEG" after "val_9.JPEG": the numbers in the names are the dataset's order.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _image_names(folder: Path) -> list[str]:
    names = [entry.name for entry in os.scandir(folder) if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES]
    return sorted(names, key=_natural_key)


def list_split(root: Path, split: str, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """The image files of a split and their labels (index into `wnids`).

    Args:
        root: the tiny-imagenet-200/ folder.
        split: "train", "val" or "test".
        wnids: the classes to list, in label order (all of wnids.txt or a subset).

    Returns:
        (paths, labels int32 [N]); train is ordered by class then file number, val and test by file
        number; test labels are -1. Val images of classes outside `wnids` are left out.

    Raises:
        TinyconvError: missing folders or files, or a val annotation whose wnid is not in wnids.txt.
    """
    root = Path(root)
    relative, labels = _list_relative(root, split, wnids)
    return [root / name for name in relative], labels


def _list_relative(root: Path, split: str, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    """list_split with paths as posix strings relative to root: strings keep the cache check cheap
    (load_split lists 100,000 train files on every call)."""
    root = Path(root)
    if split == "train":
        relative, labels = [], []
        for label, wnid in enumerate(wnids):
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise TinyconvError(f"missing train/{wnid}/images/ in {root} ({wnid} is listed in wnids.txt)")
            names = _image_names(folder)
            relative.extend(f"train/{wnid}/images/{name}" for name in names)
            labels.extend([label] * len(names))
        return relative, np.asarray(labels, dtype=np.int32)
    if split == "val":
        known = set(read_wnids(root))
        index = {wnid: label for label, wnid in enumerate(wnids)}
        layout = val_layout(root)
        entries = sorted(_val_entries(root), key=lambda entry: _natural_key(entry[0]))
        relative, labels = [], []
        for name, wnid, _, where in entries:
            if wnid not in known:
                raise TinyconvError(f"unknown wnid {wnid} in {where}: not in wnids.txt")
            if wnid in index:
                relative.append(f"val/images/{name}" if layout == "official" else f"val/{wnid}/images/{name}")
                labels.append(index[wnid])
        return relative, np.asarray(labels, dtype=np.int32)
    if split == "test":
        folder = root / "test" / "images"
        if not folder.is_dir():
            raise TinyconvError(f"missing test/images/ in {root}")
        relative = [f"test/images/{name}" for name in _image_names(folder)]
        return relative, np.full(len(relative), -1, dtype=np.int32)
    raise TinyconvError(f"unknown split {split!r}: use train, val or test")


# ------------------------------------------------------------------------------------------- decode


def _decode(path: Path) -> tuple[np.ndarray, bool]:
    """(uint8 [64, 64, 3], was_grayscale) of one image file.

    A JPEG is decoded as the reference notebook's `tf.image.decode_jpeg(img, channels=3)` decodes it: TensorFlow's
    default is libjpeg-turbo's fast integer DCT (`dct_method="INTEGER_FAST"`) with fancy upsampling, which
    simplejpeg's `fastdct=True, fastupsample=False` runs too (the same bytes out on 3,000 Tiny ImageNet images,
    tests/test_dataset.py checks it against TensorFlow). Pillow uses the accurate DCT: 63 % of the pixel values of
    Tiny ImageNet's val images come out different, by about one level. Needs no TensorFlow, so the GPU machines
    decode alike. Any other format (a PNG in a dataset of your own) goes through Pillow.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TinyconvError(f"missing image file {path}") from None
    except OSError as exc:
        raise TinyconvError(f"cannot read {path}: {os_error_reason(exc)}") from None
    if simplejpeg.is_jpeg(data):
        try:
            colorspace = simplejpeg.decode_jpeg_header(data)[2]
            # strict (the default): a truncated file fails, as Pillow's load() made it fail before
            image = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
        except ValueError as exc:
            reason = f"truncated ({exc})" if "Premature end" in str(exc) else str(exc)
            raise TinyconvError(f"cannot decode {path}: {reason}") from None
        grayscale = colorspace == "Gray"
    else:
        image, grayscale = _decode_with_pillow(path)
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise TinyconvError(f"{path} is {image.shape[1]}x{image.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return image, grayscale


def _decode_with_pillow(path: Path) -> tuple[np.ndarray, bool]:
    """(uint8 [H, W, 3], was_grayscale) of an image that is not a JPEG, through Pillow."""
    try:
        with Image.open(path) as picture:
            picture.load()  # decodes now: a truncated file fails here, not later
            grayscale = picture.mode in ("L", "LA", "I", "I;16", "1")
            if picture.mode != "RGB":
                picture = picture.convert("RGB")
            image = np.asarray(picture, dtype=np.uint8)
    except FileNotFoundError:
        raise TinyconvError(f"missing image file {path}") from None
    except UnidentifiedImageError:
        raise TinyconvError(f"{path} is not an image PIL can read") from None
    except OSError as exc:
        raise TinyconvError(f"cannot decode {path}: {exc}") from None
    return image, grayscale


def _decode_chunk(task: tuple[str | None, int, list[str]]) -> tuple[int, int, int, int, list[str]]:
    """Worker: decode `paths` into rows offset.. of the .npy at `out` (or only check them when out is None).

    Writing stops at the first image that fails (TinyconvError); checking goes on, so that verify names them all.

    Returns:
        (offset, count, grayscale count, failed count, the first VERIFY_MAX_PROBLEMS failures' messages)
    """
    out, offset, paths = task
    target = np.load(out, mmap_mode="r+") if out is not None else None
    grayscale, failed, problems = 0, 0, []
    for row, path in enumerate(paths):
        try:
            image, was_gray = _decode(Path(path))
        except TinyconvError as exc:
            if target is not None:
                raise
            failed += 1
            if len(problems) < VERIFY_MAX_PROBLEMS:
                problems.append(str(exc))
            continue
        grayscale += was_gray
        if target is not None:
            target[offset + row] = image
    if target is not None:
        target.flush()
        del target
    return offset, len(paths), grayscale, failed, problems


def _decode_all(paths: list[Path], out: Path | None, *, workers: int, desc: str, progress: bool,
                problems: _Problems | None = None) -> int:
    """Decode every path (into the preallocated .npy `out` when given); returns the grayscale count.

    Without `out`, images that fail are added to `problems` in path order (required then) instead of raising."""
    tasks = [
        (str(out) if out is not None else None, start, [str(p) for p in paths[start : start + DECODE_CHUNK]])
        for start in range(0, len(paths), DECODE_CHUNK)
    ]
    grayscale = 0
    failures = []  # (offset, failed count, messages) of each chunk, in the order the chunks finish
    with progress_bar(len(paths), desc, enabled=progress) as bar:
        if workers <= 1 or len(paths) < PARALLEL_MIN_IMAGES:
            results = map(_decode_chunk, tasks)
            for offset, count, gray, failed, messages in results:
                grayscale += gray
                failures.append((offset, failed, messages))
                bar.update(count)
            _add_failures(problems, failures)
            return grayscale
        # fork, not spawn: spawn re-runs the caller's script in each worker, which an unguarded script
        # (no `if __name__ == "__main__":`) turns into a second download or prepare. The workers only use
        # numpy and PIL, so TensorFlow threads in the parent do not matter to them.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        # start_worker: Ctrl-C is the parent's to handle, and a prepare killed with SIGKILL must not leave its workers
        # behind, holding its cache lock.
        # An executor, not multiprocessing.Pool: leaving a Pool early (a chunk that fails, Ctrl-C) terminates it with
        # workers mid-chunk, and Pool.terminate() can wait forever for its task thread (CPython gh-96995; a CI run
        # hung 15 minutes so, 2026-12-07). Here the queued chunks are cancelled and the running ones finish first, so
        # nothing still writes to `out` once this returns or raises, and the caller's clean-up is final.
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=start_worker,
                                       initargs=(os.getpid(),))
        try:
            for future in as_completed([executor.submit(_decode_chunk, task) for task in tasks]):
                offset, count, gray, failed, messages = future.result()
                grayscale += gray
                failures.append((offset, failed, messages))
                bar.update(count)
        except BrokenProcessPool:  # a worker killed (out of memory, `kill -9`): the pool cannot go on
            raise TinyconvError(f"{desc}: a decoding process ended abruptly (killed, or out of memory?); "
                                "nothing was kept, run it again") from None
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    _add_failures(problems, failures)
    return grayscale


def _add_failures(problems: _Problems | None, failures: list[tuple[int, int, list[str]]]) -> None:
    if problems is None:  # writing the cache: a failure has raised already
        return
    for _, failed, messages in sorted(failures, key=lambda failure: failure[0]):  # in path order
        for message in messages:
            problems.add(message)
        problems.count += failed - len(messages)  # those beyond the chunk's own list: counted, not listed


def default_workers() -> int:
    """Decoding processes: every core this process may use (2 on the development machines, 16 on a GPU machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------- verify


class _Problems:
    """What verify finds wrong, each a line naming its file: all counted, the first VERIFY_MAX_PROBLEMS kept."""

    def __init__(self):
        self.count = 0
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.count += 1
        if len(self.lines) < VERIFY_MAX_PROBLEMS:
            self.lines.append(line)

    def raise_any(self, root: Path) -> None:
        """One TinyconvError listing them, one line each (the CLI prints each line as an error of its own)."""
        if not self.count:
            return
        lines = list(self.lines)
        if self.count > len(lines):
            lines.append(f"... and {self.count - len(lines):,} more problems in {root} ({self.count:,} in all; "
                         f"only the first {len(self.lines)} are listed)")
        raise TinyconvError("\n".join(lines))


# Longer than 60 lines with its docstring: one pass over the splits that counts, decodes and reports.
def verify(data_dir: Path, *, workers: int | None = None, progress: bool = False) -> dict:
    """Check layout, counts and that every image decodes to 64x64; return a summary.

    For the real dataset (200 classes) the published counts are required: 500 train images per class,
    10,000 val and 10,000 test. Any dataset must be consistent: every val wnid in wnids.txt, every listed
    file present, every image file listed, every image 64x64.

    A dataset that cannot be listed (no wnids.txt, no val annotations, an unknown wnid) raises at once; every
    other problem is collected, each image checked, and then one TinyconvError names them, one line each (the
    first VERIFY_MAX_PROBLEMS, and how many more).

    Returns:
        {"root", "classes", "val_layout", "official", "seconds",
         "splits": {split: {"images": N, "grayscale": G}}}
    """
    start = time.perf_counter()
    root = require_root(data_dir)
    wnids = read_wnids(root)
    words = read_words(root)
    problems = _Problems()
    for wnid in wnids:
        if wnid not in words:
            problems.add(f"wnid {wnid} of wnids.txt has no entry in {root / 'words.txt'}")
    official = len(wnids) == OFFICIAL_COUNTS["classes"]
    layout = val_layout(root)

    split_paths = {split: list_split(root, split, wnids)[0] for split in SPLITS}
    if official:
        per_class = {}
        for path in split_paths["train"]:
            per_class[path.parent.parent.name] = per_class.get(path.parent.parent.name, 0) + 1
        for wnid in wnids:
            if per_class.get(wnid, 0) != OFFICIAL_COUNTS["train_per_class"]:
                problems.add(f"expected {OFFICIAL_COUNTS['train_per_class']} images in {root}/train/{wnid}/images/, "
                             f"found {per_class.get(wnid, 0)}")
        for split in ("val", "test"):
            if len(split_paths[split]) != OFFICIAL_COUNTS[split]:
                problems.add(f"expected {OFFICIAL_COUNTS[split]} {split} images in {root}, "
                             f"found {len(split_paths[split])}")

    listed = {str(path) for path in split_paths["val"]}
    missing = set()
    for path in split_paths["val"]:
        if not path.is_file():
            missing.add(path)  # named here, not again by the decoding below
            problems.add(f"missing {path} (listed in the val annotations)")
    if layout == "official":
        for name in _image_names(root / "val" / "images"):
            if str(root / "val" / "images" / name) not in listed:
                problems.add(f"{root}/val/images/{name} is not listed in val/val_annotations.txt")
    for split in SPLITS:
        if not split_paths[split]:
            problems.add(f"no {split} images in {root}")

    workers = default_workers() if workers is None else workers
    splits = {}
    for split in SPLITS:
        paths = [path for path in split_paths[split] if path not in missing]
        grayscale = _decode_all(paths, None, workers=workers, desc=f"verify {split}", progress=progress,
                                problems=problems)
        splits[split] = {"images": len(split_paths[split]), "grayscale": grayscale}
    problems.raise_any(root)
    return {
        "root": str(root),
        "classes": len(wnids),
        "val_layout": layout,
        "official": official,
        "splits": splits,
        "seconds": round(time.perf_counter() - start, 2),
    }


def format_summary(summary: dict) -> str:
    """A short human-readable report of verify()'s summary."""
    kind = "the official Tiny ImageNet layout and counts" if summary["official"] else "a consistent dataset"
    lines = [f"{summary['root']}: {kind}, {summary['classes']} classes, val layout {summary['val_layout']}"]
    for split, entry in summary["splits"].items():
        counts = f"{entry['images']:>7,} images ({entry['grayscale']:,} grayscale)"
        lines.append(f"  {split:>5}: {counts}, all decode to 64x64")
    lines.append(f"  checked in {summary['seconds']:.1f} s")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- cache


@dataclass
class Split:
    """One split from the cache.

    images: uint8 [N, 64, 64, 3] (a read-only memmap when no subset was asked for)
    labels: int32 [N], 0..K-1 in the order of `wnids` (-1 for test)
    wnids, names: the K classes in label order; files: N paths relative to tiny-imagenet-200/
    """

    images: np.ndarray
    labels: np.ndarray
    wnids: list[str]
    names: list[str]
    files: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def cache_dir(data_dir: Path) -> Path:
    """data_dir / "cache"."""
    return Path(data_dir) / CACHE_DIRNAME


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _source_fingerprint(root: Path, relative: list[str], labels: np.ndarray) -> str:
    """A hash of the split's file names, sizes and labels: changes when files are added, removed,
    renamed, resized or relabelled (an in-place edit that keeps the size needs `prepare --force`)."""
    base = str(root) + os.sep
    try:
        lines = [f"{name}\t{os.stat(base + name).st_size}\t{label}\n" for name, label in zip(relative, labels.tolist())]
    except FileNotFoundError as exc:
        raise TinyconvError(f"missing image file {exc.filename}") from None
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _read_manifest(cache: Path) -> dict | None:
    """The cache's manifest, None when there is none; TinyconvError when it is unreadable or not a manifest."""
    path = cache / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TinyconvError(f"{path} is unreadable ({type(exc).__name__}); run `tinyconv prepare --force`") from None
    if not _manifest_shape_ok(manifest):
        raise TinyconvError(f"{path} is not a tinyconv cache manifest (damaged?); run `tinyconv prepare --force`")
    return manifest


def _manifest_shape_ok(manifest) -> bool:
    """Whether `manifest` has the fields the cache checks read (another version's is judged by its version alone).

    `splits` names the splits that are cached: any of train, val and test, at least one (a manifest that names
    all three, as every manifest did before splits were prepared one at a time, is one of these)."""
    if not isinstance(manifest, dict):
        return False
    if manifest.get("version") != CACHE_VERSION:
        return True  # _stale_reason reports the version
    try:
        splits = manifest["splits"]
        if not isinstance(splits, dict) or not splits or not set(splits) <= set(SPLITS):
            return False
        fields_ok = all(
            isinstance(entry[key], str) for entry in splits.values()
            for key in ("images", "labels", "files", "source_sha256")
        ) and all(isinstance(entry["count"], int) for entry in splits.values())
        return fields_ok and isinstance(manifest["source"]["wnids_sha256"], str) and isinstance(
            manifest["wnids"], list) and isinstance(manifest["names"], list)
    except (KeyError, TypeError):
        return False


def _stale_reason(root: Path, manifest: dict, splits=SPLITS) -> str | None:
    """Why the cache no longer matches the source (None when it matches).

    Of `splits`, only those the manifest names are compared: one it does not name is not stale, only not cached
    yet. The format version and wnids.txt are checked whatever `splits` is: they are the whole cache's."""
    if manifest.get("version") != CACHE_VERSION:
        return f"cache format {manifest.get('version')} is not the current {CACHE_VERSION}"
    wnids = read_wnids(root)
    if _sha256_text("\n".join(wnids)) != manifest["source"]["wnids_sha256"]:
        return "wnids.txt changed"
    for split in splits:
        if split not in manifest["splits"]:
            continue
        relative, labels = _list_relative(root, split, wnids)
        if len(relative) != manifest["splits"][split]["count"]:
            return f"{split} has {len(relative)} images, the cache {manifest['splits'][split]['count']}"
        if _source_fingerprint(root, relative, labels) != manifest["splits"][split]["source_sha256"]:
            return f"the {split} files or labels changed"
    return None


def _check_cache_files(cache: Path, manifest: dict, split: str) -> str | None:
    """Why the split's cache files are damaged (None when the arrays' sizes and the file list's length are right)."""
    entry = manifest["splits"][split]
    for key, row_bytes in (("images", IMAGE_SIZE * IMAGE_SIZE * 3), ("labels", 4)):
        path = cache / entry[key]
        if not path.is_file():
            return f"{path} is missing"
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, _ = read_header(handle)
                header_bytes = handle.tell()
        except (ValueError, OSError) as exc:
            return f"{path} is not a valid .npy file ({exc})"
        if shape[:1] != (entry["count"],) or path.stat().st_size != header_bytes + entry["count"] * row_bytes:
            return f"{path} is truncated or has the wrong size"
    # the file list too: load_split reads it, and a cache without it must be rebuilt by prepare, not called current
    path = cache / entry["files"]
    if not path.is_file():
        return f"{path} is missing"
    try:
        lines = len(_read_cached_files(path))
    except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError
        return f"{path} is unreadable ({type(exc).__name__})"
    if lines != entry["count"]:
        return f"{path} lists {lines} files, the cache {entry['count']}"
    return None


def _read_cached_files(path: Path) -> list[str]:
    """The names in a split's file list, one a line as _write_split wrote them (split on \\n alone: a name may hold
    characters that splitlines() would break at)."""
    return path.read_bytes().decode("utf-8").split("\n")[:-1]


def _keeps_splits(root: Path, manifest: dict | None) -> bool:
    """Whether the splits `manifest` names can stay cached beside a split built now: not when it is of another
    format, nor when wnids.txt changed (every cached label is an index into the old list, whatever its split)."""
    return (
        manifest is not None
        and manifest.get("version") == CACHE_VERSION
        and manifest["source"]["wnids_sha256"] == _sha256_text("\n".join(read_wnids(root)))
    )


def _split_current(root: Path, cache: Path, manifest: dict | None, split: str) -> bool:
    """Whether `split` is cached, current and intact: nothing to decode."""
    return (
        manifest is not None
        and manifest.get("version") == CACHE_VERSION
        and split in manifest["splits"]
        and _stale_reason(root, manifest, splits=(split,)) is None
        and _check_cache_files(cache, manifest, split) is None
    )


def _requested_splits(splits) -> tuple[str, ...]:
    """`splits` (one name or several) checked, without repeats, in SPLITS order (train first, as always)."""
    if isinstance(splits, str):
        splits = (splits,)
    splits = list(splits)
    for split in splits:
        if split not in SPLITS:
            raise TinyconvError(f"unknown split {split!r}: use train, val or test")
    if not splits:
        raise TinyconvError("no split to prepare: name train, val or test")
    return tuple(split for split in SPLITS if split in splits)


def _split_paths(cache: Path, split: str) -> tuple[Path, Path, Path]:
    """The split's images .npy, labels .npy and file list in the cache."""
    return cache / f"{split}_images.npy", cache / f"{split}_labels.npy", cache / f"{split}_files.txt"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB" if size >= 10e6 else f"{size / 1e6:.1f} MB"


def prepare(data_dir: Path, force: bool = False, *, splits=SPLITS, workers: int | None = None,
            progress: bool = True, cache: Path | None = None) -> dict:
    """Decode the images of `splits` once into uint8 arrays under data_dir/cache/; return the manifest.

    A split already cached, current and intact is not decoded again (unless force); one that is missing, stale
    or damaged is, and is added to the manifest beside the splits cached before, which stay as they are (all of
    them are dropped when wnids.txt changed: their labels index the old list). Arrays are written to temporary
    names, filled by `workers` processes straight into a memmap, and renamed into place; the manifest stops
    naming a split before its files are replaced and names it again only once they are complete, so an
    interrupted prepare leaves no cache that looks valid, and keeps the splits it finished.

    Args:
        data_dir: folder holding tiny-imagenet-200/.
        force: rebuild the splits of `splits` even when they are current.
        splits: the splits to prepare ("train", "val", "test"; one name or several; default all three).
        workers: decoding processes (default: every core, default_workers()).
        progress: show tqdm progress bars.
        cache: cache folder (default data_dir/cache; bench_data times a fresh prepare into a temporary one).

    Returns:
        the manifest: {"version", "created", "seconds", "root", "wnids", "names",
                       "source": {"wnids_sha256"}, "splits": {split: {"count", "grayscale", "images",
                       "labels", "files", "source_sha256", "images_bytes"}}}; "splits" holds every split now
        cached, those of `splits` and any other cached before.
    """
    start = time.perf_counter()
    splits = _requested_splits(splits)
    root = require_root(data_dir)
    cache = cache_dir(data_dir) if cache is None else Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyconvError(f"cannot create cache dir {cache}: {exc.strerror or exc}") from None
    try:
        old = _read_manifest(cache)
    except TinyconvError as exc:  # prepare is the way out of a damaged manifest: rebuild rather than refuse
        print(f"note: {exc.args[0].split('; run')[0]}; rebuilding the cache", file=sys.stderr, flush=True)
        old = None
    if not force and all(_split_current(root, cache, old, split) for split in splits):
        return old
    with folder_lock(cache / ".prepare.lock", "dataset cache"):  # a second prepare of this cache fails at once
        remove_temporaries(cache)  # under the lock, every temporary is a dead process's (a killed prepare: ~1.2 GB)
        return _write_cache(root, cache, splits, force=force, workers=workers, progress=progress, start=start)


def reserve_space(path: Path, name: Path | None = None) -> None:
    """Allocate every block of a (sparse) file now.

    The image arrays are written through memory maps by the decoding workers. On a full disk a write into a
    sparse mapped page cannot be refused with an error: the kernel kills the writer with SIGBUS, which takes
    down a worker (and with it the pool) or the whole process. With the blocks allocated up front a full disk
    is an ordinary OSError (ENOSPC) here, before any decoding, which prepare reports as one line. `name`: the
    file to name in that error (the final name of a temporary file).
    """
    if not hasattr(os, "posix_fallocate"):  # macOS: no posix_fallocate; the risk stays there
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems that cannot preallocate
            return
        raise OSError(exc.errno, exc.strerror, str(name or path)) from None
    finally:
        os.close(fd)


def _write_cache(root: Path, cache: Path, splits: tuple[str, ...], *, force: bool, workers: int | None,
                 progress: bool, start: float) -> dict:
    """prepare's work once it holds the cache's lock: decode the splits that need it, each then added to the
    manifest."""
    wnids = read_wnids(root)
    names = class_names(root, wnids)
    workers = default_workers() if workers is None else workers
    try:  # again, under the lock: another prepare may have added splits since prepare's first look
        old = _read_manifest(cache)
    except TinyconvError:  # prepare has said so already
        old = None
    cached = dict(old["splits"]) if _keeps_splits(root, old) else {}
    todo = [split for split in splits if force or not (split in cached and _split_current(root, cache, old, split))]
    if not todo:
        return old
    for split in todo:
        cached.pop(split, None)
    manifest = _manifest(root, wnids, names, cached, start)
    try:
        # from here on the splits to rebuild are no longer valid: the manifest stops naming them first
        _save_manifest(cache, manifest)
        # Files the manifest does not name (a dropped split's; a killed prepare's, renamed but not yet named) are
        # removed, so that the folder holds no arrays beyond the cache's; those of the splits to build are replaced.
        for split in SPLITS:
            if split not in cached and split not in todo:
                for path in _split_paths(cache, split):
                    path.unlink(missing_ok=True)
        for split in todo:
            cached[split] = _write_split(root, cache, split, wnids, workers=workers, progress=progress)
            manifest = _manifest(root, wnids, names, cached, start)
            _save_manifest(cache, manifest)  # names the split only now that its three files are complete
    except OSError as exc:  # disk full, no permission: the splits named so far stay valid, say where
        where = f" ({Path(exc.filename).name})" if exc.filename else ""
        raise TinyconvError(f"writing the cache in {cache} failed{where}: {os_error_reason(exc)}; the dataset "
                            f"is untouched, run `tinyconv prepare` again once that is fixed{os_error_advice(exc)}"
                            ) from None
    finally:
        remove_temporaries(cache, os.getpid())
    return manifest


def _write_split(root: Path, cache: Path, split: str, wnids: list[str], *, workers: int, progress: bool) -> dict:
    """Decode one split into its three cache files (temporaries, renamed together at the end); its manifest entry."""
    relative, labels = _list_relative(root, split, wnids)
    paths = [root / name for name in relative]
    images_path, labels_path, files_path = _split_paths(cache, split)
    images_tmp = temporary_path(images_path)
    images = np.lib.format.open_memmap(
        images_tmp, mode="w+", dtype=np.uint8, shape=(len(paths), IMAGE_SIZE, IMAGE_SIZE, 3)
    )  # [N, 64, 64, 3], filled by the workers
    del images
    reserve_space(images_tmp, images_path)
    grayscale = _decode_all(paths, images_tmp, workers=workers, desc=f"prepare {split}", progress=progress)
    with open(temporary_path(labels_path), "wb") as handle:
        np.save(handle, labels.astype(np.int32))  # a handle: np.save would append .npy to the name
    temporary_path(files_path).write_text("".join(f"{name}\n" for name in relative), encoding="utf-8")
    for final in (images_path, labels_path, files_path):  # the split's three files, renamed together
        os.replace(temporary_path(final), final)
    return {
        "count": len(paths),
        "grayscale": grayscale,
        "images": images_path.name,
        "labels": labels_path.name,
        "files": files_path.name,
        "images_bytes": images_path.stat().st_size,
        "source_sha256": _source_fingerprint(root, relative, labels),
    }


def _manifest(root: Path, wnids: list[str], names: list[str], splits: dict, start: float) -> dict:
    return {
        "version": CACHE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - start, 2),
        "root": str(root),
        "wnids": wnids,
        "names": names,
        "source": {"wnids_sha256": _sha256_text("\n".join(wnids))},
        "splits": {split: splits[split] for split in SPLITS if split in splits},  # in SPLITS order, whatever was first
    }


def _save_manifest(cache: Path, manifest: dict) -> None:
    """Write the manifest atomically; remove it instead when it names no split (a manifest always names one)."""
    if manifest["splits"]:
        write_json(cache / MANIFEST_NAME, manifest, indent=1)
    else:
        (cache / MANIFEST_NAME).unlink(missing_ok=True)


def _announce_decoding(root: Path, cache: Path, split: str) -> None:
    """One line on stderr before load_split decodes a split: minutes on 2 cores (train) that would otherwise pass
    unexplained."""
    count = len(_list_relative(root, split, read_wnids(root))[0])
    size = _megabytes(count * IMAGE_SIZE * IMAGE_SIZE * 3)
    print(f"decoding {split} ({count:,} images, {size}) into {cache} once; later runs read it from there",
          file=sys.stderr, flush=True)


def load_split(data_dir: Path, split: str, classes=None) -> Split:
    """One split from the cache (that split prepared first when it is not cached), optionally a class subset.

    Args:
        data_dir: folder holding tiny-imagenet-200/ and cache/.
        split: "train", "val" or "test".
        classes: None (all 200), int K (the first K of wnids.txt) or a list of wnids; labels become 0..K-1.
            For test (unlabeled) a subset keeps every image and only narrows `wnids`/`names`.

    Raises:
        TinyconvError: the cache is stale (the source changed) or truncated: run `tinyconv prepare --force`.
    """
    if split not in SPLITS:
        raise TinyconvError(f"unknown split {split!r}: use train, val or test")
    root = require_root(data_dir)
    cache = cache_dir(data_dir)
    manifest = _read_manifest(cache)
    if manifest is not None:
        # also when the split is not cached yet: a changed wnids.txt or format is refused, not silently rebuilt
        # (prepare would drop every other cached split)
        reason = _stale_reason(root, manifest, splits=(split,))
        if reason is not None:
            raise TinyconvError(f"the cache in {cache} is stale ({reason}); run `tinyconv prepare --force`")
    if manifest is None or split not in manifest["splits"]:
        _announce_decoding(root, cache, split)
        manifest = prepare(data_dir, splits=(split,))  # just built from the current source: nothing to re-check
    else:
        damage = _check_cache_files(cache, manifest, split)
        if damage is not None:
            raise TinyconvError(f"the cache in {cache} is damaged: {damage}; run `tinyconv prepare --force`")

    entry = manifest["splits"][split]
    images = np.load(cache / entry["images"], mmap_mode="r")  # [N, 64, 64, 3] uint8, not read yet
    labels = np.load(cache / entry["labels"])  # [N] int32
    try:  # checked above, or just written; it may still go between the check and this read
        files = _read_cached_files(cache / entry["files"])
    except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError
        raise TinyconvError(f"the cache in {cache} is damaged: {cache / entry['files']} is unreadable "
                            f"({type(exc).__name__}); run `tinyconv prepare --force`") from None
    all_wnids, all_names = manifest["wnids"], manifest["names"]
    wnids = select_classes(all_wnids, classes)
    names = [all_names[all_wnids.index(wnid)] for wnid in wnids]
    if classes is None or split == "test":
        return Split(images=images, labels=labels, wnids=wnids, names=names, files=files)

    remap = np.full(len(all_wnids), -1, dtype=np.int32)  # old label -> new label, -1 when left out
    for new_label, wnid in enumerate(wnids):
        remap[all_wnids.index(wnid)] = new_label
    new_labels = remap[labels]
    keep = np.flatnonzero(new_labels >= 0)
    return Split(
        images=np.ascontiguousarray(images[keep]),  # [n, 64, 64, 3] in memory
        labels=new_labels[keep],
        wnids=wnids,
        names=names,
        files=[files[i] for i in keep],
    )


def check_arrays(images, labels, num_classes: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels as int32) after checking they make a dataset of `num_classes` classes; TinyconvError otherwise."""
    source = getattr(images, "filename", None) or "the image array"
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise TinyconvError(f"images must be a uint8 array [N, H, W, 3], got {dtype} {shape} ({source})")
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise TinyconvError(
            f"labels must be {images.shape[0]} integers to match the images, "
            f"got {labels.dtype} {labels.shape} ({source})"
        )
    if num_classes < 1:
        raise TinyconvError(f"num_classes must be >= 1, got {num_classes}")
    if batch_size < 1:
        raise TinyconvError(f"batch_size must be >= 1, got {batch_size}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise TinyconvError(
            f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()} ({source})"
        )
    return images, labels.astype(np.int32)
