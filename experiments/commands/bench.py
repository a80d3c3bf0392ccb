"""`ttb bench algorithms | train`: speed measured as ratios within one run.

``ttb bench algorithms`` times the batched reference algorithms (every prompt and every prefix in
one call) against a per-sample Python loop (:mod:`constructions.reference.naive`) on the same data,
and checks the two agree before reporting. ``ttb bench train`` compares K models trained batched
against K trained one after another (:mod:`experiments.training.bench`).
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from constructions.reference import algorithms as A
from constructions.reference import naive

# name -> (batched call, per-sample call, settings); both return (B, N + 1, d) prefix fits.
ALGORITHMS = {
    "least_squares": (lambda x, y: A.least_squares(x, y, prefix=True), naive.least_squares, {}),
    "ridge": (lambda x, y: A.ridge(x, y, lam=0.1, prefix=True), naive.ridge, {"lam": 0.1}),
    "gd": (lambda x, y: A.gd(x, y, eta=0.5, n_steps=10, prefix=True)[-1], naive.gd, {"eta": 0.5, "n_steps": 10}),
    "newton": (lambda x, y: A.newton(x, y, alpha=0.05, n_iter=10, prefix=True)[-1], naive.newton,
               {"alpha": 0.05, "n_iter": 10}),
}


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    bsub = p.add_subparsers(dest="bench", metavar="WHAT", required=True)
    a = bsub.add_parser("algorithms", help="batched reference algorithms vs a per-sample loop")
    a.add_argument("--prompts", type=int, default=1000, help="prompts (default 1000)")
    a.add_argument("--d", type=int, default=20, help="input dimension (default 20)")
    a.add_argument("--n", type=int, default=40, help="examples per prompt; every prefix 0..n is fitted (default 40)")
    a.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated subset")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_algorithms)
    t = bsub.add_parser("train", help="K models trained batched vs one after another")
    t.add_argument("--ks", default="1,8,32", help="comma-separated K values (default 1,8,32)")
    t.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default 20)")
    t.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    t.add_argument("--shapes", default=None, help="comma-separated shape names (default: all)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run_train)


def _time(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_algorithms(prompts: int, d: int, n: int, names: list[str], seed: int = 0) -> list[dict]:
    for name in names:
        if name not in ALGORITHMS:
            raise ValueError(f"--algorithms: unknown {name!r}; choose from {', '.join(ALGORITHMS)}")
    for arg, value in (("--prompts", prompts), ("--d", d), ("--n", n)):
        if value < 1:
            raise ValueError(f"{arg} must be >= 1, got {value}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(prompts, n, d, generator=gen, dtype=torch.float64) / d**0.5
    y = x @ torch.randn(prompts, d, 1, generator=gen, dtype=torch.float64)[..., 0].unsqueeze(-1)
    y = y[..., 0]
    x_np, y_np = x.numpy(), y.numpy()
    rows = []
    for name in names:
        batched, one, kwargs = ALGORITHMS[name]
        batched_s, got = _time(lambda: batched(x, y), repeats=3)
        loop_s, want = _time(lambda: naive.every_prefix(one, x_np, y_np, **kwargs))
        max_diff = float(np.abs(got.numpy() - want).max())
        rows.append({"algorithm": name, "prompts": prompts, "d": d, "n": n, "batched_s": batched_s,
                     "loop_s": loop_s, "ratio": loop_s / batched_s, "max_abs_diff": max_diff})
    return rows


def run_algorithms(args) -> int:
    names = [s.strip() for s in args.algorithms.split(",") if s.strip()]
    rows = bench_algorithms(args.prompts, args.d, args.n, names, args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{args.prompts} prompts, d={args.d}, every prefix 0..{args.n} (float64, {torch.get_num_threads()} threads)")
    print(f"{'algorithm':15} {'loop s':>9} {'batched s':>10} {'ratio':>8} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['algorithm']:15} {r['loop_s']:9.3f} {r['batched_s']:10.4f} {r['ratio']:7.0f}x {r['max_abs_diff']:11.1e}")
    return 0


def run_train(args) -> int:
    from experiments.training import bench as train_bench

    ks = tuple(int(k) for k in args.ks.split(","))
    shapes = None if args.shapes is None else [s.strip() for s in args.shapes.split(",")]
    rows = train_bench.run(ks=ks, steps=args.steps, device=args.device, shapes=shapes, progress=not args.json)
    print(json.dumps(rows, indent=2) if args.json else train_bench.format_table(rows))
    return 0
