"""Model definitions and the small config that names one."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from flaxdigits.errors import InputError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What a model is: kind, hidden widths and whether inputs are scaled to [0, 1]."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (100,)
    scale: bool = True  # pixels / 255; off reproduces the seed's "no scaling" ablation

    def __post_init__(self):
        if self.kind not in MODELS:
            raise InputError(f"unknown model kind {self.kind!r}: choose from {sorted(MODELS)}")
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        if any(w <= 0 for w in self.hidden):
            raise InputError(f"hidden widths must be positive integers, got {self.hidden}")


# Keras' Dense default, which the seed model was trained with.
GLOROT = nn.initializers.glorot_uniform()


class MLP(nn.Module):
    """784 -> hidden (ReLU) ... -> 10 logits; `hidden=()` is softmax regression."""

    hidden: Sequence[int] = (100,)
    scale: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits [B, 10] for pixel values [B, 28, 28] or [B, 784] in 0..255 (uint8 or float)."""
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        if self.scale:
            x = x * (1.0 / 255.0)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, kernel_init=GLOROT)(x))
        return nn.Dense(10, kernel_init=GLOROT)(x)


MODELS: dict[str, Any] = {"mlp": MLP}


def build_model(config: ModelConfig) -> nn.Module:
    """The Flax module described by `config`."""
    return MODELS[config.kind](hidden=config.hidden, scale=config.scale)
