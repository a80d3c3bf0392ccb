"""`ttb demo`: construction checks, a small batched sweep, the comparisons and every plot, on a CPU.

Steps, all under ``--out`` (default ``ttb-demo``):

1. every registered construction checked on random instances (``ttb check``'s table);
2. a sweep of three model shapes x seeds, trained batched (``sweep/``): one-layer and three-layer
   linear self-attention on the one-token-per-example format, and a two-layer GPT-2-style softmax
   model (GELU MLP, LayerNorm) on interleaved tokens;
3. ``ttb compare`` on the sweep, plus the GD and Newton constructions run through the same metrics
   (a construction must come out as its own algorithm: similarity 1, difference 0);
4. every plot kind (``figures/``: PNG, SVG and the CSV drawn from), and the one-layer shape trained
   again starting from the GD construction (how far the weights move);
5. a small ``ttb approx`` (``approx/``): one-layer transformers on a cosine and a kinked target
   beside the universal-approximation construction, and MPNN + VN models imitating softmax
   attention beside the power-sums and selection constructions (error vs width and depth);
6. ``index.html``: one page with the tables and figures.

``--tiny`` trains two shapes (one seed each) for a few steps on smaller prompts: for CI, where the
point is that every stage runs.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from constructions.check.run import run_check
from constructions.icl import gd as gd_construction
from constructions.icl import newton as newton_construction
from constructions.registry import CONSTRUCTIONS
from experiments.analysis import core as an
from experiments.analysis import interp as ai
from experiments.analysis import prompts, references
from experiments.analysis import runs as ar
from experiments.approx import study as approx
from experiments.plots import figures as af
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep
from experiments.sweeps.store import status_rows
from experiments.training.config import RunConfig


def demo_sweep(tiny: bool) -> dict:
    """The demo's sweep file, as the dict a TOML file would parse to."""
    d, n_points = (3, 8) if tiny else (4, 16)
    shapes = {"model.n_layers": [1, 3, 2], "task.format": ["example", "example", "interleaved"],
              "model.attention": ["linear", "linear", "softmax"], "model.mlp": ["none", "none", "gelu"],
              "model.norm": ["none", "none", "layernorm"], "model.final_norm": [False, False, True],
              "model.bias": [False, False, True], "model.n_heads": [1, 1, 2], "model.d_head": [16, 16, 8],
              "train.lr": [1e-2, 3e-3, 3e-3]}
    if tiny:  # the first and last shape: one linear-attention and one softmax model
        shapes = {k: [v[0], v[-1]] for k, v in shapes.items()}
    return {
        "sweep": {"name": "demo", "max_models_per_batch": 8},
        "task": {"d": d, "n_points": n_points, "format": "example", "eval_batch_size": 64 if tiny else 256},
        "model": {"d_model": 16, "init_std": 0.2},
        "train": {"steps": 12 if tiny else 600, "batch_size": 16 if tiny else 64, "log_every": 4 if tiny else 50,
                  "grad_clip": 1.0, "min_lr_ratio": 0.1},
        "grid": {"zip": [shapes], "train.seed": [0] if tiny else [0, 1]},
    }


def check_table(tiny: bool) -> pd.DataFrame:
    rows = []
    for c in CONSTRUCTIONS.values():
        r = run_check(c, seed=0, n_cases=2 if tiny else 8)
        rows.append({"name": r.name, "exactness": r.exactness, "error": r.error, "bound": r.bound,
                     "passed": r.passed, "seconds": round(r.seconds, 2)})
    return pd.DataFrame(rows)


def demo_approx(tiny: bool) -> dict:
    """The demo's `ttb approx` config, as the dict a TOML file would parse to."""
    steps = 3 if tiny else 500
    return {"name": "demo_approx", "device": "cpu",
            "transformer": {"targets": ["cosine", "abs"], "widths": [8] if tiny else [8, 32, 128],
                            "construction_widths": [8, 32] if tiny else [8, 32, 128, 512], "lams": [8.0, 40.0],
                            "seeds": [0] if tiny else [0, 1], "steps": steps, "batch_size": 64,
                            "eval_inputs": 64 if tiny else 1024, "lr": 0.01},
            "mpnn": {"attention": ["softmax"], "widths": [4] if tiny else [4, 16, 64], "depths": [1] if tiny else [1, 2, 3],
                     "width_at": 16, "depth_at": 2, "seeds": [0] if tiny else [0, 1], "steps": steps,
                     "eval_graphs": 16 if tiny else 128, "taylor_orders": [2, 4], "taus": [2.0, 6.0], "lr": 0.01}}


def construction_summaries(d: int, n: int, n_prompts: int) -> list[dict]:
    """The GD (3 steps) and Newton (3 iterations) constructions through the trained-model metrics."""
    p, out = prompts.sample_prompts(d, n, n_prompts, seed=0), []
    eta, radius = references.default_eta(p.x), float(p.x.norm(dim=-1).max())
    alpha = 0.5 * newton_construction.alpha_bound(radius)
    cases = [(gd_construction.build(d, 3, eta), "gd construction (3 steps)", f"gd:eta={eta},ols,zero"),
             (newton_construction.build(d, 3, alpha, radius=radius), "newton construction (3 iterations)",
              f"newton:alpha={alpha}:n_iter=6,ols,zero")]
    for built, name, spec in cases:
        learner = an.Learner(built.cfg, built.weights, "example", model=name)
        out.append(ar.summary(ar.analyze(learner, p, references.parse_references(spec), probes=False)))
    return out


def from_construction_table(runs: list[ar.Run], tiny: bool) -> pd.DataFrame:
    """Train the one-layer linear-attention shape again, starting from the GD construction at the
    best step size: how far do the weights move, and does the loss change?"""
    run = next((r for r in runs if r.learner.n_layers == 1 and r.config.model.attention == "linear"), None)
    if run is None:
        return pd.DataFrame()
    start = af.matching_construction(run, prompts.prompts_for_task(run.config.task, 256, seed=1))
    config = replace(run.config, train=replace(run.config.train, steps=8 if tiny else 200))
    _, frame = ai.train_from(config, start)
    nmse = frame[frame.metric == "nmse"].value
    moved = frame[frame.metric == "relative_distance_moved"].value.iloc[0]
    return pd.DataFrame([{"shape": run.label.rsplit(" seed", 1)[0], "steps": config.train.steps,
                          "first logged nmse": nmse.iloc[0], "last logged nmse": nmse.iloc[-1],
                          "relative distance moved": moved}])


def summary_table(summaries: list[dict]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        row = {k: s[k] for k in ("run", "model", "closest_algorithm", "closest_iteration", "prediction_difference",
                                 "nmse", "model_cosine")}
        for name, entry in s["algorithms"].items():
            if entry["best_iteration_per_layer"] and any(entry["best_iteration_per_layer"]):
                row[f"best {name} iteration per layer"] = " ".join(map(str, entry["best_iteration_per_layer"]))
        rows.append(row)
    return pd.DataFrame(rows)


def approximation(out: Path, tiny: bool, progress: bool = True) -> tuple[pd.DataFrame, list[Path]]:
    """Run the demo's `ttb approx` into ``out``: (the slope table, the figure PNGs)."""
    cfg = approx.parse_config(demo_approx(tiny))
    comparison, curves = approx.run(cfg, out, progress=progress)
    paths = approx.write(out, cfg, comparison, curves)
    return pd.read_csv(out / "slopes.csv"), [p for p in paths if p.suffix == ".png"]


def run_demo(out, *, tiny: bool = False, progress: bool = True) -> Path:
    """Every stage of the demo; returns the path of index.html."""

    out, started, timings = Path(out), time.time(), {}
    say = print if progress else (lambda *a, **k: None)
    say("1/6 construction checks")
    checks = check_table(tiny)
    timings["checks"] = time.time() - started
    say("2/6 batched sweep")
    sweep = sw.parse_sweep(demo_sweep(tiny))
    run_sweep(sweep, out / "sweep", progress=progress)
    status = pd.DataFrame(status_rows(out / "sweep"))
    status["model"] = [ar.short_label(RunConfig.from_dict(json.loads(c))) for c in status.config]
    status = status[["run_id", "model", "status", "steps_done", "eval_nmse", "wall_s"]]
    timings["sweep"] = time.time() - started - sum(timings.values())
    say("3/6 comparisons")
    n_prompts = 128 if tiny else 512
    summaries, _ = ar.compare_runs(out / "sweep", n_prompts=n_prompts)
    task = sweep.runs[0].task
    summaries += construction_summaries(task.d, task.n_points - 1, n_prompts)
    (out / "compare.json").write_text(json.dumps(summaries, indent=1))
    timings["compare"] = time.time() - started - sum(timings.values())
    say("4/6 plots, and training from a construction")
    runs = [ar.load_run(d) for d in ar.find_runs(out / "sweep")]
    per_run = runs[:1] if tiny else runs  # tiny: one figure per kind (matplotlib text layout is slow)
    drawn = {kind: af.draw(kind, runs if kind == "interpolation" else per_run, out / "figures",
                                 n_prompts=n_prompts) for kind in af.KINDS}
    timings["plots"] = time.time() - started - sum(timings.values())
    moved = from_construction_table(runs, tiny)
    timings["train from construction"] = time.time() - started - sum(timings.values())
    say("5/6 approximation constructions beside trained models")
    slopes, drawn["approx"] = approximation(out / "approx", tiny, progress)
    timings["approx"] = time.time() - started - sum(timings.values())
    say("6/6 index.html")
    tables = {"Construction checks": checks, "Sweep runs": status, "Comparison (ttb compare)": summary_table(summaries),
              "Training from the GD construction": moved,
              "Approximation: fitted slopes of log error (ttb approx)": slopes,
              "Timings (s)": pd.DataFrame([{k: round(v, 1) for k, v in timings.items()}])}
    index = out / "index.html"
    index.write_text(index_html(tables, drawn, out, tiny))
    say(f"done in {time.time() - started:.0f}s: open {index}")
    return index


# ----------------------------------------------------------------------------------------------
# The page


def _figure_html(png: Path, root: Path) -> str:
    rel = png.relative_to(root)
    svg, csv = rel.with_suffix(".svg"), rel.with_suffix(".csv")
    return (f'<figure><img src="{html.escape(str(rel))}" alt="{html.escape(rel.stem)}">'
            f'<figcaption>{html.escape(rel.stem)} (<a href="{svg}">svg</a>, <a href="{csv}">data</a>)'
            f"</figcaption></figure>")


def index_html(tables: dict[str, pd.DataFrame], figures: dict[str, list[Path]], root: Path, tiny: bool) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>ttb demo</title><style>",
             "body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;"
             "font-size:12px} td,th{border:1px solid #ccc;padding:2px 6px} figure{display:inline-block;"
             "margin:6px} img{max-width:560px}</style></head><body>",
             "<h1>Theory testbed demo</h1>",
             f"<p>{'Tiny setting (a few training steps): numbers are not meaningful. ' if tiny else ''}"
             "Trained transformers against the algorithms they may run in context.</p>"]
    for title, table in tables.items():
        parts += [f"<h2>{html.escape(title)}</h2>", table.to_html(index=False, float_format=lambda v: f"{v:.4g}")]
    for kind, pngs in figures.items():
        parts.append(f"<h2>Figures: {html.escape(kind)}</h2>")
        parts += [_figure_html(p, root) for p in pngs] or ["<p>(none for these runs)</p>"]
    parts.append("</body></html>")
    return "\n".join(parts)
