"""Throughput benchmarks behind `tinyconv bench-data` and `tinyconv bench`.

Speed is measured here and in benchmarks/, never in timed tests; compare figures as ratios within one run.
"""

from __future__ import annotations

from pathlib import Path


def bench_data(data_dir: Path, *, batch_size: int = 128, seconds: float = 10.0) -> dict:
    """Time a fresh prepare of the full dataset and the cached, augmented train pipeline."""
    raise NotImplementedError  # BENCH_DATA_STUB (data helper)


def bench_model(*, preset: str = "seed", batch_size: int = 64, steps: int = 10, jit_compile: str = "auto") -> dict:
    """Training and inference images/s of a preset on random data, after warm-up."""
    raise NotImplementedError  # BENCH_MODEL_STUB (model helper)
