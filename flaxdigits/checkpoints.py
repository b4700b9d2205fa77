"""Training runs saved as checkpoints and loaded back, ready to resume or to predict.

The file format itself (header, payload, checks, format versions) is
`flaxdigits.checkpoint_file`; this module puts a `TrainResult` (the NNX model's parameters and
its optimizer's state) into it and takes one out. `Classifier.load` reads the same files for
prediction alone.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import flax
import jax
from flax import nnx

import flaxdigits
from flaxdigits.checkpoint_file import (FORMAT_VERSION, SINGLE_MODEL_VERSION, declared_config,
                                        load, require, save)
from flaxdigits.inference import fill
from flaxdigits.training import TrainResult, create_model_and_optimizer


def save_result(path: str | os.PathLike, result: TrainResult) -> Path:
    """Save a `TrainResult` (parameters, optimizer state, configs, history, versions); an
    ensemble's in one file, its arrays stacked along a leading member axis (format 3)."""
    train_config = dataclasses.asdict(result.config)
    model_config = train_config.pop("model")
    meta = {
        "kind": "flaxdigits-model",
        "model": model_config,
        "train": train_config,
        "epoch": result.history[-1]["epoch"] if result.history else 0,
        "history": result.history,
        "test": {"accuracy": result.test_accuracy, "loss": result.test_loss} if result.history
        else None,
        **({"members": result.members} if result.config.ensemble > 1 else {}),
        "versions": {"flaxdigits": flaxdigits.__version__, "jax": jax.__version__,
                     "flax": flax.__version__},
    }
    tree = {
        "params": nnx.to_pure_dict(jax.device_get(result.params)),
        "optimizer": nnx.to_pure_dict(jax.device_get(nnx.state(result.optimizer))),
    }
    ensemble = result.config.ensemble > 1
    return save(path, tree, meta, FORMAT_VERSION if ensemble else SINGLE_MODEL_VERSION)


def load_result(path: str | os.PathLike) -> TrainResult:
    """The `TrainResult` saved at `path`, ready to resume (`train(..., resume=result)`).

    Files of flaxdigits 0.1 (format 1, Flax Linen) load too, with their Adam state; an
    ensemble's come back stacked, as `train` returned them.
    """
    meta, tree = load(path)
    config = declared_config(meta, path)
    # The (model, optimizer) pair as shapes only, then filled with the file's arrays.
    graph, state = nnx.split(nnx.eval_shape(lambda: create_model_and_optimizer(config)))
    fill(state[0], require(tree, "params", path), path, "params")
    fill(state[1], require(tree, "optimizer", path), path, "optimizer")
    model, optimizer = nnx.merge(graph, state)
    return TrainResult(config, model, optimizer, list(meta.get("history") or []),
                       compile_seconds=0.0)
