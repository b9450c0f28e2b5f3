"""Trained-looking weights for equality tests: fresh BatchNorm statistics, affine weights, layer scales and
biases are identities or zeros, which hide a fused or exported path that drops or reorders them."""

from __future__ import annotations

import numpy as np


def randomize_statistics(layer_or_model, seed: int = 0) -> None:
    """BN moving statistics and beta, layer-scale and BN gamma, and biases, away from their initial values."""
    rng = np.random.default_rng(seed)
    for weight in layer_or_model.weights:
        path = weight.path
        if "moving_variance" in path:
            weight.assign(rng.uniform(0.3, 3.0, weight.shape).astype("float32"))
        elif "moving_mean" in path or path.endswith("beta") or path.endswith("bias"):
            weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
        elif "gamma" in path:
            weight.assign(rng.uniform(0.2, 1.8, weight.shape).astype("float32"))
