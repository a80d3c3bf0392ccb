"""Trained runs (a run or sweep directory) through the analysis: load, compare, summarise.

Reads run directories written by ``ttb sweep`` (``runs/<id>/config.json`` and
``weights.safetensors``), refusing one whose files disagree; writes nothing. Evaluation prompts come
from the run's own task with a fixed seed, in float64, with n_points - 1 examples in context and one
query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from constructions.model import load_weights, to_state_dict
from experiments.analysis import core as an
from experiments.analysis import metrics as am
from experiments.analysis import probes as ap
from experiments.analysis import prompts, references
from experiments.common.validate import ConfigError, read_json
from experiments.sweeps.verify import check_run_files
from experiments.training.config import RunConfig

DEFAULT_ALGORITHMS = "gd,newton,ols,ridge,zero"


@dataclass(frozen=True)
class Run:
    run_id: str
    label: str  # short_label(config); the sweep's grid label is in sweep.json and `ttb runs`
    config: object  # experiments.training.config.RunConfig
    learner: an.Learner
    directory: Path


def find_runs(path) -> list[Path]:
    """The run directories under ``path``: itself if it holds weights, else runs/* with weights."""
    path = Path(path)
    if (path / "weights.safetensors").exists():
        return [path]
    found = sorted(d for d in (path / "runs").glob("*") if (d / "weights.safetensors").exists())
    if not found:
        raise FileNotFoundError(f"{path} is neither a finished run directory (weights.safetensors) nor a "
                                f"sweep directory with finished runs (runs/*/weights.safetensors)")
    return found


def short_label(config) -> str:
    """"linear, 3 layers, example tokens, seed 0": attention, depth, token format, seed (the run id
    says the rest)."""
    m, t = config.model, config.train
    layers = f"{m.n_layers} layer{'s' if m.n_layers != 1 else ''}"
    if m.n_loops > 1:  # a looped model: "1 layer x 8 loops"
        layers += f" x {m.n_loops} loops"
    return f"{m.attention}, {layers}, {config.task.format} tokens, seed {t.seed}"


def slug(label: str) -> str:
    """A file-name form of a label: "linear, 3 layers, seed 0" -> "linear-3-layers-seed-0"."""
    return "-".join("".join(c if c.isalnum() else " " for c in label.lower()).split())


def file_names(runs: list) -> dict[str, str]:
    """run id -> a file-name stem from its label (with the run id added where two labels collide)."""
    stems = [slug(r.label) for r in runs]
    return {r.run_id: stem if stems.count(stem) == 1 else f"{stem}-{r.run_id[:6]}" for r, stem in zip(runs, stems)}


def trained_sizes(config) -> list[int]:
    """The numbers of in-context examples a run was trained to predict from: every prefix for the
    interleaved formats (a prediction at every x token), the curriculum's point counts (or the one
    fixed count) minus the query for the example format."""
    t, cur = config.task, config.train.curriculum
    if t.format != "example":
        return list(range(1, t.n_points))
    start = t.n_points if cur is None else cur.points_start
    return list(range(start - 1, t.n_points))


def check_finite(path: Path, weights) -> None:
    """A ValueError naming the file and a tensor if ``weights`` hold NaN or infinite values."""
    bad = [key for key, t in to_state_dict(weights).items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"{path}: weights hold NaN or infinite values ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); the run diverged or the file is damaged")


def load_run(directory) -> Run:
    """A run directory's config and weights, after checking its files agree (a ValueError naming the
    one that does not: config.json edited, weights replaced; see experiments.sweeps.verify)."""
    directory = Path(directory)
    path = directory / "config.json"
    data = read_json(path, "run config")
    try:
        config = RunConfig.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    cfg, weights = load_weights(directory / "weights.safetensors")
    check_finite(directory / "weights.safetensors", weights)
    check_run_files(directory)
    label = short_label(config)
    learner = an.Learner(cfg, weights, config.task.format, model=label, run=directory.name)
    return Run(directory.name, label, config, learner, directory)


def iteration_counts(n_layers: int) -> dict[str, int]:
    """How many iterations to compare with: GD's best iteration grows exponentially with depth
    (Fu et al. 2023), so up to 64; Newton's linearly, so 2 L + 4."""
    return {"gd": 64, "gd_plus_plus": 32, "newton": 2 * n_layers + 4}


def references_for(task, n_layers: int, spec: str | None = None, fit: an.Prompts | None = None):
    """Parse ``spec`` for a run (None: references.default_spec, the task kind's baselines or
    DEFAULT_ALGORITHMS); ridge's lam = noise_std^2 / w_std^2 (Bayes-optimal), 1e-2 without noise."""
    spec = references.default_spec(task, DEFAULT_ALGORITHMS) if spec is None else spec
    lam = (task.noise_std / task.w_std) ** 2 or 1e-2
    return references.parse_references(spec, n_iter=iteration_counts(n_layers), lam=lam, fit=fit, task=task)


def analyze(learner: an.Learner, p: an.Prompts, refs, *, probes: bool = True) -> dict[str, pd.DataFrame]:
    """Every frame for one model: compare, best iterations, relations, closest algorithm, implicit
    weights, readouts and probes."""
    cmp = am.compare(learner, p, refs)
    best = am.best_iterations(cmp)
    out = {"compare": cmp, "best": best, "relations": am.relations(best), "closest": am.closest_algorithm(cmp),
           "implicit": am.implicit_weights(learner, p, refs), "readouts": ap.readout_nmse(learner, p)}
    if probes:
        out["probes"] = ap.probes(learner, p)
    return out


def _per_layer(cmp: pd.DataFrame, name: str, metric: str, pick) -> list:
    sub = cmp[(cmp.algorithm == name) & (cmp.metric == metric)]
    return [pick(g) for _, g in sub.groupby("layer", sort=True)]


def summary(frames: dict[str, pd.DataFrame]) -> dict:
    """The JSON summary of one model: closest algorithm, and per algorithm the best iteration of
    every layer (closed forms have one iterate, numbered 0), its error similarity and the fitted
    relation."""
    cmp, close, rel = frames["compare"], frames["closest"].iloc[0], frames["relations"]
    final = cmp[(cmp.layer == cmp.layer.max())]
    at = final[(final.algorithm == close.algorithm) & (final.iteration.isna() if pd.isna(close.iteration)
                                                        else final.iteration == close.iteration)]
    model = final[final.algorithm == "model"]
    nmse, median = model[model.metric == "nmse"].value, model[model.metric == "median_nmse"].value
    out = {"run": close.run, "model": close.model, "closest_algorithm": close.algorithm,
           "closest_iteration": None if pd.isna(close.iteration) else int(close.iteration),
           "prediction_difference": float(close.value), "nmse": float(nmse.iloc[0]),
           "median_nmse": float(median.iloc[0]) if len(median) else math.nan,
           "model_cosine": float(at[at.metric == "model_cosine"].value.iloc[0]), "algorithms": {}}
    metric = "error_similarity"
    for name in [a for a in pd.unique(cmp.algorithm) if a != "model"]:
        best = _per_layer(cmp, name, metric, lambda g: g.loc[g.value.idxmax()])
        entry = {"best_iteration_per_layer": [0 if pd.isna(b.iteration) else int(b.iteration) for b in best],
                 f"{metric}_per_layer": [float(b.value) for b in best]}
        for _, r in rel[rel.algorithm == name].iterrows():
            entry[r.metric] = None if math.isnan(r.value) else float(r.value)
        out["algorithms"][name] = entry
    return out


def compare_runs(path, spec: str | None = None, *, n_prompts: int = 512, seed: int = 0,
                 probes: bool = False) -> tuple[list[dict], dict[str, pd.DataFrame]]:
    """Analyse every finished run under ``path``: (JSON summaries, frames concatenated over runs)."""
    summaries, frames = [], {}
    for directory in find_runs(path):
        run = load_run(directory)
        p = prompts.prompts_for_task(run.config.task, n_prompts, seed=seed)
        fit = prompts.prompts_for_task(run.config.task, n_prompts, seed=seed + 1)
        refs = references_for(run.config.task, run.learner.n_layers, spec, fit)
        result = analyze(run.learner, p, refs, probes=probes)
        summaries.append(summary(result))
        for key, f in result.items():
            frames.setdefault(key, []).append(f)
    return summaries, {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}
