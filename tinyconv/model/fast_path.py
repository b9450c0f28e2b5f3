"""Which form each layer computes: every device and backend decision of the model, in one place.

The layers (tinyconv.model.layers) hold the architecture and the kernels (tinyconv.model.kernels) the faster
forms; neither asks about the device: each asks the function here named after it, and computes the form
it is told. Every form has the same weights, config and results (to float rounding), so a choice never
reaches a saved model: a `.keras` file saved on a CPU takes the GPU forms when loaded on a GPU, and back.

    asked by (when)                               function            forms
    GroupedConv2D (build)                         grouped_conv        "split" on a CPU, "dense" on a GPU ("auto");
                                                                      "native" for groups=1; or as configured
    AxialDepthwiseConv2D (build)                  axial_conv          "shifted" on a GPU, else "depthwise"
    FFTGradDepthwiseConv2D (build)                depthwise_conv      TINYCONV_DEPTHWISE (below): "auto" is "fft" on
                                                                      TensorFlow on a CPU (stride 1, "same", odd square
                                                                      k >= 5), else "keras"; "dense", "shifted" or
                                                                      "pallas" on JAX for the layers that qualify
    kernels.depthwise_conv_pallas (call)          pallas_interpret    the Triton kernels on a GPU, Pallas' interpreter
                                                                      elsewhere
    FusedBatchNormalization (call)                batch_norm          "fused" when training on TensorFlow
                                                                      (4-D channels-last), else "keras"
    kernels.gelu (call)                           gelu                "fused" at CPU inference, "closed_form_gradient"
                                                                      otherwise on TensorFlow, "erf" / "keras" while an
                                                                      export is traced, "keras" on other backends
    ConvMixerBlock (call)                         convmixer_block     "fused" at float32 CPU inference, else "layers"

"On a GPU" is tinyconv.runtime.has_gpu (TensorFlow or JAX); "CPU inference" is `cpu_inference()`: TensorFlow
on a CPU, a Keras call resolved as training=False, no export being traced (`inference_graph`). The build-time
choices are kept in the layer's `_path`. The measurements behind each choice are in docs/performance.md.

The depthwise conv's form can be asked for with the environment variable TINYCONV_DEPTHWISE, read when each layer
is built (benchmarks/gpu_profile.py --choose times the forms on a GPU and names the fastest that agrees):
    auto     (unset) "fft" on TensorFlow on a CPU, "keras" otherwise: the forms measured so far
    keras    Keras' layer: XLA's grouped convolution on JAX (cuDNN on a GPU); also turns the FFT off on TensorFlow
    dense    kernels.depthwise_conv_dense, one ordinary conv with a block-diagonal kernel (JAX): C times the
             multiply-adds on the matrix units; only for kernels of at least DENSE_MIN_TAPS taps
    shifted  kernels.depthwise_conv_shifted, kh*kw shifted multiply-adds that XLA fuses (JAX)
    pallas   tinyconv.model.pallas_depthwise, the Pallas kernels (JAX): Triton on a GPU, interpreted on a CPU
"dense", "shifted" and "pallas" are JAX forms: on TensorFlow they mean "auto" (an export or other TensorFlow process
on the same machine sees the same variable). A layer they do not fit (stride, dilation, padding, depth_multiplier,
an even kernel, channels_first, unknown H or W; for dense also a kernel of fewer taps than DENSE_MIN_TAPS; for pallas
also the tiling, pallas_depthwise.unsupported) stays "keras".
Any other value is a one-line TinyconvError when a layer is built.
"""

from __future__ import annotations

import contextlib
import os

import keras

from tinyconv.errors import TinyconvError
from tinyconv.model.config import GROUPED_CONVS
from tinyconv.runtime import has_gpu

GROUPED_CONV_IMPLEMENTATIONS = GROUPED_CONVS  # one tuple: ModelConfig.grouped_conv is checked against it too
GELU_FORMS = ("tensorflow", "erf")  # the GELU forms an export can ask for (inference_graph)

# Square depthwise kernels below this keep TensorFlow's own kernel gradient: it is cheap enough there
# (docs/performance.md, "Training on CPU").
FFT_MIN_KERNEL_SIZE = 5

# The "dense" form multiplies a depthwise conv's multiply-adds by its channels. Below this many taps cuDNN's own
# depthwise kernel is already cheap (the seed's 3x3 at 16x16x256: 0.18 ms forward and backward on an H100, against
# 13.1 ms for its two 9x9s; docs/performance.md), and 256 times its work could not win; such layers stay "keras".
DENSE_MIN_TAPS = 25

DEPTHWISE_VARIABLE = "TINYCONV_DEPTHWISE"
DEPTHWISE_SETTINGS = ("auto", "keras", "dense", "shifted", "pallas")

_INFERENCE_GRAPH: list[str] = []  # the GELU form of the active inference_graph() contexts (innermost last)


# ------------------------------------------------------------------------------------------ build time


def grouped_conv(implementation: str, groups: int) -> str:
    """GroupedConv2D's form: "split" (G convs), "native" (the backend's grouped conv) or "dense" (block-diagonal).

    "auto" is split on a CPU (TensorFlow's native grouped conv on CPU goes through a far slower XLA loop)
    and dense on a GPU (cuDNN's grouped kernels are slow next to one dense conv on the matrix units).
    One group is an ordinary convolution whatever was asked.
    """
    if groups == 1:
        return "native"
    if implementation == "auto":
        return "dense" if has_gpu() else "split"
    return implementation


def axial_conv() -> str:
    """AxialDepthwiseConv2D's form: "shifted" (kernels.depthwise_conv_shifted: k multiply-adds that XLA fuses) on
    a GPU, where cuDNN's grouped convolution is slow for 1-D kernels; "depthwise" (ops.depthwise_conv) elsewhere."""
    return "shifted" if has_gpu() else "depthwise"


def depthwise_setting() -> str:
    """The TINYCONV_DEPTHWISE setting (module docstring): auto when unset or empty; a one-line error for others."""
    value = os.environ.get(DEPTHWISE_VARIABLE, "").strip() or "auto"
    if value not in DEPTHWISE_SETTINGS:
        raise TinyconvError(f"{DEPTHWISE_VARIABLE} must be one of {', '.join(DEPTHWISE_SETTINGS)}, got {value!r}")
    return value


def depthwise_conv(layer, input_shape) -> str:
    """FFTGradDepthwiseConv2D's form, for inputs of `input_shape` [B, H, W, C]:
        "fft"      the kernel gradient by FFT (kernels.fft_depthwise_conv): TensorFlow on a CPU, where TensorFlow's
                   own kernel gradient is slow for large kernels
        "keras"    the Keras layer (XLA's grouped convolution on JAX, cuDNN on a GPU)
        "dense"    kernels.depthwise_conv_dense, when TINYCONV_DEPTHWISE asks for it on JAX and the kernel has at
                   least DENSE_MIN_TAPS taps
        "shifted"  kernels.depthwise_conv_shifted, when TINYCONV_DEPTHWISE asks for it on JAX
        "pallas"   kernels.depthwise_conv_pallas, when TINYCONV_DEPTHWISE asks for it on JAX and the shape tiles
    """
    setting = depthwise_setting()
    kh, kw = layer.kernel_size
    plain = (  # what the other forms compute: a stride-1 "same" conv, one output channel per input channel
        tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.padding == "same"
        and layer.depth_multiplier == 1
        and layer.data_format == "channels_last"
    )
    backend = keras.config.backend()
    if backend == "tensorflow":
        fft = setting != "keras" and plain and kh == kw and kh % 2 == 1 and kh >= FFT_MIN_KERNEL_SIZE
        return "fft" if fft and not has_gpu() else "keras"
    if backend != "jax" or setting not in ("dense", "shifted", "pallas") or not plain or kh % 2 == 0 or kw % 2 == 0:
        return "keras"
    _, height, width, channels = input_shape
    if height is None or width is None:  # shifted and pallas unroll over static H and W; dense asks the same
        return "keras"
    if setting == "dense":
        return "dense" if kh * kw >= DENSE_MIN_TAPS else "keras"
    if setting == "shifted":
        return "shifted"
    from tinyconv.model import pallas_depthwise  # JAX only: imported where the form is asked for

    return "pallas" if pallas_depthwise.unsupported(height, width, channels, (kh, kw)) is None else "keras"


# ------------------------------------------------------------------------------------------- call time


def batch_norm(layer, inputs, training, mask) -> str:
    """FusedBatchNormalization's form: "fused" (TensorFlow's fused kernel) when training 4-D channels-last inputs on
    TensorFlow; "keras" (Keras' BatchNormalization) otherwise. At inference BN is one multiply-add per element either
    way, and Keras' form was the faster one there."""
    fused = (
        training
        and layer.trainable
        and mask is None
        and keras.config.backend() == "tensorflow"
        and len(inputs.shape) == 4
        and layer.axis in (-1, 3)
        and layer.scale
        and layer.center
        and not layer.synchronized
    )
    return "fused" if fused else "keras"


def gelu(approximate: bool) -> str:
    """kernels.gelu's form:
        "keras"                 ops.gelu: the tanh approximation, other backends, and an export's "tensorflow" form
        "erf"                   x * 0.5 * (1 + erf(x / sqrt 2)): an export's "erf" form (inference_graph)
        "fused"                 one XLA-compiled elementwise kernel (kernels.gelu_fused): inference on a CPU
        "closed_form_gradient"  exact GELU with the closed-form gradient (kernels._gelu_exact_tf): TensorFlow otherwise
    """
    if approximate or keras.config.backend() != "tensorflow":
        return "keras"
    if _INFERENCE_GRAPH:
        return "erf" if _INFERENCE_GRAPH[-1] == "erf" else "keras"
    if cpu_inference():
        return "fused"
    return "closed_form_gradient"


def convmixer_block(compute_dtype: str) -> str:
    """ConvMixerBlock's form: "fused" (kernels.convmixer_block_inference: its elementwise work in a few XLA kernels
    between TensorFlow's convolutions) at float32 inference on a CPU; "layers" (its sub-layers one by one) otherwise."""
    return "fused" if compute_dtype == "float32" and cpu_inference() else "layers"


def pallas_interpret() -> bool:
    """Whether kernels.depthwise_conv_pallas runs in Pallas' interpreter: without a GPU (slowly, but the "pallas"
    form then works anywhere, and CPU tests check the very kernels a GPU compiles)."""
    return not has_gpu()


def cpu_inference() -> bool:
    """Whether the layer call in progress may take an inference-only fast path: TensorFlow on a CPU, a Keras
    call resolved as `training=False` (predict, evaluate, validation), and no export being traced (converters
    need plain ops, `inference_graph`)."""
    return (
        keras.config.backend() == "tensorflow"
        and not _INFERENCE_GRAPH
        and keras_training_phase() is False
        and not has_gpu()
    )


def keras_training_phase():
    """The `training` value Keras resolved for the layer call in progress (True, False), or None outside one.

    Read from Keras' call context, which Keras 3 has no public API for: keras.src.backend.common.global_state's
    "current_call_ctx" and its get_value("training") (Keras 3.15). An inference path may differ from training
    only where Keras itself says the call is for inference; anything unexpected keeps the training path.
    tests/test_kernels.py::test_keras_call_context_private_api_is_where_fast_path_reads_it fails, naming
    what moved, when a Keras upgrade changes it.
    """
    try:
        from keras.src.backend.common import global_state

        context = global_state.get_global_attribute("current_call_ctx")
        return None if context is None else context.get_value("training")
    except Exception:  # another Keras layout: no fast inference path, nothing else changes
        return None


@contextlib.contextmanager
def inference_graph(gelu_form: str = "tensorflow"):
    """Trace the layers for an inference-only graph (tinyconv.deploy.export): exact GELU without the custom gradient,
    in the form the target converter recognises, and no fused inference kernels:
        "tensorflow"  tf.nn.gelu (0.5 x erfc(-x / sqrt 2)): the TFLite converter fuses it into its builtin GELU
        "erf"         x * 0.5 * (1 + erf(x / sqrt 2)): tf2onnx knows Erf (not Erfc), ONNX Runtime fuses it into Gelu
    The training graph is untouched: nothing changes outside this context.
    """
    if gelu_form not in GELU_FORMS:
        raise ValueError(f"gelu_form must be one of {GELU_FORMS}, got {gelu_form!r}")
    _INFERENCE_GRAPH.append(gelu_form)
    try:
        yield
    finally:
        _INFERENCE_GRAPH.pop()
