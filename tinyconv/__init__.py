"""tinyconv: a reproducible, fast and readable ConvMixer-variant reference on Tiny ImageNet.

Modules, one concern each (import the one you need; importing this package does not import TensorFlow):
  download   fetch, check and extract the official zip       dataset    layout, labels, verify, uint8 cache
  recipe     TrainConfig, AugmentConfig, PROFILES             overrides  text to typed recipe values (--set)
  augment    batch augmentation in keras.ops, BatchPlan       pipeline   tf.data input pipelines (TensorFlow)
  device_input  the JAX input: cache and batches on the GPU   reference  the reference's published curve
  schedule   lr schedules, AdamWPerStepDecay, build_optimizer layers     the ConvMixer-variant Keras layers
  kernels    TensorFlow fast paths behind the layers          models     presets, stage_plan and build_model
  train      a run folder and train()                         callbacks  training callbacks and history.csv
  inference  load a model, evaluate, predict                  analysis   kernels, receptive fields, statistics
  figures    every plot                                       notebooks  run the numbered notebooks headless
  bench      throughput benchmarks                            runtime    backend and device policy (TF, JAX)
  fileio     atomic file writes                               cli        the `tinyconv` command
  errors     TinyconvError
"""

__version__ = "0.1.0"

from tinyconv.errors import TinyconvError  # noqa: E402
from tinyconv.runtime import prefer_onednn  # noqa: E402  (stdlib only: no TensorFlow yet)

prefer_onednn()  # before any tinyconv module imports Keras, which imports TensorFlow

__all__ = ["TinyconvError", "__version__"]
