"""`ttb check [NAME ...] [--seed S] [--cases N] [--json] [--mutate] [--symbolic]`.

Runs every registered construction (or the named ones) on fresh random instances of its domain and
compares with the reference algorithm. One row per construction: name, exactness class, measured
error (max over cases and layers; per layer in ``per_layer``), bound, passed. ``--mutate`` also runs
each check on perturbed weights and reports ``caught`` (the check failed, as it must).
``--symbolic`` adds the sympy lemmas of ``proofs_check``. Exit status 1 if anything failed or a
mutation went uncaught.
"""

from __future__ import annotations

import json
import sys

from experiments.commands.options import seed


def register(sub) -> None:
    p = sub.add_parser("check", help="check constructions against their reference algorithms",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("names", nargs="*", metavar="NAME", help="constructions (default: all; --list names them)")
    p.add_argument("--list", action="store_true", help="print every construction's name, class and claim, and exit")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random instances (default 0)")
    p.add_argument("--cases", type=int, default=16, help="random instances per construction (default 16)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--mutate", action="store_true", help="also check perturbed weights: each must be caught")
    p.add_argument("--symbolic", action="store_true", help="also run the sympy lemmas (proofs_check)")
    p.set_defaults(func=run)


def _row(name: str, args) -> dict:
    from constructions.check.run import run_check
    from constructions.registry import get

    c = get(name)
    row = run_check(c, seed=args.seed, n_cases=args.cases).to_json()
    row["algorithm"], row["bound_note"] = c.algorithm, c.bound_note
    if args.mutate:
        m = run_check(c, seed=args.seed + 1, n_cases=args.cases, mutated=True)
        row.update(caught=m.caught, mutated=m.mutated, mutated_error=m.error)
    return row


def _symbolic_rows(names) -> list[dict]:
    from proofs_check.table import run_all

    rows = []
    for r in run_all():
        rows.append({"name": f"symbolic:{r['name']}", "exactness": "symbolic", "error": None, "bound": None,
                     "passed": r["passed"], "seconds": r["seconds"], "message": r.get("message", "")})
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.2e}"
    return str(v)


def format_table(rows: list[dict], mutate: bool) -> str:
    cols = ["name", "exactness", "error", "bound", "passed", "seconds"] + (["caught", "mutated_error"] if mutate else [])
    cells = [[_fmt(r.get(c)) if c != "seconds" else f"{r.get(c, 0):.2f}" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    for r in rows:
        if r.get("per_layer") and len(r["per_layer"]) > 1:
            worst = ", ".join(f"{k.replace('layer ', '')}:{v:.0e}" for k, v in r["per_layer"].items())
            what = "per layer" if next(iter(r["per_layer"])).startswith("layer") else "per swept value"
            lines.append(f"  {r['name']} {what}: {worst}")
    return "\n".join(lines)


def ok(row: dict) -> bool:
    return bool(row["passed"]) and row.get("caught", True) is not False


def run(args) -> int:
    import torch

    from constructions.registry import CONSTRUCTIONS, get

    if args.list:
        print("\n".join(f"{c.name:28} {c.exactness:14} {c.summary}" for c in CONSTRUCTIONS.values()))
        return 0
    names = args.names or list(CONSTRUCTIONS)
    for name in names:
        get(name)  # unknown names fail before any work
    if args.cases < 1:
        raise ValueError(f"--cases must be >= 1, got {args.cases}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the checks are many tiny float64 ops: threads only add overhead
    try:
        rows = [_row(name, args) for name in names]
        if args.symbolic:
            rows += _symbolic_rows(names)
    finally:
        torch.set_num_threads(threads)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, args.mutate))
        bad = [r["name"] for r in rows if not ok(r)]
        print(f"\n{len(rows) - len(bad)} of {len(rows)} ok" + (f"; FAILED: {', '.join(bad)}" if bad else ""),
              file=sys.stdout)
    return 0 if all(ok(r) for r in rows) else 1
