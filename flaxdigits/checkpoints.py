"""Training runs saved as checkpoints and loaded back, ready to resume or to predict.

The file format itself (header, payload, checks) is `flaxdigits.checkpoint_file`; this module
puts a `TrainResult` into it and takes one out. `Classifier.load` reads the same files for
prediction alone.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import flax
import jax
import numpy as np
from flax import serialization

import flaxdigits
from flaxdigits.checkpoint_file import check_like, declared_config, load, require, save
from flaxdigits.training import TrainResult, create_state


def save_result(path: str | os.PathLike, result: TrainResult) -> Path:
    """Save a `TrainResult` (parameters, optimizer state, configs, history, versions)."""
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
        "versions": {"flaxdigits": flaxdigits.__version__, "jax": jax.__version__,
                     "flax": flax.__version__},
    }
    state = result.state
    tree = {
        "params": serialization.to_state_dict(jax.device_get(state.params)),
        "opt_state": serialization.to_state_dict(jax.device_get(state.opt_state)),
        "step": np.asarray(jax.device_get(state.step)),
    }
    return save(path, tree, meta)


def load_result(path: str | os.PathLike) -> TrainResult:
    """The `TrainResult` saved at `path`, ready to resume (`train(..., resume=result)`)."""
    meta, tree = load(path)
    config = declared_config(meta, path)
    template = create_state(config)
    params = require(tree, "params", path)
    check_like(serialization.to_state_dict(template.params), params, path, "params")
    opt_state = require(tree, "opt_state", path)
    check_like(serialization.to_state_dict(template.opt_state), opt_state, path, "opt_state")
    state = template.replace(
        step=jax.numpy.asarray(require(tree, "step", path)),
        params=serialization.from_state_dict(template.params, params),
        opt_state=serialization.from_state_dict(template.opt_state, opt_state),
    )
    return TrainResult(config, state, list(meta.get("history") or []), compile_seconds=0.0)
