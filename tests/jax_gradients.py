"""The gradients that two forms of a layer must agree on, under JAX: every trainable weight's gradient of the mean
log-probability of class 0 over a batch, in a training-mode call (BatchNorm on batch statistics). Imported by the
subprocess scripts of tests/test_jax_backend.py and tests/test_pallas_depthwise.py (tests/ is their sys.path[0]:
they run through tests/no_tensorflow.py)."""

import jax
import numpy as np


def gradients(net, x) -> list[np.ndarray]:
    trainable = [v.value for v in net.trainable_variables]
    fixed = [v.value for v in net.non_trainable_variables]

    def loss(weights):
        logits, _ = net.stateless_call(weights, fixed, x, training=True)
        return jax.numpy.mean(jax.nn.log_softmax(logits)[:, 0])

    return [np.asarray(g) for g in jax.jit(jax.grad(loss))(trainable)]
