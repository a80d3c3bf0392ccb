"""`ttb ood CONFIG.toml [--out DIR] [--json]`: positional versus standard transformers out of distribution.

Trains both model kinds batched over seeds on every task of the config, evaluates them over the
range of c, writes DIR/table.csv (median and worst error per model kind, task, n, c), per_model.csv,
config.json and the figure error_vs_c.{png,svg,csv}, and prints the table (``--json``: a list of
rows with keys model_kind, task, n, c, median_error, worst_error). See :mod:`experiments.ood.experiment`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.commands.options import engine_options


def register(sub) -> None:
    p = sub.add_parser("ood", help="train positional and standard transformers; error versus test range c")
    p.add_argument("file", help="experiment file (TOML), e.g. experiments/configs/positional_ood_cpu.toml")
    engine_options(p)
    p.add_argument("--json", action="store_true", help="print the table as JSON rows")
    p.set_defaults(func=ood_command)


def ood_command(args) -> int:
    from experiments.ood import experiment as ood

    cfg = ood.load_config(args.file)  # every field checked before anything trains
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    per_model = ood.run(cfg, out, device=args.device, backend=args.backend, progress=not args.no_progress,
                        autocast=args.autocast)
    table = ood.summarize(per_model)
    paths = ood.write(out, table, per_model, cfg)
    if args.json:
        print(json.dumps(json.loads(table.to_json(orient="records")), indent=1))
    else:
        print(format_table(table))
    print(f"wrote {', '.join(p.name for p in paths)} to {out}", file=sys.stderr)
    return 0


def format_table(table) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.3g}")
