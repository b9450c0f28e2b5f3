"""A small synthetic Tiny ImageNet in the official layout, for fast tests.

The images are class-dependent (a distinct base colour and stripe pattern per class, plus noise and a small
random shift), so a model can learn them; every `grayscale_every`-th image is written as a one-channel JPEG,
as about 1.8 % of the real dataset is.

    tiny-imagenet-200/
      wnids.txt                                   one wnid per line, the class order
      words.txt                                   wnid<TAB>names, also for wnids outside the dataset
      train/<wnid>/images/<wnid>_<i>.JPEG
      train/<wnid>/<wnid>_boxes.txt               file<TAB>x0<TAB>y0<TAB>x1<TAB>y1
      val/images/val_<i>.JPEG                     val_layout="official"
      val/val_annotations.txt                     file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1
      val/<wnid>/images/val_<i>.JPEG              val_layout="by_class" (the widespread re-organised variant,
                                                  without val_annotations.txt: the folder is the label)
      test/images/test_<i>.JPEG
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

DATASET_DIRNAME = "tiny-imagenet-200"
IMAGE_SIZE = 64

# The first ten classes of the real wnids.txt, so names look like the real thing.
KNOWN_CLASSES = [
    ("n02124075", "Egyptian cat"),
    ("n04067472", "reel"),
    ("n04540053", "volleyball"),
    ("n04099969", "rocking chair, rocker"),
    ("n07749582", "lemon"),
    ("n01641577", "bullfrog, Rana catesbeiana"),
    ("n02802426", "basketball"),
    ("n09246464", "cliff, drop, drop-off"),
    ("n07920052", "espresso"),
    ("n03970156", "plunger, plumber's helper"),
]
# words.txt of the real dataset lists 82,115 wnids, not only the 200 classes; keep a few extra ones.
EXTRA_WORDS = [("n00001740", "entity"), ("n00002137", "abstraction, abstract entity")]


def synthetic_classes(num_classes: int) -> list[tuple[str, str]]:
    """(wnid, words entry) for `num_classes` classes: the known ones first, then made-up wnids."""
    classes = list(KNOWN_CLASSES[:num_classes])
    for index in range(len(classes), num_classes):
        classes.append((f"n9{index:08d}", f"synthetic class {index}, made-up class"))
    return classes


def class_image(class_index: int, rng: np.random.Generator) -> np.ndarray:
    """One 64x64 RGB uint8 image whose colour and stripes depend on the class.

    Returns:
        uint8 [64, 64, 3]
    """
    hue_angle = 2.0 * np.pi * ((class_index * 0.381966) % 1.0)  # golden-ratio spacing keeps colours apart
    base = 128.0 + 90.0 * np.cos(hue_angle + np.array([0.0, 2.094, 4.189]))  # [3]
    orientation = np.pi * ((class_index * 0.618034) % 1.0)
    frequency = 0.15 + 0.05 * (class_index % 4)
    shift = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    stripes = np.sin(frequency * (np.cos(orientation) * xx + np.sin(orientation) * yy) + shift)  # [64, 64]
    image = base[None, None, :] + 50.0 * stripes[:, :, None]
    image += rng.normal(0.0, 18.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_jpeg(path: Path, image: np.ndarray, grayscale: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(image, mode="RGB")
    if grayscale:
        picture = picture.convert("L")
    picture.save(path, format="JPEG", quality=90)


def _random_box(rng: np.random.Generator) -> tuple[int, int, int, int]:
    x0, y0 = (int(v) for v in rng.integers(0, 24, size=2))
    x1, y1 = (int(v) for v in rng.integers(40, IMAGE_SIZE, size=2))
    return x0, y0, x1, y1


def make_synthetic_dataset(
    data_dir: Path,
    num_classes: int = 5,
    train_per_class: int = 20,
    val_per_class: int = 6,
    test_count: int = 10,
    seed: int = 0,
    grayscale_every: int = 7,
    val_layout: str = "official",
) -> Path:
    """Write `data_dir/tiny-imagenet-200/` and return that folder.

    Args:
        data_dir: the folder to hold tiny-imagenet-200/ (created if missing).
        num_classes: number of classes in wnids.txt.
        train_per_class: train images per class.
        val_per_class: val images per class; val files are interleaved over classes like the real ones.
        test_count: unlabeled test images.
        seed: seed of the image content, boxes and val order.
        grayscale_every: every n-th image of each split (counting from the first) is one-channel; 0 for none.
        val_layout: "official" (val/images + val_annotations.txt) or "by_class" (val/<wnid>/images/).
    """
    if val_layout not in ("official", "by_class"):
        raise ValueError(f"val_layout must be 'official' or 'by_class', not {val_layout!r}")
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / DATASET_DIRNAME
    root.mkdir(parents=True, exist_ok=True)
    classes = synthetic_classes(num_classes)
    wnids = [wnid for wnid, _ in classes]

    def is_gray(index: int) -> bool:
        return grayscale_every > 0 and index % grayscale_every == 0

    (root / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in wnids))
    words = sorted(EXTRA_WORDS + classes)
    (root / "words.txt").write_text("".join(f"{wnid}\t{name}\n" for wnid, name in words))

    train_index = 0
    for class_index, wnid in enumerate(wnids):
        box_lines = []
        for i in range(train_per_class):
            name = f"{wnid}_{i}.JPEG"
            image = class_image(class_index, rng)
            _write_jpeg(root / "train" / wnid / "images" / name, image, is_gray(train_index))
            box_lines.append("\t".join([name, *map(str, _random_box(rng))]) + "\n")
            train_index += 1
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(box_lines))

    val_classes = rng.permutation(np.repeat(np.arange(num_classes), val_per_class))
    annotation_lines = []
    for i, class_index in enumerate(val_classes):
        wnid = wnids[class_index]
        name = f"val_{i}.JPEG"
        folder = root / "val" / "images" if val_layout == "official" else root / "val" / wnid / "images"
        _write_jpeg(folder / name, class_image(int(class_index), rng), is_gray(i))
        annotation_lines.append("\t".join([name, wnid, *map(str, _random_box(rng))]) + "\n")
    if val_layout == "official":
        (root / "val" / "val_annotations.txt").write_text("".join(annotation_lines))

    for i in range(test_count):
        class_index = int(rng.integers(0, num_classes))
        _write_jpeg(root / "test" / "images" / f"test_{i}.JPEG", class_image(class_index, rng), is_gray(i))
    return root


def expected_grayscale(count: int, grayscale_every: int = 7) -> int:
    """How many of `count` consecutive images make_synthetic_dataset writes as grayscale."""
    return 0 if grayscale_every <= 0 else (count + grayscale_every - 1) // grayscale_every


def zip_dataset(root: Path, zip_path: Path) -> Path:
    """Zip `root` (a tiny-imagenet-200/ folder) like the official zip: entries start with `tiny-imagenet-200/`."""
    root = Path(root)
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(root, arcname=root.name + "/")
        for path in sorted(root.rglob("*")):
            arcname = f"{root.name}/{path.relative_to(root).as_posix()}"
            archive.write(path, arcname=arcname + ("/" if path.is_dir() else ""))
    return zip_path
