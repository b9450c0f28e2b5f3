"""Notebook 07's study of a model's stages, two ways: `localize.score_stages` (Grad-CAM of every stage and CAM
from one forward and one backward pass per batch) against one `localize.score_maps` call per stage and for CAM (a
forward pass each and a backward pass per stage: what score_stages did before 2026-12-06).

    python benchmarks/localize_stages.py --data-dir DIR [--model models/seed-reference-e15.keras] [--classes 10]
        [--train-per-class 10] [--val-per-class 50] [--rounds 2]

The images are 07's: train images with boxes (thresholds) and val images with boxes of the model's first
`--classes` classes (the `quick` profile's 10 classes, 10 and all 50 per class, are the defaults). Each round times
both ways in one process, alternating which goes first; the first call of each shape also pays for tracing and
XLA compilation of the fused inference kernels, which both ways share. Both must give the same maps and metrics;
the script exits 1 if they do not. TensorFlow backend (Grad-CAM needs it). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tinyconv.runtime import describe_device
from tinyconv.study import localize

REPO = Path(__file__).resolve().parents[1]


def per_stage(model, wnids, train, val) -> dict:
    """The old way: a pass over train and one over val for each stage and for CAM."""
    layers = {**localize.stage_layers(model), "CAM": None}
    return {name: localize.score_maps(model, wnids, train, val, layer) for name, layer in layers.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default=str(REPO / "models" / "seed-reference-e15.keras"))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model, classes, _ = localize.load_localizable(args.model, args.data_dir)
    wnids = classes.wnids[: args.classes]
    train = localize.train_with_boxes(args.data_dir, wnids, per_class=args.train_per_class)
    val = localize.val_with_boxes(args.data_dir, wnids, per_class=args.val_per_class)
    ways = {"one pass (score_stages)": lambda: localize.score_stages(model, classes.wnids, train, val),
            "a pass per map (score_maps each)": lambda: per_stage(model, classes.wnids, train, val)}
    seconds = {name: [] for name in ways}
    results = {}
    for round_ in range(args.rounds):
        for name in (list(ways) if round_ % 2 == 0 else list(ways)[::-1]):
            start = time.perf_counter()
            results[name] = ways[name]()
            seconds[name].append(time.perf_counter() - start)
    one, each = (results[name] for name in ways)
    differences = {stage: float(np.abs(one[stage].maps - each[stage].maps).max()) for stage in one}
    same_metrics = all(one[stage].metrics == each[stage].metrics for stage in one) and list(one) == list(each)
    print(f"{model.name} ({args.model}), {len(train)} train + {len(val)} val images, {describe_device()}")
    for name, values in seconds.items():
        print(f"  {name:34s} {' '.join(f'{v:6.1f}' for v in values)} s   median {statistics.median(values):.1f} s")
    medians = [statistics.median(values) for values in seconds.values()]
    print(f"  ratio (median): {medians[1] / medians[0]:.2f}x")
    print(f"  largest map difference per stage: {differences}; the same metrics: {same_metrics}")
    return 0 if same_metrics and max(differences.values()) <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
