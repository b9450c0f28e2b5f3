"""Small numeric measures behind the study's figures: numpy only, so the figures need no Keras.

    filters_as_rgb(kernel)        a stem kernel as one RGB tile per filter
    ring_area_share(k)            the share of a k x k kernel's cells at each ring distance (uniform energy)
    erf_centre(erf)               the centre of mass of an effective receptive field
    erf_side(erf, mass)           the side of the square around it holding `mass` of the field
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


def erf_centre(erf) -> tuple[float, float]:
    """The centre of mass (row, col) of an effective receptive field, in input pixels.

    The unit probed is the one at (h // 2, w // 2) of its feature map. On an even grid that unit lies half a cell past
    the grid's middle, and Keras' "same" padding of a 5x5 at stride 2 puts one pixel more after than before, so its
    field is centred below and right of the image's centre, 31.5: at 33 in stage 1 of the seed, about 35 and 39 in
    stages 2 and 3 (before training). Its size is therefore measured around its own centre.
    """
    erf = np.asarray(erf, dtype=np.float64)
    total = max(erf.sum(), 1e-300)
    rows = float(np.arange(erf.shape[0]) @ erf.sum(axis=1)) / total
    cols = float(np.arange(erf.shape[1]) @ erf.sum(axis=0)) / total
    return rows, cols


def erf_side(erf, mass: float = 0.5) -> int:
    """Side (pixels) of the smallest square around the field's centre of mass that holds `mass` of it.

    For each side, the square is the window of whole pixels whose centre is nearest the centre of mass (moved
    inside the image where it would reach past an edge). Luo et al. (2016) describe an effective field's extent the
    same way, by the share of the gradient within a distance of its centre.

    Args:
        erf: [H, W] non-negative (from effective_receptive_field).
        mass: the share to enclose, in (0, 1].
    Returns:
        the side, 1 .. max(H, W).
    """
    erf = np.asarray(erf, dtype=np.float64)
    height, width = erf.shape
    integral = np.pad(erf.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))  # integral[r, c] = erf[:r, :c].sum()
    target = mass * erf.sum() - 1e-12
    centre_row, centre_col = erf_centre(erf)

    def start(centre: float, side: int, size: int) -> int:
        return int(min(max(np.floor(centre - (side - 1) / 2 + 0.5), 0), max(size - side, 0)))

    for side in range(1, max(height, width) + 1):
        top, left = start(centre_row, side, height), start(centre_col, side, width)
        bottom, right = min(top + side, height), min(left + side, width)
        if integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left] >= target:
            return side
    return max(height, width)


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
