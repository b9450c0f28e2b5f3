"""Would the seed's pointwise (1x1) convs train faster on a CPU as one MatMul each? (docs/performance.md)

The channel mixer of every ConvMixer block is a 1x1 Conv2D (tinyconv.model.layers.ConvMixerBlock.pointwise): the
same arithmetic as a [B*H*W, C] x [C, C] MatMul. Under oneDNN the two take different kernels (brgemm 1x1 convs
against oneDNN's or Eigen's matmul), so either could be faster. This times both, forward and backward (input and
kernel gradients) in one tf.function, at the seed's three stage shapes, batch 128, float32, alternating the two
forms round by round so that a busy machine slows both alike, and reports ms and GFLOP/s of the best round.

Usage: .venv/bin/python benchmarks/pointwise_matmul.py [--batch 128] [--steps 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

SHAPES = ((32, 128), (16, 256), (8, 512))  # (H = W, C) of the seed's stages 1-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps a round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tinyconv.runtime import prefer_onednn

    prefer_onednn()  # as `tinyconv train` does, before TensorFlow loads
    import tensorflow as tf

    def conv(x, kernel):
        return tf.nn.conv2d(x, kernel, 1, "VALID")

    def matmul(x, kernel):
        b, h, w, c = x.shape
        y = tf.matmul(tf.reshape(x, (b * h * w, c)), tf.reshape(kernel, (c, kernel.shape[-1])))
        return tf.reshape(y, (b, h, w, kernel.shape[-1]))

    for hw, c in SHAPES:
        x = tf.random.normal((args.batch, hw, hw, c), seed=0)
        upstream = tf.random.normal((args.batch, hw, hw, c), seed=1)
        kernel = tf.Variable(tf.random.normal((1, 1, c, c), seed=2) * 0.05)
        steps = {}
        for name, form in (("conv", conv), ("matmul", matmul)):
            @tf.function
            def step(x, form=form):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(form(x, kernel) * upstream)
                return tape.gradient(loss, [x, kernel])
            for _ in range(2):  # trace and warm up
                step(x)
            steps[name] = step
        best = {name: float("inf") for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    grads = step(x)
                    grads[1].numpy()
                best[name] = min(best[name], (time.perf_counter() - start) / args.steps)
        differ = float(tf.reduce_max(tf.abs(conv(x, kernel) - matmul(x, kernel))))
        flop = 3 * 2 * args.batch * hw * hw * c * c  # forward, input gradient, kernel gradient
        print(f"{hw}x{hw}x{c}, batch {args.batch}: "
              + ", ".join(f"{name} {best[name] * 1e3:.1f} ms ({flop / best[name] / 1e9:.0f} GFLOP/s)" for name in best)
              + f"; matmul/conv time {best['matmul'] / best['conv']:.2f}; outputs differ by at most {differ:.1e}",
              flush=True)


if __name__ == "__main__":
    main()
