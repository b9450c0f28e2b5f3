"""Ablation behind docs/performance.md: what the fused BatchNorm and the closed-form GELU gradient are worth.

Each variant runs in its own process (fresh thread pools): the seed model's train step at batch 64, after two
warm-up steps, timed over `--steps` steps, `--reps` times. Variants swap tinyconv's layers back to Keras':
    base   Keras' BatchNormalization and autodiff GELU (tinyconv before these two changes)
    bn     tinyconv.model.layers.BatchNormalization (fused kernel in training) only
    gelu   the closed-form GELU gradient only
    both   the default
Usage: .venv/bin/python benchmarks/ablate_bn_gelu.py [--steps 5] [--reps 3] [VARIANT ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

VARIANTS = ("base", "bn", "gelu", "both")


def run_variant(variant: str, steps: int, reps: int) -> list[float]:
    import keras
    from keras import ops

    import tinyconv.model.layers as layers
    from tinyconv.model.build import build_model

    if variant in ("base", "gelu"):
        layers.BatchNormalization = keras.layers.BatchNormalization  # what build_model and the blocks build
    if variant in ("base", "bn"):
        layers.gelu = lambda x, approximate=False: ops.gelu(x, approximate=approximate)
    keras.utils.set_random_seed(0)
    model = build_model("seed")
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    x = keras.random.normal((64, 64, 64, 3), seed=0)
    y = ops.one_hot(keras.random.randint((64,), 0, 200, seed=1), 200)
    for _ in range(2):
        model.train_on_batch(x, y)
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        rates.append(64 * steps / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"any of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(" ".join(f"{rate:.1f}" for rate in run_variant(args.child, args.steps, args.reps)))
        return
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    for variant in args.variants or VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--steps", str(args.steps), "--reps", str(args.reps)],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        print(f"{variant:>5}: train img/s " + " / ".join(out))


if __name__ == "__main__":
    main()
