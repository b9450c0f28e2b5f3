"""Why a data-parallel JAX run once hung on forced host devices: Keras' `jit_compile=False` (docs/gpu.md).

The `ci` profile sets jit_compile=off (TensorFlow's XLA is slow on a CPU), and tinyconv used to pass that to
Keras on JAX too. There it does not mean "without XLA" but "run the train step op by op", each op its own
small XLA program; under keras.distribution.DataParallel every op on a sharded array is a multi-device
program, and on XLA's CPU client an all-reduce among them waited for a participant that never came:
"Expected 2 threads to join the rendezvous, but only 1 of them arrived", then after 40 s XLA aborts the
process. The input is not involved (numpy batches here). This script shows it on the `ci` model with random
data:

    .venv/bin/python benchmarks/jax_eager_data_parallel.py eager          # hangs; XLA aborts it
    .venv/bin/python benchmarks/jax_eager_data_parallel.py eager --sync   # hung too (once it completed, in 108 s)
    .venv/bin/python benchmarks/jax_eager_data_parallel.py jit            # completes: one program per step

Measured on the 2-core CPU machine shared with other jobs (keras 3.15.1, jax 0.10.2, Python 3.11): eager
aborted on the first step's all-reduce (5 of 6 op-by-op runs, here and in tinyconv's `ci` run; the one that
completed had jax_cpu_enable_async_dispatch=False, which JAX documents for one-device computations only, and
the same setting hung in this script: a race we did not narrow further); jit trained its 2 steps in 45 s,
compilation included. tinyconv now always jits the step on JAX (tinyconv.runtime.use_jit).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("eager", "jit"), help="Keras jit_compile=False (eager) or True (jit)")
    parser.add_argument("--sync", action="store_true", help="jax_cpu_enable_async_dispatch=False (no reliable help)")
    parser.add_argument("--devices", type=int, default=2, help="forced host devices (default 2)")
    args = parser.parse_args(argv)
    # before JAX is imported: Keras on JAX, the CPU client split into `devices` devices
    os.environ.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
                      XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
    import jax
    import keras
    import numpy as np

    from tinyconv.model.build import build_model

    if args.sync:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    model = build_model("tiny", widths=(16, 32, 64), depths=(1, 1, 1), num_classes=4)  # the ci model
    model.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True), jit_compile=args.mode == "jit")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64, 64, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 32)]
    start = time.perf_counter()
    model.fit(x, y, batch_size=16, epochs=1, verbose=2, shuffle=False)
    print(f"{args.mode}{' --sync' if args.sync else ''} on {jax.device_count()} devices: "
          f"trained 2 steps in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
