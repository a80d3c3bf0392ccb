"""`ttb`: the command line. Each command group lives in its own module and registers itself here.

A module contributes commands through ``register(subparsers)``; each subparser sets ``func`` to a
function ``(args) -> int`` (the exit status). The table below is explicit: no discovery magic.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, what it adds): imported lazily so `ttb check` does not pay for pandas or ray.
COMMAND_MODULES = (
    "experiments.commands.check",  # ttb check
    "experiments.commands.bench",  # ttb bench algorithms | train
    "experiments.commands.sweep",  # ttb sweep | runs | export
    "experiments.commands.analysis",  # ttb compare | plot | demo
    "experiments.commands.ood",  # ttb ood
    "experiments.commands.approx",  # ttb approx
    "experiments.commands.reproduce",  # ttb reproduce
    "experiments.commands.imports",  # ttb import garg
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ttb", description="Theory testbed: check transformer constructions, train and compare."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        print(f"ttb {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
