"""`ttb approx CONFIG.toml [--out DIR] [--device D] [--json]`: approximation constructions beside trained models.

Builds the constructions and trains the models of the config (one-layer transformers on the ridge
targets, MPNN + virtual node models imitating an attention layer), writes DIR/comparison.csv,
curves.csv, table.csv, slopes.csv, config.json and the figures (DIR/figures: error vs width, depth,
lam, T and tau with fitted slopes), and prints the slope table (``--json``: a list of rows with keys
family, target, model, parameter, axis, slope, stated_slope, n_values). `ttb plot approx DIR`
redraws the figures from the CSV files. See :mod:`experiments.approx.study`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.commands.options import engine_options


def register(sub) -> None:
    p = sub.add_parser("approx", help="approximation constructions beside trained models: error vs width, depth, ...",
                       description=__doc__.split(" See :mod:")[0].replace("`", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="experiment file (TOML), e.g. experiments/configs/approx_cpu.toml")
    engine_options(p)
    p.add_argument("--json", action="store_true", help="print the slope table as JSON rows")
    p.set_defaults(func=approx_command)


def approx_command(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from experiments.approx import study as approx

    cfg = approx.load_config(args.file)  # every field checked before anything trains
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    comparison, curves = approx.run(cfg, out, device=args.device, backend=args.backend, autocast=args.autocast,
                                    progress=not args.no_progress, say=lambda msg: print(msg, file=sys.stderr))
    paths = approx.write(out, cfg, comparison, curves)
    fitted = approx.slopes(approx.summarize(comparison), approx.stated_slopes(cfg)) if len(comparison) else None
    if args.json:
        print(json.dumps(json.loads(fitted.to_json(orient="records")) if fitted is not None else [], indent=1))
    elif fitted is not None:
        print(fitted.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {len(paths)} files to {out}", file=sys.stderr)
    return 0
