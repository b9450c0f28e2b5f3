"""A stride-1 "same" depthwise convolution written in Pallas for the GPU, with its own two gradients.

What: `depthwise_conv(x, kernel, interpret=...)`, x [N, H, W, C] and kernel [kh, kw, C, 1] (Keras' layout), odd kh
and kw, as Keras' DepthwiseConv2D(padding="same", strides=1) computes it; differentiable (custom VJP), float32
accumulation, returned in x's dtype. FFTGradDepthwiseConv2D takes it as its "pallas" form (fast_path.depthwise_conv,
TINYCONV_DEPTHWISE=pallas) on the JAX backend.

Why: the seed's 9x9 depthwise conv at 32x32x128 was two thirds of the bf16 train step's GPU kernel time in cuDNN
(docs/performance.md); this is the candidate to beat it. Its speed on a GPU is not measured yet:
`benchmarks/gpu_profile.py --choose` times it in the whole train step and picks the form.

The three kernels, for xpad = x padded to [N, H+kh-1, W+kw-1, C] and g = dL/dout:
    forward      out[n, h, w, c] = sum_ij xpad[n, h+i, w+j, c] * kernel[i, j, c]: one program per (image, row
                 tile, channel tile) holds a [rows, W, channels] float32 accumulator and makes kh*kw loads of
                 the window it needs (inputs are whole arrays in global memory, read through the cache)
    input grad   the same stencil on the padded g with the kernel flipped (the transpose of an odd "same"
                 correlation at stride 1)
    kernel grad  dk[i, j, c] = sum_nhw xpad[n, h+i, w+j, c] * g[n, h, w, c]: one program per (channel tile,
                 image chunk, row tile) loops over its images and writes kh*kw partial sums; XLA adds them

Backend: Triton, explicitly (`compiler_params=pltriton.CompilerParams(...)`). JAX 0.10.2 (this venv) lowers a GPU
call with no compiler params to Mosaic GPU by default (jax_pallas_use_mosaic_gpu), which stages whole-array blocks in
shared memory and refuses this kernel (it asks for ~52 MB at the seed's batch 128); JAX 0.11.2 (the GPU machines')
has no such option and lowers it to Triton. Pallas picks the GPU backend by the type of `compiler_params` first
(jax/_src/pallas/pallas_call.py), so this kernel is Triton under both; 0.11 warns that the Triton backend is
deprecated, without removing it. The custom call is "__gpu$xla.gpu.triton" under both (tests/test_pallas_depthwise.py
exports the kernels for an H100 on a CPU and checks it; run under JAX 0.11.2 too on 2026-12-06, in a Python 3.12 venv).
`interpret=True` runs the same kernels in Pallas' interpreter on any device (slowly): the form on a CPU.

Tiling constraints (`choose_tiles`; `unsupported` says why a shape cannot be taken):
    - every array a Triton program loads or stores must have power-of-two dims: the [rows, W, channels] blocks,
      so W must be a power of two (a program holds whole rows), rows a power of two dividing H and channels a
      power of two dividing C (1 is allowed: any H and C fit, small factors slowly);
    - rows * W * channels <= MAX_BLOCK_ELEMENTS, the float32 accumulator a program keeps in registers;
    - the padded input must have fewer than 2**31 elements (32-bit offsets);
    - images per kernel-gradient program: the largest divisor of N up to MAX_IMAGES_PER_PROGRAM.
Explicit `tiles` are checked against the same rules. The batch N disqualifies a shape only by the 2**31 limit.

JAX only: imported where the "pallas" form is used (kernels.depthwise_conv_pallas), never at `import tinyconv`
nor on the TensorFlow path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from tinyconv.errors import TinyconvError

MAX_ROW_TILE = 8
MAX_CHANNEL_TILE = 32
MAX_IMAGES_PER_PROGRAM = 8
# A [rows, W, channels] float32 accumulator per program: 8192 floats are 64 registers a thread at 4 warps,
# the seed's 9x9 tile (8 rows x 32 wide x 32 channels)
MAX_BLOCK_ELEMENTS = 8192
MAX_ELEMENTS = 2**31 - 1  # Triton's offsets into an array are 32-bit


@dataclass(frozen=True)
class Tiles:
    """How the three kernels split the work (hashable: it is a static argument of the custom VJP)."""

    rows: int  # output rows per program: a power of two dividing H
    channels: int  # channels per program: a power of two dividing C
    images: int  # images per kernel-gradient program: a divisor of N
    warps: int = 4  # Triton warps per program


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _power_of_two_divisor(n: int, cap: int) -> int:
    """The largest power of two that divides n and is at most cap."""
    p = 1
    while p * 2 <= cap and n % (p * 2) == 0:
        p *= 2
    return p


def unsupported(height, width, channels, kernel_hw) -> str | None:
    """Why this kernel cannot compute a [N, H, W, C] * [kh, kw, C, 1] conv (a short phrase), or None when it can.
    Static H, W and C only; fast_path asks this at build time, choose_tiles at trace time."""
    kh, kw = kernel_hw
    if kh % 2 == 0 or kw % 2 == 0:
        return f"the kernel is {kh}x{kw}, and the input gradient needs odd sizes"
    if height is None or width is None or channels is None:
        return "H, W and C must be known when the graph is built"
    if not _is_power_of_two(width):
        return f"the width {width} is not a power of two (a program holds whole rows, Triton blocks are powers of two)"
    if width > MAX_BLOCK_ELEMENTS:
        return f"a row of width {width} is more than one program's {MAX_BLOCK_ELEMENTS}-element block"
    return None


def choose_tiles(shape, kernel_hw) -> Tiles:
    """The tiles for x of `shape` [N, H, W, C]: the largest that fit the constraints (module docstring)."""
    n, height, width, channels = shape
    _check_shape(shape, kernel_hw)
    rows = _power_of_two_divisor(height, MAX_ROW_TILE)
    tile_channels = _power_of_two_divisor(channels, MAX_CHANNEL_TILE)
    while rows * width * tile_channels > MAX_BLOCK_ELEMENTS and rows > 1:
        rows //= 2
    while rows * width * tile_channels > MAX_BLOCK_ELEMENTS and tile_channels > 1:
        tile_channels //= 2
    images = max(d for d in range(1, min(n, MAX_IMAGES_PER_PROGRAM) + 1) if n % d == 0)
    return Tiles(rows, tile_channels, images)


def check_tiles(shape, kernel_hw, tiles: Tiles) -> Tiles:
    """`tiles` if they fit x of `shape` (module docstring's constraints); a one-line TinyconvError if not."""
    n, height, width, channels = shape
    _check_shape(shape, kernel_hw)
    problems = []
    if not (_is_power_of_two(tiles.rows) and height % tiles.rows == 0):
        problems.append(f"rows {tiles.rows} must be a power of two dividing H {height}")
    if not (_is_power_of_two(tiles.channels) and channels % tiles.channels == 0):
        problems.append(f"channels {tiles.channels} must be a power of two dividing C {channels}")
    if not (tiles.images >= 1 and n % tiles.images == 0):
        problems.append(f"images {tiles.images} must divide N {n}")
    if tiles.rows * width * tiles.channels > MAX_BLOCK_ELEMENTS:
        problems.append(f"a block of {tiles.rows}x{width}x{tiles.channels} is over {MAX_BLOCK_ELEMENTS} elements")
    if problems:
        raise TinyconvError(f"pallas depthwise conv tiles {tiles} do not fit {tuple(shape)}: {'; '.join(problems)}")
    return tiles


def _check_shape(shape, kernel_hw) -> None:
    n, height, width, channels = shape
    reason = unsupported(height, width, channels, kernel_hw)
    if reason is None and n * (height + kernel_hw[0] - 1) * (width + kernel_hw[1] - 1) * channels > MAX_ELEMENTS:
        reason = f"the padded input has 2**31 elements or more ({tuple(shape)})"
    if reason is not None:
        raise TinyconvError(f"pallas depthwise conv cannot take {tuple(shape)} * {tuple(kernel_hw)}: {reason}")


def depthwise_conv(x, kernel, *, interpret: bool, tiles: Tiles | None = None):
    """Stride-1 "same" depthwise conv: x [N, H, W, C] * kernel [kh, kw, C, 1] (odd kh, kw) -> [N, H, W, C] in x's dtype.

    interpret: Pallas' interpreter (any device, slow) instead of the Triton kernels (a CUDA GPU); the caller decides
    (fast_path.pallas_interpret for the layers). tiles: None chooses them (choose_tiles); given ones are checked.
    """
    kh, kw, channels, multiplier = kernel.shape
    if channels != x.shape[-1] or multiplier != 1:
        raise TinyconvError(f"pallas depthwise conv: kernel {tuple(kernel.shape)} does not fit x {tuple(x.shape)} "
                            "(it needs [kh, kw, C, 1])")
    tiles = choose_tiles(x.shape, (kh, kw)) if tiles is None else check_tiles(x.shape, (kh, kw), tiles)
    return _depthwise(x, kernel, (tiles, bool(interpret)))


def _pad(x, kh: int, kw: int):
    return jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))


def _triton(tiles: Tiles):
    # The Triton backend by its compiler params' type: without them Pallas would lower to Mosaic GPU (docstring)
    return pltriton.CompilerParams(num_warps=tiles.warps)


def _stencil(xpad, taps, out_hw, tiles: Tiles, interpret: bool):
    """out[n, h, w, c] = sum_ij xpad[n, h+i, w+j, c] * taps[i, j, c]; xpad [N, H+kh-1, W+kw-1, C], taps [kh, kw, C]."""
    n, _, _, channels = xpad.shape
    kh, kw = taps.shape[:2]
    height, width = out_hw
    rows, cb = tiles.rows, tiles.channels

    def kernel(x_ref, w_ref, o_ref):
        b, h0, c0 = pl.program_id(0), pl.program_id(1) * rows, pl.program_id(2) * cb
        acc = jnp.zeros((rows, width, cb), jnp.float32)
        for i in range(kh):
            for j in range(kw):
                window = x_ref[b, pl.ds(h0 + i, rows), pl.ds(j, width), pl.ds(c0, cb)].astype(jnp.float32)
                acc += window * w_ref[i, j, pl.ds(c0, cb)].astype(jnp.float32)[None, None, :]
        o_ref[...] = acc.astype(o_ref.dtype)

    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((n, height, width, channels), xpad.dtype),
        grid=(n, height // rows, channels // cb),
        in_specs=[pl.BlockSpec(), pl.BlockSpec()],  # whole arrays: each program reads its window with its halo
        out_specs=pl.BlockSpec((None, rows, width, cb), lambda b, h, c: (b, h, 0, c)),
        interpret=interpret,
        compiler_params=_triton(tiles),
    )(xpad, taps)


def _kernel_grad(xpad, g, kh: int, kw: int, tiles: Tiles, interpret: bool):
    """dk[i, j, c] = sum_nhw xpad[n, h+i, w+j, c] * g[n, h, w, c], float32 [kh, kw, C]."""
    n, height, width, channels = g.shape
    rows, cb, nb = tiles.rows, tiles.channels, tiles.images
    row_tiles, chunks = height // rows, n // nb

    def kernel(x_ref, g_ref, o_ref):
        c0, n0, h0 = pl.program_id(0) * cb, pl.program_id(1) * nb, pl.program_id(2) * rows

        def one_image(k, sums):
            grad = g_ref[n0 + k, pl.ds(h0, rows), pl.ds(0, width), pl.ds(c0, cb)].astype(jnp.float32)
            return tuple(
                sums[i * kw + j]
                + jnp.sum(jnp.sum(  # one axis at a time: the reductions Triton's lowering takes
                    x_ref[n0 + k, pl.ds(h0 + i, rows), pl.ds(j, width), pl.ds(c0, cb)].astype(jnp.float32) * grad,
                    axis=0), axis=0)
                for i in range(kh) for j in range(kw)
            )

        sums = jax.lax.fori_loop(0, nb, one_image, tuple(jnp.zeros((cb,), jnp.float32) for _ in range(kh * kw)))
        for i in range(kh):
            for j in range(kw):
                o_ref[i, j, :] = sums[i * kw + j]

    partial = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((chunks * row_tiles, kh, kw, channels), jnp.float32),
        grid=(channels // cb, chunks, row_tiles),
        in_specs=[pl.BlockSpec(), pl.BlockSpec()],
        out_specs=pl.BlockSpec((None, kh, kw, cb), lambda c, b, h: (b * row_tiles + h, 0, 0, c)),
        interpret=interpret,
        compiler_params=_triton(tiles),
    )(xpad, g)
    return jnp.sum(partial, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise(x, kernel, static):
    tiles, interpret = static
    kh, kw = kernel.shape[:2]
    return _stencil(_pad(x, kh, kw), kernel[:, :, :, 0], x.shape[1:3], tiles, interpret)


def _forward(x, kernel, static):
    return _depthwise(x, kernel, static), (x, kernel)


def _backward(static, residuals, g):
    tiles, interpret = static
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    dx = _stencil(_pad(g, kh, kw), kernel[::-1, ::-1, :, 0], x.shape[1:3], tiles, interpret)
    dk = _kernel_grad(_pad(x, kh, kw), g, kh, kw, tiles, interpret)
    return dx.astype(x.dtype), dk[:, :, :, None].astype(kernel.dtype)


_depthwise.defvjp(_forward, _backward)


def depthwise_conv_xla(x, kernel):
    """The reference: XLA's grouped convolution (what Keras' JAX backend emits; cuDNN on a GPU), same layout."""
    channels = x.shape[-1]
    return jax.lax.conv_general_dilated(
        x, kernel.reshape(kernel.shape[0], kernel.shape[1], 1, channels), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
    )
