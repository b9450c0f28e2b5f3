"""A JAX ci run whose epoch 2 diverges, watched by a probe: prints one JSON object for tests/test_jax_backend.py.

    python tests/no_tensorflow.py jax_async_steps DATA_DIR RUN_DIR

The probe is an `async_safe` callback that notes the thread each batch-end hook runs in. Keras runs a fit's
batch-end hooks in worker threads only when every callback allows it (CallbackList._configure_async_dispatch),
so the probe sees worker threads only if none of the run's own callbacks makes each step wait for the host.
It also notes when epoch 1 began and when its last step's results had reached Python (Keras turns a step's logs
into floats before the hook: the step had run), for the history's train time to be compared with.
"""

import json
import sys
import threading
import time

import keras
import numpy as np

from tinyconv.errors import TinyconvError
from tinyconv.training.train import train


class ThreadProbe(keras.callbacks.Callback):
    async_safe = True

    def __init__(self):
        super().__init__()
        self.threads = []
        self.epoch = None
        self.epoch_begin = None  # perf_counter when epoch 1 began
        self.last_step_ready = None  # perf_counter when epoch 1's last step's logs were here

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if epoch == 0:
            self.epoch_begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.threads.append(threading.current_thread() is threading.main_thread())
        if self.epoch == 0:
            ready = time.perf_counter()
            self.last_step_ready = max(ready, self.last_step_ready or ready)  # worker threads may finish in any order


class PoisonWeights(keras.callbacks.Callback):
    """The stem's weights turn NaN when epoch 2 begins: epoch 1 is good, epoch 2 diverges at its first step."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            kernel = self.model.get_layer("stem_conv").kernel
            kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


if __name__ == "__main__":
    data_dir, run_dir = sys.argv[1:3]
    probe = ThreadProbe()
    try:
        train(profile="ci", data_dir=data_dir, out=run_dir, overrides={"epochs": 2}, callbacks=[probe, PoisonWeights()])
        error = None
    except TinyconvError as exc:
        error = str(exc)
    print(json.dumps({"error": error, "hooks": len(probe.threads), "on_main_thread": sum(probe.threads),
                      "epoch_1_last_step_ready_s": probe.last_step_ready - probe.epoch_begin}))
