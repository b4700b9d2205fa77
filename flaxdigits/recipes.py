"""Named training recipes: `flaxdigits train --recipe NAME` (flags after it override values).

Each recipe says how to run it; the README's results table gives what it reached, measured.
`resolve("cnn-fast", epochs=3)` is what the command line does with a recipe and its flags.
"""

from __future__ import annotations

from typing import Any

from flaxdigits.config import DEFAULT_AUGMENT as AUGMENT
from flaxdigits.config import Augment, ModelConfig, TrainConfig
from flaxdigits.errors import InputError

CNN = ModelConfig(kind="cnn", channels=(32, 64), kernels=(5, 3), dense=128)

# Digits as people draw them in the sketchpad (see flaxdigits.augment): the usual affine range a
# little wider, plus aspect, a smooth warp, thin to thick pens, hard ink, flags, feet, crossbars.
DRAWN_AUGMENT = Augment(rotate=15.0, scale=0.12, shear=15.0, shift=2.0, aspect=0.25,
                        elastic=2.0, width=1.0, ink=0.6, strokes=0.5,
                        nondigits=0.1)

RECIPES: dict[str, TrainConfig] = {
    # The Keras tutorial: 784-100-10, Adam 1e-3, batch 32, 5 epochs, pixels / 255.
    "seed": TrainConfig(),
    # The same 784-100-10 network, trained longer on augmented digits with a cosine schedule.
    "mlp-best": TrainConfig(epochs=30, batch_size=64, lr=2e-3, schedule="cosine",
                            warmup_epochs=1, augment=AUGMENT),
    # A strided CNN sized to train in under 5 minutes on a 2-core CPU.
    "cnn-fast": TrainConfig(model=CNN, epochs=10, batch_size=128, lr=3e-3, schedule="cosine",
                            warmup_epochs=1, augment=AUGMENT),
    # The CNN of cnn-fast trained for drawings: what `make run` serves (README: its time on CPU).
    "drawn": TrainConfig(model=CNN, epochs=20, batch_size=128, lr=3e-3, schedule="cosine",
                         warmup_epochs=1, augment=DRAWN_AUGMENT),
    # The same CNN, twice as wide and trained 3x longer: for a GPU, or ~half an hour of CPU.
    "cnn-best": TrainConfig(model=ModelConfig(kind="cnn", channels=(64, 128), kernels=(5, 3),
                                              dense=256),
                            epochs=30, batch_size=128, lr=3e-3, schedule="cosine",
                            warmup_epochs=2, weight_decay=1e-4, label_smoothing=0.1,
                            augment=AUGMENT),
}


def recipe(name: str) -> TrainConfig:
    """The TrainConfig of recipe `name`."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    return RECIPES[name]


def resolve(name: str | None = None, **overrides: Any) -> TrainConfig:
    """Recipe `name` (None: the defaults, which are the seed recipe) with flat `overrides` of
    any TrainConfig or ModelConfig field applied (see `TrainConfig.with_options`)."""
    return (recipe(name) if name else TrainConfig()).with_options(**overrides)
