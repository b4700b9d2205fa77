"""Run by tests/test_parallel.py with JAX_NUM_CPU_DEVICES=4: one epoch of the seed recipe on 4
CPU devices, its parameters saved to OUT.npz; prints one JSON line for the test to judge."""

import json
import sys

import jax
import numpy as np

from flaxdigits import parallel
from flaxdigits.config import TrainConfig
from flaxdigits.data import load_idx
from flaxdigits.errors import InputError
from flaxdigits.training import epoch_batches, prng_key, train

data = load_idx(sys.argv[1])
config = TrainConfig(epochs=1)
mesh = parallel.data_mesh(4)
n = 6_400  # enough batches to compare the draws, few enough to augment quickly
images, labels = data.train_images[:n].reshape(n, 784), data.train_labels[:n].astype(np.int32)
batches = jax.jit(epoch_batches, static_argnames=("config", "mesh"))
aug = config.with_options(augment=True)
one = batches(prng_key(7), jax.device_put(images), jax.device_put(labels), aug)
four = batches(parallel.replicate(prng_key(7), mesh), *parallel.replicate((images, labels), mesh),
               aug, mesh)
errors = []
for bad in (lambda: parallel.check_batch(30, mesh), lambda: parallel.data_mesh(8)):
    try:
        bad()
    except InputError as e:
        errors.append(str(e))
sharded = train(config, data, devices=4)
np.savez(sys.argv[2], *[np.asarray(a) for a in jax.tree.leaves(sharded.params)])
print(json.dumps({
    "devices": len(jax.devices()),
    "batch_sharding": str(four[0].sharding.spec),
    "same_batches": bool(np.array_equal(one[0], four[0]) and np.array_equal(one[1], four[1])),
    "param_shardings": sorted({str(a.sharding) for a in jax.tree.leaves(sharded.params)}),
    "sharded": sharded.test_accuracy, "errors": errors,
}))
