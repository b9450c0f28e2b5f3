"""Importing TensorFlow without its native start-up chatter.

TensorFlow 2.21's C++ runtime prints several lines to stderr while it loads and when it first looks for a
GPU ("oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit", ...). They
are written before absl's logging is set up, so TF_CPP_MIN_LOG_LEVEL does not reach them, and on a CPU-only
machine they read like errors. `quiet_tensorflow()` does the import and the first device query with the
process's stderr pointed at /dev/null; Python exceptions are unaffected. Set TINYCONV_TF_LOGS=1 to see them.
"""

from __future__ import annotations

import contextlib
import os
import sys

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
