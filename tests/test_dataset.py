"""Labels, subsets, verification and the uint8 cache, on the synthetic dataset and on the real one."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthetic import KNOWN_CLASSES, class_image, expected_grayscale, make_synthetic_dataset
from tinyconv.data.dataset import (
    CACHE_VERSION,
    class_names,
    _decode,
    dataset_root,
    default_data_dir,
    list_split,
    load_split,
    prepare,
    read_val_annotations,
    selected_classes,
    read_wnids,
    read_words,
    select_classes,
    verify,
    format_summary,
)
from tinyconv.errors import TinyconvError

REPO = Path(__file__).resolve().parents[1]


def copy_data(source: Path, tmp_path: Path) -> Path:
    """A private copy of a data dir's tiny-imagenet-200/ (not of a cache other tests may have prepared there)."""
    target = tmp_path / "data"
    shutil.copytree(dataset_root(source), dataset_root(target))
    return target


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinyconv", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


# ------------------------------------------------------------------------------------------- labels


def test_default_data_dir_is_repo_data_or_env(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYCONV_DATA_DIR", raising=False)
    assert default_data_dir() == REPO / "data"
    monkeypatch.setenv("TINYCONV_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_labels_follow_wnids_txt_and_names_come_from_words(synthetic_data_dir):
    root = dataset_root(synthetic_data_dir)
    wnids = read_wnids(root)
    assert wnids == [wnid for wnid, _ in KNOWN_CLASSES[:5]]
    assert read_words(root)["n04099969"] == "rocking chair, rocker"
    assert "n00001740" in read_words(root)  # words.txt lists more wnids than the classes
    assert class_names(root, wnids) == ["Egyptian cat", "reel", "volleyball", "rocking chair", "lemon"]

    paths, labels = list_split(root, "train", wnids)
    assert len(paths) == 100 and labels.dtype == np.int32
    for path, label in zip(paths, labels):
        assert path.name.startswith(wnids[label] + "_")
    # file numbers in numeric order: _2 before _10
    names = [p.name for p in paths[:12]]
    assert names.index("n02124075_2.JPEG") < names.index("n02124075_10.JPEG")

    annotations = read_val_annotations(root)
    val_paths, val_labels = list_split(root, "val", wnids)
    assert len(val_paths) == 30
    assert [p.name for p in val_paths[:11]] == [f"val_{i}.JPEG" for i in range(11)]
    for path, label in zip(val_paths, val_labels):
        assert annotations[path.name][0] == wnids[label]
    assert all(len(annotations[name][1]) == 4 for name in annotations)

    test_paths, test_labels = list_split(root, "test", wnids)
    assert len(test_paths) == 10 and set(test_labels.tolist()) == {-1}


def test_select_classes_first_k_list_and_errors():
    wnids = ["a", "b", "c", "d"]
    assert select_classes(wnids, None) == wnids
    assert select_classes(wnids, 2) == ["a", "b"]
    assert select_classes(wnids, ["c", "a"]) == ["c", "a"]
    with pytest.raises(TinyconvError, match="between 1 and 4"):
        select_classes(wnids, 5)
    with pytest.raises(TinyconvError, match="unknown class wnid.*zz"):
        select_classes(wnids, ["a", "zz"])


def test_by_class_val_layout_gives_the_same_labels(tmp_path):
    official = make_synthetic_dataset(tmp_path / "official", seed=3)
    by_class = make_synthetic_dataset(tmp_path / "by_class", seed=3, val_layout="by_class")
    assert not (by_class / "val" / "val_annotations.txt").exists()
    wnids = read_wnids(official)
    official_paths, official_labels = list_split(official, "val", wnids)
    by_class_paths, by_class_labels = list_split(by_class, "val", wnids)
    assert [p.name for p in official_paths] == [p.name for p in by_class_paths]
    np.testing.assert_array_equal(official_labels, by_class_labels)
    assert by_class_paths[0].parent.parent.name == wnids[by_class_labels[0]]
    assert verify(tmp_path / "by_class")["val_layout"] == "by_class"


def test_decode_gives_three_channels_for_grayscale(synthetic_data_dir):
    """The decoding prepare() runs on every image (dataset._decode): grayscale becomes 3 equal channels, and is counted."""
    root = dataset_root(synthetic_data_dir)
    gray_path = root / "val" / "images" / "val_0.JPEG"  # every 7th image, from the first, is grayscale
    assert Image.open(gray_path).mode == "L"
    image, grayscale = _decode(gray_path)
    assert grayscale and image.shape == (64, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    colour, grayscale = _decode(root / "val" / "images" / "val_1.JPEG")
    assert not grayscale and colour.shape == (64, 64, 3) and not np.array_equal(colour[..., 0], colour[..., 2])


def _tf_rgb(path) -> np.ndarray:
    """An image as the reference notebook decodes it, `tf.image.decode_jpeg(img, channels=3)` with TensorFlow's
    defaults: what the cache is compared with."""
    import tensorflow as tf

    return tf.image.decode_jpeg(tf.io.read_file(str(path)), channels=3).numpy()


def _pil_rgb(path) -> np.ndarray:
    """An image as Pillow decodes it to RGB (the accurate DCT): cache version 1's decoder."""
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.uint8)


def test_synthetic_classes_differ_in_content():
    rng = np.random.default_rng(0)
    means = np.array([class_image(k, rng).reshape(-1, 3).mean(0) for k in range(5)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(5, dtype=bool)].min() > 20  # distinct mean colours: learnable


def test_verify_summary_counts(synthetic_data_dir):
    summary = verify(synthetic_data_dir)
    assert summary["classes"] == 5 and summary["official"] is False
    assert summary["splits"]["train"] == {"images": 100, "grayscale": expected_grayscale(100)}
    assert summary["splits"]["val"] == {"images": 30, "grayscale": expected_grayscale(30)}
    assert summary["splits"]["test"] == {"images": 10, "grayscale": expected_grayscale(10)}
    text = format_summary(summary)
    assert "5 classes" in text and "100 images (15 grayscale)" in text


# ---------------------------------------------------------------------------------------- bad input


def test_missing_val_annotations_is_named(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    (dataset_root(data_dir) / "val" / "val_annotations.txt").unlink()
    with pytest.raises(TinyconvError, match="missing val/val_annotations.txt"):
        verify(data_dir)


def test_unknown_wnid_in_annotations_names_the_line(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    annotations = dataset_root(data_dir) / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split("\t")[1], "n99999999")
    annotations.write_text("\n".join(lines) + "\n")
    with pytest.raises(TinyconvError, match=r"unknown wnid n99999999 in .*val_annotations.txt line 4"):
        verify(data_dir)
    result = run_cli("verify", "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"tinyconv: error: unknown wnid n99999999 in {annotations} line 4: not in wnids.txt"
    ]


def test_truncated_jpeg_is_named_by_verify_and_prepare(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    victim = dataset_root(data_dir) / "train" / "n04067472" / "images" / "n04067472_3.JPEG"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(TinyconvError, match=r"cannot decode .*n04067472_3\.JPEG.*truncated"):
        verify(data_dir)
    with pytest.raises(TinyconvError, match=r"n04067472_3\.JPEG"):
        prepare(data_dir, progress=False)
    assert not (data_dir / "cache" / "manifest.json").exists()  # no cache that looks valid
    assert not list((data_dir / "cache").glob("*.tmp-*"))  # and no temporary files left


def test_verify_names_every_bad_file_one_line_each_and_counts_beyond_its_cap(tmp_path, synthetic_data_dir,
                                                                            monkeypatch, capsys):
    """Not only the first: a truncated train JPEG, a text file as a val image, a missing listed val file, an
    unlisted one and a wnid without words each get their line; past VERIFY_MAX_PROBLEMS, a count of the rest."""
    from tinyconv import cli
    from tinyconv.data import dataset

    data_dir = copy_data(synthetic_data_dir, tmp_path)
    root = dataset_root(data_dir)
    truncated = root / "train" / "n04067472" / "images" / "n04067472_3.JPEG"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (root / "val" / "images" / "val_2.JPEG").write_text("not an image")
    (root / "val" / "images" / "val_5.JPEG").unlink()
    shutil.copy(root / "val" / "images" / "val_1.JPEG", root / "val" / "images" / "val_extra.JPEG")
    test_image = root / "test" / "images" / "test_0.JPEG"
    Image.new("RGB", (32, 32)).save(test_image)  # decodes, at the wrong size
    words = root / "words.txt"
    words.write_text("".join(line + "\n" for line in words.read_text().splitlines() if "n04540053" not in line))

    assert cli.main(["verify", "--data-dir", str(data_dir)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and "Traceback" not in captured.err
    assert all(line.startswith("tinyconv: error: ") for line in lines), lines
    assert len(lines) == 6, lines
    for pattern in (r"wnid n04540053 of wnids.txt has no entry in .*words.txt$",
                    r"missing .*val_5\.JPEG \(listed in the val annotations\)$",
                    r"val_extra\.JPEG is not listed in val/val_annotations.txt$",
                    r"cannot decode .*n04067472_3\.JPEG.*truncated",
                    r"val_2\.JPEG is not an image PIL can read$",
                    r"test_0\.JPEG is 32x32, expected 64x64$"):
        assert sum(bool(re.search(pattern, line)) for line in lines) == 1, (pattern, lines)

    # decoded by worker processes, chunk by chunk: the same lines, in the same order
    monkeypatch.setattr(dataset, "PARALLEL_MIN_IMAGES", 0)
    monkeypatch.setattr(dataset, "DECODE_CHUNK", 16)
    with pytest.raises(TinyconvError) as raised:
        verify(data_dir, workers=2)
    assert str(raised.value).splitlines() == [line.removeprefix("tinyconv: error: ") for line in lines]

    # past the cap: the first ones listed, the rest counted, in one more line
    monkeypatch.setattr(dataset, "VERIFY_MAX_PROBLEMS", 2)
    with pytest.raises(TinyconvError) as raised:
        verify(data_dir)
    listed = str(raised.value).splitlines()
    assert listed[:2] == [line.removeprefix("tinyconv: error: ") for line in lines[:2]], listed
    assert listed[2] == f"... and 4 more problems in {root} (6 in all; only the first 2 are listed)"


def test_missing_listed_val_file_is_named(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    (dataset_root(data_dir) / "val" / "images" / "val_5.JPEG").unlink()
    with pytest.raises(TinyconvError, match=r"missing .*val_5\.JPEG"):
        verify(data_dir)


@pytest.mark.parametrize("name", ["wnids.txt", "words.txt", "val/val_annotations.txt"])
def test_a_text_file_that_is_not_utf8_is_named_in_one_line(tmp_path, synthetic_data_dir, capsys, name):
    """A stray 0xFF byte (a damaged copy, a file in another encoding): one line naming the file and the offset."""
    from tinyconv import cli

    data_dir = copy_data(synthetic_data_dir, tmp_path)
    path = dataset_root(data_dir) / name
    data = path.read_bytes()
    path.write_bytes(data[:12] + b"\xff" + data[12:])
    assert cli.main(["verify", "--data-dir", str(data_dir)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.strip().splitlines() == [
        f"tinyconv: error: {path} is not UTF-8 text (byte 0xff at offset 12)"]


def test_missing_dataset_says_to_download(tmp_path):
    with pytest.raises(TinyconvError, match="run `tinyconv download`"):
        verify(tmp_path)


def test_every_command_that_needs_the_dataset_says_to_download_it(tmp_path, capsys):
    """train, evaluate and localize's evaluation reach the class list first (selected_classes): with no dataset
    they name the folder and the command that fetches it, not a missing wnids.txt."""
    from tinyconv import cli

    with pytest.raises(TinyconvError, match=r"no tiny-imagenet-200/ in .*; run `tinyconv download` first"):
        selected_classes(tmp_path, None)
    assert cli.main(["train", "--profile", "ci", "--data-dir", str(tmp_path / "none"), "--out",
                     str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"tinyconv: error: no tiny-imagenet-200/ in {tmp_path / 'none'}; run `tinyconv download` first"
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------------------------------- cache


def test_prepare_and_load_split_match_the_jpegs(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    manifest = prepare(data_dir, progress=False, workers=1)
    assert manifest["splits"]["train"]["count"] == 100
    assert manifest["splits"]["train"]["grayscale"] == expected_grayscale(100)
    assert json.loads((data_dir / "cache" / "manifest.json").read_text()) == manifest

    train = load_split(data_dir, "train")
    assert isinstance(train.images, np.memmap)
    assert train.images.shape == (100, 64, 64, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int32 and train.labels.tolist() == [k for k in range(5) for _ in range(20)]
    assert train.names[0] == "Egyptian cat" and len(train.files) == 100
    root = dataset_root(data_dir)
    for index in (0, 7, 55, 99):
        np.testing.assert_array_equal(train.images[index], _tf_rgb(root / train.files[index]))

    val = load_split(data_dir, "val")
    annotations = read_val_annotations(root)
    assert [val.wnids[label] for label in val.labels] == [annotations[Path(f).name][0] for f in val.files]
    test = load_split(data_dir, "test")
    assert test.images.shape == (10, 64, 64, 3) and set(test.labels.tolist()) == {-1}

    # a second prepare reuses the cache instead of decoding again
    mtime = (data_dir / "cache" / "train_images.npy").stat().st_mtime_ns
    assert prepare(data_dir, progress=False) == manifest
    assert (data_dir / "cache" / "train_images.npy").stat().st_mtime_ns == mtime


def test_load_split_subset_remaps_labels(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    prepare(data_dir, progress=False)
    full = load_split(data_dir, "val")
    subset = load_split(data_dir, "val", classes=["n04540053", "n02124075"])
    assert subset.wnids == ["n04540053", "n02124075"] and subset.names == ["volleyball", "Egyptian cat"]
    assert sorted(set(subset.labels.tolist())) == [0, 1] and len(subset) == 12
    for image, label, name in zip(subset.images, subset.labels, subset.files):
        index = full.files.index(name)
        assert full.wnids[full.labels[index]] == subset.wnids[label]
        np.testing.assert_array_equal(image, full.images[index])
    first_two = load_split(data_dir, "train", classes=2)
    assert first_two.images.shape == (40, 64, 64, 3) and first_two.labels.tolist() == [0] * 20 + [1] * 20


def test_load_split_prepares_a_missing_cache(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    assert not (data_dir / "cache").exists()
    assert load_split(data_dir, "test").images.shape == (10, 64, 64, 3)
    assert (data_dir / "cache" / "manifest.json").is_file()


def test_parallel_decode_matches_in_process(tmp_path, synthetic_data_dir, monkeypatch):
    import tinyconv.data.dataset as dataset

    data_dir = copy_data(synthetic_data_dir, tmp_path)
    serial = tmp_path / "serial-cache"
    prepare(data_dir, progress=False, workers=1, cache=serial)
    monkeypatch.setattr(dataset, "PARALLEL_MIN_IMAGES", 0)
    monkeypatch.setattr(dataset, "DECODE_CHUNK", 16)
    manifest = prepare(data_dir, progress=False, workers=2, cache=tmp_path / "parallel-cache")
    assert manifest["splits"]["train"]["grayscale"] == expected_grayscale(100)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(
            np.load(serial / f"{split}_images.npy"), np.load(tmp_path / "parallel-cache" / f"{split}_images.npy")
        )
    # an error in a worker reaches the caller as the same one-line error naming the file
    victim = dataset_root(data_dir) / "train" / "n04540053" / "images" / "n04540053_11.JPEG"
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(TinyconvError, match=r"cannot decode .*n04540053_11\.JPEG"):
        prepare(data_dir, progress=False, workers=2, cache=tmp_path / "parallel-cache", force=True)
    assert not (tmp_path / "parallel-cache" / "manifest.json").exists()


def test_stale_cache_is_rejected_then_rebuilt(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    prepare(data_dir, progress=False)
    root = dataset_root(data_dir)
    extra = root / "train" / "n02124075" / "images" / "n02124075_20.JPEG"
    shutil.copy(root / "train" / "n02124075" / "images" / "n02124075_1.JPEG", extra)
    with pytest.raises(TinyconvError, match=r"cache .* is stale \(train has 101 images.*prepare --force"):
        load_split(data_dir, "train")
    load_split(data_dir, "val")  # only the split that changed is refused
    prepare(data_dir, progress=False)  # prepare rebuilds a stale cache
    assert len(load_split(data_dir, "train")) == 101

    annotations = root / "val" / "val_annotations.txt"
    lines = annotations.read_text().splitlines()
    first = lines[0].split("\t")
    other = next(w for w in read_wnids(root) if w != first[1])
    lines[0] = "\t".join([first[0], other, *first[2:]])  # relabel one val image
    annotations.write_text("\n".join(lines) + "\n")
    with pytest.raises(TinyconvError, match=r"stale \(the val files or labels changed\)"):
        load_split(data_dir, "val")


def test_a_cache_decoded_by_pillow_is_stale_and_decoded_again(tmp_path, synthetic_data_dir):
    """Cache version 1 decoded the JPEGs with Pillow's accurate DCT; version 2 as the reference's TensorFlow does.
    A version-1 cache is refused in one line naming the version, and prepare decodes it again."""
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    prepare(data_dir, progress=False, workers=1)
    manifest_path = data_dir / "cache" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert CACHE_VERSION == manifest["version"] == 2
    manifest["version"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TinyconvError, match=r"stale \(cache format 1 is not the current 2\)"):
        load_split(data_dir, "val")
    assert prepare(data_dir, progress=False, workers=1)["version"] == 2
    root = dataset_root(data_dir)
    val = load_split(data_dir, "val")
    np.testing.assert_array_equal(val.images[1], _tf_rgb(root / val.files[1]))


def test_truncated_cache_is_rejected(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    prepare(data_dir, progress=False)
    images = data_dir / "cache" / "train_images.npy"
    with open(images, "r+b") as handle:
        handle.truncate(images.stat().st_size - 1000)
    with pytest.raises(TinyconvError, match=r"damaged: .*train_images\.npy is truncated.*prepare --force"):
        load_split(data_dir, "train")
    result = run_cli("prepare", "--data-dir", str(data_dir))  # prepare repairs it
    assert result.returncode == 0, result.stderr
    assert load_split(data_dir, "train").images.shape == (100, 64, 64, 3)


@pytest.mark.parametrize("damage", ["deleted", "short"])
def test_a_missing_or_short_file_list_is_damage_that_prepare_repairs(tmp_path, synthetic_data_dir, capsys, damage):
    """The file list is one of a split's three cache files: without it (or with lines missing) the split is damaged,
    refused in one line by its readers and decoded again by prepare, not reported as current."""
    from tinyconv import cli

    data_dir = copy_data(synthetic_data_dir, tmp_path)
    cache = data_dir / "cache"
    prepare(data_dir, progress=False, splits="val")
    files = cache / "val_files.txt"
    if damage == "deleted":
        files.unlink()
        reason = f"{files} is missing"
    else:
        files.write_text("".join(line + "\n" for line in files.read_text().splitlines()[:-1]))
        reason = f"{files} lists 29 files, the cache 30"
    with pytest.raises(TinyconvError) as raised:
        load_split(data_dir, "val")
    assert str(raised.value) == f"the cache in {cache} is damaged: {reason}; run `tinyconv prepare --force`"

    assert cli.main(["prepare", "--split", "val", "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    val = load_split(data_dir, "val")
    assert len(val.files) == 30 and val.files == read_val_files(data_dir)


def read_val_files(data_dir: Path) -> list[str]:
    """The val file list as the dataset gives it (relative to tiny-imagenet-200/, in file-number order)."""
    root = dataset_root(data_dir)
    return sorted((f"val/images/{name}" for name in read_val_annotations(root)),
                  key=lambda name: int(re.search(r"(\d+)", name).group(1)))


def _decoded_splits(monkeypatch) -> list[str]:
    """The splits prepare decodes from now on, in order (recorded from dataset._decode_all's progress label)."""
    from tinyconv.data import dataset

    decoded, decode_all = [], dataset._decode_all

    def recording(paths, out, **kwargs):
        decoded.append(kwargs["desc"].removeprefix("prepare "))
        return decode_all(paths, out, **kwargs)

    monkeypatch.setattr(dataset, "_decode_all", recording)
    return decoded


def _file_ids(cache: Path, split: str) -> dict:
    """(inode, mtime) of a split's three cache files: changes when they are written again."""
    return {name: ((cache / name).stat().st_ino, (cache / name).stat().st_mtime_ns)
            for name in (f"{split}_images.npy", f"{split}_labels.npy", f"{split}_files.txt")}


def test_load_split_decodes_only_the_split_it_needs_and_says_so(tmp_path, synthetic_data_dir, monkeypatch, capsys):
    """`tinyconv evaluate` needs val only: its first run decodes val alone (one line says so), not 120,000 images;
    train, then test, are added later beside it without val being written again."""
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    cache = data_dir / "cache"
    decoded = _decoded_splits(monkeypatch)
    root = dataset_root(data_dir)
    annotations = read_val_annotations(root)

    val = load_split(data_dir, "val")
    assert decoded == ["val"]
    err = capsys.readouterr().err
    # 30 images x 64 x 64 x 3 bytes = 368,640 bytes; tqdm's bar (progress=True) follows the line
    assert err.startswith(f"decoding val (30 images, 0.4 MB) into {cache} once; later runs read it from there\n"), err
    assert err.count("decoding") == 1
    assert sorted(p.name for p in cache.iterdir()) == [
        ".prepare.lock", "manifest.json", "val_files.txt", "val_images.npy", "val_labels.npy"]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert list(manifest["splits"]) == ["val"] and manifest["wnids"] == read_wnids(root)
    assert [val.wnids[label] for label in val.labels] == [annotations[Path(f).name][0] for f in val.files]
    val_ids = _file_ids(cache, "val")

    assert len(load_split(data_dir, "val")) == 30  # cached now: read, not decoded, and nothing said
    assert decoded == ["val"] and capsys.readouterr().err == ""

    train = load_split(data_dir, "train")
    assert decoded == ["val", "train"]
    assert capsys.readouterr().err.startswith(
        f"decoding train (100 images, 1.2 MB) into {cache} once; later runs read it from there\n")
    assert _file_ids(cache, "val") == val_ids  # val kept as it was
    assert train.labels.tolist() == [k for k in range(5) for _ in range(20)]
    np.testing.assert_array_equal(train.images[55], _tf_rgb(root / train.files[55]))
    val = load_split(data_dir, "val")
    assert [val.wnids[label] for label in val.labels] == [annotations[Path(f).name][0] for f in val.files]
    np.testing.assert_array_equal(val.images[1], _tf_rgb(root / val.files[1]))
    assert list(json.loads((cache / "manifest.json").read_text())["splits"]) == ["train", "val"]
    assert not (cache / "test_images.npy").exists()
    train_ids = _file_ids(cache, "train")

    manifest = prepare(data_dir, progress=False)  # all three by default: only test is missing
    assert decoded == ["val", "train", "test"]
    assert list(manifest["splits"]) == ["train", "val", "test"]
    assert json.loads((cache / "manifest.json").read_text()) == manifest
    assert _file_ids(cache, "val") == val_ids and _file_ids(cache, "train") == train_ids
    assert load_split(data_dir, "test").images.shape == (10, 64, 64, 3)
    assert prepare(data_dir, progress=False) == manifest and decoded == ["val", "train", "test"]
    assert capsys.readouterr().err == ""  # prepare itself says nothing: the CLI prints what it cached


def test_a_cache_of_the_earlier_all_splits_manifest_stays_valid(tmp_path, synthetic_data_dir, monkeypatch):
    """A cache written before splits were prepared one at a time (one manifest naming all three, these fields
    exactly) is read as it is: loaded and kept, nothing decoded again."""
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    cache = data_dir / "cache"
    built = prepare(data_dir, progress=False)
    entry_keys = ("count", "grayscale", "images", "labels", "files", "images_bytes", "source_sha256")
    earlier = {
        "version": CACHE_VERSION,
        "created": "2024-05-01T12:00:00Z",
        "seconds": 93.2,
        "root": built["root"],
        "wnids": built["wnids"],
        "names": built["names"],
        "source": {"wnids_sha256": built["source"]["wnids_sha256"]},
        "splits": {split: {key: built["splits"][split][key] for key in entry_keys}
                   for split in ("train", "val", "test")},
    }
    (cache / "manifest.json").write_text(json.dumps(earlier, indent=1))
    before = {split: _file_ids(cache, split) for split in ("train", "val", "test")}
    decoded = _decoded_splits(monkeypatch)

    assert prepare(data_dir, progress=False) == earlier
    assert prepare(data_dir, progress=False, splits=("val",)) == earlier
    assert load_split(data_dir, "train").labels.tolist() == [k for k in range(5) for _ in range(20)]
    assert len(load_split(data_dir, "val")) == 30 and len(load_split(data_dir, "test")) == 10
    assert decoded == []
    assert json.loads((cache / "manifest.json").read_text()) == earlier
    assert {split: _file_ids(cache, split) for split in ("train", "val", "test")} == before


def test_a_damaged_split_is_refused_alone_and_rebuilt_alone(tmp_path, synthetic_data_dir, monkeypatch):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    cache = data_dir / "cache"
    prepare(data_dir, progress=False)
    decoded = _decoded_splits(monkeypatch)
    others = {split: _file_ids(cache, split) for split in ("train", "test")}
    images = cache / "val_images.npy"
    with open(images, "r+b") as handle:
        handle.truncate(images.stat().st_size - 1000)

    assert load_split(data_dir, "train").images.shape == (100, 64, 64, 3)  # the intact split loads
    with pytest.raises(TinyconvError) as raised:
        load_split(data_dir, "val")
    message = str(raised.value)
    assert "\n" not in message and re.fullmatch(
        rf"the cache in {re.escape(str(cache))} is damaged: .*val_images\.npy is truncated or has the wrong size; "
        r"run `tinyconv prepare --force`", message), message

    prepare(data_dir, progress=False, force=True, splits=("val",))  # force: the splits asked for, no others
    assert decoded == ["val"]
    assert len(load_split(data_dir, "val")) == 30
    assert {split: _file_ids(cache, split) for split in ("train", "test")} == others

    with open(images, "r+b") as handle:
        handle.truncate(images.stat().st_size - 1000)
    prepare(data_dir, progress=False)  # all three asked for: only the damaged one decoded again
    assert decoded == ["val", "val"]
    assert {split: _file_ids(cache, split) for split in ("train", "test")} == others
    val = load_split(data_dir, "val")
    np.testing.assert_array_equal(val.images[29], _tf_rgb(dataset_root(data_dir) / val.files[29]))


def test_a_changed_wnids_txt_drops_every_cached_split(tmp_path, synthetic_data_dir):
    """Labels index wnids.txt: once it changes no cached split is valid, not even one whose files did not change.
    load_split refuses (also for a split not cached yet, which would otherwise sit beside stale ones); prepare
    builds what it is asked for and drops the rest, files included."""
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    cache = data_dir / "cache"
    root = dataset_root(data_dir)
    prepare(data_dir, progress=False, splits=("val", "test"))
    wnids = read_wnids(root)
    swapped = [wnids[1], wnids[0], *wnids[2:]]
    (root / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in swapped))

    for split in ("val", "train"):
        with pytest.raises(TinyconvError, match=r"cache .* is stale \(wnids\.txt changed\); run `tinyconv prepare"):
            load_split(data_dir, split)
    assert not (cache / "train_images.npy").exists()

    manifest = prepare(data_dir, progress=False, splits="train")
    assert list(manifest["splits"]) == ["train"] and manifest["wnids"] == swapped
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [
        "manifest.json", "train_files.txt", "train_images.npy", "train_labels.npy"]
    train = load_split(data_dir, "train")
    assert train.wnids == swapped
    assert all(Path(name).name.startswith(f"{train.wnids[label]}_") for name, label in zip(train.files, train.labels))
    val = load_split(data_dir, "val")  # prepared again, with the new labels
    annotations = read_val_annotations(root)
    assert [val.wnids[label] for label in val.labels] == [annotations[Path(f).name][0] for f in val.files]


def test_an_interrupted_prepare_keeps_the_splits_it_finished(tmp_path, synthetic_data_dir):
    data_dir = copy_data(synthetic_data_dir, tmp_path)
    cache = data_dir / "cache"
    victim = dataset_root(data_dir) / "test" / "images" / "test_3.JPEG"
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(TinyconvError, match=r"cannot decode .*test_3\.JPEG"):
        prepare(data_dir, progress=False)
    assert list(json.loads((cache / "manifest.json").read_text())["splits"]) == ["train", "val"]
    assert not (cache / "test_images.npy").exists() and not list(cache.glob("*.tmp*"))
    assert len(load_split(data_dir, "train")) == 100 and len(load_split(data_dir, "val")) == 30
    with pytest.raises(TinyconvError, match=r"cannot decode .*test_3\.JPEG"):
        load_split(data_dir, "test")


def test_prepare_cli_split_option(tmp_path, synthetic_data_dir, capsys):
    from tinyconv import cli

    data_dir = copy_data(synthetic_data_dir, tmp_path)
    cache = data_dir / "cache"
    assert cli.main(["prepare", "--split", "val", "--split", "test", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"val: 30 images cached in {cache / 'val_images.npy'}",
        f"test: 10 images cached in {cache / 'test_images.npy'}",
    ]
    assert not (cache / "train_images.npy").exists()
    assert cli.main(["prepare", "--split", "train", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"train: 100 images cached in {cache / 'train_images.npy'}"]
    assert list(json.loads((cache / "manifest.json").read_text())["splits"]) == ["train", "val", "test"]
    with pytest.raises(SystemExit) as exited:
        cli.main(["prepare", "--split", "tests", "--data-dir", str(data_dir)])
    assert exited.value.code == 2 and "invalid choice: 'tests'" in capsys.readouterr().err
    with pytest.raises(TinyconvError, match=r"unknown split 'tests': use train, val or test"):
        prepare(data_dir, progress=False, splits=("val", "tests"))


# ---------------------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_dataset_counts_labels_and_cache(real_data_dir):
    root = dataset_root(real_data_dir)
    wnids = read_wnids(root)
    assert len(wnids) == 200 and len(set(wnids)) == 200
    annotations = read_val_annotations(root)
    assert annotations["val_0.JPEG"][0] == "n03444034"
    assert annotations["val_1.JPEG"][0] == "n04067472"

    manifest = json.loads((real_data_dir / "cache" / "manifest.json").read_text())
    counts = {split: manifest["splits"][split]["count"] for split in ("train", "val", "test")}
    assert counts == {"train": 100_000, "val": 10_000, "test": 10_000}
    grayscale = {split: manifest["splits"][split]["grayscale"] for split in ("train", "val", "test")}
    assert grayscale == {"train": 1821, "val": 168, "test": 189}

    train = load_split(real_data_dir, "train")
    assert train.images.shape == (100_000, 64, 64, 3) and train.images.dtype == np.uint8
    assert np.bincount(train.labels, minlength=200).tolist() == [500] * 200
    assert os.path.getsize(real_data_dir / "cache" / "train_images.npy") >= 100_000 * 64 * 64 * 3
    val = load_split(real_data_dir, "val")
    assert val.images.shape == (10_000, 64, 64, 3)
    assert val.files[:2] == ["val/images/val_0.JPEG", "val/images/val_1.JPEG"]
    assert [val.wnids[label] for label in val.labels[:2]] == ["n03444034", "n04067472"]
    # every image as the reference's tf.image.decode_jpeg decodes it (its default fast DCT), not as Pillow does:
    # the first 300 val images, grayscale ones among them
    same_as_pillow = 0
    for index in range(300):
        path = root / val.files[index]
        np.testing.assert_array_equal(val.images[index], _tf_rgb(path), err_msg=str(path))
        same_as_pillow += np.array_equal(val.images[index], _pil_rgb(path))
    assert same_as_pillow < 30  # the two decoders differ on almost every image: the comparison can fail
    assert load_split(real_data_dir, "test").images.shape == (10_000, 64, 64, 3)
    subset = load_split(real_data_dir, "val", classes=10)
    assert len(subset) == 500 and subset.wnids == wnids[:10]


@pytest.mark.slow
def test_real_dataset_verifies(real_data_dir):
    summary = verify(real_data_dir)
    assert summary["official"] is True and summary["classes"] == 200
    assert summary["splits"] == {
        "train": {"images": 100_000, "grayscale": 1821},
        "val": {"images": 10_000, "grayscale": 168},
        "test": {"images": 10_000, "grayscale": 189},
    }


def test_bench_data_times_a_fresh_prepare_without_touching_the_cache(tmp_path, synthetic_data_dir):
    from tinyconv.bench import bench_data

    data_dir = copy_data(synthetic_data_dir, tmp_path)
    prepare(data_dir, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (data_dir / "cache").iterdir()}
    result = bench_data(data_dir, batch_size=16, seconds=0.3)
    assert result["images"] == 140 and result["prepare_s"] > 0
    assert result["train_pipeline_images_per_s"] > 0
    assert {p.name: p.stat().st_mtime_ns for p in (data_dir / "cache").iterdir()} == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["cache", "tiny-imagenet-200"]  # temporary cache gone


def test_bench_data_in_a_data_dir_it_cannot_write_is_one_line(tmp_path, synthetic_data_dir, capsys, monkeypatch):
    """bench-data makes its temporary cache inside the data dir: a read-only one was an OSError traceback from
    mkdtemp; now one line naming the folder, and nothing written. Root writes through mode 0o555, so there the
    kernel's refusal is made for mkdir (which mkdtemp calls), as a read-only mount gives it."""
    import errno

    from tinyconv import cli

    data_dir = copy_data(synthetic_data_dir, tmp_path)
    before = sorted(p.name for p in data_dir.iterdir())
    if os.geteuid() == 0:
        mkdir = os.mkdir

        def read_only_mkdir(path, *args, **kwargs):
            if Path(path).parent == data_dir:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    data_dir.chmod(0o555)
    try:
        assert cli.main(["bench-data", "--seconds", "1", "--data-dir", str(data_dir)]) == 1
    finally:
        data_dir.chmod(0o755)
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"tinyconv: error: {data_dir}: cannot write bench-data's temporary cache: "), lines
    assert sorted(p.name for p in data_dir.iterdir()) == before
