"""tinyconv: a reproducible, fast and readable ConvMixer-variant reference on Tiny ImageNet.

Modules, one concern each (import the one you need; importing this package does not import TensorFlow):
  download  fetch, check and extract the official zip        dataset   layout, labels, verify, uint8 cache
  pipeline  tf.data input pipelines and augmentation          layers    the ConvMixer-variant Keras layers
  models    presets and build_model                           train     recipe, profiles, runs, evaluate, predict
  analysis  kernels, receptive fields, per-class accuracy     notebooks run the numbered notebooks headless
  bench     throughput benchmarks                             cli       the `tinyconv` command
  runtime   import TensorFlow without its native start-up noise
"""

__version__ = "0.1.0"

from tinyconv.errors import TinyconvError  # noqa: E402

__all__ = ["TinyconvError", "__version__"]
