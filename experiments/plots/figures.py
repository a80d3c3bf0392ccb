"""Figures of trained runs and constructions, each saved as PNG + SVG + the CSV it was drawn from.

One function per plot kind (:data:`KINDS`); each takes loaded runs (``analysis_runs.Run``) and an
output folder and returns the paths of the PNGs it wrote (``ttb plot KIND DIR`` and ``ttb demo``
call them). The numbers come from the pure analysis modules; drawing from ``experiments.plots.core``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from constructions import model as M
from constructions.check.contract import Case
from constructions.icl import gd as gd_construction
from constructions.registry import CONSTRUCTIONS
from experiments.analysis import core as an
from experiments.analysis import interp as ai
from experiments.analysis import metrics as am
from experiments.analysis import probes as ap
from experiments.analysis import prompts, references
from experiments.analysis import runs as ar
from experiments.plots import core as plots
from experiments.plots import icl as plots_icl

KINDS = ("errors", "heatmap", "probes", "rates", "interpolation")
HEATMAP_ALGORITHMS = ("gd", "newton")


def _prompts(run: ar.Run, n_prompts: int, seed: int = 0) -> an.Prompts:
    return prompts.prompts_for_task(run.config.task, n_prompts, seed=seed)


def errors(runs: list[ar.Run], out: Path, n_prompts: int = 512) -> list[Path]:
    """Per run: its error against n_examples with the baselines (OLS, ridge, GD and Newton at
    1, 2, 4, 8 iterations, zero). A model is drawn only at the context sizes it was trained on
    (every prefix for the interleaved formats; the example format's fixed count, a single point)."""
    paths, names = [], ar.file_names(runs)
    for run in runs:
        p = _prompts(run, n_prompts)
        refs = ar.references_for(run.config.task, run.learner.n_layers)
        sizes = ar.trained_sizes(run.config)
        model = am.model_curve(run.learner, p, n_values=sizes)
        data = pd.concat([model, am.baseline_curves(p, refs)], ignore_index=True)
        data = data.assign(curve=plots.curve_labels(data))
        if len(sizes) == 1:
            data.loc[data.algorithm == "model", "curve"] = f"{run.label} (trained at n = {sizes[0]} only)"
        keep = (data.algorithm == "model") | data.curve.isin(["ols", "ridge", "zero", "gd k=1", "gd k=8",
                                                              "newton k=2", "newton k=8"])
        keep |= data.algorithm.isin([r.name for r in refs if not r.iterative])  # every closed form drawn
        ax = plots.error_curves(data[keep])
        ax.set_title(f"{run.label}: error vs in-context examples", fontsize="small")
        paths.append(plots.save(ax, data, out / f"errors_{names[run.run_id]}")[0])
    return paths


def heatmap(runs: list[ar.Run], out: Path, n_prompts: int = 512) -> list[Path]:
    """Per run: error similarity of every layer to every GD and Newton iteration, best per layer."""
    paths, names = [], ar.file_names(runs)
    for run in runs:
        p = _prompts(run, n_prompts)
        refs = ar.references_for(run.config.task, run.learner.n_layers, ",".join(HEATMAP_ALGORITHMS))
        cmp = am.compare(run.learner, p, refs)
        data = cmp[(cmp.metric == "error_similarity")]
        axes = plots.heatmaps(data)
        axes[0].figure.suptitle(f"{run.label}: layer vs iteration (error similarity)", fontsize="small")
        paths.append(plots.save(axes, data, out / f"heatmap_{names[run.run_id]}")[0])
    return paths


def probes(runs: list[ar.Run], out: Path, n_prompts: int = 512) -> list[Path]:
    """Per run: held-out R^2 of linear probes per layer (prediction, w, X^T y, X^T X)."""
    paths, names = [], ar.file_names(runs)
    for run in runs:
        data = ap.probes(run.learner, _prompts(run, n_prompts))
        ax = plots.probe_quality(data)
        ax.set_title(f"{run.label}: linear probes at the query token", fontsize="small")
        paths.append(plots.save(ax, data, out / f"probes_{names[run.run_id]}")[0])
    return paths


# ----------------------------------------------------------------------------------------------
# Construction rates


def sweep_rates(n_cases: int = 3, seed: int = 0) -> pd.DataFrame:
    """Error of every registered construction that declares a RateSweep, at each swept value (column
    ``x``; ``algorithm`` holds the sweep axis, "log" or "linear")."""
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for c in CONSTRUCTIONS.values():
        if c.sweep is None:
            continue
        for _ in range(n_cases):
            case = c.sample(gen)
            for value in c.sweep.values:
                swept = Case({**case.params, c.sweep.parameter: value}, case.x, case.y, case.x_query, case.data)
                rows.append({"model": c.name, "algorithm": c.sweep.axis, "metric": f"error vs {c.sweep.parameter}",
                             "value": max(c.errors(c.build(swept), swept).values()), "x": float(value)})
    return an.frame(rows, extra=("x",))


def gd_depth_rate(d: int = 3, n: int = 24, depths=(1, 2, 4, 8, 16), n_prompts: int = 64) -> pd.DataFrame:
    """The GD construction's distance to least squares against depth: mean |readout - OLS prediction|
    at the query; GD contracts linearly, so log error falls linearly in depth (axis "linear")."""
    p = prompts.sample_prompts(d, n, n_prompts, seed=0)
    eta = references.default_eta(p.x)
    want = references.reference("ols").predictions(p)[0]
    rows = []
    for depth in depths:
        built = gd_construction.build(d, depth, eta)
        got = an.layer_predictions(an.Learner(built.cfg, built.weights), p)[-1]
        rows.append({"model": "gd -> least squares", "algorithm": "linear", "metric": "error vs depth",
                     "value": float((got - want).abs().mean()), "x": float(depth)})
    return an.frame(rows, extra=("x",))


def rates(runs, out: Path, **_) -> list[Path]:
    """Construction error against the swept parameter with the fitted slope (one figure per axis
    kind): every registered construction with a RateSweep, and the GD construction's depth rate."""
    data = pd.concat([sweep_rates(), gd_depth_rate()], ignore_index=True)
    paths = []
    for axis, part in data.groupby("algorithm"):
        ax = plots.rates(part, axis=axis)
        ax.set_title("construction error vs " + ("parameter (log-log)" if axis == "log" else "depth"), fontsize="small")
        paths.append(plots.save(ax, part, out / f"rates_{axis}")[0])
    return paths


# ----------------------------------------------------------------------------------------------
# Interpolation


def matching_construction(run: ar.Run, fit: an.Prompts) -> M.Weights:
    """The GD construction with the run's depth at the best step size for that many steps, aligned
    to the run's config (ValueError if the configs cannot be aligned exactly)."""
    L, d = run.learner.n_layers, run.config.task.d
    built = gd_construction.build(d, L, references.best_eta(fit, L))
    return ai.align(built.cfg, built.weights, run.learner.cfg)


def interpolation(runs: list[ar.Run], out: Path, n_prompts: int = 512) -> list[Path]:
    """Per run whose config can hold the GD construction: nmse along the straight line from the
    trained weights (t = 0) to the construction (t = 1). Other runs are skipped (see align)."""
    frames = []
    for run in runs:
        try:
            other = matching_construction(run, _prompts(run, n_prompts, seed=1))
        except ValueError:
            continue
        frames.append(ai.interpolation(run.learner, other, _prompts(run, n_prompts)))
    if not frames:
        return []
    data = pd.concat(frames, ignore_index=True)
    ax = plots.lines(data, x="t", hue="model", marker="o", band=False)
    ax.set_title("trained (t=0) to GD construction (t=1)", fontsize="small")
    ax.set_ylabel("squared error / d")
    return [plots.save(ax, data, out / "interpolation")[0]]


DRAW = {"errors": errors, "heatmap": heatmap, "probes": probes, "rates": rates, "interpolation": interpolation,
        # in-context task kinds only, so not in KINDS (which the demo draws for every run)
        "noise": plots_icl.noise, "pool": plots_icl.pool, "representation": plots_icl.representation}


def draw(kind: str, runs: list[ar.Run], out, n_prompts: int = 512) -> list[Path]:
    if kind not in DRAW:
        raise ValueError(f"unknown plot kind {kind!r}; kinds are {', '.join(DRAW)}")
    return DRAW[kind](runs, Path(out), n_prompts=n_prompts)
