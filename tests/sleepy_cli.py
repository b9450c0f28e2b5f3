"""`tinyconv` with a 2 s pause after each epoch's backup, so the resume tests can kill it between two epochs.

    python tests/sleepy_cli.py train ...                     # TensorFlow (tests/test_train.py)
    python tests/no_tensorflow.py sleepy_cli train ...       # JAX without TensorFlow (tests/test_jax_backend.py)
"""

import sys
import time

import keras

import tinyconv.training.train
from tinyconv.cli import main


class EpochSleep(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(2)


run_callbacks = tinyconv.training.train.run_callbacks
tinyconv.training.train.run_callbacks = lambda *args: [*run_callbacks(*args), EpochSleep()]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
