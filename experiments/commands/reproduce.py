"""`ttb reproduce NAME [--scale cpu|paper] [--out DIR] [--json]`, `ttb reproduce --list`, `ttb reproduce --fidelity`.

Trains a paper's published setup (or its CPU-scale version, the same phenomenon on 2 cores in
minutes) through the sweep engine (store, resume, batching) and writes a page (DIR/report.md and
report.html) with the figure and the paper's headline number beside the measured one with its
spread over seeds, and the setup field by field. ``--json`` prints the rows with the keys name,
scale, metric, published, measured, seeds (and spread, source, claim, holds). ``--fidelity`` prints
every preset's setup beside the paper's code (experiments/reproduce/FIDELITY.md).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from experiments.commands.options import device_name


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="train a paper's published setup and compare with its numbers",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("name", nargs="?", help="the reproduction (see --list)")
    p.add_argument("--list", action="store_true", help="name every reproduction and exit")
    p.add_argument("--fidelity", action="store_true",
                   help="print every preset's setup beside the paper's code, field by field (Markdown), and exit")
    p.add_argument("--scale", choices=("cpu", "paper"), default="cpu", help="cpu (default) or the paper's setup")
    p.add_argument("--out", default=None, help="output directory (default: runs/reproduce/<name>_<scale>)")
    p.add_argument("--device", type=device_name, default=None, help="auto, cpu, cuda, cuda:N, mps (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=reproduce_command)


def reproduce_command(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from experiments.reproduce import core, report
    from experiments.reproduce.registry import REPRODUCTIONS, get

    if args.list:
        for rep in REPRODUCTIONS.values():
            print(f"{rep.name:10} {rep.paper}\n{'':10} {rep.claim} (cpu: ~{rep.minutes_cpu:g} min)")
        return 0
    if args.fidelity:
        print(report.fidelity_markdown(REPRODUCTIONS.values()), end="")
        return 0
    if args.name is None:
        raise ValueError("name a reproduction (ttb reproduce --list names them)")
    rep = get(args.name)
    out = Path(args.out) if args.out else Path("runs") / "reproduce" / f"{rep.name}_{args.scale}"
    started = time.time()
    rows, figures = core.run(rep, args.scale, out, device=args.device, progress=not args.no_progress)
    paths = report.write(rep, args.scale, rows, figures, out, (time.time() - started) / 60)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=1))
    else:
        for r in rows:
            published = "—" if r.published is None else f"{r.published:.4g}"
            print(f"{r.metric}: published {published}, measured {r.measured:.4g} ± {r.spread:.2g} ({r.seeds} seeds)")
    print(f"wrote {', '.join(p.name for p in paths)} to {out}", file=sys.stderr)
    return 0
