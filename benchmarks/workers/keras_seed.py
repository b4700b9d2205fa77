"""Keras peer: the seed tutorial's model and recipe as a Keras user writes it (TensorFlow CPU).

784 -> Dense(100, ReLU) -> Dense(10, softmax), Adam 1e-3, sparse cross-entropy, pixels / 255,
`model.fit` with its defaults (shuffled every epoch). MLP only.
"""

import os
import time

import common

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
x_train, x_test = data.train_images / 255.0, data.test_images / 255.0
model = keras.Sequential([
    keras.Input((28, 28)),
    keras.layers.Flatten(),
    keras.layers.Dense(100, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])


class Timer(keras.callbacks.Callback):
    """Per-epoch wall time, and the first-step signal."""

    def __init__(self):
        super().__init__()
        self.seconds, self.first = [], True

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first:
            self.first = False
            common.first_step()
            if args.epochs == 0:
                self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.t0)


timer = Timer()
model.fit(x_train, data.train_labels, batch_size=args.batch_size, epochs=max(args.epochs, 1),
          verbose=0, callbacks=[timer])
if args.epochs == 0:
    common.report({"framework": "keras"})
    raise SystemExit
_, accuracy = model.evaluate(x_test, data.test_labels, batch_size=1000, verbose=0)
common.report({
    "framework": "keras",
    "version": f"keras {keras.__version__}, tensorflow {tf.__version__}",
    "device": "gpu" if tf.config.list_physical_devices("GPU") else "cpu",
    "samples_per_epoch": len(x_train),
    "epoch_seconds": timer.seconds,
    "compile_seconds": None,
    "test_accuracy": accuracy,
    "peak_rss_mb": common.peak_rss_mb(),
    "device_peak_mb": None,
})
