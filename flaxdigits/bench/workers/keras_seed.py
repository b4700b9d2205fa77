"""Keras peer: the seed tutorial's model and recipe as a Keras user writes it (TensorFlow CPU).

784 -> Dense(100, ReLU) -> Dense(10, softmax), Adam 1e-3, sparse cross-entropy, pixels / 255,
`model.fit` with its defaults (shuffled every epoch). MLP only.
"""

import os
import time

from flaxdigits.bench.workers import common

args = common.parse_args()
if args.model != "mlp":
    common.report({"framework": "keras", "missing": "no Keras peer for the CNN"})
    raise SystemExit
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:
    import keras
    import tensorflow as tf
except ImportError as e:
    common.missing("keras", e)
if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

data = common.load(args)
x_train, x_test = data.train_images / 255.0, data.test_images / 255.0  # as the tutorial
model = keras.Sequential([
    keras.Input((28, 28)),
    keras.layers.Flatten(),
    keras.layers.Dense(100, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])


class Timer(keras.callbacks.Callback):
    """Per-epoch wall time. Epoch hooks only: a per-batch hook makes Keras sync every step."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.t0)


# The first step as its own one-batch fit: it traces the train function, which later fits reuse.
t0 = time.perf_counter()
model.fit(x_train[:args.batch_size], data.train_labels[:args.batch_size],
          batch_size=args.batch_size, epochs=1, verbose=0)
trace_seconds = time.perf_counter() - t0
common.first_step()
if args.epochs == 0:
    common.report({"framework": "keras"})
    raise SystemExit
timer = Timer()
model.fit(x_train, data.train_labels, batch_size=args.batch_size, epochs=args.epochs,
          verbose=0, callbacks=[timer])
_, accuracy = model.evaluate(x_test, data.test_labels, batch_size=1000, verbose=0)
common.report({
    "framework": "keras",
    "version": f"keras {keras.__version__}, tensorflow {tf.__version__}",
    "device": "gpu" if tf.config.list_physical_devices("GPU") else "cpu",
    "samples_per_epoch": len(x_train),
    "epoch_seconds": timer.seconds,
    "compile_seconds": trace_seconds,
    "test_accuracy": accuracy,
    "peak_rss_mb": common.peak_rss_mb(),
    "device_peak_mb": None,
})
