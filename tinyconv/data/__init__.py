"""The data: fetch and check the official zip, read its layout into a uint8 cache, and feed batches.

download      fetch (HTTP with resume, a path, file://), checksum, safe extraction
dataset       layout, labels, verification, subsets, the uint8 cache
augment_config  AugmentConfig: every augmentation value (no Keras)
augment       the augmentation of a batch in keras.ops, its random draws in numpy (BatchPlan)
pipeline      tf.data input (TensorFlow backend)
device_input  the JAX input: the cache on the device, batches gathered and augmented there
"""
