"""Configs are the one source of truth: CLI flags, recipes and checkpoints derive from them."""

import dataclasses

import pytest

from flaxdigits.cli import parser
from flaxdigits.config import (DEFAULT_AUGMENT, Augment, ModelConfig, TrainConfig, choices,
                               cli_options)
from flaxdigits.errors import InputError
from flaxdigits.recipes import RECIPES


def _train_parser():
    sub = next(a for a in parser()._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_option_is_a_flag_with_its_default_in_the_help():
    flags = {a.dest: a for a in _train_parser()._actions}
    options = list(cli_options())
    assert {f.name for f, _ in options} == ({f.name for f in dataclasses.fields(ModelConfig)}
                                            | {f.name for f in dataclasses.fields(TrainConfig)}
                                            - {"model"})
    for f, cls in options:
        action = flags[f.name]
        assert action.default is None  # only given flags override a recipe
        assert f.metadata["help"] in action.help and "(default: " in action.help
        if f.metadata["choices"]:
            assert tuple(action.choices) == f.metadata["choices"]
    assert "(default: 32)" in flags["batch_size"].help
    assert "(default: 100)" in flags["hidden"].help
    assert flags["kind"].option_strings == ["--model"]
    assert flags["scale"].option_strings == ["--scale", "--no-scale"]


def test_flags_parse_to_overrides():
    args = _train_parser().parse_args(["--recipe", "cnn-fast", "--no-augment", "--hidden",
                                       "--no-scale", "--compute-dtype", "bfloat16", "--lr",
                                       "0.01"])
    assert (args.recipe, args.augment, args.hidden, args.scale) == ("cnn-fast", False, [], False)
    assert (args.compute_dtype, args.lr, args.epochs) == ("bfloat16", 0.01, None)


@pytest.mark.parametrize("config", [TrainConfig(), *RECIPES.values(),
                                    TrainConfig(model=ModelConfig(hidden=()), augment=Augment(
                                        rotate=3.0), compute_dtype="bfloat16")])
def test_from_dict_rebuilds_what_asdict_wrote(config):
    assert TrainConfig.from_dict(dataclasses.asdict(config)) == config


def test_from_dict_takes_defaults_for_missing_fields_and_refuses_unknown_ones():
    old = dataclasses.asdict(TrainConfig())
    del old["compute_dtype"], old["unroll"]  # as in checkpoints written before these existed
    assert TrainConfig.from_dict(old) == TrainConfig()
    with pytest.raises(InputError, match="TrainConfig has no field colour"):
        TrainConfig.from_dict({**old, "colour": "red"})
    with pytest.raises(InputError, match="ModelConfig has no field depth"):
        ModelConfig.from_dict({"kind": "mlp", "depth": 3})
    with pytest.raises(InputError, match="kind must be one of mlp, cnn"):
        ModelConfig.from_dict({"kind": "transformer"})


def test_choices_are_defined_once_and_checked():
    assert choices(TrainConfig, "compute_dtype") == ("float32", "bfloat16")
    with pytest.raises(InputError, match="loop must be one of auto, scan, step"):
        TrainConfig(loop="while")
    assert TrainConfig().with_options(augment=True).augment == DEFAULT_AUGMENT
