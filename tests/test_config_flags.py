"""robot_rt.learning.config_flags: one typed flag per dataclass field, smoke sizes only where the command line left
the default, and PPO's and BGS's command lines built with it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from robot_rt.learning.config_flags import add_config_flags, config_from_flags, parse_bool


@dataclass
class _Config:
    steps: int = 100
    lr: float = 3e-4
    normalise: bool = True
    hidden: tuple = (64, 64)
    name: str = "run"


def _parser():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--smoke", action="store_true")
    add_config_flags(parser, _Config)
    return parser


def test_flags_are_typed_by_the_default_and_smoke_replaces_only_defaults():
    args = _parser().parse_args(["--lr", "0.01", "--normalise", "off", "--hidden", "8,4", "--name", "x"])
    assert config_from_flags(args, _Config, {"steps": 5}) == _Config(100, 0.01, False, (8, 4), "x")
    args = _parser().parse_args(["--smoke", "--lr", "0.01"])
    # smoke sets steps and lr where left at the default: lr was set, so it stays
    assert config_from_flags(args, _Config, {"steps": 5, "lr": 1.0}) == _Config(steps=5, lr=0.01)
    assert config_from_flags(_parser().parse_args([]), _Config, {"steps": 5}) == _Config()


@pytest.mark.parametrize("text, value", [("1", True), ("TRUE", True), ("yes", True), ("Off", False), ("0", False)])
def test_parse_bool_reads_the_usual_words(text, value):
    assert parse_bool(text) is value


def test_a_bad_value_is_named():
    with pytest.raises(argparse.ArgumentTypeError, match="expected true/false, got 'maybe'"):
        parse_bool("maybe")
    with pytest.raises(argparse.ArgumentError, match="--steps"):
        _parser().parse_args(["--steps", "many"])


@pytest.mark.parametrize("module_name", ["robot_rt.learning.ppo", "robot_rt.learning.bgs"])
def test_the_trainers_command_lines_round_trip_their_config(module_name):
    import importlib
    from dataclasses import fields

    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    default = module.config_from_args(parser.parse_args(["--out", "x"]))
    cfg_cls = type(default)
    assert default == cfg_cls()
    smoke = module.config_from_args(parser.parse_args(["--out", "x", "--smoke"]))
    assert {k: getattr(smoke, k) for k in module.SMOKE} == module.SMOKE
    first = fields(cfg_cls)[0]
    assert f"--{first.name.replace('_', '-')}" in parser.format_help()
