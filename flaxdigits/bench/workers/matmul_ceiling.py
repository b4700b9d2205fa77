"""The hardware's ceiling: an epoch that does only what no training loop can skip, the step's
matrix products (flaxdigits.bench.ceiling).

MLP: the same compiled scan as flaxdigits' epoch (device-side shuffle, each batch gathered
from the uint8 images) but the step is only the five matmuls of a 784-100-10 forward and
backward pass and a plain weight update: no bias, ReLU, softmax, loss, metrics or Adam.
CNN (`cnn-fast`'s network): only the matmuls of the im2col step at their shapes, on one fixed
batch of first-layer patches, with a plain weight update: no reading or slicing of images.

A real training loop does all this and more, so at best it matches it (within the machine's
drift), and flaxdigits / ceiling says how much of the hardware the library uses. It learns
nothing, so it reports no accuracy.
"""

import time

from flaxdigits.bench.workers import common

args = common.parse_args()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from flaxdigits.bench.ceiling import (ceiling_grads, cnn_ceiling_grads,  # noqa: E402
                                      cnn_shapes, cnn_weights)
from flaxdigits.config import TrainConfig  # noqa: E402
from flaxdigits.recipes import CNN  # noqa: E402
from flaxdigits.training import (compile_lowered, compiler_options,  # noqa: E402
                                 epoch_plan, prng_key)

data = common.load(args)
n, bs = len(data.train_images), args.batch_size
dtype = jnp.dtype(args.compute_dtype)
unroll = min(args.unroll, n // bs)

if args.model == "mlp":
    config = TrainConfig()
    images = jax.device_put(data.train_images.reshape(n, 784))
    k1, k2 = jax.random.split(jax.random.key(0))
    w = (jax.random.normal(k1, (784, 100)) * 0.05, jax.random.normal(k2, (100, 10)) * 0.1)

    @jax.jit
    def epoch(w, images, key):
        order, _ = epoch_plan(key, n, bs)

        def step(w, idx):
            w1, w2 = (v.astype(dtype) for v in w)  # float32 weights, as flaxdigits keeps them
            dw1, dw2 = ceiling_grads(w1, w2, images[idx])
            return (w[0] - 1e-9 * dw1, w[1] - 1e-9 * dw2), None

        return jax.lax.scan(step, w, order, unroll=unroll)[0]
else:
    config = TrainConfig(model=CNN)
    rows, cols = cnn_shapes(CNN)[0]
    images = jax.random.uniform(jax.random.key(1), (bs * rows, cols))  # one batch's patches
    w = cnn_weights(CNN, jax.random.key(0))

    @jax.jit
    def epoch(w, patches, key):
        del key  # every step multiplies the same patches by the updated weights

        def step(w, _):
            grads = cnn_ceiling_grads([v.astype(dtype) for v in w], patches.astype(dtype), CNN)
            return [v - 1e-9 * g.astype(v.dtype) for v, g in zip(w, grads)], None

        return jax.lax.scan(step, w, None, length=n // bs, unroll=unroll)[0]

key = prng_key(0)
t0 = time.perf_counter()
run = compile_lowered(epoch.lower(w, images, key), compiler_options(config))
compile_seconds = time.perf_counter() - t0
seconds = []
for e in range(max(args.epochs, 1)):
    t0 = time.perf_counter()
    w = jax.block_until_ready(run(w, images, jax.random.fold_in(key, e)))
    seconds.append(time.perf_counter() - t0)
common.report({
    "framework": "ceiling",
    "version": f"jax {jax.__version__}",
    "device": common.jax_device(),
    "compute_dtype": args.compute_dtype,
    "samples_per_epoch": (n // bs) * bs,
    "epoch_seconds": seconds,
    "compile_seconds": compile_seconds,
    "test_accuracy": None,
    "peak_rss_mb": common.peak_rss_mb(),
})
