"""Side by side: the seed architecture in PyTorch eager (channels_last) and in tinyconv (TensorFlow/Keras),
training and inference images/s on random 64x64 data, interleaved (torch, tf, torch, tf, ...) so that load
from other processes hits both; prints each round and the median ratio tinyconv / PyTorch.

PyTorch lives in its own venv outside the repository (it is no project dependency):
    python3 -m venv /work/torchref && /work/torchref/bin/pip install torch==2.13.0 numpy
Usage:
    .venv/bin/python benchmarks/compare_torch.py [--rounds 3] [--batch-size 64] [--steps 6]
        [--torch-python /work/torchref/bin/python] [--variant NAME=JSON ...]
A variant is a set of keyword arguments of tinyconv.bench.bench_model, e.g.
    --variant 'fp32={}' --variant 'bf16={"mixed_precision": "mixed_bfloat16"}' --variant 'xla={"jit_compile": "on"}'
(default: fp32 and bf16). Each measurement runs in a fresh process (no shared thread pools or caches).
`infer` is Keras' predict_on_batch, which runs GELU as one XLA-fused kernel on a CPU (tinyconv.model.kernels.gelu);
the exported SavedModel, TFLite and ONNX files and batch-1 latency: benchmarks/latency.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The PyTorch side lives in the shared reference folder beside the checkout, never in the project.
TORCH_MODEL = REPO.parent / "shared" / "reference" / "torch_seed_model.py"


def run_torch(python: str, batch_size: int, steps: int) -> dict:
    out = subprocess.run(
        [python, str(TORCH_MODEL), str(batch_size), str(steps)],
        check=True, capture_output=True, text=True,
    ).stdout
    train = float(re.search(r"train img/s ([\d.]+)", out).group(1))
    infer = float(re.search(r"infer img/s ([\d.]+)", out).group(1))
    return {"train_images_per_s": train, "infer_images_per_s": infer}


def run_tf(batch_size: int, steps: int, kwargs: dict) -> dict:
    code = (
        "import json, sys; from tinyconv.bench import bench_model; "
        "print(json.dumps(bench_model(**json.loads(sys.argv[1]))))"
    )
    arguments = {"preset": "seed", "batch_size": batch_size, "steps": steps, **kwargs}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(arguments)], check=True, capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--torch-python", default="/work/torchref/bin/python")
    parser.add_argument("--variant", action="append", metavar="NAME=JSON",
                        help="bench_model keyword arguments of one tinyconv variant (repeatable)")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant or ['fp32={}', 'bf16={"mixed_precision": "mixed_bfloat16"}'])
    variants = {name: json.loads(spec) for name, spec in variants.items()}

    ratios = {name: {"train": [], "infer": []} for name in variants}
    for r in range(args.rounds):
        torch = run_torch(args.torch_python, args.batch_size, args.steps)
        print(f"round {r + 1} {'torch':<10} train {torch['train_images_per_s']:7.1f} img/s  "
              f"infer {torch['infer_images_per_s']:7.1f} img/s", flush=True)
        for name, kwargs in variants.items():
            tf = run_tf(args.batch_size, args.steps, kwargs)
            print(f"round {r + 1} {name:<10} train {tf['train_images_per_s']:7.1f} img/s  "
                  f"infer {tf['infer_images_per_s']:7.1f} img/s  (jit_compile={tf['jit_compile']}, "
                  f"{tf['dtype_policy']})", flush=True)
            for key in ("train", "infer"):
                ratios[name][key].append(tf[f"{key}_images_per_s"] / torch[f"{key}_images_per_s"])
    for name, by_key in ratios.items():
        for key, values in by_key.items():
            print(f"{name} {key} ratio tinyconv/torch per round: {', '.join(f'{x:.2f}' for x in values)}; "
                  f"median {statistics.median(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
