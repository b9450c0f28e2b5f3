"""The cost of a host round trip per training step in Keras' fit loop: the same run trained twice in one process,
as tinyconv trains it (the run's callbacks let Keras run the batch-end hooks in worker threads on JAX) and with
one added callback that reads each step's loss in the loop, as NonFiniteLoss, ThroughputEstimate and the backup
callback made every step do before they became `async_safe` (or stopped overriding the hook).

    KERAS_BACKEND=jax python benchmarks/fit_loop_sync.py --data-dir DIR [--profile ci] [--preset seed] [--epochs 2]
        [--rounds 2] [--set batch_size=128 ...]

Each round trains both variants from scratch into temporary folders (alternating which goes first) and prints the
train images/s of their last epoch (history.csv's images_per_s: the epoch's train steps, validation left out;
the first epoch also pays for compilation). The figures are ratios within one run: see docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import keras

from tinyconv.runtime import describe_device
from tinyconv.training.history import read_history
from tinyconv.training.overrides import parse_overrides
from tinyconv.training.train import train


class ReadLossEveryStep(keras.callbacks.Callback):
    """The old behaviour: a batch-end hook in the loop that turns the step's loss into a Python float."""

    def on_train_batch_end(self, batch, logs=None):
        float((logs or {}).get("loss", 0.0))


def images_per_s(run_dir: Path) -> float:
    return read_history(run_dir / "history.csv")[-1]["images_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {**parse_overrides(args.set), "epochs": args.epochs}
    figures = {"async": [], "sync": []}
    with tempfile.TemporaryDirectory(prefix="fit-loop-") as tmp:
        for round_ in range(args.rounds):
            order = ("async", "sync") if round_ % 2 == 0 else ("sync", "async")
            for name in order:
                run_dir = Path(tmp) / f"{name}-{round_}"
                extra = [ReadLossEveryStep()] if name == "sync" else []
                train(args.preset, args.profile, args.data_dir, run_dir, overrides, callbacks=extra)
                figures[name].append(images_per_s(run_dir))
                print(f"round {round_ + 1} {name}: {figures[name][-1]:,.0f} train images/s", flush=True)
    result = {
        "device": describe_device(),
        "backend": keras.config.backend(),
        "profile": args.profile,
        "async_images_per_s": statistics.median(figures["async"]),
        "sync_images_per_s": statistics.median(figures["sync"]),
    }
    result["async_over_sync"] = result["async_images_per_s"] / result["sync_images_per_s"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
