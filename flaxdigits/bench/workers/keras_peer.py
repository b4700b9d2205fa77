"""Keras peer: flaxdigits' networks as a Keras user writes them (TensorFlow CPU).

The seed tutorial's 784 -> Dense(100, ReLU) -> Dense(10, softmax), or the CNN of `cnn-fast`
(Conv2D 5x5/2 32, Conv2D 3x3/2 64, "same" padding, Dense 128), with Adam 1e-3, sparse
cross-entropy, pixels / 255 and `model.fit` with its defaults (shuffled every epoch).
"""

import os
import time

from flaxdigits.bench.workers import common

args = common.parse_args()
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
if args.model == "mlp":
    layers = [keras.Input((28, 28)), keras.layers.Flatten(),
              keras.layers.Dense(100, activation="relu")]
else:
    x_train, x_test = x_train[..., None], x_test[..., None]  # NHWC, Keras' default
    layers = [keras.Input((28, 28, 1)),
              keras.layers.Conv2D(32, 5, strides=2, padding="same", activation="relu"),
              keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
              keras.layers.Flatten(), keras.layers.Dense(128, activation="relu")]
model = keras.Sequential([*layers, keras.layers.Dense(10, activation="softmax")])
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
