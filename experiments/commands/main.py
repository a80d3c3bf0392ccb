"""`ttb`: the command line. Each command group lives in its own module and registers itself here.

A module contributes commands through ``register(subparsers)``; each subparser sets ``func`` to a
function ``(args) -> int`` (the exit status). The table below is explicit: no discovery magic.

One error boundary: a failure the user can fix (:mod:`experiments.commands.errors`) prints one line
``ttb COMMAND: error: ...`` naming the file or field and exits 2; Ctrl-C prints one line and exits
130; anything else is a bug and keeps its traceback, with a line asking for a report.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from experiments.commands.errors import describe

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
    "experiments.commands.inspect",  # ttb inspect (depth use, patching)
    "experiments.commands.tl",  # ttb export-tl
)


# Commands whose work is kept as it goes (a store, run directories): run again to resume.
RESUMABLE = ("sweep", "ood", "approx", "reproduce", "demo")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors ("ttb sweep: error: argument --device: ...")."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    except KeyboardInterrupt:
        print(interrupted(args.command), file=sys.stderr)
        return 130
    except Exception as err:
        return report(args.command, err)


def interrupted(command: str) -> str:
    resume = "; the store is resumable: run the same command again" if command in RESUMABLE else ""
    return f"ttb {command}: interrupted{resume}"


def report(command: str, err: Exception) -> int:
    """Print ``err`` as one line (exit 2), or, for a bug, its traceback and a request (exit 1)."""
    message = describe(err)
    if message is None:
        traceback.print_exc()
        print(f"ttb {command}: unexpected error (a bug in ttb): please report it with the command line "
              f"and the traceback above", file=sys.stderr)
        return 1
    print(f"ttb {command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
