"""Command-line options every command that trains through the sweep engine shares, and the argparse
types that check a value as it is parsed (so a bad one is a one-line usage error naming the option).
Free of torch: ``ttb --help`` stays fast."""

from __future__ import annotations

import argparse

from experiments.common.validate import ConfigError, check_device_name

DEVICE_HELP = "auto, cpu, cuda, cuda:N, mps (default: the file's, else auto)"
SEED_LIMIT = 2**63  # torch.Generator.manual_seed and numpy take seeds below this


def device_name(text: str) -> str:
    """argparse type of --device: a well-formed device string (whether the machine has it is checked
    where the device is first used, by experiments.common.devices.pick_device)."""
    try:
        return check_device_name("--device", text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--device ")) from None


def seed(text: str) -> int:
    """argparse type of --seed: an integer in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {text!r}")
    return value


def engine_options(p, *, what: str = "name") -> None:
    """--out, --device, --backend and --no-progress on parser ``p``."""
    p.add_argument("--out", default=None, help=f"output directory (default: runs/<{what}>)")
    p.add_argument("--device", type=device_name, default=None, help=DEVICE_HELP)
    p.add_argument("--backend", choices=("local", "ray"), default=None, help="default: the file's, else local")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--autocast", choices=("bfloat16",), default=None,
                   help="mixed precision for the forward/backward (GPU runs; default: the file's, else none)")
