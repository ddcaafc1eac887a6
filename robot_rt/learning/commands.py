"""`robot-rt train goalseye|is2r|ppo|bgs` (registered by robot_rt.cli).

Each method module defines `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

from robot_rt.learning import bgs, goalseye, is2r, ppo

_METHODS = {
    "goalseye": (goalseye, "GoalsEye: goal-conditioned behaviour cloning with self-practice"),
    "is2r": (is2r, "iterative sim-to-real with a learned human behaviour model"),
    "ppo": (ppo, "PPO of a neural history policy on the native batched rally environment"),
    "bgs": (bgs, "BGS evolution strategy over a neural history policy (the seed's i-S2R optimiser)"),
}


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="learning loops (GoalsEye, i-S2R, PPO, BGS)", description=__doc__)
    methods = train.add_subparsers(dest="method", required=True)
    for name, (module, text) in _METHODS.items():
        parser = methods.add_parser(name, help=text, description=text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
