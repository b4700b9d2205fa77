"""flaxdigits: train, checkpoint and serve handwritten-digit classifiers with JAX and Flax.

    import flaxdigits as fd
    data = fd.load_mnist(data_dir="path/to/mnist")        # or fd.load_mnist() through TFDS
    result = fd.train(fd.TrainConfig(epochs=5), data)     # result.model: an nnx.Module
    probs = result.classifier.predict(data.test_images)   # [N, 10]

Names resolve lazily, so `import flaxdigits` stays cheap and never imports TensorFlow.
"""

from importlib import import_module

__version__ = "0.3.2"

_EXPORTS = {
    "load_mnist": "data", "Mnist": "data",
    "ModelConfig": "config", "TrainConfig": "config", "Augment": "config",
    "MLP": "models", "CNN": "models", "build_model": "models",
    "recipe": "recipes", "RECIPES": "recipes", "resolve": "recipes",
    "save_result": "checkpoints", "load_result": "checkpoints",
    "TrainResult": "training", "train": "training",
    "train_step": "training", "eval_step": "training", "train_epoch": "training",
    "create_model_and_optimizer": "training",
    "Classifier": "inference", "predict": "inference", "evaluate": "inference",
    "FlaxdigitsError": "errors", "DataError": "errors", "InputError": "errors",
    "MissingExtra": "errors", "CheckpointError": "checkpoint_file",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"flaxdigits.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'flaxdigits' has no attribute {name!r}")
