"""PyTorch versions of flaxdigits' models and augmentation, for the PyTorch peer workers.

Imported only by workers that have already imported torch. The networks have flaxdigits'
shapes; PyTorch pads a stride-2 convolution symmetrically (k // 2) where XLA's "SAME" puts the
odd pixel at the end, and initialises layers its own way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flaxdigits.config import Augment, ModelConfig


def build(config: ModelConfig) -> nn.Sequential:
    """The network of `config` (NCHW input for the CNN, [B, 784] for the MLP)."""
    layers: list[nn.Module] = []
    if config.kind == "mlp":
        widths = (784, *config.hidden)
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], 10))
    side, widths = 28, (1, *config.channels)
    for a, b, k in zip(widths, widths[1:], config.kernels):
        layers += [nn.Conv2d(a, b, k, stride=2, padding=k // 2), nn.ReLU()]
        side = (side + 2 * (k // 2) - k) // 2 + 1
    features = side * side * widths[-1]
    layers.append(nn.Flatten())
    if config.dense:
        layers += [nn.Linear(features, config.dense), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(config.dense or features, 10))


def adam(model: nn.Module, lr: float, weight_decay: float = 0.0
         ) -> tuple[torch.optim.Optimizer, bool]:
    """Adam (AdamW with `weight_decay` > 0) over `model`'s parameters, fused where the build has
    it -> (optimizer, whether it is fused)."""
    make = torch.optim.AdamW if weight_decay else torch.optim.Adam
    options = {"weight_decay": weight_decay} if weight_decay else {}
    try:
        return make(model.parameters(), lr=lr, fused=True, **options), True
    except (RuntimeError, TypeError):
        return make(model.parameters(), lr=lr, **options), False


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """optax.warmup_cosine_decay_schedule(0, 1, warmup, total) at `step`: the LR factor."""
    if step < warmup:
        return step / warmup
    t = min(step - warmup, total - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * t))


def affine(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """flaxdigits' random affine augmentation (`flaxdigits.augment`) of x [B, 1, 28, 28]:
    rotation, scale, shear and shift about the centre, bilinear, zero outside."""
    b = x.shape[0]
    u = torch.rand(b, 5, generator=generator, device=x.device) * 2 - 1
    angle, shear = math.radians(aug.rotate) * u[:, 0], math.radians(aug.shear) * u[:, 2]
    scale, shift = 1 + aug.scale * u[:, 1], aug.shift * u[:, 3:5]
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    fwd = torch.stack([torch.stack([cos, -sin + cos * tan], -1),
                       torch.stack([sin, cos + sin * tan], -1)], -2) * scale[:, None, None]
    inv = torch.linalg.inv(fwd)  # (y, x) pixel coordinates about the centre
    # affine_grid works in (x, y) coordinates normalised to [-1, 1] over the 28 pixels.
    inv_xy = inv.flip(1).flip(2)
    offset = -inv_xy @ (shift.flip(1) * (2 / 28))[:, :, None]
    grid = nn.functional.affine_grid(torch.cat([inv_xy, offset], 2), list(x.shape),
                                     align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)
