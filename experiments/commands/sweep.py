"""`ttb sweep FILE`, `ttb runs DIR`, `ttb export DIR`: run a sweep, see its status, export metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.commands.options import engine_options

STATUS_COLUMNS = ("run_id", "status", "step", "final_loss", "eval_nmse", "wall_s", "label")


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train every run of a sweep file (resumes where it stopped)")
    p.add_argument("file", help="sweep file (TOML)")
    engine_options(p, what="sweep name")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    p.add_argument("--dry-run", action="store_true", help="print the expanded runs and batches; train nothing")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write TensorBoard scalars per run under OUT/tensorboard/<run_id>/ (the tensorboard extra)")
    p.add_argument("--wait", action="store_true",
                   help="if another ttb sweep is using the output directory, wait for it instead of failing")
    p.set_defaults(func=run_sweep_command)
    r = sub.add_parser("runs", help="status table of a sweep directory")
    r.add_argument("dir")
    r.add_argument("--json", action="store_true")
    r.add_argument("--verify", action="store_true",
                   help="check every finished run's files (weights hash, header config = config.json = run id); "
                        "exit 1 if any disagree")
    r.set_defaults(func=runs_command)
    e = sub.add_parser("export", help="one tidy table of all runs' metrics")
    e.add_argument("dir")
    e.add_argument("--format", choices=("csv", "parquet"), default="csv")
    e.add_argument("--output", default=None, help="output file (default: DIR/metrics.<format>)")
    e.set_defaults(func=export_command)


def dry_run_memory(sweep, device) -> None:
    """The memory check that training would make, on the device named, where this machine has it
    (a dry run on a laptop of a sweep meant for a GPU only says it could not check)."""
    from experiments.common.devices import pick_device
    from experiments.common.validate import ConfigError
    from experiments.sweeps import spec as sw
    from experiments.training.memory import check_batches

    try:
        where = pick_device(device)
    except ConfigError as err:
        print(f"memory not checked: {err}")
        return
    check_batches([c.runs for c in sw.chunks(sweep.runs, {}, sweep.options.max_models_per_batch)], where)
    print(f"memory: every batch fits on {where}")


def run_sweep_command(args) -> int:
    from experiments.sweeps import spec as sw
    from experiments.sweeps.lock import DirectoryLocked
    from experiments.sweeps.runner import run_sweep

    sweep = sw.load_sweep(args.file)  # validates every run before anything trains
    if args.dry_run:
        print(sw.describe(sweep))
        dry_run_memory(sweep, args.device or sweep.options.device)
        return 0
    out = Path(args.out) if args.out else Path("runs") / sweep.options.name
    try:
        rows = run_sweep(sweep, out, backend=args.backend, device=args.device, compile=args.compile,
                         tensorboard=args.tensorboard,
                         progress=not args.no_progress, autocast=args.autocast, wait=args.wait)
    except DirectoryLocked as err:
        print(f"ttb sweep: error: {err}", file=sys.stderr)
        return 2
    ids = {r.run_id for r in sweep.runs}
    done = sum(1 for r in rows if r["run_id"] in ids and r["status"] in ("done", "diverged"))
    print(f"{done}/{len(ids)} runs finished; `ttb runs {out}` for the table", file=sys.stderr)
    return 0 if done == len(ids) else 1


def runs_command(args) -> int:
    from experiments.sweeps.store import status_rows

    if args.verify:
        return verify_command(args)
    rows = status_rows(Path(args.dir))
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "group_key"} for r in rows], indent=1))
        return 0
    print(format_status(rows))
    return 0


def verify_command(args) -> int:
    """`ttb runs DIR --verify`: one line per problem (or note), naming the file, then a summary."""
    from experiments.sweeps.verify import finished_runs, verify

    out = Path(args.dir)
    if not out.is_dir():
        raise FileNotFoundError(f"{out} is not a sweep output directory")
    problems = verify(out)
    failures = [p for p in problems if not p.note]
    if args.json:
        print(json.dumps([{"run_id": p.run_id, "file": p.file, "problem": p.what, "note": p.note}
                          for p in problems], indent=1))
    else:
        for p in problems:
            print(p.line())
        print(verify_summary(len(finished_runs(out)), len(failures), len(problems) - len(failures)))
    return 1 if failures else 0


def verify_summary(n_runs: int, n_problems: int, n_notes: int) -> str:
    """"4 runs verified, 1 problem" (", 2 notes" where there are notes)."""
    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    notes = f", {plural(n_notes, 'note')}" if n_notes else ""
    return f"{plural(n_runs, 'run')} verified, {plural(n_problems, 'problem')}{notes}"


def format_status(rows: list[dict]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    table = [STATUS_COLUMNS] + [tuple(cell(r.get(c)) for c in STATUS_COLUMNS) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(STATUS_COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table]
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return "\n".join(lines + [", ".join(f"{n} {s}" for s, n in sorted(counts.items()))])


def export_command(args) -> int:
    from experiments.common.atomic import atomic_write_with
    from experiments.sweeps.store import tidy_metrics

    table = tidy_metrics(Path(args.dir))
    output = Path(args.output) if args.output else Path(args.dir) / f"metrics.{args.format}"
    if args.format == "csv":
        atomic_write_with(output, lambda p: table.to_csv(p, index=False))
    else:
        try:
            atomic_write_with(output, lambda p: table.to_parquet(p, index=False))
        except ImportError as err:
            raise ValueError(f"--format parquet needs pyarrow ({err})") from None
    print(f"{len(table)} rows -> {output}")
    return 0
