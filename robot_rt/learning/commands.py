"""`robot-rt train goalseye` and `robot-rt train is2r` (registered by robot_rt.cli).

Each method module defines `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

from robot_rt.learning import goalseye, is2r

_METHODS = {
    "goalseye": (goalseye, "GoalsEye: goal-conditioned behaviour cloning with self-practice"),
    "is2r": (is2r, "iterative sim-to-real with a learned human behaviour model"),
}


def register(subparsers) -> None:
    train = subparsers.add_parser("train", help="learning loops (GoalsEye, i-S2R)", description=__doc__)
    methods = train.add_subparsers(dest="method", required=True)
    for name, (module, text) in _METHODS.items():
        parser = methods.add_parser(name, help=text, description=text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
