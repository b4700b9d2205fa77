"""The hardware's ceiling for the seed MLP: an epoch that does only what no MLP loop can skip.

The same compiled scan as flaxdigits' epoch (device-side shuffle, each batch gathered from the
uint8 images) but the step is only the five matmuls of a 784-100-10 forward and backward pass
and a plain weight update: no bias, ReLU, softmax, loss, metrics or Adam. A real training loop
does all this and more, so at best it matches it (within the machine's drift), and
flaxdigits / ceiling says how much of the hardware the library uses. MLP only; it learns
nothing, so it reports no accuracy.
"""

import time

from flaxdigits.bench.workers import common

args = common.parse_args()
if args.model != "mlp":
    common.report({"framework": "ceiling", "missing": "no ceiling for the CNN"})
    raise SystemExit

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from flaxdigits.bench.mlp_profile import ceiling_grads  # noqa: E402
from flaxdigits.config import TrainConfig  # noqa: E402
from flaxdigits.training import (compile_lowered, compiler_options,  # noqa: E402
                                 epoch_plan, prng_key)

data = common.load(args)
n, bs = len(data.train_images), args.batch_size
images = jax.device_put(data.train_images.reshape(n, 784))
dtype = jnp.dtype(args.compute_dtype)


@jax.jit
def epoch(w, images, key):
    order, _ = epoch_plan(key, n, bs)

    def step(w, idx):
        w1, w2 = (v.astype(dtype) for v in w)  # float32 weights, as flaxdigits keeps them
        dw1, dw2 = ceiling_grads(w1, w2, images[idx])
        return (w[0] - 1e-9 * dw1, w[1] - 1e-9 * dw2), None

    return jax.lax.scan(step, w, order, unroll=min(args.unroll, len(order)))[0]


k1, k2 = jax.random.split(jax.random.key(0))
w = (jax.random.normal(k1, (784, 100)) * 0.05, jax.random.normal(k2, (100, 10)) * 0.1)
t0 = time.perf_counter()
run = compile_lowered(epoch.lower(w, images, prng_key(0)), compiler_options(TrainConfig()))
compile_seconds = time.perf_counter() - t0
seconds = []
for e in range(max(args.epochs, 1)):
    t0 = time.perf_counter()
    w = jax.block_until_ready(run(w, images, jax.random.fold_in(prng_key(0), e)))
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
