"""tinyconv: a reproducible, fast and readable ConvMixer-variant reference on Tiny ImageNet.

Modules, one concern each (import the one you need; importing this package does not import TensorFlow):
  download   fetch, check and extract the official zip       dataset    layout, labels, verify, uint8 cache
  pipeline   tf.data input pipelines and augmentation         recipe     TrainConfig, AugmentConfig, PROFILES
  schedule   WarmupCosine and build_optimizer                 overrides  text to typed recipe values (--set)
  layers     the ConvMixer-variant Keras layers               kernels    TensorFlow fast paths behind them
  models     presets, stage_plan and build_model              train      a run folder and train()
  callbacks  training callbacks and history.csv               inference  load a model, evaluate, predict
  analysis   kernels, receptive fields, statistics            figures    every plot
  notebooks  run the numbered notebooks headless              bench      throughput benchmarks
  runtime    quiet TensorFlow import and the device policy    fileio     atomic file writes
  cli        the `tinyconv` command                           errors     TinyconvError
"""

__version__ = "0.1.0"

from tinyconv.errors import TinyconvError  # noqa: E402

__all__ = ["TinyconvError", "__version__"]
