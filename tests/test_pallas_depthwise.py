"""The depthwise conv's Pallas kernels (tinyconv.model.pallas_depthwise) and the forms of FFTGradDepthwiseConv2D that
TINYCONV_DEPTHWISE asks for (tinyconv.model.fast_path):

- the kernels in Pallas' interpreter equal XLA's grouped convolution, forward and both gradients, in float32 and bf16,
  with tiles that cross every seam of the three kernels;
- exported for CUDA on this CPU machine, the seed's depthwise convs lower to Triton kernels, forward and gradients,
  even where Pallas would otherwise take Mosaic GPU (which refuses this kernel);
- the tiles fit the shapes, or the shape is refused in one line;
- a small model on JAX with the dense, shifted and pallas forms gives the default form's outputs and gradients, and
  saves the same .keras file; a bad TINYCONV_DEPTHWISE is one line; the dense form, exported for CUDA, is ordinary
  convolutions only (forward and both gradients), where Keras' form is grouped ones;
- `benchmarks/gpu_profile.py --choose`, the lease script's call, is rehearsed with the script itself
  (tests/test_gpu_scripts.py).

The interpreter is slow on a CPU (seconds a shape): the shapes are small, and every JAX model runs in one process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.model import pallas_depthwise as pd  # noqa: E402

pytestmark = pytest.mark.jax
ROOT = Path(__file__).resolve().parents[1]
BLOCKER = ROOT / "tests" / "no_tensorflow.py"
# The custom calls Pallas' Triton lowering emits: jaxlib <= 0.10.2 "__gpu$xla.gpu.triton", later "triton_kernel_call_ffi"
TRITON_CALLS = ("__gpu$xla.gpu.triton", "triton_kernel_call_ffi")


def _inputs(shape, kernel_hw, dtype, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(k1, shape, jnp.float32).astype(dtype)
    w = (jax.random.normal(k2, (*kernel_hw, shape[-1], 1), jnp.float32) * 0.1).astype(dtype)
    g = jax.random.normal(k3, shape, jnp.float32).astype(dtype)
    return x, w, g


def _value_and_grads(conv, x, w, g):
    """conv(x, w) and the gradients of sum(conv(x, w) * g) by x and by w (one jitted function: one compile)."""
    def both(x, w):
        loss = lambda a, b: jnp.sum((conv(a, b) * g).astype(jnp.float32))  # noqa: E731
        return [conv(x, w), *jax.grad(loss, (0, 1))(x, w)]

    return jax.jit(both)(x, w)


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------------------------------- the kernels


@pytest.mark.parametrize("shape, kernel_hw, tiles", [
    # N 4 in chunks of 2, 4 row tiles of 4, 2 channel tiles of 16: every seam of the three kernels
    ((4, 16, 16, 32), (9, 9), pd.Tiles(rows=4, channels=16, images=2)),
    # the automatic tiles where H, C and N are not powers of two: 3 row tiles of 4, 3 channel tiles of 8, N 3 at once
    ((3, 12, 8, 24), (3, 5), None),
])
def test_kernels_equal_xla_depthwise_conv_and_both_gradients_in_float32(shape, kernel_hw, tiles):
    if tiles is None:
        assert pd.choose_tiles(shape, kernel_hw) == pd.Tiles(rows=4, channels=8, images=3)
    x, w, g = _inputs(shape, kernel_hw, jnp.float32)
    got = _value_and_grads(lambda a, b: pd.depthwise_conv(a, b, interpret=True, tiles=tiles), x, w, g)
    want = _value_and_grads(pd.depthwise_conv_xla, x, w, g)
    for name, a, b in zip(("out", "dx", "dw"), got, want):
        assert a.dtype == b.dtype == jnp.float32
        assert _relative(a, b) <= 1e-5, name


def test_kernels_in_bf16_round_once_from_float32_accumulation():
    """bf16 in, bf16 out: the kernels accumulate in float32 and round each result once, so each differs from the
    exact (float32) result on the same bf16 values by at most half a bf16 unit, 2**-9 of it: at most 2**-9 of the
    largest value. Allowed: 2**-8 (twice that)."""
    shape, kernel_hw = (2, 8, 8, 16), (3, 3)
    x, w, g = _inputs(shape, kernel_hw, jnp.bfloat16, seed=1)
    got = _value_and_grads(lambda a, b: pd.depthwise_conv(a, b, interpret=True), x, w, g)
    exact = _value_and_grads(pd.depthwise_conv_xla, *(v.astype(jnp.float32) for v in (x, w, g)))
    for name, a, b in zip(("out", "dx", "dw"), got, exact):
        assert a.dtype == jnp.bfloat16, name
        assert _relative(a, b) <= 2**-8, name


def test_tiles_fit_the_shape_or_the_shape_is_refused_in_one_line():
    # the seed's depthwise convs: stage 1's 9x9 at 32x32x128 and stage 2's 3x3 at 16x16x256, batch 128
    assert pd.choose_tiles((128, 32, 32, 128), (9, 9)) == pd.Tiles(rows=8, channels=32, images=8)
    assert pd.choose_tiles((128, 16, 16, 256), (3, 3)) == pd.Tiles(rows=8, channels=32, images=8)
    # a wide row: fewer rows and channels per program, within MAX_BLOCK_ELEMENTS
    tiles = pd.choose_tiles((2, 8, 1024, 64), (3, 3))
    assert tiles.rows * 1024 * tiles.channels <= pd.MAX_BLOCK_ELEMENTS and tiles.rows == 1
    assert pd.unsupported(16, 16, 32, (9, 9)) is None
    for args, why in [((16, 12, 32, (3, 3)), "power of two"), ((16, 16, 32, (4, 4)), "odd")]:
        assert why in pd.unsupported(*args)
        with pytest.raises(TinyconvError) as caught:
            pd.choose_tiles((2, *args[:3]), args[3])
        assert "\n" not in str(caught.value) and why in str(caught.value)
    with pytest.raises(TinyconvError, match="rows 3 must be a power of two") as caught:
        pd.check_tiles((2, 12, 16, 32), (3, 3), pd.Tiles(rows=3, channels=32, images=2))
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------- CUDA lowering, on a CPU


# The GPU the leases get (H100 or H200: both compute capability 9.0), named to the lowering as an abstract device:
# Pallas' Triton lowering in JAX 0.11 (the GPU machines' JAX) asks the device for its compute capability and, with no
# GPU here, refuses without one ("No supported GPU devices found"); JAX 0.10.2 (this machine's) takes it as well.
LEASE_GPU = jax.sharding.AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=132, platform="gpu")


def _cuda_module(fn, *specs) -> str:
    """fn exported for CUDA on an H100 (no GPU needed: it is lowered, not compiled), as MLIR text. The Triton custom
    calls have no export compatibility guarantee: their safety check is turned off, which changes nothing in the
    lowering."""
    checks = [jax.export.DisabledSafetyCheck.custom_call(name) for name in TRITON_CALLS]
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=LEASE_GPU)):
        return jax.export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=checks)(*specs).mlir_module()


def _custom_calls(text: str) -> list[str]:
    return re.findall(r"stablehlo\.custom_call @([\w$.]+)", text)


@pytest.mark.parametrize("shape, kernel_hw", [((128, 32, 32, 128), (9, 9)), ((128, 16, 16, 256), (3, 3))])
def test_seed_depthwise_convs_lower_to_triton_for_cuda_forward_and_gradients(shape, kernel_hw):
    x = jax.ShapeDtypeStruct(shape, jnp.bfloat16)
    w = jax.ShapeDtypeStruct((*kernel_hw, shape[-1], 1), jnp.bfloat16)

    def conv(a, b):
        return pd.depthwise_conv(a, b, interpret=False)

    def value_and_grad(a, b):
        return jax.value_and_grad(lambda a, b: jnp.sum(conv(a, b).astype(jnp.float32)), (0, 1))(a, b)

    forward = _custom_calls(_cuda_module(conv, x, w))
    assert len(forward) == 1 and forward[0] in TRITON_CALLS, forward
    both = _custom_calls(_cuda_module(value_and_grad, x, w))
    # the forward stencil, the input gradient's stencil and the kernel gradient's partial sums
    assert len(both) == 3 and set(both) <= set(TRITON_CALLS), both


def test_triton_is_used_where_pallas_would_default_to_mosaic_gpu():
    x = jax.ShapeDtypeStruct((8, 32, 32, 128), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((9, 9, 128, 1), jnp.bfloat16)
    # Pallas' default in JAX 0.10, set in case; JAX 0.11 (the GPU machines') no longer has the option
    switch = hasattr(jax.config, "jax_pallas_use_mosaic_gpu")
    before = jax.config.jax_pallas_use_mosaic_gpu if switch else None
    if switch:
        jax.config.update("jax_pallas_use_mosaic_gpu", True)
    try:
        # the control: a Pallas call without compiler params lowers to Mosaic GPU here
        from jax.experimental import pallas as pl

        def double(ref, out):
            out[...] = ref[...] * 2.0

        with warnings.catch_warnings():  # JAX deprecates pallas_call for Mosaic GPU: that is this control's point
            warnings.simplefilter("ignore", DeprecationWarning)
            bare = _cuda_module(lambda v: pl.pallas_call(double, out_shape=jax.ShapeDtypeStruct((128,), jnp.float32))(v),
                                jax.ShapeDtypeStruct((128,), jnp.float32))
        if switch:  # the control, JAX 0.10: Pallas' default is Mosaic GPU
            assert any("mosaic" in call for call in _custom_calls(bare)), _custom_calls(bare)
        else:  # JAX 0.11 went back to Triton as the default (pallas_call.py's gpu_lowering): ours is Triton either way
            assert _custom_calls(bare) and all(call in TRITON_CALLS for call in _custom_calls(bare)), _custom_calls(bare)
        ours = _custom_calls(_cuda_module(lambda a, b: pd.depthwise_conv(a, b, interpret=False), x, w))
        assert ours and all(call in TRITON_CALLS for call in ours), ours
    finally:
        if switch:
            jax.config.update("jax_pallas_use_mosaic_gpu", before)


# --------------------------------------------------------------------------------------- the layer's forms


def test_bad_depthwise_setting_is_one_line_and_tensorflow_keeps_its_forms(monkeypatch):
    """On the TensorFlow backend (this process): a bad value is refused when a layer is built; shifted and pallas
    are JAX forms and mean auto there (an export on the same machine sees the same variable); keras turns the FFT off."""
    import keras

    from tinyconv.model.kernels import FFTGradDepthwiseConv2D

    def form(setting):
        monkeypatch.setenv("TINYCONV_DEPTHWISE", setting)
        layer = FFTGradDepthwiseConv2D(9, padding="same", use_bias=False)
        layer.build((None, 16, 16, 8))
        return layer._path

    assert keras.config.backend() == "tensorflow"
    assert [form(s) for s in ("auto", "", "dense", "shifted", "pallas", "keras")] == ["fft"] * 5 + ["keras"]
    monkeypatch.setenv("TINYCONV_DEPTHWISE", "cudnn")
    with pytest.raises(TinyconvError) as caught:
        FFTGradDepthwiseConv2D(9, padding="same").build((None, 16, 16, 8))
    assert str(caught.value) == "TINYCONV_DEPTHWISE must be one of auto, keras, dense, shifted, pallas, got 'cudnn'"


_JAX_FORMS = r'''
import json, os, sys
from pathlib import Path

import keras
import numpy as np

from tinyconv.errors import TinyconvError
from tinyconv.model.build import build_model
from tinyconv.model.config import get_config
from tinyconv.model.kernels import FFTGradDepthwiseConv2D

assert keras.config.backend() == "jax"
import jax

folder = Path(sys.argv[1])
# the seed shrunk to two stages (XLA's CPU compiles are the cost here): stage 1's square depthwise (5x5, at 16x16x16)
# and stage 2's mixed mode (axial 3 and a 3x3 depthwise at 8x8x32, SE): two FFTGradDepthwiseConv2D
config = get_config("seed", widths=(16, 32), depths=(1, 1), modes=("depthwise", "mixed"), kernel_sizes=(5, 3),
                    axial_kernel_sizes=(3, 3), se_reductions=(0, 4), image_size=32, num_classes=10)
x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")


def build(form):
    os.environ["TINYCONV_DEPTHWISE"] = form
    model = build_model(config)
    return model, [layer._path for layer in model._flatten_layers() if isinstance(layer, FFTGradDepthwiseConv2D)]


from jax_gradients import gradients  # tests/jax_gradients.py

def outputs(net):
    """Inference and training-mode logits; the training call's BN statistics update is undone."""
    got = [np.asarray(net(x, training=False)), np.asarray(net(x, training=True))]
    net.set_weights(weights)
    return got


keras.utils.set_random_seed(0)
reference, paths = build("keras")
assert paths == ["keras", "keras"], paths
assert "tinyconv.model.pallas_depthwise" not in sys.modules  # imported only where the pallas form is used
rng = np.random.default_rng(1)
for variable in reference.weights:  # weights and BN statistics off their initial values: a stronger comparison
    if "moving_variance" in variable.path:
        variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
    else:
        variable.assign((np.asarray(variable) + rng.normal(0, 0.1, variable.shape)).astype("float32"))
weights = reference.get_weights()
reference.save(folder / "keras.keras")
report = {}
want = outputs(reference)
want_grads = gradients(reference, x)
FORMS = {"dense": ["dense", "keras"], "shifted": ["shifted", "shifted"], "pallas": ["pallas", "pallas"]}
for form, expected_paths in FORMS.items():  # dense takes the 5x5 (25 taps), not the 3x3 (fast_path.DENSE_MIN_TAPS)
    model, paths = build(form)
    assert paths == expected_paths, (form, paths)
    model.set_weights(weights)
    got = outputs(model)
    grads = gradients(model, x)
    report[form] = {
        "logits": max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(got, want)),
        "all_weights": float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(grads, want_grads))
                                     / sum(np.sum(b ** 2) for b in want_grads))),
        "depthwise_kernels": max(float(np.linalg.norm(a - b) / np.linalg.norm(b))
                                 for a, b, v in zip(grads, want_grads, model.trainable_variables)
                                 if "depthwise/kernel" in v.path),
    }
    model.save(folder / f"{form}.keras")
    # a file saved in this form loads in the default form with the same weights and outputs, and back
    os.environ["TINYCONV_DEPTHWISE"] = "keras"
    loaded = keras.saving.load_model(folder / f"{form}.keras")
    report[form]["loaded_logits"] = float(np.max(np.abs(np.asarray(loaded(x, training=False)) - want[0])))
    report[form]["same_weights"] = all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), weights))
    os.environ["TINYCONV_DEPTHWISE"] = form
    again = keras.saving.load_model(folder / "keras.keras")
    report[form]["loaded_paths"] = [layer._path for layer in again._flatten_layers()
                                    if isinstance(layer, FFTGradDepthwiseConv2D)]
    report[form]["reloaded_logits"] = float(np.max(np.abs(np.asarray(again(x, training=False)) - want[0])))

# one layer with a bias and an activation, and the layers the forms do not fit, which stay keras
os.environ["TINYCONV_DEPTHWISE"] = "keras"
plain = FFTGradDepthwiseConv2D(5, padding="same", activation="relu", bias_initializer="random_normal")
xs = np.random.default_rng(2).standard_normal((2, 8, 8, 4)).astype("float32")
plain_out = np.asarray(plain(xs))
report["misfits"] = {}
for form in FORMS:
    os.environ["TINYCONV_DEPTHWISE"] = form
    layer = FFTGradDepthwiseConv2D(5, padding="same", activation="relu", bias_initializer="random_normal")
    layer.build(xs.shape)
    layer.set_weights(plain.get_weights())
    report[form]["bias_relu"] = float(np.max(np.abs(np.asarray(layer(xs)) - plain_out)))
    misfits = {  # 5x5 kernels (6x6 the even one): dense's DENSE_MIN_TAPS is met, so only the named misfit counts
        "strides": (dict(kernel_size=5, strides=2, padding="same"), (None, 8, 8, 4)),
        "valid": (dict(kernel_size=5, padding="valid"), (None, 8, 8, 4)),
        "dilation": (dict(kernel_size=5, padding="same", dilation_rate=2), (None, 8, 8, 4)),
        "multiplier": (dict(kernel_size=5, padding="same", depth_multiplier=2), (None, 8, 8, 4)),
        "even": (dict(kernel_size=6, padding="same"), (None, 8, 8, 4)),
        "unknown_width": (dict(kernel_size=5, padding="same"), (None, 8, None, 4)),
        "width_12": (dict(kernel_size=5, padding="same"), (None, 8, 12, 4)),
        "taps_9": (dict(kernel_size=3, padding="same"), (None, 8, 8, 4)),
        "taps_21": (dict(kernel_size=(3, 7), padding="same"), (None, 8, 8, 4)),
        "taps_25": (dict(kernel_size=(1, 25), padding="same"), (None, 8, 32, 4)),
    }
    for name, (kwargs, shape) in misfits.items():
        layer = FFTGradDepthwiseConv2D(**kwargs)
        layer.build(shape)
        report["misfits"][f"{form} {name}"] = layer._path

# the dense form's point: the seed's 9x9 at 32x32x128 as ungrouped convolutions for CUDA (cuDNN's dense kernels on
# the matrix units), forward and both gradients, where Keras' form groups each by channel
import re

import jax.numpy as jnp

from tinyconv.model import pallas_depthwise
from tinyconv.model.kernels import depthwise_conv_dense


def cuda_groups(conv):
    def value_and_grad(a, b):
        return jax.value_and_grad(lambda a, b: jnp.sum(conv(a, b).astype(jnp.float32)), (0, 1))(a, b)

    specs = jax.ShapeDtypeStruct((128, 32, 32, 128), jnp.bfloat16), jax.ShapeDtypeStruct((9, 9, 128, 1), jnp.bfloat16)
    text = jax.export.export(jax.jit(value_and_grad), platforms=["cuda"])(*specs).mlir_module()
    return [[re.search(name + r" = (\d+)", line).group(1) for name in ("feature_group_count", "batch_group_count")]
            for line in text.splitlines() if "stablehlo.convolution" in line]


report["cuda_groups"] = {"dense": cuda_groups(depthwise_conv_dense), "keras": cuda_groups(pallas_depthwise.depthwise_conv_xla)}

os.environ["TINYCONV_DEPTHWISE"] = "fast"
try:
    build_model(config)
except TinyconvError as error:
    report["bad_value"] = str(error)
(folder / "report.json").write_text(json.dumps(report))
'''


def test_jax_forms_give_the_default_forms_outputs_gradients_and_saved_model(tmp_path):
    script = tmp_path / "jax_depthwise_forms.py"
    script.write_text(_JAX_FORMS)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(BLOCKER), "jax_depthwise_forms", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    forms = {"dense": ["dense", "keras"], "shifted": ["shifted", "shifted"], "pallas": ["pallas", "pallas"]}
    for form, paths in forms.items():
        result = report[form]
        assert result["logits"] <= 1e-5, (form, result)  # inference and training-mode outputs, float32
        # every weight's gradient as one vector, and the depthwise kernels' own (the gradients the form computes)
        assert result["all_weights"] <= 1e-5 and result["depthwise_kernels"] <= 1e-5, (form, result)
        assert result["bias_relu"] <= 1e-6, (form, result)
        # saved in this form, loaded in the default one (and back): the same weights give the same logits
        assert result["loaded_logits"] <= 1e-5 and result["reloaded_logits"] <= 1e-5, (form, result)
        assert result["loaded_paths"] == paths, (form, result)
        assert result["same_weights"], form
    # the forms never reach the file: the same config as the default form's
    import zipfile

    def config(name):
        with zipfile.ZipFile(tmp_path / name) as archive:
            return json.loads(archive.read("config.json"))

    for form in forms:
        assert config(f"{form}.keras") == config("keras.keras"), form
    expected = {f"{form} {name}": "keras" for form in forms
                for name in ("strides", "valid", "dilation", "multiplier", "even", "unknown_width")}
    expected.update({"shifted width_12": "shifted", "pallas width_12": "keras",  # Triton needs a power-of-two W
                     "dense width_12": "dense"})
    # dense only from fast_path.DENSE_MIN_TAPS taps on; the others take any odd kernel
    expected.update({"dense taps_9": "keras", "dense taps_21": "keras", "dense taps_25": "dense"})
    expected.update({f"{form} taps_{n}": form for form in ("shifted", "pallas") for n in (9, 21, 25)})
    assert report["misfits"] == expected
    assert report["bad_value"] == "TINYCONV_DEPTHWISE must be one of auto, keras, dense, shifted, pallas, got 'fast'"
    # the dense form for CUDA: forward, input and kernel gradient as ungrouped convolutions; keras' grouped by channel
    assert report["cuda_groups"]["dense"] == [["1", "1"]] * 3, report["cuda_groups"]
    grouped = report["cuda_groups"]["keras"]
    assert len(grouped) == 3 and all("128" in pair for pair in grouped), grouped

# `gpu_profile.py --choose`, the lease script's choice of form, is rehearsed where the script runs it:
# tests/test_gpu_scripts.py::test_two_leases_of_the_lease_script_continue_one_run_under_jax.
