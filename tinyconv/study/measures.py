"""Small numeric measures behind the study's figures: numpy only, so the figures need no Keras.

    filters_as_rgb(kernel)        a stem kernel as one RGB tile per filter
    ring_area_share(k)            the share of a k x k kernel's cells at each ring distance (uniform energy)
    erf_radius(erf, mass)         the radius holding `mass` of an effective receptive field
    standard_error(accuracy, n)   the binomial standard error of an accuracy over n images
    paired_standard_error(a, b)   the standard error of mean(a - b) for two scores of the same images
    energy_by_distance(kernel)    a kernel's energy by ring distance from its center
"""

from __future__ import annotations

import numpy as np


def filters_as_rgb(kernel) -> np.ndarray:
    """Stem filters as displayable RGB tiles, each filter scaled to [0, 1] around 0.5 by its own max |w|.

    Args:
        kernel: [k, k, 3, C].
    Returns:
        float32 [C, k, k, 3] in [0, 1].
    """
    tiles = np.moveaxis(np.asarray(kernel, dtype=np.float32), -1, 0)  # [C, k, k, 3]
    scale = np.abs(tiles).reshape(len(tiles), -1).max(axis=1)[:, None, None, None] + 1e-12
    return 0.5 + 0.5 * tiles / scale


def ring_area_share(k: int) -> np.ndarray:
    """Share of the k x k taps on each ring: what `energy_by_distance` gives for uniform weights."""
    return energy_by_distance(np.ones((k, k)))


def erf_radius(erf, mass: float = 0.5) -> int:
    """Smallest Chebyshev radius r around the ERF's center square holding `mass` of it.

    Args:
        erf: [H, W] non-negative, summing to 1 (from effective_receptive_field).
        mass: the share to enclose.
    Returns:
        r in pixels: the square of side 2r+1 (2r+2 for even sizes) around the center holds >= mass.
    """
    erf = np.asarray(erf, dtype=np.float64)
    height, width = erf.shape
    rows = np.abs(np.arange(height) - (height - 1) / 2.0)
    cols = np.abs(np.arange(width) - (width - 1) / 2.0)
    distance = np.floor(np.maximum(rows[:, None], cols[None, :])).astype(int)  # [H, W]
    profile = np.bincount(distance.ravel(), weights=erf.ravel())
    return int(np.searchsorted(np.cumsum(profile), mass * erf.sum() - 1e-12))


def standard_error(accuracy, count) -> np.ndarray:
    """Binomial standard error of an accuracy measured on `count` images: sqrt(p (1 - p) / n)."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    return np.sqrt(accuracy * (1.0 - accuracy) / np.maximum(np.asarray(count, dtype=np.float64), 1.0))


def paired_standard_error(a, b) -> float:
    """Standard error of mean(a - b) for two scores of the same images (a paired difference): std(a - b) / sqrt(n),
    with the sample standard deviation (n - 1). Images on which both agree add nothing to it, which is why it is
    smaller than either binomial error when two methods mostly agree. 0.0 for fewer than 2 images."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return 0.0
    return float(np.std(d, ddof=1) / np.sqrt(d.size))


def energy_by_distance(kernel) -> np.ndarray:
    """Share of squared kernel weight at each Chebyshev distance (ring) from the center.

    Args:
        kernel: [k, k] or [k, k, C] with odd k; channels are pooled.
    Returns:
        float64 [k // 2 + 1]: entry d is the share of sum(w^2) on ring d (d = 0 is the center tap); sums to 1.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim == 2:
        kernel = kernel[:, :, None]
    k = kernel.shape[0]
    if kernel.shape[1] != k or k % 2 == 0:
        raise ValueError(f"energy_by_distance needs an odd square kernel, got {kernel.shape[:2]}")
    offsets = np.abs(np.arange(k) - k // 2)
    ring = np.maximum(offsets[:, None], offsets[None, :])  # [k, k] Chebyshev distance
    energy = np.square(kernel).sum(axis=2)  # [k, k]
    profile = np.bincount(ring.ravel(), weights=energy.ravel(), minlength=k // 2 + 1)
    return profile / max(profile.sum(), 1e-30)
