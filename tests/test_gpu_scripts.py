"""The shell scripts that carry the dataset to an offline GPU machine (docs/gpu.md): split_file.sh cuts the zip
into pieces named as gpu_receive.sh keeps them and gpu_train.sh joins them, and the join gives the zip back."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_pieces_travel_and_join_back_to_the_same_zip(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 1_000_003, dtype=np.uint8).tobytes()
    original = tmp_path / "tiny-imagenet-200.zip"
    original.write_bytes(data)
    split = subprocess.run(["bash", str(ROOT / "scripts/split_file.sh"), str(original), str(tmp_path / "pieces"),
                            "300000"], capture_output=True, text=True, check=True)
    assert hashlib.sha256(data).hexdigest() in split.stdout
    pieces = sorted(p.name for p in (tmp_path / "pieces").iterdir())
    assert pieces == ["zip.00", "zip.01", "zip.02", "zip.03"]

    stage = tmp_path / "stage"  # the far side: one gpu_receive.sh call per piece, then gpu_train.sh's join
    env = {**os.environ, "STAGE": str(stage), "SITE": str(tmp_path / "no-site")}
    for name in reversed(pieces):  # arrival order does not matter
        subprocess.run(["bash", str(ROOT / "scripts/gpu_receive.sh"), str(tmp_path / "pieces" / name)],
                       env=env, capture_output=True, text=True, check=True)
    joined = subprocess.run(f'cat "{stage}"/zip.*', shell=True, capture_output=True, check=True).stdout
    assert joined == data
    assert "cat \"$stage\"/zip.*" in (ROOT / "scripts/gpu_train.sh").read_text()  # the join the test repeats
