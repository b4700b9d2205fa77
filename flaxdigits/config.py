"""What a training run is, as frozen, validated dataclasses: the one place each option lives.

Every field carries its help text (and choices) as metadata, so the command line's flags, their
defaults in `--help`, recipe overrides and configs read back from checkpoints all derive from
here. Adding a training option means adding one field. This module needs no JAX, so the CLI
can build its parser and check arguments at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

from flaxdigits.errors import InputError


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
           flag: str | None = None, metavar: str | None = None) -> Any:
    """A config field with its command-line help; `flag` renames it (`kind` is `--model`)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "flag": flag, "metavar": metavar})


def choices(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of field `name` of config class `cls`."""
    return next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == name)


def _check_choice(config: Any, name: str) -> None:
    allowed = choices(type(config), name)
    if getattr(config, name) not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)}, got "
                         f"{getattr(config, name)!r}")


@dataclasses.dataclass(frozen=True)
class Augment:
    """Largest random change per image; each is drawn uniformly from [-max, max].

    The first four are the usual affine augmentation; the rest make digits look as people draw
    them in a sketchpad (see `flaxdigits.augment`), and are off unless a recipe sets them.
    """

    rotate: float = 0.0  # degrees
    scale: float = 0.0  # relative: 0.1 means 90%..110%
    shear: float = 0.0  # degrees
    shift: float = 0.0  # pixels
    aspect: float = 0.0  # width over height changes by a factor of up to exp(2 * aspect)
    elastic: float = 0.0  # pixels: largest displacement of a smooth random warp
    width: float = 0.0  # pixels: strokes thicken by up to this much, or thin (up to a pixel)
    ink: float = 0.0  # 0..1: how far the ink may be pushed towards hard, binarised edges
    strokes: float = 0.0  # share of 7s given a crossbar; of upright 1s, twice it get a flag
    nondigits: float = 0.0  # share of each batch replaced by scribbles that teach "no digit"

    def __post_init__(self):
        for name, top, closed in (("rotate", 90, False), ("scale", 1, False),
                                  ("shear", 90, False), ("shift", 90, False),
                                  ("aspect", 1, False), ("elastic", 6, False),
                                  ("width", 2, True), ("ink", 1, True), ("strokes", 1, True),
                                  ("nondigits", 0.5, True)):
            value = getattr(self, name)
            if not (0 <= value <= top if closed else 0 <= value < top):
                raise InputError(f"augment {name} must be in [0, {top}{']' if closed else ')'}, "
                                 f"got {value}")

    @property
    def enabled(self) -> bool:
        """Whether any strength is non-zero."""
        return any(dataclasses.astuple(self))

    @property
    def drawn(self) -> bool:
        """Whether any of the drawing-style changes (beyond the affine ones) is on."""
        return any((self.aspect, self.elastic, self.width, self.ink, self.strokes,
                    self.nondigits))


# What `--augment` turns on: the usual MNIST range, small enough to keep digits legible.
DEFAULT_AUGMENT = Augment(rotate=12.0, scale=0.12, shear=10.0, shift=2.5)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What a model is: its kind, its shape, and whether inputs are scaled to [0, 1]."""

    kind: str = option("mlp", "model kind", choices=("mlp", "cnn"), flag="model")
    hidden: tuple[int, ...] = option((100,), "mlp: hidden layer widths; none = softmax "
                                     "regression", metavar="N")
    scale: bool = option(True, "feed pixels / 255; --no-scale feeds raw 0..255 pixels (the "
                         "seed's ablation)")
    channels: tuple[int, ...] = option((32, 64), "cnn: widths of the stride-2 convolutions",
                                       metavar="N")
    kernels: tuple[int, ...] = option((5, 3), "cnn: their kernel sizes", metavar="K")
    dense: int = option(128, "cnn: width of the dense layer before the logits (0: none)")
    conv: str = option("auto", "cnn: how the convolutions compute (the same maths and "
                       "parameters): im2col (strided slices and one matmul), lax (XLA's "
                       "convolution op); auto: im2col to train on CPU, lax elsewhere and to "
                       "predict",
                       choices=("auto", "im2col", "lax"))

    def __post_init__(self):
        for name in ("kind", "conv"):
            _check_choice(self, name)
        for name in ("hidden", "channels", "kernels"):
            widths = tuple(int(w) for w in getattr(self, name))
            object.__setattr__(self, name, widths)
            if any(w <= 0 for w in widths):
                raise InputError(f"{name} widths must be positive integers, got {widths}")
        if (len(self.kernels) != len(self.channels) or not 1 <= len(self.channels) <= 4
                or self.dense < 0):
            raise InputError(f"cnn needs 1..4 conv layers with one kernel size each and dense >= 0,"
                             f" got channels {self.channels}, kernels {self.kernels}, "
                             f"dense {self.dense}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """The config saved as `dataclasses.asdict(config)` (as in a checkpoint's header)."""
        return _build(cls, d)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run: the model plus the optimisation recipe."""

    model: ModelConfig = ModelConfig()
    epochs: int = option(5, "total epochs")
    batch_size: int = option(32, "examples per optimizer step")
    lr: float = option(1e-3, "(peak) Adam learning rate")
    seed: int = option(0, "seed of the initialisation, shuffles and augmentation")
    schedule: str = option("constant", "learning rate: constant, or a linear warm-up then "
                           "cosine decay to zero", choices=("constant", "cosine"))
    warmup_epochs: float = option(0.0, "epochs of warm-up for the cosine schedule")
    weight_decay: float = option(0.0, "decoupled (AdamW) weight decay when > 0")
    label_smoothing: float = option(0.0, "label smoothing of the training loss, in [0, 1)")
    augment: Augment = option(Augment(), "random affine augmentation on the device (rotate, "
                              "scale, shear, shift); off: all strengths zero")
    loop: str = option("auto", "an epoch as one compiled scan, or one compiled call per batch; "
                       "auto: measured best per model and backend",
                       choices=("auto", "scan", "step"))
    unroll: int = option(1, "scan steps per loop iteration (more compiled slower and ran no "
                         "faster on CPU; on a GPU try 4-16)")
    compute_dtype: str = option("float32", "dtype of the training matmuls; parameters, Adam "
                                "and evaluation stay float32 (bfloat16 is for GPUs and TPUs, "
                                "slower on CPU)", choices=("float32", "bfloat16"))
    ensemble: int = option(1, "models trained together by one compiled program, seeds seed .. "
                           "seed+K-1, each as its own single run; predictions average their "
                           "probabilities", metavar="K")
    ensemble_loop: str = option("auto", "how an ensemble's members step together in the "
                                "compiled epoch: vmap (batched matmuls: for GPUs and TPUs), "
                                "map (one member after another); auto: map on CPU, vmap "
                                "elsewhere", choices=("auto", "vmap", "map"))

    def __post_init__(self):
        if isinstance(self.augment, Mapping):  # as read back from a checkpoint
            object.__setattr__(self, "augment", Augment(**self.augment))
        for name in ("epochs", "batch_size", "unroll", "ensemble"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        for name in ("schedule", "loop", "compute_dtype", "ensemble_loop"):
            _check_choice(self, name)
        if not (self.warmup_epochs >= 0 and self.weight_decay >= 0
                and 0 <= self.label_smoothing < 1):
            raise InputError("warmup_epochs and weight_decay must be >= 0 and label_smoothing "
                             "in [0, 1)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """The config saved as `dataclasses.asdict(config)`; fields it lacks take defaults."""
        d = dict(d)
        if "model" in d:
            d["model"] = ModelConfig.from_dict(d["model"])
        return _build(cls, d)

    def with_options(self, **options: Any) -> TrainConfig:
        """This config with flat options changed: any TrainConfig or ModelConfig field.

        `kind` switching the model kind starts from that kind's defaults; `augment` may be a
        bool (True: DEFAULT_AUGMENT) or an Augment.
        """
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
        unknown = sorted(set(options) - model_fields - train_fields)
        if unknown:
            raise InputError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}")
        model = self.model
        if options.get("kind", model.kind) != model.kind:
            model = ModelConfig(kind=options["kind"])
        model = dataclasses.replace(model, **{k: v for k, v in options.items()
                                              if k in model_fields})
        train = {k: v for k, v in options.items() if k in train_fields}
        if isinstance(train.get("augment"), bool):
            train["augment"] = DEFAULT_AUGMENT if train["augment"] else Augment()
        return dataclasses.replace(self, model=model, **train)


def cli_options() -> Iterator[tuple[dataclasses.Field, type]]:
    """Every field that is a command-line option, with the config class that holds it."""
    for cls in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if "help" in f.metadata:
                yield f, cls


def _build(cls: type, d: Mapping[str, Any]) -> Any:
    if not isinstance(d, Mapping):
        raise InputError(f"{cls.__name__} must be a mapping, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InputError(f"{cls.__name__} has no field{'s' * (len(unknown) > 1)} "
                         f"{', '.join(unknown)}")
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:  # e.g. a string where a number belongs
        if isinstance(e, InputError):
            raise
        raise InputError(f"{cls.__name__}: {e}") from None
