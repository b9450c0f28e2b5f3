"""Importing TensorFlow quietly, and the one device policy (GPU present, mixed precision, XLA, strategy).

TensorFlow 2.21's C++ runtime prints several lines to stderr while it loads and when it first looks for a
GPU ("oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit", ...). They
are written before absl's logging is set up, so TF_CPP_MIN_LOG_LEVEL does not reach them, and on a CPU-only
machine they read like errors. `quiet_tensorflow()` does the import and the first device query with the
process's stderr pointed at /dev/null; Python exceptions are unaffected. Set TINYCONV_TF_LOGS=1 to see them.

Every question about the backend and the device goes through this module: `backend()`, `has_gpu()` (the
layers' fast-path choice, the notebooks' `auto` profile, XLA), `precision_policy`, `use_jit` /
`default_jit_compile`, `device_count`, `data_parallel`, `distribution_scope`, `fit_scope` and `describe_device`,
for TensorFlow and JAX.

Keras and TensorFlow are imported inside the functions, not at the top: this module must load before
TensorFlow so that `quiet_tensorflow` can hide its start-up, and `tinyconv --help` imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from tinyconv.errors import TinyconvError

_done = False


@contextlib.contextmanager
def _native_stderr_silenced():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def native_logs_hidden():
    """A context in which native code's writes to stderr are dropped (not Python's exceptions), unless
    TINYCONV_TF_LOGS=1: for a runtime's own start-up lines, such as LiteRT's "Created TensorFlow Lite XNNPACK
    delegate for CPU" on an interpreter's first allocation."""
    if os.environ.get("TINYCONV_TF_LOGS") == "1":
        return contextlib.nullcontext()
    return _native_stderr_silenced()


def prefer_onednn() -> None:
    """Ask TensorFlow for oneDNN's CPU kernels, unless the environment already says (TF_ENABLE_ONEDNN_OPTS=0 or 1).

    TensorFlow 2.21 turns oneDNN on by default only on CPUs with AVX-512 VNNI, BF16 or AMX; elsewhere (AVX2
    machines such as this project's) its depthwise and 1x1 convolutions run on Eigen kernels several times
    slower than oneDNN's, and the seed trains and infers far slower (docs/performance.md, "Inference on CPU:
    Keras, the exports and PyTorch"). Read when TensorFlow loads,
    so `tinyconv/__init__.py` calls this before anything imports Keras; a process that imported TensorFlow
    before tinyconv keeps TensorFlow's own choice.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def quiet_tensorflow():
    """Import TensorFlow (and list its devices once) with native start-up logs hidden; returns the module."""
    global _done
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _done or os.environ.get("TINYCONV_TF_LOGS") == "1":
        import tensorflow as tf

        return tf
    with _native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    _done = True
    return tf


def backend() -> str:
    """The Keras backend this process will use, read as Keras reads it ($KERAS_BACKEND, then ~/.keras/keras.json,
    else tensorflow), without importing Keras: the CLI asks before anything heavy is loaded."""
    name = os.environ.get("KERAS_BACKEND")
    if not name:
        config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
        try:
            name = json.loads(config.read_text()).get("backend")
        except (OSError, ValueError, AttributeError):
            name = None
    return name or "tensorflow"


def _tensorflow_backend() -> bool:
    return backend() == "tensorflow"


def _jax_gpus() -> list:
    import jax

    return [device for device in jax.devices() if device.platform == "gpu"]


NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # a folder per GPU where NVIDIA's Linux driver is loaded


def nvidia_gpus_present() -> int:
    """How many NVIDIA GPUs the machine's driver lists, whether or not the Keras backend can use them (a CPU-only
    TensorFlow or JAX sees none): 0 where there is no driver. Reads /proc; imports nothing."""
    try:
        return sum(1 for entry in NVIDIA_GPUS.iterdir() if entry.is_dir())
    except OSError:
        return 0


def has_gpu() -> bool:
    """Whether the Keras backend places ops on a GPU (TensorFlow or JAX); never imports TensorFlow off it."""
    if backend() == "jax":
        return bool(_jax_gpus())
    if not _tensorflow_backend():
        return False
    return bool(quiet_tensorflow().config.list_logical_devices("GPU"))


def gpu_capabilities() -> list[tuple[str, tuple[int, int] | None]]:
    """(device name, CUDA compute capability or None) of each GPU the backend sees."""
    if backend() == "jax":
        result = []
        for device in _jax_gpus():
            cc = getattr(device, "compute_capability", None)  # "9.0" on CUDA devices
            try:
                cc = tuple(int(part) for part in str(cc).split(".")[:2]) if cc else None
            except ValueError:
                cc = None
            result.append((device.device_kind, cc))
        return result
    if not _tensorflow_backend():
        return []
    tf = quiet_tensorflow()
    result = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        result.append((details.get("device_name", gpu.name), details.get("compute_capability")))
    return result


def describe_device() -> str:
    """A short description of where training runs, e.g. 'CPU (2 cores)' or '1x NVIDIA H100 80GB HBM3'."""
    gpus = gpu_capabilities()
    if gpus:
        names = sorted({name for name, _ in gpus})
        return f"{len(gpus)}x {', '.join(names)}"
    if backend() == "jax" and len(_jax_devices()) > 1:  # forced host devices (XLA_FLAGS), as in the tests
        return f"{len(_jax_devices())} JAX CPU devices on {os.cpu_count()} cores"
    return f"CPU ({os.cpu_count()} cores)"


def precision_policy(setting: str) -> str:
    """The Keras dtype policy for the recipe's mixed_precision setting ("auto" | "on" | "off").

    auto/on on a GPU: "mixed_bfloat16" under JAX on compute capability >= 8 (bf16 has float32's range, so no
    loss scaling), else "mixed_float16" (compute capability >= 7, tensor cores; Keras adds loss scaling);
    "float32" on a CPU or with off. on without such a GPU is an error.
    """
    gpus = gpu_capabilities()
    known = [tuple(cc) for _, cc in gpus if cc is not None]
    capable = bool(gpus) and len(known) == len(gpus) and min(known) >= (7, 0)
    if setting == "on" and not capable:
        raise TinyconvError("mixed_precision=on needs a GPU with compute capability >= 7; use auto or off")
    if setting == "off" or not capable:
        return "float32"
    return "mixed_bfloat16" if backend() == "jax" and min(known) >= (8, 0) else "mixed_float16"


def default_jit_compile() -> bool:
    """The XLA setting for `model.compile(jit_compile=...)`: on JAX always True; on TensorFlow False on a CPU,
    True on a GPU.

    TensorFlow on a CPU: XLA compiles depthwise and grouped convolutions into slow generic loops, which made
    the seed train an order of magnitude slower (docs/performance.md, "Model"). On a GPU XLA is the
    usual win for these element-wise-heavy blocks. JAX: see use_jit.
    """
    return True if backend() == "jax" else has_gpu()


def use_jit(setting: str) -> bool:
    """The recipe's jit_compile setting ("auto" | "on" | "off") for this machine; always True on JAX.

    JAX has no compiler but XLA, so Keras' `jit_compile=False` there does not mean "without XLA": it means
    the train step runs op by op, each op dispatched as its own small XLA program. That is several times
    slower even on one device, and with several devices it hung: every op on a sharded array is its own
    multi-device program, and on XLA's CPU client the two participants of an all-reduce never met (5 of 6
    runs on 2 forced host devices; jitted, 5 of 5 completed; benchmarks/jax_eager_data_parallel.py,
    docs/gpu.md). So on JAX the step is always one jitted program, whatever the recipe says.
    """
    if backend() == "jax":
        return True
    return default_jit_compile() if setting == "auto" else setting == "on"


def _jax_devices() -> list:
    import jax

    return jax.devices()  # every process's devices: the accelerators if there are any, else the CPU's


def device_count() -> int:
    """The devices data-parallel training spreads the global batch over.

    JAX: every device JAX sees (its GPUs, or its CPU devices: one, unless XLA_FLAGS asks for more with
    --xla_force_host_platform_device_count, as the tests do). TensorFlow: its GPUs (MirroredStrategy), else 1.
    """
    if backend() == "jax":
        return len(_jax_devices())
    if _tensorflow_backend():
        return max(1, len(quiet_tensorflow().config.list_physical_devices("GPU")))
    return 1


_data_parallel = None  # one DataParallel per process: the model's variables and each batch share its mesh


def data_parallel():
    """On JAX with several devices, the `keras.distribution.DataParallel` over all of them; else None.

    Each device holds a replica of the variables and 1/n of every global batch; XLA sums the gradients
    (and BatchNorm's batch statistics) over the devices inside the compiled step, so a step computes what
    one device computes on the same global batch. One process only: several hosts would each have to feed
    their slice of the global batch (docs/gpu.md says what is missing); that is refused in one line.
    """
    global _data_parallel
    if backend() != "jax":
        return None
    devices = _jax_devices()
    if len(devices) < 2:
        return None
    import jax

    if jax.process_count() > 1:
        raise TinyconvError(f"training over {jax.process_count()} JAX processes is not supported yet: the "
                            "on-device input feeds one process's devices (docs/gpu.md, several hosts)")
    if _data_parallel is None or list(_data_parallel.device_mesh.devices.flat) != devices:
        import keras

        _data_parallel = keras.distribution.DataParallel(devices=devices)
    return _data_parallel


def distribution_scope():
    """The context in which to build and compile a model for data-parallel training over every device.

    TensorFlow: a MirroredStrategy's scope over several GPUs (one host); its MultiWorkerMirroredStrategy
    is broken under Keras 3 (keras-team/keras#20585). JAX: the scope of `data_parallel()` when there are
    several devices (the variables are created replicated on each), else nothing.
    """
    if backend() == "jax":
        distribution = data_parallel()
        return distribution.scope() if distribution is not None else contextlib.nullcontext()
    if not _tensorflow_backend():
        return contextlib.nullcontext()
    tf = quiet_tensorflow()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy().scope()
    return tf.distribute.get_strategy().scope()


def fit_scope():
    """The context in which to run `model.fit`: on JAX the same distribution as distribution_scope(), since
    Keras reads it when it places each batch and compiles the step; elsewhere nothing (a TensorFlow model
    carries its strategy)."""
    if backend() == "jax":
        return distribution_scope()
    return contextlib.nullcontext()
