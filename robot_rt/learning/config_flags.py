"""Command-line flags for a dataclass of training settings (`robot-rt train ppo|bgs`): one flag per field, and the
`--smoke` sizes applied where the command line left the default."""

from __future__ import annotations

import argparse
from dataclasses import fields


def parse_bool(text: str) -> bool:
    """'1', 'true', 'yes', 'on' / '0', 'false', 'no', 'off' (any case); anything else is an argparse error."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """A flag --field-name for every field of the dataclass `config_cls`, typed by its default value (bool: true/
    false, tuple: a comma list of ints), defaulting to it."""
    defaults = config_cls()
    for f in fields(config_cls):
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=parse_bool, default=value, help=f"(default {value})")
        elif isinstance(value, tuple):
            parser.add_argument(
                flag, type=_int_tuple, default=value, help=f"comma list (default {','.join(map(str, value))})"
            )
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"(default {value})")


def config_from_flags(args, config_cls, smoke: dict):
    """`config_cls` from parsed `add_config_flags` flags; with `args.smoke`, the sizes of `smoke` replace the fields
    the command line left at their defaults (not those it set)."""
    values = {f.name: getattr(args, f.name) for f in fields(config_cls)}
    if args.smoke:
        defaults = config_cls()
        values.update({k: v for k, v in smoke.items() if values[k] == getattr(defaults, k)})
    return config_cls(**values)
