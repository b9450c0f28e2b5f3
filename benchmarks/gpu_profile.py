"""What limits the seed's train step on a GPU: a kernel profile of the step, and its convolutions alone.

    KERAS_BACKEND=jax python benchmarks/gpu_profile.py --out DIR [--batch-size 128] [--steps 10]

Next session's first call: `--skip convs --forms shift_barrier,grouped_shiftgrad,pallas --min-taps 25` (the 9x9
alone in each form, the axial convs already shifted), after `python benchmarks/pallas_depthwise.py time`.

1. The seed's train step (bf16, batch 128, AdamW, as `tinyconv bench`) under jax.profiler for --steps steps: the
   GPU kernels' time per step, summed by kernel name, and the GPU's idle share (launch gaps, host work).
   The perfetto trace and the table go to DIR.
2. Each spatial convolution of the seed at its own shape, forward and forward+backward, in bf16 and float32, in
   the forms one could write it in JAX: XLA's grouped convolution (what Keras emits: cuDNN), the same with
   float32 operands, shifted sums (one fused elementwise kernel; XLA differentiates it), and XLA's forward
   with a shifted-sum kernel gradient. Each form is checked against the grouped conv in float32 first.
3. The whole step again with the spatial convolutions swapped for each form (monkeypatching Keras' JAX
   depthwise conv): what each buys end to end.

The GPU session of docs/performance.md ran this; its output is the table there. Runs on a CPU too (slowly:
use --batch-size 8 --steps 2 to rehearse).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tinyconv.model.build import build_model

from tinyconv.model.config import get_config  # noqa: E402

# --------------------------------------------------------------------------- the forms of a depthwise conv


def dw_grouped(x, w):
    """x [B, H, W, C], w [kh, kw, C, 1] (Keras' layout) -> "same" depthwise conv, as Keras' JAX backend."""
    c = x.shape[-1]
    return jax.lax.conv_general_dilated(
        x, w.reshape(w.shape[0], w.shape[1], 1, c), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
    )


def dw_grouped_f32(x, w):
    return dw_grouped(x.astype(jnp.float32), w.astype(jnp.float32)).astype(x.dtype)


def _shifted(x, kh, kw):
    """The kh*kw shifted views of x padded for "same": yields (i, j, view [B, H, W, C])."""
    h, wd = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i:i + h, j:j + wd, :]


def dw_shift(x, w):
    """Shifted sums, accumulated in float32: the form the axial convs take on a GPU."""
    from tinyconv.model.kernels import depthwise_conv_shifted

    return depthwise_conv_shifted(x, w)


def dw_shift_barrier(x, w):
    """dw_shift with its output behind an optimization barrier: XLA must materialise it once instead of fusing
    the kh*kw-tap sum into each consumer (GELU, BN's statistics and its normalisation) and recomputing it there,
    the suspected reason the 9x9 shifted form is fast alone and slow in the train step (docs/performance.md)."""
    return jax.lax.optimization_barrier(dw_shift(x, w))


@jax.custom_vjp
def dw_grouped_shiftgrad(x, w):
    """The grouped conv forward and input gradient; the kernel gradient as kh*kw reductions of shifted x * g."""
    return dw_grouped(x, w)


def _sg_fwd(x, w):
    return dw_grouped(x, w), (x, w)


def _sg_bwd(res, g):
    x, w = res
    _, vjp_x = jax.vjp(lambda v: dw_grouped(v, w), x)
    (dx,) = vjp_x(g)
    kh, kw = w.shape[:2]
    gf = g.astype(jnp.float32)
    sums = [jnp.sum(view.astype(jnp.float32) * gf, axis=(0, 1, 2)) for _, _, view in _shifted(x, kh, kw)]
    dw = jnp.stack(sums).reshape(kh, kw, -1, 1).astype(w.dtype)
    return dx, dw


dw_grouped_shiftgrad.defvjp(_sg_fwd, _sg_bwd)

def dw_pallas(x, w):
    """benchmarks/pallas_depthwise.py: a Pallas (Triton) stencil with its own two gradients."""
    from pallas_depthwise import depthwise_pallas  # beside this file

    return depthwise_pallas(x, w, (8, 32, 8, False))


FORMS = {
    "grouped": dw_grouped,
    "grouped_f32": dw_grouped_f32,
    "shift": dw_shift,
    "shift_barrier": dw_shift_barrier,
    "grouped_shiftgrad": dw_grouped_shiftgrad,
    "pallas": dw_pallas,  # whole-step form only (--forms pallas): not in the per-conv table, it needs a GPU
}

# (name, [B-less input shape], kernel (kh, kw)): the seed's spatial convs (stage 1 depthwise 9x9; stage 2 axial 7
# and the local 3x3; stage 3 axial 5)
SEED_CONVS = [
    ("s1 9x9 32x32x128", (32, 32, 128), (9, 9)),
    ("s2 1x7 16x16x256", (16, 16, 256), (1, 7)),
    ("s2 7x1 16x16x256", (16, 16, 256), (7, 1)),
    ("s2 3x3 16x16x256", (16, 16, 256), (3, 3)),
    ("s3 1x5 8x8x512", (8, 8, 512), (1, 5)),
    ("s3 5x1 8x8x512", (8, 8, 512), (5, 1)),
]


def time_fn(fn, *args, reps: int = 30) -> float:
    """Median seconds per call of a jitted fn (after a compile and a warm-up call)."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_convs(batch: int, reps: int) -> list[dict]:
    rows = []
    key = jax.random.PRNGKey(0)
    for name, shape, (kh, kw) in SEED_CONVS:
        kx, kw_, kg, key = jax.random.split(key, 4)
        x32 = jax.random.normal(kx, (batch, *shape), jnp.float32)
        w32 = jax.random.normal(kw_, (kh, kw, shape[-1], 1), jnp.float32) * 0.1
        g32 = jax.random.normal(kg, (batch, *shape), jnp.float32)
        reference = jax.jit(dw_grouped)(x32, w32)
        ref_grads = jax.jit(jax.grad(lambda a, b: jnp.sum(dw_grouped(a, b) * g32), argnums=(0, 1)))(x32, w32)
        for dtype in (jnp.bfloat16, jnp.float32):
            x, w, g = x32.astype(dtype), w32.astype(dtype), g32.astype(dtype)
            for form, fn in FORMS.items():
                if form == "pallas" or (form == "grouped_f32" and dtype == jnp.float32):
                    continue
                fwd = jax.jit(fn)
                step = jax.jit(jax.grad(lambda a, b, fn=fn: jnp.sum((fn(a, b) * g).astype(jnp.float32)), argnums=(0, 1)))
                out = fwd(x, w).astype(jnp.float32)
                grads = step(x, w)
                err = float(jnp.linalg.norm(out - reference) / jnp.linalg.norm(reference))
                gerr = max(
                    float(jnp.linalg.norm(d.astype(jnp.float32) - r) / jnp.linalg.norm(r))
                    for d, r in zip(grads, ref_grads)
                )
                row = {
                    "conv": name, "dtype": jnp.dtype(dtype).name, "form": form,
                    "fwd_ms": 1e3 * time_fn(fwd, x, w, reps=reps),
                    "fwd_bwd_ms": 1e3 * time_fn(step, x, w, reps=reps),
                    "rel_err": err, "grad_rel_err": gerr,
                }
                rows.append(row)
                print(
                    f"{name:18s} {row['dtype']:8s} {form:18s} fwd {row['fwd_ms']:8.3f} ms  fwd+bwd {row['fwd_bwd_ms']:8.3f} ms"
                    f"  err {err:.1e} grad err {gerr:.1e}",
                    flush=True,
                )
    return rows


# --------------------------------------------------------------------------------------------- the whole step


def make_step(batch: int, policy: str):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    config = get_config("seed")
    model = build_model(config)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.05),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 64, 64, 3), dtype=np.float32))
    y = jnp.asarray(np.eye(200, dtype=np.float32)[rng.integers(0, 200, size=batch)])
    return model, (lambda: model.train_on_batch(x, y, return_dict=False)), (lambda: model.predict_on_batch(x))


def seconds_per_call(fn, n: int) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(n):
        out = fn()
    np.asarray(out)
    return (time.perf_counter() - start) / n


def summarize_trace(trace_dir: str, steps: int, top: int = 40) -> dict:
    """Sum the GPU kernels of a perfetto trace by name: ms per step, share, calls per step."""
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        print("no perfetto trace written", flush=True)
        return {}
    with gzip.open(paths[0], "rt") as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    names = {}
    for event in events:
        if event.get("ph") == "M" and event.get("name") == "process_name":
            names[event["pid"]] = event.get("args", {}).get("name", "")
    gpu_pids = {pid for pid, name in names.items() if "GPU" in name or "gpu" in name or "stream" in name.lower()}
    total = collections.Counter()
    calls = collections.Counter()
    spans = []
    for event in events:
        if event.get("ph") != "X" or event.get("pid") not in gpu_pids:
            continue
        total[event["name"]] += float(event.get("dur", 0.0))
        calls[event["name"]] += 1
        spans.append((float(event["ts"]), float(event["ts"]) + float(event.get("dur", 0.0))))
    busy_us = sum(total.values())
    wall_us = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    print(f"\nGPU processes: {[names[p] for p in gpu_pids]}")
    print(f"kernels: busy {busy_us / steps / 1e3:.2f} ms per step; first to last kernel {wall_us / steps / 1e3:.2f} ms per step")
    print(f"{'ms/step':>8s} {'share':>6s} {'calls':>6s}  kernel")
    rows = []
    for name, us in total.most_common(top):
        rows.append({"kernel": name, "ms_per_step": us / steps / 1e3, "share": us / busy_us if busy_us else 0.0,
                     "calls_per_step": calls[name] / steps})
        print(f"{us / steps / 1e3:8.3f} {100 * us / busy_us:5.1f}% {calls[name] / steps:6.1f}  {name[:140]}")
    return {"busy_ms_per_step": busy_us / steps / 1e3, "span_ms_per_step": wall_us / steps / 1e3,
            "kernels": len(total), "kernel_calls_per_step": sum(calls.values()) / steps, "top": rows,
            "processes": [names[p] for p in gpu_pids]}


def patched_depthwise(form, min_taps: int = 1):
    """Swap Keras' JAX depthwise conv for one of FORMS in every depthwise conv with at least `min_taps` taps
    (9x9 only: 25). On a GPU the axial convs no longer call it (they take kernels.depthwise_conv_shifted)."""
    from keras.src.backend.jax import nn as jax_nn

    original = jax_nn.depthwise_conv

    def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        taps = kernel.shape[0] * kernel.shape[1]
        if (strides not in (1, (1, 1)) or padding != "same" or kernel.shape[-1] != 1
                or dilation_rate not in (1, (1, 1)) or taps < min_taps):
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        from keras.src.backend.jax.core import convert_to_tensor  # a Variable read under autocast

        return FORMS[form](convert_to_tensor(inputs), convert_to_tensor(kernel))

    jax_nn.depthwise_conv = depthwise_conv
    return original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--policy", default="mixed_bfloat16")
    parser.add_argument("--trace-dir", help="where jax.profiler writes (default OUT/trace); its perfetto file is copied to OUT")
    parser.add_argument("--forms", default="shift", help="comma-separated FORMS to time in the whole step")
    parser.add_argument("--min-taps", type=int, default=1,
                        help="swap only depthwise convs with at least this many taps (25: the 9x9 alone)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: profile, convs, forms")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    result = {"device": str(jax.devices()[0]), "jax": jax.__version__, "keras": keras.__version__,
              "batch_size": args.batch_size, "policy": args.policy}
    print(result, flush=True)

    start = time.perf_counter()
    model, train, infer = make_step(args.batch_size, args.policy)
    train()
    result["compile_s"] = time.perf_counter() - start
    result["baseline_train_step_ms"] = 1e3 * seconds_per_call(train, 20)
    result["baseline_infer_step_ms"] = 1e3 * seconds_per_call(infer, 20)
    print(f"baseline: train {result['baseline_train_step_ms']:.2f} ms/step "
          f"({args.batch_size / result['baseline_train_step_ms'] * 1e3:.0f} img/s), "
          f"infer {result['baseline_infer_step_ms']:.2f} ms/step", flush=True)
    if "profile" not in skip:
        trace_dir = args.trace_dir or os.path.join(args.out, "trace")
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                out = train()
            np.asarray(out)
        result["profile"] = summarize_trace(trace_dir, args.steps)
        for path in glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)[:1]:
            shutil.copy(path, os.path.join(args.out, "perfetto_trace.json.gz"))
    del model
    if "convs" not in skip:
        result["convs"] = bench_convs(args.batch_size, args.reps)
    if "forms" not in skip:
        result["forms"] = {}
        for form in filter(None, args.forms.split(",")):
            original = patched_depthwise(form, args.min_taps)
            try:
                _, train_f, infer_f = make_step(args.batch_size, args.policy)
                ms = 1e3 * seconds_per_call(train_f, 20)
                ims = 1e3 * seconds_per_call(infer_f, 20)
            finally:
                from keras.src.backend.jax import nn as jax_nn

                jax_nn.depthwise_conv = original
            result["forms"][form] = {"train_step_ms": ms, "infer_step_ms": ims}
            print(f"whole step, depthwise as {form}: train {ms:.2f} ms/step "
                  f"({args.batch_size / ms * 1e3:.0f} img/s), infer {ims:.2f} ms", flush=True)
    with open(os.path.join(args.out, "gpu_profile.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
