"""`robot-rt` command line: one sub-command per component, each registered by its own module."""

from __future__ import annotations

import argparse
import sys

from robot_rt.control import commands as control_commands
from robot_rt.learning import commands as learning_commands
from robot_rt.logs import commands as logs_commands
from robot_rt.sim import commands as sim_commands

# Each module defines `register(subparsers)` which adds its sub-commands and sets `func` on them.
COMMAND_MODULES = (
    control_commands,  # run
    logs_commands,  # replay, run --mcap (after control: it extends `run`)
    sim_commands,  # sim-server
    learning_commands,  # train goalseye, train is2r
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-rt", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
