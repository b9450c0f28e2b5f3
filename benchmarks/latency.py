"""CPU inference side by side: the seed model in Keras, as an exported SavedModel, TFLite and ONNX file (each in
its own runtime), and the same architecture in PyTorch eager: images/s at batch 64 and batch-1 latency (median
and 95th percentile over 200 single images), in rounds that interleave the runtimes, each measurement in a fresh
process, so that load from other processes hits all of them; prints each round and the median over rounds.

The exports come from `tinyconv export` (run it first; the files' parity checks are printed there):
    .venv/bin/tinyconv export models/seed-reference-e15.keras --format onnx --out /tmp/seed.onnx
    (and --format savedmodel --out /tmp/seed_savedmodel, --format tflite --out /tmp/seed.tflite)
PyTorch lives in its own venv outside the repository (../shared/reference/README.md):
    python3 -m venv /work/torchref && /work/torchref/bin/pip install torch==2.13.0 numpy
Usage:
    .venv/bin/python benchmarks/latency.py --keras models/seed-reference-e15.keras --savedmodel /tmp/seed_savedmodel \\
        --tflite /tmp/seed.tflite --onnx /tmp/seed.onnx [--rounds 2] [--single 200] [--batch-size 64]
        [--steps 6] [--torch-python /work/torchref/bin/python] [--data-dir DIR]
Inputs: real val images (uint8) when --data-dir holds the dataset, else random pixels; PyTorch gets random float
input of the same shape (its model has random weights: only its speed is compared). Keras is timed with
`predict_on_batch` on normalised float32 images (what `tinyconv predict` and `evaluate` run); the exports take
the uint8 pixels and normalise inside the graph.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TORCH_MODEL = REPO.parent / "shared" / "reference" / "torch_seed_model.py"


WARMUP_BATCHES = 10  # untimed batches per runtime before timing (kernel selection, allocator, XLA compiles)


def time_runner(run, images, batch_size: int, steps: int, single: int) -> dict:
    """images/s of `run` on batches of `batch_size` (after WARMUP_BATCHES warm-up calls) and the latency of
    `single` calls on one image each (after 5 warm-up calls)."""
    batch = images[:batch_size]
    for _ in range(WARMUP_BATCHES):
        run(batch)
    start = time.perf_counter()
    for _ in range(steps):
        run(batch)
    batch_s = (time.perf_counter() - start) / steps
    for i in range(5):
        run(images[i : i + 1])
    latencies = []
    for i in range(single):
        one = images[i % len(images) : i % len(images) + 1]
        start = time.perf_counter()
        run(one)
        latencies.append((time.perf_counter() - start) * 1000.0)
    latencies.sort()
    return {
        "batch_images_per_s": batch_size / batch_s,
        "single_median_ms": statistics.median(latencies),
        "single_p95_ms": latencies[min(len(latencies) - 1, int(round(0.95 * len(latencies))) - 1)],
    }


def worker(kind: str, path: str | None, args) -> dict:
    """One measurement in this process (a fresh one per measurement): prints one JSON line."""
    import numpy as np

    count = max(args.batch_size, args.single)
    if kind == "torch":
        import torch

        sys.path.insert(0, str(TORCH_MODEL.parent))
        from torch_seed_model import build

        model = build().to(memory_format=torch.channels_last)
        images = torch.rand(count, 3, 64, 64).to(memory_format=torch.channels_last)
        # One backward pass first: in a process that has never run one, PyTorch 2.13's eval forward ran at
        # ~95 img/s here, after it at ~158 (a train()/eval() toggle or a train-mode forward alone did not do
        # it). compare_torch.py's PyTorch side trains before it infers, so both scripts time the fast state.
        model(images[: args.batch_size]).sum().backward()
        model.zero_grad(set_to_none=True)
        model.eval()

        def run(x):
            with torch.no_grad():
                return model(x)

        result = time_runner(run, images, args.batch_size, args.steps, args.single)
        result["threads"] = torch.get_num_threads()
        return result

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tinyconv.deploy.inference import load_exported, load_run_model

    images = None
    if args.data_dir:
        from tinyconv.data.dataset import load_split

        try:
            val = load_split(args.data_dir, "val")
            images = np.ascontiguousarray(val.images[:count])
        except Exception:  # no dataset: random pixels time the same
            images = None
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
    if kind == "keras":
        from tinyconv.data.augment import normalize

        model = load_run_model(path)[0]
        floats = np.asarray(normalize(images))
        result = time_runner(model.predict_on_batch, floats, args.batch_size, args.steps, args.single)
    else:
        exported = load_exported(path, kind, batch_size=args.batch_size)
        result = time_runner(exported.run, images, args.batch_size, args.steps, args.single)
    return result


def measure(kind: str, path: str | None, args) -> dict:
    python = args.torch_python if kind == "torch" else sys.executable
    command = [python, str(Path(__file__).resolve()), "--worker", kind, "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--single", str(args.single)]
    if path:
        command += ["--path", str(path)]
    if args.data_dir and kind != "torch":
        command += ["--data-dir", str(args.data_dir)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras", help="a .keras file")
    parser.add_argument("--savedmodel", help="a SavedModel folder from tinyconv export")
    parser.add_argument("--tflite", help="a .tflite file from tinyconv export")
    parser.add_argument("--onnx", help="an .onnx file from tinyconv export")
    parser.add_argument("--tflite-int8", help="a .tflite file from tinyconv export --quantize int8 (timed as well)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="timed batches")
    parser.add_argument("--single", type=int, default=200, help="single images timed one by one")
    parser.add_argument("--torch-python", default="/work/torchref/bin/python")
    parser.add_argument("--data-dir", default=os.environ.get("TINYCONV_DATA_DIR"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args)))
        return 0

    given = {  # label -> (worker kind, path)
        "keras": ("keras", args.keras), "savedmodel": ("savedmodel", args.savedmodel),
        "tflite": ("tflite", args.tflite), "onnx": ("onnx", args.onnx), "tflite-int8": ("tflite", args.tflite_int8),
    }
    runtimes = {"torch": ("torch", None)} | {label: run for label, run in given.items() if run[1]}
    results = {label: [] for label in runtimes}
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        for kind, (worker_kind, path) in runtimes.items():
            result = measure(worker_kind, path, args)
            results[kind].append(result)
            print(f"round {r + 1} (load {load:.1f}) {kind:<11} batch {args.batch_size}: "
                  f"{result['batch_images_per_s']:7.1f} img/s   batch 1: median {result['single_median_ms']:6.2f} ms, "
                  f"p95 {result['single_p95_ms']:6.2f} ms", flush=True)
    print(f"\nmedian over {args.rounds} rounds; ratio = img/s over PyTorch's in the same round")
    for kind, rows in results.items():
        ratios = [row["batch_images_per_s"] / torch["batch_images_per_s"] for row, torch in zip(rows, results["torch"])]
        print(f"{kind:<11} {statistics.median(r['batch_images_per_s'] for r in rows):7.1f} img/s "
              f"(ratio {statistics.median(ratios):.2f}: {', '.join(f'{x:.2f}' for x in ratios)})   "
              f"batch 1 median {statistics.median(r['single_median_ms'] for r in rows):6.2f} ms, "
              f"p95 {statistics.median(r['single_p95_ms'] for r in rows):6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
