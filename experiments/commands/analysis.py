"""`ttb compare`, `ttb plot`, `ttb demo`: trained models against the algorithms they may run.

``ttb compare RUN_OR_SWEEP_DIR [--algorithms gd,newton,ols,...] [--json]``
    Per model: the closest algorithm (smallest prediction difference at the output, over every
    algorithm and iteration) and, per algorithm, the best-matching iteration of every layer (by
    error similarity; layer 0 is the embedding; closed forms have one iterate, 0) with the fitted
    relation (iterations per layer for Newton, log-iterations per layer for GD). ``--json`` prints
    a list with, per model, ``closest_algorithm``, ``closest_iteration``, ``prediction_difference``,
    ``nmse``, ``model_cosine`` and ``algorithms: {name: {best_iteration_per_layer: [...], ...}}``.
    Algorithm options: ``gd:eta=0.5``, ``gd:eta=best:n_iter=1``, ``newton:alpha=0.1``, ``ridge:lam=0.25``.
    ``--shift NAME[:FACTOR]`` (repeatable or comma-separated) evaluates on prompts under a test-time
    distribution shift (Garg et al. 2022; see synthetic.shifts): standard, skewed, orthant,
    orthogonal_query, query_in_context, scale_x:C, scale_y:C, noisy_y:STD; each model is reported once
    per shift and ``--json`` rows gain a ``shift`` key.
    ``--patch`` also writes activation-patching heatmaps to DIR/figures (patching*.png/.svg/.csv;
    see ``ttb inspect patch``): between the first two runs if they have one shape, else between
    each run and the GD construction aligned into its config; the paths go to stderr.
``ttb plot KIND DIR [--out FOLDER]``
    KIND is errors, heatmap, probes, rates, interpolation, noise, pool, representation (the last
    three for the noisy / noise-mixture, task-pool and representation sweeps) or approx (DIR is the
    output of `ttb approx`; its figures are redrawn from comparison.csv and curves.csv); figures go
    to FOLDER (default DIR/figures) as PNG, SVG and CSV. ``ttb plot errors DIR --shift NAME[:FACTOR]``
    draws one panel per shift (errors_shifted_<run>), the baselines included. ``ttb plot loops DIR
    [--max-loops N]``: per looped run (model.n_loops), the error after every loop 0 .. N (default 3x the
    trained loops) beside GD / Newton iterations and least squares, the trained loops shaded
    (loops_<run>, and loops_<run>_convergence.csv: error at the trained and at the largest loop count).
``ttb demo [--out DIR] [--tiny]``
    Checks, a small batched sweep, the comparisons, every plot and an index.html (see
    experiments.reports.demo).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from experiments.commands.options import seed


def _section(command: str) -> str:
    """The module docstring's paragraph on ``ttb COMMAND`` (for that command's --help)."""
    match = re.search(rf"``ttb {command}.*?(?=\n``ttb |\Z)", __doc__, flags=re.S)
    return match.group(0).replace("``", "") if match else ""


def register(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    c = sub.add_parser("compare", help="which algorithm (and iteration per layer) trained models match",
                       description=_section("compare"), formatter_class=raw)
    c.add_argument("dir", help="a run directory or a sweep directory")
    c.add_argument("--algorithms", default=None, help="comma-separated: gd, newton, ols, ridge, gd_plus_plus, zero; "
                                                      "knn, knn_distance, tree, deep_tree, boosting, nn_gd, logistic, "
                                                      "logistic_mean, bayes_mixture (default gd,newton,ols,ridge,zero; "
                                                      "for tree, relu2nn, quadratic, logistic and mixture runs the "
                                                      "kind's baselines, references.TASK_BASELINES)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--prompts", type=int, default=512, help="evaluation prompts per run (default 512)")
    c.add_argument("--seed", type=seed, default=0, help="seed of the evaluation prompts")
    _shift_option(c)
    c.add_argument("--patch", action="store_true",
                   help="also write activation-patching heatmaps to DIR/figures (see ttb inspect patch)")
    c.set_defaults(func=compare_command)
    p = sub.add_parser("plot", help="figures of a run or sweep directory (PNG + SVG + CSV)",
                       description=_section("plot"), formatter_class=raw)
    p.add_argument("kind", help="errors, heatmap, probes, rates, interpolation, noise, pool, representation, "
                                "loops or approx")
    p.add_argument("dir", help="a run or sweep directory (for rates: any folder, used for the output)")
    p.add_argument("--out", default=None, help="output folder (default DIR/figures)")
    p.add_argument("--prompts", type=int, default=512, help="evaluation prompts per run (default 512)")
    p.add_argument("--max-loops", type=int, default=None, help="loops: run each model up to N loops (default 3x "
                                                               "its trained n_loops)")
    _shift_option(p)
    p.set_defaults(func=plot_command)
    d = sub.add_parser("demo", help="checks, a small sweep, comparisons and plots, with an index.html",
                       description=_section("demo"), formatter_class=raw)
    d.add_argument("--out", default="ttb-demo", help="output folder (default ttb-demo)")
    d.add_argument("--tiny", action="store_true", help="a few training steps (seconds; for CI)")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=demo_command)


def _shift_option(parser) -> None:
    parser.add_argument("--shift", action="append", default=None, metavar="NAME[:FACTOR]",
                        help="test-time distribution shift, repeatable or comma-separated: standard, skewed, "
                             "orthant, orthogonal_query, query_in_context, scale_x:C, scale_y:C, noisy_y:STD")


def _agg():
    import matplotlib

    matplotlib.use("Agg")


def format_summary(summaries: list[dict]) -> str:
    lines = []
    for s in summaries:
        it = "" if s["closest_iteration"] is None else f" (iteration {s['closest_iteration']})"
        shift = f" [shift {s['shift']}]" if "shift" in s else ""
        lines.append(f"{s['run'] or '-'}  {s['model']}{shift}: closest {s['closest_algorithm']}{it}, prediction difference "
                     f"{s['prediction_difference']:.3g}, model cosine {s['model_cosine']:.3f}, nmse {s['nmse']:.3g}")
        for name, entry in s["algorithms"].items():
            fits = ", ".join(f"{k} {v:.2f}" for k, v in entry.items() if k.endswith("per_layer") and
                             isinstance(v, float))
            best = " ".join(map(str, entry["best_iteration_per_layer"]))
            lines.append(f"    {name:<12} best iteration per layer: {best}" + (f"   ({fits})" if fits else ""))
    return "\n".join(lines)


def compare_command(args) -> int:
    from experiments.analysis import runs as ar

    if args.prompts < 8:
        raise ValueError(f"--prompts must be >= 8, got {args.prompts}")
    if args.shift:
        from experiments.analysis import shifts as ashifts

        summaries, _ = ashifts.compare_shifted(args.dir, args.algorithms,
                                               ashifts.parse_shifts(args.shift), n_prompts=args.prompts, seed=args.seed)
    else:
        summaries, _ = ar.compare_runs(args.dir, args.algorithms, n_prompts=args.prompts,
                                       seed=args.seed)
    print(json.dumps(summaries, indent=1) if args.json else format_summary(summaries))
    if args.patch:
        import sys

        from experiments.commands.inspect import compare_patching

        for path in compare_patching(args.dir, n_prompts=min(args.prompts, 256), seed_=args.seed):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def plot_command(args) -> int:
    _agg()
    from experiments.analysis import runs as ar
    from experiments.plots import figures as af

    if args.kind not in af.DRAW and args.kind not in ("approx", "loops"):
        raise ValueError(f"unknown plot kind {args.kind!r}; kinds are {', '.join(af.DRAW)}, loops, approx")
    if args.max_loops is not None and (args.kind != "loops" or args.max_loops < 1):
        raise ValueError(f"--max-loops must be an integer >= 1 and applies to `ttb plot loops` only, got "
                         f"{args.max_loops} with kind {args.kind!r}")
    if args.shift and args.kind != "errors":
        raise ValueError(f"--shift applies to `ttb plot errors` only, got kind {args.kind!r}")
    out = Path(args.out) if args.out else Path(args.dir) / "figures"
    if args.shift:
        from experiments.analysis import shifts as ashifts
        from experiments.plots import shifts as plots_shifts

        shifts = ashifts.parse_shifts(args.shift)
        paths = plots_shifts.errors([ar.load_run(d) for d in ar.find_runs(args.dir)], out, shifts,
                                    n_prompts=args.prompts)
    elif args.kind == "loops":
        from experiments.plots import looped as plots_looped

        paths = plots_looped.draw([ar.load_run(d) for d in ar.find_runs(args.dir)], out, args.max_loops,
                                  n_prompts=args.prompts)
    elif args.kind == "approx":
        from experiments.plots import approx as plots_approx

        paths = plots_approx.redraw(args.dir, out)
    else:
        runs = [] if args.kind == "rates" else [ar.load_run(d) for d in ar.find_runs(args.dir)]
        paths = af.draw(args.kind, runs, out, n_prompts=args.prompts)
    for path in paths:
        print(path)
    if not paths:
        print(f"no {args.kind} figure for these runs (see `ttb plot --help`)")
    return 0


def demo_command(args) -> int:
    _agg()
    from experiments.reports.demo import run_demo

    run_demo(args.out, tiny=args.tiny, progress=not args.quiet)
    return 0
