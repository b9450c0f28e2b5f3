"""A .keras file saved before the layers were renamed and moved (tests/data/legacy_tiny.keras) still loads and
gives the logits it gave then: the registered serialization names ("tinyconv>BatchNormalization", ...) are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import tinyconv.model.layers  # noqa: E402,F401  (registers the custom layers and activations)

DATA = Path(__file__).resolve().parent / "data"


def test_model_saved_by_the_old_layout_loads_with_the_same_logits():
    model = keras.saving.load_model(DATA / "legacy_tiny.keras", safe_mode=True)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")  # the input it was saved with
    logits = np.asarray(model(x, training=False))
    np.testing.assert_allclose(logits, np.load(DATA / "legacy_tiny_logits.npy"), atol=1e-5)
