"""`robot-rt` command line: one sub-command per component, each registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)` which adds its sub-commands and sets `func` on them.
_COMMAND_MODULES = [
    "robot_rt.control.commands",  # run, sim-server, replay
    "robot_rt.learning.commands",  # train goalseye, train is2r
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-rt", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that component is not part of this installation
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
