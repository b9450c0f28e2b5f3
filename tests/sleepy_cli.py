"""`tinyconv` with a 2 s pause after each epoch's backup, so the resume tests can kill it between two epochs.

    python tests/sleepy_cli.py train ...                     # TensorFlow (tests/test_train.py)
    python tests/no_tensorflow.py sleepy_cli train ...       # JAX without TensorFlow (tests/test_jax_backend.py)

With $SLEEPY_HANG_EPOCH=N and $SLEEPY_HANG_FILE=PATH it also stops for good after the second step of epoch N
(1-based), once it has written PATH: a kill that then comes lands mid-epoch for certain, whatever the machine's
speed (tests/test_gpu_scripts.py).
"""

import os
import sys
import time
from pathlib import Path

import keras

import tinyconv.training.train
from tinyconv.cli import main


class EpochSleep(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(2)


class HangMidEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int, marker: Path):
        super().__init__()
        self.hang_epoch, self.marker, self.epoch = epoch, marker, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.hang_epoch and batch == 1:
            self.marker.write_text(f"epoch {self.epoch}, step {batch + 1}\n")
            time.sleep(3600)


def _extra_callbacks() -> list:
    extra = [EpochSleep()]
    if os.environ.get("SLEEPY_HANG_EPOCH"):
        extra.append(HangMidEpoch(int(os.environ["SLEEPY_HANG_EPOCH"]), Path(os.environ["SLEEPY_HANG_FILE"])))
    return extra


run_callbacks = tinyconv.training.train.run_callbacks
tinyconv.training.train.run_callbacks = lambda *args: [*run_callbacks(*args), *_extra_callbacks()]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
