"""flaxdigits worker: the library's own training loop (`train`), cold start included; with
--ensemble K, K seed models in one compiled program (samples are then model-samples: K per
image)."""

from flaxdigits.bench.workers import common

args = common.parse_args()

import dataclasses  # noqa: E402

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from flaxdigits.config import ModelConfig, TrainConfig  # noqa: E402
from flaxdigits.models import conv_impl  # noqa: E402
from flaxdigits.training import (create_model_and_optimizer,  # noqa: E402
                                 enable_compilation_cache, resolve_ensemble_loop, resolve_loop,
                                 train, train_step)

if args.cache:
    enable_compilation_cache(args.cache)
data = common.load(args)
config = TrainConfig(model=ModelConfig(kind=args.model, conv=args.conv),
                     batch_size=args.batch_size, epochs=max(args.epochs, 1), unroll=args.unroll,
                     compute_dtype=args.compute_dtype, ensemble=args.ensemble)
# A user's first step, as Flax's MNIST tutorial takes it: a new model and optimizer, then
# `nnx.jit(train_step)` on the first batch, compiled from scratch (one model, even for -K).
model, optimizer = create_model_and_optimizer(dataclasses.replace(config, ensemble=1))
x = data.train_images[:config.batch_size].reshape(config.batch_size, 784)
batch = (x, data.train_labels[:config.batch_size])
jax.block_until_ready(nnx.jit(train_step)(model, optimizer, batch))
common.first_step()
if args.epochs == 0:
    common.report({"framework": "flaxdigits"})
    raise SystemExit

result = train(config, data)
device = jax.devices()[0]
stats = device.memory_stats() or {}
common.report({
    "framework": "flaxdigits",
    "version": f"jax {jax.__version__}",
    "device": common.jax_device(),
    "loop": resolve_loop(config),
    "conv": conv_impl(config.model.conv) if args.model == "cnn" else None,
    "unroll": config.unroll,
    "compute_dtype": config.compute_dtype,
    "ensemble": config.ensemble,
    "ensemble_loop": resolve_ensemble_loop(config) if config.ensemble > 1 else None,
    "samples_per_epoch": (len(data.train_images) // config.batch_size) * config.batch_size
    * config.ensemble,
    "epoch_seconds": [h["seconds"] for h in result.history],
    "compile_seconds": result.compile_seconds,
    "test_accuracy": result.test_accuracy,
    "peak_rss_mb": common.peak_rss_mb(),
    "device_peak_mb": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats
    else None,
})
