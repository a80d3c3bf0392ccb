"""Command-line options every command that trains through the sweep engine shares."""

from __future__ import annotations

DEVICE_HELP = "auto, cpu, cuda, cuda:N, mps (default: the file's, else auto)"


def engine_options(p, *, what: str = "name") -> None:
    """--out, --device, --backend and --no-progress on parser ``p``."""
    p.add_argument("--out", default=None, help=f"output directory (default: runs/<{what}>)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--backend", choices=("local", "ray"), default=None, help="default: the file's, else local")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--autocast", choices=("bfloat16",), default=None,
                   help="mixed precision for the forward/backward (GPU runs; default: the file's, else none)")
