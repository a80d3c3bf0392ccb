"""`ttb import garg PATH --out DIR`: a model trained elsewhere as a run directory of ours.

``ttb import garg PATH --out DIR [--n-dims N --n-embd N --n-head N --n-layer N --n-positions N] [--n-points N]``
    PATH is a checkpoint of Garg et al. 2022 (``dtsip/in-context-learning``): ``state.pt``, a bare
    state dict (``model_<step>.pt``), or their run folder holding one. The sizes come from
    ``config.yaml`` beside it; the options replace them (and stand in for a missing config.yaml).
    DIR gets ``config.json`` and ``weights.safetensors``, so ``ttb compare DIR`` and ``ttb plot
    heatmap DIR`` work on it. Prompts have ``--n-points`` points (default: the curriculum's last,
    else n_positions). See experiments.training.garg_import.
"""

from __future__ import annotations

import argparse
import sys

SIZES = ("n_dims", "n_embd", "n_head", "n_layer", "n_positions")


def register(sub) -> None:
    summary, garg = __doc__.replace("``", "").replace("`", "").split("\n\n", 1)
    p = sub.add_parser("import", help="turn a checkpoint trained elsewhere into a run directory",
                       description=summary)
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    g = sources.add_parser("garg", help="a GPT-2 of Garg et al. 2022 (state.pt + config.yaml)",
                           description=garg, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("path", help="state.pt, a bare state dict, or the run folder holding one")
    g.add_argument("--out", required=True, metavar="DIR", help="run directory to write (config.json, weights.safetensors)")
    for name in SIZES:
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None, metavar="N",
                       help=f"model.{name} (default: config.yaml's)")
    g.add_argument("--n-points", type=int, default=None, metavar="N",
                   help="points per evaluation prompt (default: training.curriculum.points.end, else n_positions)")
    g.set_defaults(func=import_garg_command)


def import_garg_command(args) -> int:
    try:
        from experiments.training.garg_import import import_garg

        done = import_garg(args.path, args.out, n_points=args.n_points, **{k: getattr(args, k) for k in SIZES})
    except ImportError as err:  # transformers is optional: one line, not a traceback
        print(f"ttb import: error: {err}", file=sys.stderr)
        return 2
    sizes = " ".join(f"{k}={v}" for k, v in done.sizes.items())
    step = "" if done.train_step is None else f", step {done.train_step}"
    print(f"imported {args.path} ({sizes}{step}) to {done.out_dir}; prompts of {done.n_points} points")
    if done.trained_task not in (None, "linear_regression"):
        print(f"note: it was trained on {done.trained_task!r}; the run directory describes isotropic linear "
              f"regression, which is what ttb compare evaluates on", file=sys.stderr)
    print(f"next: ttb compare {done.out_dir}", file=sys.stderr)
    return 0
