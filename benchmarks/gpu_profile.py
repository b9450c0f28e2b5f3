"""What limits the seed's train step on a GPU, and which form of its depthwise conv to train with.

    KERAS_BACKEND=jax python benchmarks/gpu_profile.py --out DIR [--batch-size 128] [--steps 10]
    KERAS_BACKEND=jax python benchmarks/gpu_profile.py --choose --budget-s 120 --json FILE [-- TRAIN FLAGS]

--choose (what the GPU lease script runs before training; docs/gpu.md): for each form of FFTGradDepthwiseConv2D
that TINYCONV_DEPTHWISE names (keras, dense, pallas, shifted: tinyconv.model.fast_path), the train step exactly as
`tinyconv train TRAIN FLAGS` builds it (the flags after `--`, read by tinyconv.cli.train_request; default: the
`reference` profile; tinyconv.training.train.compiled_model: the recipe's optimizer, schedule and loss, its batch
size, its dtype policy, mixed_bfloat16 on a GPU), so that it is the very program training then compiles (under a
JAX_COMPILATION_CACHE_DIR, as in the lease's gpu_train.sh, training loads it from there), on one random batch:
one step from the same initial weights as the keras form, compared with it (`step_differences`: the loss, the
updated weights and the step's gradients), then the whole step timed. A form that fails is recorded with its error
and the next one runs. --budget-s bounds the whole: a form starts only while the time left covers what the keras
form's compile and first step took, and the forms share the timing time left; nothing is measured past it.
FILE gets
    {"device": ..., "forms": {name: {"step_ms", "images_per_s", "agrees", "max_rel_diff", "error"}}, "chosen": name}
(and the run's settings): the fastest form that agrees, keras when none else does. Rehearse it on a CPU:
`KERAS_BACKEND=jax python benchmarks/gpu_profile.py --choose --budget-s 60 --json /tmp/x.json -- --profile reference --batch-size 8`
(the pallas form runs in Pallas' interpreter there: slow, but the same kernels).

The profile (--out), next session: `--skip convs --forms dense,pallas,shift_barrier,grouped_shiftgrad --min-taps 25`
(the 9x9 alone in each form, the axial convs already shifted), after `python benchmarks/pallas_depthwise.py time`.

1. The seed's train step (bf16, batch 128, AdamW, as `tinyconv bench`) under jax.profiler for --steps steps: the
   GPU kernels' time per step, summed by kernel name, and the GPU's idle share (launch gaps, host work).
   The perfetto trace and the table go to DIR.
2. Each spatial convolution of the seed at its own shape, forward and forward+backward, in bf16 and float32, in
   the forms one could write it in JAX: XLA's grouped convolution (what Keras emits: cuDNN), the same with
   float32 operands, shifted sums (one fused elementwise kernel; XLA differentiates it), XLA's forward with a
   shifted-sum kernel gradient, and tinyconv's Pallas kernels (tinyconv.model.pallas_depthwise). Each form is
   checked against the grouped conv in float32 first; one that fails is recorded and the table goes on.
3. The whole step again with the spatial convolutions swapped for each form (monkeypatching Keras' JAX
   depthwise conv): what each buys end to end. A form that fails (a kernel the GPU refuses) is recorded with its
   error and the others still run; the summary lists every form's whole-step time.

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

from tinyconv.data.dataset import OFFICIAL_COUNTS  # noqa: E402
from tinyconv.model.build import build_model  # noqa: E402
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


def dw_dense(x, w):
    """One ordinary conv with the taps on a block-diagonal [kh, kw, C, C] kernel: C times the multiply-adds, on the
    matrix units (tinyconv.model.kernels.depthwise_conv_dense)."""
    from tinyconv.model.kernels import depthwise_conv_dense

    return depthwise_conv_dense(x, w)


def dw_pallas(x, w):
    """tinyconv.model.pallas_depthwise: the Pallas stencil with its own two gradients (Triton; interpreted off a GPU)."""
    from tinyconv.model import fast_path, pallas_depthwise

    return pallas_depthwise.depthwise_conv(x, w, interpret=fast_path.pallas_interpret())


FORMS = {
    "grouped": dw_grouped,
    "grouped_f32": dw_grouped_f32,
    "shift": dw_shift,
    "shift_barrier": dw_shift_barrier,
    "grouped_shiftgrad": dw_grouped_shiftgrad,
    "dense": dw_dense,
    "pallas": dw_pallas,
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
                if form == "grouped_f32" and dtype == jnp.float32:
                    continue
                row = {"conv": name, "dtype": jnp.dtype(dtype).name, "form": form}
                try:
                    fwd = jax.jit(fn)
                    step = jax.jit(jax.grad(lambda a, b, fn=fn: jnp.sum((fn(a, b) * g).astype(jnp.float32)),
                                            argnums=(0, 1)))
                    out = fwd(x, w).astype(jnp.float32)
                    grads = step(x, w)
                    row["rel_err"] = float(jnp.linalg.norm(out - reference) / jnp.linalg.norm(reference))
                    row["grad_rel_err"] = max(
                        float(jnp.linalg.norm(d.astype(jnp.float32) - r) / jnp.linalg.norm(r))
                        for d, r in zip(grads, ref_grads)
                    )
                    row["fwd_ms"] = 1e3 * time_fn(fwd, x, w, reps=reps)
                    row["fwd_bwd_ms"] = 1e3 * time_fn(step, x, w, reps=reps)
                except Exception as error:  # a form this conv or device refuses: record it, time the others
                    row["error"] = describe_error(error)
                    print(f"{name:18s} {row['dtype']:8s} {form:18s} failed: {row['error']}", flush=True)
                    rows.append(row)
                    continue
                rows.append(row)
                print(
                    f"{name:18s} {row['dtype']:8s} {form:18s} fwd {row['fwd_ms']:8.3f} ms  fwd+bwd {row['fwd_bwd_ms']:8.3f} ms"
                    f"  err {row['rel_err']:.1e} grad err {row['grad_rel_err']:.1e}",
                    flush=True,
                )
    return rows


def describe_error(error: BaseException) -> str:
    """One line for a JSON record: the exception's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


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


# ------------------------------------------------------------------ --choose: the depthwise form to train with

# TINYCONV_DEPTHWISE values, in the order they are measured: keras first (the others are checked against it), then by
# what they promise, so that a budget too short for all leaves out the least likely: dense (cuDNN's dense kernels,
# which the down convs already gained from), pallas (never run on a GPU), shifted (slower than keras in the whole step
# on an H100: 39.5 against 36.0 ms; docs/performance.md).
CHOICE_FORMS = ("keras", "dense", "pallas", "shifted")
# A form agrees with keras when, after one step from the same weights and batch, every difference of `step_differences`
# is at most this, by dtype policy. float32: rounding only (correct forms measured <= 1e-4 on a CPU). bf16: each form
# rounds its bf16 outputs at other places. On a CPU (ci profile, batch 8, mixed_bfloat16) the correct forms (shifted,
# pallas) measured <= 0.024, while a depthwise kernel gradient of zero measured 1.0 and one of half its size 0.50
# (its weights alone: 0.024, as a correct form's); no GPU figure yet.
AGREEMENT_TOLERANCE = {"float32": 1e-3, "mixed_bfloat16": 0.1, "mixed_float16": 0.1}


def training_plan(train_flags: list[str], policy: str | None):
    """The RunPlan `tinyconv train TRAIN_FLAGS` would compile its model from, without a dataset: the recipe, its
    preset's model for the classes it trains, and the dtype policy and XLA setting train chooses on this machine
    (runtime.precision_policy, runtime.use_jit), or `policy` when given."""
    from pathlib import Path

    from tinyconv import runtime
    from tinyconv.cli import train_request
    from tinyconv.training.recipe import make_config
    from tinyconv.training.train import RunPlan

    preset, profile, overrides = train_request(train_flags)
    config = make_config(profile, preset, **overrides)
    classes = config.classes
    num_classes = 200 if classes is None else (classes if isinstance(classes, int) else len(classes))
    model_config = get_config(config.preset, **{**config.model_overrides, "num_classes": num_classes})
    doc = {"dtype_policy": policy or runtime.precision_policy(config.mixed_precision),
           "jit_compile": runtime.use_jit(config.jit_compile)}
    return RunPlan(config, profile, Path("."), Path("."), model_config, doc, "new")


def _relative(values, reference) -> float:
    """|values - reference| / |reference| over a list of arrays taken as one vector (0 when both are zero)."""
    num = sum(float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)) for a, b in zip(values, reference))
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in reference)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num) > 0)


def step_state(model, loss: float) -> dict:
    """What one train step left: the loss, every model variable (weights and BN statistics) and the optimizer's first
    moments, which after one AdamW step are (1 - beta_1) times the step's gradients. The moments are compared too
    because the weights do not show a gradient's size: Adam's first update is lr * g / |g|, about lr * sign(g)."""
    momentums = [v for v in model.optimizer.variables if v.path.endswith("_momentum")]  # in trainable_variables' order
    if len(momentums) != len(model.trainable_variables):
        raise RuntimeError(f"{len(momentums)} momentum variables for {len(model.trainable_variables)} trainable ones")
    kernels_at = {id(layer.kernel) for layer in depthwise_layers(model)}
    return {"loss": loss, "weights": model.get_weights(),
            "momentums": [keras.ops.convert_to_numpy(v) for v in momentums],
            "depthwise": [i for i, v in enumerate(model.trainable_variables) if id(v) in kernels_at]}


def step_differences(state: dict, reference: dict, initial: list) -> dict:
    """How one step of a form differs from keras' (relative differences):
        loss               the step's loss
        weights            every variable's change (BN statistics included: the forward's batch statistics), all
                           as one vector, against keras' change
        gradients          the optimizer's first moments, all as one vector
        depthwise_kernels  the same, for the depthwise kernels alone (the largest): the gradients the form computes
                           itself, a small share of the whole
    """
    return {
        "loss": abs(state["loss"] - reference["loss"]) / max(abs(reference["loss"]), 1e-12),
        "weights": _relative([w - w0 for w, w0 in zip(state["weights"], initial)],
                             [w - w0 for w, w0 in zip(reference["weights"], initial)]),
        "gradients": _relative(state["momentums"], reference["momentums"]),
        "depthwise_kernels": max([_relative([state["momentums"][i]], [reference["momentums"][i]])
                                  for i in reference["depthwise"]], default=0.0),
    }


def depthwise_layers(model) -> list:
    from tinyconv.model.kernels import FFTGradDepthwiseConv2D

    return [layer for layer in model._flatten_layers() if isinstance(layer, FFTGradDepthwiseConv2D)]


def measure_form(form: str, plan, batch, steps_per_epoch: int, steps: int, deadline: float, forms_left: int,
                 reference: dict) -> dict:
    """One form of the depthwise conv in the whole train step: built as training builds it, one step from the
    reference's initial weights compared with the reference's step (step_differences), then timed for `steps` steps,
    or fewer (at least one) once its share of the time left is used: the time to the deadline over `forms_left`.
    `reference`: {} for keras itself (filled here: initial weights and step_state)."""
    from tinyconv.training.train import compiled_model

    entry = {"step_ms": None, "images_per_s": None, "agrees": False, "max_rel_diff": None, "error": None}
    os.environ["TINYCONV_DEPTHWISE"] = form
    model = compiled_model(plan, steps_per_epoch)
    paths = [layer._path for layer in depthwise_layers(model)]
    entry["layers_in_form"] = f"{paths.count(form)}/{len(paths)}"  # the layers this form fits; the others stay keras
    if not paths.count(form):  # it would be keras again under another name
        entry["error"] = "no depthwise layer of this model takes this form here (fast_path.depthwise_conv)"
        return entry
    if reference:
        model.set_weights(reference["initial"])
    else:
        reference["initial"] = model.get_weights()
    x, y = batch
    start = time.perf_counter()
    loss = float(model.train_on_batch(x, y, return_dict=True)["loss"])  # traces and compiles the step
    entry["compile_s"] = round(time.perf_counter() - start, 2)
    state = step_state(model, loss)
    if "loss" not in reference:
        reference.update(state)
    entry["rel_diffs"] = step_differences(state, reference, reference["initial"])
    entry["max_rel_diff"] = max(entry["rel_diffs"].values())
    entry["agrees"] = bool(entry["max_rel_diff"] <= AGREEMENT_TOLERANCE[plan.doc["dtype_policy"]])
    timed = 0
    start = time.perf_counter()
    stop = start + max(deadline - start, 0.0) / forms_left
    while timed < steps and (timed == 0 or time.perf_counter() < stop):  # at least one timed step
        model.train_on_batch(x, y)  # returns the loss as a number: each step has finished when it returns
        timed += 1
    seconds = (time.perf_counter() - start) / timed
    entry.update(step_ms=round(1e3 * seconds, 3), images_per_s=round(len(x) / seconds, 1), timed_steps=timed)
    return entry


def choose_form(train_flags: list[str], budget_s: float, steps: int, policy: str | None) -> dict:
    """Measure every CHOICE_FORMS form in the whole train step (measure_form) within `budget_s` seconds, and name the
    fastest that agrees with keras (keras when none else does, or when keras itself failed)."""
    from tinyconv import runtime

    deadline = time.perf_counter() + budget_s
    plan = training_plan(train_flags, policy)
    config, size = plan.config, plan.model_config.image_size
    batch_size = config.batch_size
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((batch_size, size, size, 3), dtype=np.float32),
             np.eye(plan.model_config.num_classes, dtype=np.float32)[
                 rng.integers(0, plan.model_config.num_classes, size=batch_size)])
    # the steps of the run's epoch, as training counts them on the official data (its images a class, capped by the
    # recipe): the schedule's constants are then the run's, so each form's step is the very program training compiles,
    # and under gpu_train.sh's JAX_COMPILATION_CACHE_DIR training loads the chosen one instead of compiling it again
    per_class = min(OFFICIAL_COUNTS["train_per_class"], config.max_train_per_class or OFFICIAL_COUNTS["train_per_class"])
    steps_per_epoch = max(1, per_class * plan.model_config.num_classes // batch_size)
    result = {"device": runtime.describe_device(), "forms": {}, "chosen": "keras",
              "train_flags": train_flags, "profile": plan.profile, "preset": config.preset, "batch_size": batch_size,
              "dtype_policy": plan.doc["dtype_policy"], "budget_s": budget_s,
              "tolerance": AGREEMENT_TOLERANCE[plan.doc["dtype_policy"]],
              "jax": jax.__version__, "keras": keras.__version__}
    previous = os.environ.get("TINYCONV_DEPTHWISE")
    reference: dict = {}
    try:
        for index, form in enumerate(CHOICE_FORMS):
            left = deadline - time.perf_counter()
            cost = result["forms"].get("keras", {}).get("compile_s", 0.0)  # what one more form will take, about
            if left <= 0 or left < cost:
                result["forms"][form] = {"step_ms": None, "images_per_s": None, "agrees": False, "max_rel_diff": None,
                                         "error": f"not measured: {max(left, 0):.0f} s of the budget left, one form's "
                                                  f"compile took {cost:.0f} s"}
                continue
            if form != "keras" and "loss" not in reference:
                result["forms"][form] = {"step_ms": None, "images_per_s": None, "agrees": False,
                                         "max_rel_diff": None, "error": "not compared: the keras form failed"}
                continue
            try:
                entry = measure_form(form, plan, batch, steps_per_epoch, steps, deadline, len(CHOICE_FORMS) - index,
                                     reference)
            except Exception as error:  # one form failing (a kernel the GPU refuses) must not cost the others
                entry = {"step_ms": None, "images_per_s": None, "agrees": False, "max_rel_diff": None,
                         "error": describe_error(error)}
            finally:
                keras.backend.clear_session()
            result["forms"][form] = entry
            print(f"{form:8s} " + (f"{entry['step_ms']:9.2f} ms/step {entry['images_per_s']:9.1f} img/s  "
                                   f"max rel diff {entry['max_rel_diff']:.1e} agrees {entry['agrees']}"
                                   if entry["error"] is None else f"failed: {entry['error']}"), flush=True)
    finally:
        if previous is None:
            os.environ.pop("TINYCONV_DEPTHWISE", None)
        else:
            os.environ["TINYCONV_DEPTHWISE"] = previous
    agreeing = {name: entry["step_ms"] for name, entry in result["forms"].items()
                if entry["agrees"] and entry["step_ms"] is not None}
    if agreeing:
        result["chosen"] = min(agreeing, key=agreeing.get)
    print(f"chosen: {result['chosen']}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="the profile's folder (without --choose)")
    parser.add_argument("--choose", action="store_true",
                        help="time each depthwise form in the train step and choose one (writes --json)")
    parser.add_argument("--json", help="--choose: where the choice is written")
    parser.add_argument("--budget-s", type=float, default=120.0, help="--choose: seconds after which nothing more is measured")
    parser.add_argument("--batch-size", type=int, default=128, help="the profile's batch (--choose: the run's)")
    parser.add_argument("--steps", type=int, default=10, help="steps profiled; --choose: most steps timed per form")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--policy", default=None,
                        help="dtype policy (default: mixed_bfloat16; --choose: the one training chooses here)")
    parser.add_argument("--trace-dir", help="where jax.profiler writes (default OUT/trace); its perfetto file is copied to OUT")
    parser.add_argument("--forms", default="shift", help="comma-separated FORMS to time in the whole step")
    parser.add_argument("--min-taps", type=int, default=1,
                        help="swap only depthwise convs with at least this many taps (25: the 9x9 alone)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: profile, convs, forms")
    argv = sys.argv[1:]
    train_flags = argv[argv.index("--") + 1:] if "--" in argv else ["--profile", "reference"]
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.choose:
        if not args.json:
            parser.error("--choose needs --json FILE")
        from tinyconv.fileio import write_json

        write_json(args.json, choose_form(train_flags, args.budget_s, args.steps, args.policy))
        return 0
    if not args.out:
        parser.error("--out DIR is needed (or --choose)")
    args.policy = args.policy or "mixed_bfloat16"
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
        result["forms"] = {"keras": {"train_step_ms": result["baseline_train_step_ms"],
                                     "infer_step_ms": result["baseline_infer_step_ms"]}}
        for form in filter(None, args.forms.split(",")):
            if form not in FORMS:
                result["forms"][form] = {"error": f"unknown form; choose from {', '.join(FORMS)}"}
                continue
            original = patched_depthwise(form, args.min_taps)
            try:
                _, train_f, infer_f = make_step(args.batch_size, args.policy)
                ms = 1e3 * seconds_per_call(train_f, 20)
                ims = 1e3 * seconds_per_call(infer_f, 20)
            except Exception as error:  # one form failing (a kernel the GPU refuses) must not cost the others
                result["forms"][form] = {"error": describe_error(error)}
                print(f"whole step, depthwise as {form}: failed: {result['forms'][form]['error']}", flush=True)
                continue
            finally:
                from keras.src.backend.jax import nn as jax_nn

                jax_nn.depthwise_conv = original
                keras.backend.clear_session()
            result["forms"][form] = {"train_step_ms": ms, "infer_step_ms": ims}
            print(f"whole step, depthwise as {form}: train {ms:.2f} ms/step "
                  f"({args.batch_size / ms * 1e3:.0f} img/s), infer {ims:.2f} ms", flush=True)
        print("\nwhole train step by form (keras: Keras' own depthwise conv):")
        for form, entry in result["forms"].items():
            print(f"  {form:18s} " + (f"{entry['train_step_ms']:8.2f} ms" if "error" not in entry
                                      else f"failed: {entry['error']}"), flush=True)
    with open(os.path.join(args.out, "gpu_profile.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
