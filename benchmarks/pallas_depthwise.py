"""A depthwise "same" convolution of our own for the GPU (Pallas, Triton backend), with its two gradients: the
next step for the seed's 9x9 depthwise conv, two thirds of the bf16 train step's kernel time on an H100 in
cuDNN (docs/performance.md). A prototype for the next GPU session, not used by tinyconv yet.

    python benchmarks/pallas_depthwise.py check [--interpret]     # against XLA's grouped conv: forward, both grads
    python benchmarks/pallas_depthwise.py time                    # GPU: a few tilings against cuDNN, at the seed's 9x9

The three kernels, for x [N, H, W, C] (padded here to [N, H+kh-1, W+kw-1, C]), w [kh, kw, C], g = dL/dout:
    forward      out[n, h, w, c] = sum_ij xpad[n, h+i, w+j, c] * w[i, j, c]     one program per (n, row tile, channel
                                   tile), kh*kw loads of a [bh, W, cb] window, float32 accumulation
    input grad   the same stencil on the padded g with the kernel flipped (odd kernels, stride 1, "same")
    kernel grad  dw[i, j, c] = sum_nhw xpad[n, h+i, w+j, c] * g[n, h, w, c]       one program per (channel tile,
                                   image chunk, row tile) writes kh*kw partial sums; XLA adds the partials
Checked on a CPU in Pallas' interpret mode (`check --interpret`); its speed is unmeasured.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl


def _pad(x, kh, kw):
    return jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))


def _stencil(xpad, w, out_hw, *, bh: int, cb: int, interpret: bool):
    """out[n, h, w, c] = sum_ij xpad[n, h+i, w+j, c] * w[i, j, c]; xpad [N, H+kh-1, W+kw-1, C], w [kh, kw, C]."""
    n, _, _, c = xpad.shape
    kh, kw = w.shape[:2]
    height, width = out_hw
    bh, cb = min(bh, height), min(cb, c)

    def kernel(x_ref, w_ref, o_ref):
        b, h0, c0 = pl.program_id(0), pl.program_id(1) * bh, pl.program_id(2) * cb
        acc = jnp.zeros((bh, width, cb), jnp.float32)
        for i in range(kh):
            for j in range(kw):
                window = x_ref[b, pl.ds(h0 + i, bh), pl.ds(j, width), pl.ds(c0, cb)].astype(jnp.float32)
                acc += window * w_ref[i, j, pl.ds(c0, cb)].astype(jnp.float32)[None, None, :]
        o_ref[...] = acc.astype(o_ref.dtype)

    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((n, height, width, c), xpad.dtype),
        grid=(n, height // bh, c // cb),
        in_specs=[pl.BlockSpec(), pl.BlockSpec()],  # whole arrays: each program reads its window with its halo
        out_specs=pl.BlockSpec((None, bh, width, cb), lambda b, h, ch: (b, h, 0, ch)),
        interpret=interpret,
    )(xpad, w)


def _kernel_grad(xpad, g, kh, kw, *, bh: int, cb: int, nb: int, interpret: bool):
    """dw[i, j, c] = sum_nhw xpad[n, h+i, w+j, c] * g[n, h, w, c], as float32 [kh, kw, C]."""
    n, height, width, c = g.shape
    bh, cb, nb = min(bh, height), min(cb, c), min(nb, n)
    row_tiles, chunks = height // bh, n // nb

    def kernel(x_ref, g_ref, o_ref):
        c0, n0, h0 = pl.program_id(0) * cb, pl.program_id(1) * nb, pl.program_id(2) * bh

        def one_image(k, sums):
            grad = g_ref[n0 + k, pl.ds(h0, bh), pl.ds(0, width), pl.ds(c0, cb)].astype(jnp.float32)
            return tuple(
                sums[i * kw + j]
                + jnp.sum(jnp.sum(  # one axis at a time: what Triton's reductions take
                    x_ref[n0 + k, pl.ds(h0 + i, bh), pl.ds(j, width), pl.ds(c0, cb)].astype(jnp.float32) * grad,
                    axis=0), axis=0)
                for i in range(kh) for j in range(kw)
            )

        sums = jax.lax.fori_loop(0, nb, one_image, tuple(jnp.zeros((cb,), jnp.float32) for _ in range(kh * kw)))
        for i in range(kh):
            for j in range(kw):
                o_ref[i, j, :] = sums[i * kw + j]

    partial = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((chunks * row_tiles, kh, kw, c), jnp.float32),
        grid=(c // cb, chunks, row_tiles),
        in_specs=[pl.BlockSpec(), pl.BlockSpec()],
        out_specs=pl.BlockSpec((None, kh, kw, cb), lambda ch, b, h: (b * row_tiles + h, 0, 0, ch)),
        interpret=interpret,
    )(xpad, g)
    return jnp.sum(partial, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_pallas(x, w, config=(8, 32, 8, False)):
    """Stride-1 "same" depthwise conv: x [N, H, W, C], w [kh, kw, C, 1] (Keras' layout), odd kh and kw.
    config: (row tile bh, channel tile cb, images per kernel-grad program nb, interpret)."""
    bh, cb, _, interpret = config
    kh, kw = w.shape[:2]
    return _stencil(_pad(x, kh, kw), w[:, :, :, 0], x.shape[1:3], bh=bh, cb=cb, interpret=interpret)


def _forward(x, w, config):
    return depthwise_pallas(x, w, config), (x, w)


def _backward(config, residuals, g):
    x, w = residuals
    bh, cb, nb, interpret = config
    kh, kw = w.shape[:2]
    flipped = w[::-1, ::-1, :, 0]  # the transpose of a "same" correlation with an odd kernel
    dx = _stencil(_pad(g, kh, kw), flipped, x.shape[1:3], bh=bh, cb=cb, interpret=interpret)
    dw = _kernel_grad(_pad(x, kh, kw), g, kh, kw, bh=bh, cb=cb, nb=nb, interpret=interpret)
    return dx.astype(x.dtype), dw[:, :, :, None].astype(w.dtype)


depthwise_pallas.defvjp(_forward, _backward)


def depthwise_xla(x, w):
    c = x.shape[-1]
    return jax.lax.conv_general_dilated(x, w.reshape(w.shape[0], w.shape[1], 1, c), (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def check(interpret: bool, shapes) -> float:
    """Largest relative difference (|a - b| / |b|) of the output and both gradients against XLA's conv, float32."""
    worst = 0.0
    key = jax.random.PRNGKey(0)
    for n, h, wd, c, kh, kw, config in shapes:
        k1, k2, k3, key = jax.random.split(key, 4)
        x = jax.random.normal(k1, (n, h, wd, c), jnp.float32)
        w = jax.random.normal(k2, (kh, kw, c, 1), jnp.float32) * 0.1
        g = jax.random.normal(k3, (n, h, wd, c), jnp.float32)
        cfg = (*config, interpret)
        got = [depthwise_pallas(x, w, cfg), *jax.grad(lambda a, b: jnp.sum(depthwise_pallas(a, b, cfg) * g), (0, 1))(x, w)]
        want = [depthwise_xla(x, w), *jax.grad(lambda a, b: jnp.sum(depthwise_xla(a, b) * g), (0, 1))(x, w)]
        errors = [float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) for a, b in zip(got, want)]
        print(f"N{n} {h}x{wd}x{c} k{kh}x{kw} tiles {config}: out {errors[0]:.1e}  dx {errors[1]:.1e}  dw {errors[2]:.1e}",
              flush=True)
        worst = max(worst, *errors)
    return worst


def time_tilings(batch: int = 128, reps: int = 20) -> None:
    """The seed's stage-1 9x9 at 32x32x128 in bf16: forward and forward+backward, cuDNN against a few tilings."""
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, 32, 32, 128), jnp.bfloat16)
    w = (jax.random.normal(jax.random.PRNGKey(2), (9, 9, 128, 1), jnp.float32) * 0.1).astype(jnp.bfloat16)
    g = jax.random.normal(jax.random.PRNGKey(3), x.shape, jnp.bfloat16)

    def timed(fn):
        fwd = jax.jit(fn)
        step = jax.jit(jax.grad(lambda a, b: jnp.sum((fn(a, b) * g).astype(jnp.float32)), (0, 1)))
        result = []
        for f in (fwd, step):
            jax.block_until_ready(f(x, w))
            start = time.perf_counter()
            for _ in range(reps):
                out = f(x, w)
            jax.block_until_ready(out)
            result.append(1e3 * (time.perf_counter() - start) / reps)
        return result

    print(f"cuDNN grouped: fwd {timed(depthwise_xla)[0]:.3f} ms, fwd+bwd {timed(depthwise_xla)[1]:.3f} ms", flush=True)
    for config in ((8, 32, 8), (4, 32, 8), (8, 64, 8), (16, 16, 8), (8, 32, 16)):
        try:
            fwd, both = timed(lambda a, b, c=config: depthwise_pallas(a, b, (*c, False)))
            print(f"pallas {config}: fwd {fwd:.3f} ms, fwd+bwd {both:.3f} ms", flush=True)
        except Exception as error:  # a tiling Triton refuses: say so, try the next
            print(f"pallas {config}: {type(error).__name__}: {str(error).splitlines()[0][:200]}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["check", "time"])
    parser.add_argument("--interpret", action="store_true", help="Pallas' interpreter (any device, slow)")
    args = parser.parse_args()
    if args.what == "check":
        shapes = [(2, 16, 16, 32, 9, 9, (8, 16, 2)), (4, 16, 16, 32, 9, 9, (4, 32, 2)), (4, 8, 8, 16, 3, 3, (4, 16, 2)), (2, 8, 16, 32, 1, 7, (8, 32, 1)),
                  (2, 16, 8, 16, 5, 1, (8, 16, 2))]
        worst = check(args.interpret, shapes)
        print(f"worst relative difference: {worst:.1e}")
        return 0 if worst <= 1e-5 else 1
    time_tilings()
    return 0


if __name__ == "__main__":
    sys.exit(main())
