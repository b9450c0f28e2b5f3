"""Running tinyconv and test scripts under JAX in a subprocess where `import tensorflow` fails
(tests/no_tensorflow.py), for tests/test_jax_backend.py and tests/test_jax_parity.py.

Each JAX process costs ~10 s to start and ~25 s to compile on a CPU, so every JAX process of a test session's worker
shares one persistent XLA compilation cache (a temporary folder, removed at exit): the tests compile the same
ci-profile steps again and again (a ci run: 44 s without it, 16 s with it). What runs is the same compiled code,
keyed by JAX on the computation, its devices and its flags. REFERENCE_LIKE: `tinyconv train` flags of the reference
recipe's moving parts. AUGMENTS: the augmentation settings that the device input's tests make batches with on both
sides.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKER = REPO / "tests" / "no_tensorflow.py"
COMPILE_CACHE = tempfile.mkdtemp(prefix="tinyconv-jax-cache-")
atexit.register(shutil.rmtree, COMPILE_CACHE, ignore_errors=True)


def jax_env(extra_path: Path | None = None) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_COMPILATION_CACHE_DIR": COMPILE_CACHE, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def without_tf(module: str, *args, extra_path: Path | None = None, timeout: int = 300):
    """`python tests/no_tensorflow.py module args...` under JAX: TensorFlow cannot be imported in that process."""
    return subprocess.run(
        [sys.executable, str(BLOCKER), module, *map(str, args)],
        cwd=REPO, env=jax_env(extra_path), capture_output=True, text=True, timeout=timeout,
    )


def ok(completed) -> subprocess.CompletedProcess:
    output = f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    assert completed.returncode == 0, f"exit {completed.returncode}\n{output}"
    return completed


def json_out(completed) -> dict:
    """The JSON object a command printed last (train prints progress lines before it)."""
    text = "\n" + ok(completed).stdout
    return json.loads(text[text.rindex("\n{\n") + 1:])


# The reference recipe's moving parts on the ci model: per-epoch lr with a warm-up, AdamW's per-step decay, the
# augmentation's per-batch crop and jitter factors, jitter, cutout, mixup/cutmix every batch, and stochastic depth
# (the seed preset has none; a resume must carry its random state all the same)
REFERENCE_LIKE = ["--set", "lr_update=epoch", "--set", "weight_decay_mode=per_step", "--set", "crop_offset=batch",
                  "--set", "jitter_factors=batch", "--set", "warmup_epochs=1", "--set", "jitter_prob=0.8",
                  "--set", "cutout_prob=0.7", "--set", "mix_prob=1.0", "--set", "model.drop_path=0.2"]

AUGMENTS = {
    # the reference: one crop offset and one set of jitter factors per batch, black cutout, every batch mixed
    "reference": {"pad": 4, "crop_offset": "batch", "flip": True, "jitter_prob": 0.8, "jitter_factors": "batch",
                  "cutout_prob": 0.7, "cutout_half": 16, "cutout_fill": "zero", "mix_prob": 1.0,
                  "cutmix_share": 0.5, "mix_alpha": 0.2},
    # the per-example variants, mean-colour cutout, half the batches mixed
    "per_example": {"pad": 4, "crop_offset": "example", "flip": True, "jitter_prob": 0.6, "jitter_factors": "example",
                    "cutout_prob": 0.5, "cutout_half": 12, "cutout_fill": "mean", "mix_prob": 0.6,
                    "cutmix_share": 0.5, "mix_alpha": 0.4},
}
