"""`ttb demo`: construction checks, a small batched sweep, the comparisons and every plot, on a CPU.

Steps, all under ``--out`` (default ``ttb-demo``):

1. every registered construction checked on random instances (``ttb check``'s table);
2. a sweep of three model shapes x seeds, trained batched (``sweep/``): one-layer and three-layer
   linear self-attention on the one-token-per-example format, and a GPT-2-style softmax model
   (tanh-GELU MLP, LayerNorm) that learns in context;
3. ``ttb compare`` on the models that learned, plus the GD and Newton constructions run through the
   same metrics (a construction must come out as its own algorithm: similarity 1, difference 0);
4. every plot kind (``figures/``: PNG, SVG and the CSV drawn from), and the one-layer shape trained
   again starting from the GD construction (how far the weights move);
5. a small ``ttb approx`` (``approx/``): one-layer transformers on a cosine and a kinked target
   beside the universal-approximation construction, and MPNN + VN models imitating softmax
   attention beside the power-sums and selection constructions (error vs width and depth);
6. ``index.html``: one page; every section opens with what its numbers say
   (:mod:`experiments.reports.sentences`), models that did not learn are flagged and left out of
   the comparison, and runs and figures are named by their settings.

``--tiny`` trains two shapes (one seed each) for a few steps on smaller prompts: for CI, where the
point is that every stage runs (its models do not learn, and the page says so).
"""

from __future__ import annotations

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
from experiments.reports import sentences
from experiments.reports.page import Section, render
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep
from experiments.sweeps.store import status_rows
from experiments.training.config import RunConfig

# The softmax shape learns in context within the demo's steps: small width, 4 heads, one token per
# example, lr 3e-3 with warmup (a 2-layer interleaved GPT-2 at lr 3e-3 stayed at the zero predictor).
SHAPES = {"model.n_layers": [1, 3, 2], "task.format": ["example", "example", "example"],
          "model.attention": ["linear", "linear", "softmax"], "model.mlp": ["none", "none", "gelu_tanh"],
          "model.norm": ["none", "none", "layernorm"], "model.final_norm": [False, False, True],
          "model.bias": [False, False, True], "model.n_heads": [1, 1, 4], "model.d_head": [16, 16, 8],
          "model.d_model": [16, 16, 32], "model.init_std": [0.2, 0.2, 0.02], "train.lr": [1e-2, 3e-3, 3e-3]}


def demo_sweep(tiny: bool) -> dict:
    """The demo's sweep file, as the dict a TOML file would parse to."""
    d, n_points = (3, 8) if tiny else (3, 11)
    shapes = {k: [v[0], v[-1]] for k, v in SHAPES.items()} if tiny else SHAPES  # tiny: linear and softmax
    return {
        "sweep": {"name": "demo", "max_models_per_batch": 8},
        "task": {"d": d, "n_points": n_points, "format": "example", "eval_batch_size": 64 if tiny else 512},
        "model": {"d_model": 16},
        "train": {"steps": 12 if tiny else 1200, "batch_size": 16 if tiny else 128, "log_every": 4 if tiny else 100,
                  "warmup_steps": 0 if tiny else 100, "grad_clip": 1.0, "min_lr_ratio": 0.1},
        "grid": {"zip": [shapes], "train.seed": [0] if tiny else [0, 1]},
    }


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


# ----------------------------------------------------------------------------------------------
# The stages, each returning its section


def checks_section(tiny: bool) -> Section:
    rows = []
    for c in CONSTRUCTIONS.values():
        r = run_check(c, seed=0, n_cases=2 if tiny else 8)
        rows.append({"construction": r.name, "class": r.exactness, "error": r.error, "bound": r.bound,
                     "measured as": r.error_is, "passed": r.passed})
    table = pd.DataFrame(rows)
    return Section("Constructions checked against their algorithms", [sentences.checks(
        table.rename(columns={"construction": "name", "class": "exactness"}))], table)


def sweep_section(out: Path, seconds: float) -> tuple[Section, pd.DataFrame]:
    status = pd.DataFrame(status_rows(out))
    status["model"] = [ar.short_label(RunConfig.from_dict(json.loads(c))) for c in status.config]
    status["learned"] = [sentences.learned(v) for v in status.eval_nmse]
    table = status[["model", "status", "steps_done", "eval_nmse", "learned", "wall_s", "run_id"]].rename(
        columns={"steps_done": "steps", "eval_nmse": "error at full context", "wall_s": "seconds"})
    section = Section("Trained models", sentences.sweep(status, seconds), table, flags=sentences.not_learned(status))
    return section, status


def comparison_rows(summaries: list[dict]) -> pd.DataFrame:
    """One row per (model, algorithm): the closest iteration at the output and the best iteration of
    every layer, with the fitted relation (variants are rows, so no cell is empty by construction)."""
    rows = []
    for s in summaries:
        for name, entry in s["algorithms"].items():
            relation = entry.get("iterations_per_layer", entry.get("log_iterations_per_layer"))
            rows.append({"model": s["model"], "algorithm": name, "best iteration per layer (0 = embedding)":
                         " ".join(map(str, entry["best_iteration_per_layer"])),
                         "fitted relation": relation, "closest overall": name == s["closest_algorithm"]})
    return pd.DataFrame(rows)


def comparison_section(summaries: list[dict], learned_ids: set[str]) -> Section:
    kept = [s for s in summaries if s["run"] in learned_ids]
    text = [sentences.model(s) for s in kept] or ["No trained model learned, so none is compared."]
    return Section("Which algorithm each trained model runs (ttb compare)", text, comparison_rows(kept))


def construction_summaries(d: int, n: int, n_prompts: int) -> list[dict]:
    """The GD (3 steps) and Newton (3 iterations) constructions through the trained-model metrics."""
    p, out = prompts.sample_prompts(d, n, n_prompts, seed=0), []
    eta, radius = references.default_eta(p.x), float(p.x.norm(dim=-1).max())
    alpha = 0.5 * newton_construction.alpha_bound(radius)
    cases = [(gd_construction.build(d, 3, eta), "gd construction (3 steps)", f"gd:eta={eta},ols,zero"),
             (newton_construction.build(d, 3, alpha, radius=radius),
              "newton construction (3 iterations at half the provably convergent step)",
              f"newton:alpha={alpha}:n_iter=6,ols,zero")]
    for built, name, spec in cases:
        learner = an.Learner(built.cfg, built.weights, "example", model=name)
        out.append(ar.summary(ar.analyze(learner, p, references.parse_references(spec), probes=False)))
    return out


def constructions_section(summaries: list[dict]) -> Section:
    text = [f"{s['model']} comes out as {s['closest_algorithm']} iteration {s['closest_iteration']} (prediction "
            f"difference {s['prediction_difference']:.1e}): a construction is its algorithm." for s in summaries]
    newton = next(s for s in summaries if s["model"].startswith("newton"))
    text.append(f"Its error, {newton['nmse']:.2f}, is large because the step that guarantees convergence for every "
                "prompt is conservative: three iterations barely move it (the trained models need no such guarantee).")
    return Section("The GD and Newton constructions through the same metrics", text, comparison_rows(summaries))


def from_construction_section(runs: list[ar.Run], tiny: bool) -> Section | None:
    """Train the one-layer linear-attention shape again, starting from the GD construction at the
    best step size: how far do the weights move, and does the loss change?"""
    run = next((r for r in runs if r.learner.n_layers == 1 and r.config.model.attention == "linear"), None)
    if run is None:
        return None
    start = af.matching_construction(run, prompts.prompts_for_task(run.config.task, 256, seed=1))
    config = replace(run.config, train=replace(run.config.train, steps=8 if tiny else 200))
    _, frame = ai.train_from(config, start)
    nmse = frame[frame.metric == "nmse"].value
    moved = float(frame[frame.metric == "relative_distance_moved"].value.iloc[0])
    table = pd.DataFrame([{"model": run.label.rsplit(", seed", 1)[0], "steps": config.train.steps,
                           "first logged error": nmse.iloc[0], "last logged error": nmse.iloc[-1],
                           "relative distance moved": moved}])
    text = (f"Started from the GD construction at the best step size, {config.train.steps} more steps move the "
            f"weights by {moved:.1%} of their norm and take the error from {nmse.iloc[0]:.3f} to {nmse.iloc[-1]:.3f}.")
    return Section("Training from the GD construction", [text], table)


def figure_sections(runs: list[ar.Run], out: Path, n_prompts: int, tiny: bool) -> list[Section]:
    per_run = runs[:1] if tiny else runs  # tiny: one figure per kind (matplotlib text layout is slow)
    texts = {"errors": "Normalised error against the number of in-context examples, with least squares, ridge, GD, "
                       "Newton and the zero predictor; a model is drawn only at the context sizes it was trained on "
                       "(one point for the one-token-per-example models).",
             "heatmap": "For every layer, the similarity of its errors to every GD step and Newton iteration, with "
                        "the best match per layer.",
             "probes": "Held-out R^2 of linear probes at the query token, per layer.",
             "rates": "The approximate constructions' errors against their swept parameter, with fitted slopes.",
             "interpolation": "Error along the straight line from the trained weights (t = 0) to the GD construction "
                              "(t = 1), for the runs whose configs can hold it."}
    out_sections = []
    for kind in af.KINDS:
        paths = af.draw(kind, runs if kind == "interpolation" else per_run, out, n_prompts=n_prompts)
        out_sections.append(Section(f"Figures: {kind}", [texts[kind]], figures=paths))
    return out_sections


def approximation_section(out: Path, tiny: bool, progress: bool) -> Section:
    cfg = approx.parse_config(demo_approx(tiny))
    comparison, curves = approx.run(cfg, out, progress=progress)
    paths = approx.write(out, cfg, comparison, curves)
    slopes = pd.read_csv(out / "slopes.csv")
    return Section("Approximation theorems beside trained models (ttb approx)", [sentences.approximation(slopes)],
                   slopes, [p for p in paths if p.suffix == ".png"])


# ----------------------------------------------------------------------------------------------
# The whole demo


def run_demo(out, *, tiny: bool = False, progress: bool = True) -> Path:
    """Every stage of the demo; returns the path of index.html."""
    out, started, timings, sections = Path(out), time.time(), {}, []
    say = print if progress else (lambda *a, **k: None)

    def lap(name: str) -> None:
        timings[name] = time.time() - started - sum(timings.values())

    say("1/6 construction checks")
    sections.append(checks_section(tiny))
    lap("checks")
    say("2/6 batched sweep")
    sweep = sw.parse_sweep(demo_sweep(tiny))
    run_sweep(sweep, out / "sweep", progress=progress)
    lap("sweep")
    trained, status = sweep_section(out / "sweep", timings["sweep"])
    sections.append(trained)
    say("3/6 comparisons")
    n_prompts = 128 if tiny else 512
    summaries, _ = ar.compare_runs(out / "sweep", n_prompts=n_prompts)
    task = sweep.runs[0].task
    built = construction_summaries(task.d, task.n_points - 1, n_prompts)
    (out / "compare.json").write_text(json.dumps(summaries + built, indent=1))
    sections += [comparison_section(summaries, set(status.run_id[status.learned])), constructions_section(built)]
    lap("compare")
    say("4/6 plots, and training from a construction")
    runs = [ar.load_run(d) for d in ar.find_runs(out / "sweep")]
    sections += figure_sections(runs, out / "figures", n_prompts, tiny)
    lap("plots")
    sections += [s for s in [from_construction_section(runs, tiny)] if s is not None]
    lap("train from construction")
    say("5/6 approximation constructions beside trained models")
    sections.append(approximation_section(out / "approx", tiny, progress))
    lap("approx")
    say("6/6 index.html")
    longest = max(timings, key=timings.get)
    sections.append(Section("Timings", [f"The demo took {sum(timings.values()):.0f} s; the longest stage was "
                                        f"{longest} ({timings[longest]:.0f} s)."],
                            pd.DataFrame([{k: round(v, 1) for k, v in timings.items()}])))
    intro = (["Tiny setting (a few training steps): the models do not learn and the numbers are not meaningful; "
              "every stage runs."] if tiny else []) + ["Hand-set transformer constructions checked against the "
                                                       "algorithms they claim, and transformers trained on the same "
                                                       "in-context regression task compared with them layer by layer."]
    index = out / "index.html"
    index.write_text(render("Theory testbed demo", intro, sections, out))
    say(f"done in {time.time() - started:.0f}s: open {index}")
    return index
