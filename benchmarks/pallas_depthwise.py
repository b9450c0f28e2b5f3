"""The depthwise conv's Pallas kernels (tinyconv.model.pallas_depthwise) from the command line.

    python benchmarks/pallas_depthwise.py check [--interpret]      # against XLA's grouped conv: forward, both grads
    python benchmarks/pallas_depthwise.py time [--batch-size 128]   # GPU: tilings against cuDNN at the seed's 9x9

`check` runs float32 shapes whose tiles cross every seam of the three kernels (rows, channels, image chunks) and
exits 1 when a relative difference exceeds 1e-5; without a GPU it runs in Pallas' interpreter (--interpret forces
it on a GPU too). `time` compares cuDNN's grouped conv with the automatic tiling and a few others, forward and
forward+backward in bf16 (a tiling Triton refuses is reported and skipped). Which form the model trains with is
`benchmarks/gpu_profile.py --choose`'s decision, in the whole train step.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from tinyconv.model.pallas_depthwise import Tiles, choose_tiles, depthwise_conv, depthwise_conv_xla

# (x shape, kernel (kh, kw), tiles or None for choose_tiles): N in chunks, rows and channels in several tiles
CHECK_SHAPES = [
    ((4, 16, 16, 32), (9, 9), Tiles(rows=4, channels=16, images=2)),
    ((2, 16, 16, 32), (9, 9), Tiles(rows=8, channels=16, images=1)),
    ((3, 12, 8, 24), (3, 5), None),  # H and C not powers of two, N odd: the automatic tiles (4 rows, 8 channels, 3)
    ((2, 8, 16, 32), (1, 7), Tiles(rows=8, channels=32, images=1)),
    ((2, 16, 8, 16), (5, 1), Tiles(rows=8, channels=16, images=2)),
]
TIME_TILES = [Tiles(8, 32, 8), Tiles(4, 32, 8), Tiles(8, 16, 8), Tiles(2, 32, 8), Tiles(8, 32, 8, warps=8),
              Tiles(8, 32, 16)]


def check(interpret: bool, shapes=CHECK_SHAPES) -> float:
    """Largest relative difference (max |a - b| / max |b|) of the output and both gradients against XLA's conv."""
    worst = 0.0
    key = jax.random.PRNGKey(0)
    for shape, (kh, kw), tiles in shapes:
        k1, k2, k3, key = jax.random.split(key, 4)
        x = jax.random.normal(k1, shape, jnp.float32)
        w = jax.random.normal(k2, (kh, kw, shape[-1], 1), jnp.float32) * 0.1
        g = jax.random.normal(k3, shape, jnp.float32)

        def pallas(a, b, tiles=tiles):
            return depthwise_conv(a, b, interpret=interpret, tiles=tiles)

        got = [pallas(x, w), *jax.grad(lambda a, b: jnp.sum(pallas(a, b) * g), (0, 1))(x, w)]
        want = [depthwise_conv_xla(x, w), *jax.grad(lambda a, b: jnp.sum(depthwise_conv_xla(a, b) * g), (0, 1))(x, w)]
        errors = [float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(got, want)]
        used = tiles or choose_tiles(shape, (kh, kw))
        print(f"{shape} k{kh}x{kw} {used}: out {errors[0]:.1e}  dx {errors[1]:.1e}  dw {errors[2]:.1e}", flush=True)
        worst = max(worst, *errors)
    return worst


def time_tilings(batch: int = 128, reps: int = 20) -> None:
    """The seed's stage-1 9x9 at 32x32x128 in bf16: forward and forward+backward, cuDNN against the tilings."""
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

    fwd, both = timed(depthwise_conv_xla)
    print(f"cuDNN grouped: fwd {fwd:.3f} ms, fwd+bwd {both:.3f} ms", flush=True)
    print(f"automatic tiles: {choose_tiles(x.shape, (9, 9))}", flush=True)
    for tiles in TIME_TILES:
        try:
            fwd, both = timed(lambda a, b, t=tiles: depthwise_conv(a, b, interpret=False, tiles=t))
            print(f"pallas {tiles}: fwd {fwd:.3f} ms, fwd+bwd {both:.3f} ms", flush=True)
        except Exception as error:  # a tiling Triton refuses: say so, try the next
            print(f"pallas {tiles}: {type(error).__name__}: {str(error).splitlines()[0][:200]}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["check", "time"])
    parser.add_argument("--interpret", action="store_true", help="check: Pallas' interpreter even on a GPU")
    parser.add_argument("--batch-size", type=int, default=128, help="time: the batch of the seed's 9x9")
    args = parser.parse_args()
    if args.what == "check":
        worst = check(interpret=args.interpret or jax.default_backend() != "gpu")
        print(f"worst relative difference: {worst:.1e}")
        return 0 if worst <= 1e-5 else 1
    time_tilings(args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
