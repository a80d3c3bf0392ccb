"""`ttb bench algorithms | train`: speed measured as ratios within one run.

``ttb bench algorithms`` times the batched reference algorithms (every prompt and every prefix in
one call) against a per-sample Python loop on the same data, and reports how far apart the two are
(:mod:`experiments.analysis.reference_bench`). ``ttb bench train`` compares K models trained batched
against K trained one after another (:mod:`experiments.training.bench`).
"""

from __future__ import annotations

import json

from experiments.commands.options import device_name, seed


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    a = bsub.add_parser("algorithms", help="batched reference algorithms vs a per-sample loop")
    a.add_argument("--prompts", type=int, default=1000, help="prompts (default 1000)")
    a.add_argument("--d", type=int, default=20, help="input dimension (default 20)")
    a.add_argument("--n", type=int, default=40, help="examples per prompt; every prefix 0..n is fitted (default 40)")
    a.add_argument("--algorithms", default=None, help="comma-separated subset (default: all)")
    a.add_argument("--repeats", type=int, default=3, help="timed runs of each side, best counts (default 3)")
    a.add_argument("--seed", type=seed, default=0)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_algorithms)
    t = bsub.add_parser("train", help="K models trained batched vs one after another")
    t.add_argument("--ks", default="1,8,32", help="comma-separated K values (default 1,8,32)")
    t.add_argument("--steps", type=int, default=5, help="timed steps per round, best of 3 rounds (default 5)")
    t.add_argument("--compile", action="store_true", help="torch.compile the trainer's loss (warm-up steps compile)")
    t.add_argument("--autocast", choices=("bfloat16",), default=None, help="mixed precision (both ways; GPU runs)")
    t.add_argument("--device", type=device_name, default=None, help="cpu, cuda, mps (default: best available)")
    t.add_argument("--shapes", default=None, help="comma-separated shape names (default: all)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run_train)


def run_algorithms(args) -> int:
    from experiments.analysis import reference_bench

    names = None if args.algorithms is None else [s.strip() for s in args.algorithms.split(",") if s.strip()]
    rows = reference_bench.bench(args.prompts, args.d, args.n, names, seed=args.seed, repeats=args.repeats)
    print(json.dumps(rows, indent=2) if args.json else reference_bench.format_table(rows))
    return 0


def run_train(args) -> int:
    from experiments.training import bench as train_bench

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise ValueError(f"--ks must be comma-separated integers >= 1 such as 1,8,32, got {args.ks!r}")
    shapes = None if args.shapes is None else [s.strip() for s in args.shapes.split(",")]
    rows = train_bench.run(ks=ks, steps=args.steps, device=args.device, shapes=shapes, progress=not args.json,
                           compile=args.compile, autocast=args.autocast)
    print(json.dumps(rows, indent=2) if args.json else train_bench.format_table(rows))
    return 0
