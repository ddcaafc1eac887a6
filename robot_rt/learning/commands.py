"""`robot-rt train goalseye` and `robot-rt train is2r` (registered by robot_rt.cli).

Each method module defines `add_arguments(parser)` and `run(args) -> int`; it is imported only when its
command runs, so `robot-rt --help` stays fast.
"""

from __future__ import annotations

import importlib

_METHODS = {
    "goalseye": ("robot_rt.learning.goalseye", "GoalsEye: goal-conditioned behaviour cloning with self-practice"),
    "is2r": ("robot_rt.learning.is2r", "iterative sim-to-real with a learned human behaviour model"),
}


def _runner(module_name: str):
    def run(args) -> int:
        return int(importlib.import_module(module_name).run(args) or 0)

    return run


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="learning loops (GoalsEye, i-S2R)", description=__doc__)
    methods = train.add_subparsers(dest="method", required=True)
    for name, (module_name, text) in _METHODS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue  # that method is not part of this installation
            raise
        parser = methods.add_parser(name, help=text, description=text)
        module.add_arguments(parser)
        parser.set_defaults(func=_runner(module_name))
