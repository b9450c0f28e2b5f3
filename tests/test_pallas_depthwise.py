"""benchmarks/pallas_depthwise.py, the prototype depthwise kernel for the GPU, in Pallas' interpreter: its
forward, input gradient and kernel gradient equal XLA's grouped convolution (several row, channel and image
tiles, so the tiling's seams are crossed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("jax")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.jax
def test_prototype_matches_xla_depthwise_conv_forward_and_both_gradients():
    backend = os.environ.get("KERAS_BACKEND")  # importing it must not switch later tests' subprocesses to JAX
    spec = importlib.util.spec_from_file_location("pallas_depthwise", ROOT / "benchmarks" / "pallas_depthwise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # N 4 in chunks of 2, rows in tiles of 4, channels in tiles of 16: every seam of the three kernels
    worst = module.check(interpret=True, shapes=[(4, 16, 16, 32, 9, 9, (4, 16, 2)), (2, 8, 8, 16, 1, 5, (4, 16, 1))])
    assert worst <= 1e-5
    assert os.environ.get("KERAS_BACKEND") == backend
