"""`ttb approx`: the approximation constructions beside models trained on the same targets.

The config (:mod:`experiments.approx.config`) expands into runs of two families: one-layer
transformers on the ridge targets (:class:`experiments.approx.transformer.TransformerRun`, the
models of one width in one batch) and MPNN + virtual node models imitating an attention layer
(:class:`experiments.approx.mpnn.MPNNRun`, the seeds of one shape in one batch). They train through
the sweep engine (run ids, the SQLite store, resume after a kill, `ttb runs` / `ttb export`, local or
Ray backend); each run's result.json holds its float64 measurement. The constructions are built
and measured on the same targets by the same functions, and the construction-only curves are added.

Outputs (:func:`write`): ``comparison.csv`` (one row per model and swept value, both families:
columns of :data:`COMPARISON_COLUMNS`), ``curves.csv`` (error vs lam / m / T / tau of the registered
constructions), ``table.csv`` (median and worst error over seeds), ``slopes.csv`` (fitted slope of
log error per curve, the stated one beside it), ``config.json`` and the figures of
:mod:`experiments.plots.approx`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from constructions.check.contract import fit_slope as fit_line_slope
from experiments.approx import curves as AC
from experiments.approx import mpnn as AM
from experiments.approx import transformer as AT
from experiments.approx.config import ApproxConfig, load_config, parse_config  # noqa: F401  (the command reads them here)
from experiments.common.atomic import atomic_write_json, atomic_write_text
from experiments.plots import approx as plots_approx
from experiments.plots.approx import AXES
from experiments.sweeps import store as st
from experiments.sweeps.runner import run_sweep
from experiments.sweeps.spec import Sweep, SweepOptions

COMPARISON_COLUMNS = ("family", "target", "model", "seed", "parameter", "value", "width", "depth", "n_params",
                      "error", "rmse")
TABLE_COLUMNS = ("family", "target", "model", "parameter", "value", "width", "depth", "median_error", "worst_error",
                 "median_rmse", "n_models")
SLOPE_COLUMNS = ("family", "target", "model", "parameter", "axis", "slope", "stated_slope", "n_values")


# ----------------------------------------------------------------------------------------------
# Training (through the sweep engine) and measuring


def sweep(cfg: ApproxConfig) -> Sweep:
    """Every trained model of the config as a run of its family."""
    runs = (AT.runs(cfg.transformer, cfg.dtype) if cfg.transformer is not None else []) + \
        [r for study in cfg.mpnn for r in AM.runs(study, cfg.dtype)]
    widest = max([len(cfg.transformer.targets) * len(cfg.transformer.seeds)] if cfg.transformer else [1])
    options = SweepOptions(name=cfg.name, max_models_per_batch=max([widest] + [len(s.seeds) for s in cfg.mpnn]),
                           device=cfg.device, backend=cfg.backend)
    return Sweep(options, runs, [r.label for r in runs], (AT.TRANSFORMER, AM.MPNN))


def run(cfg: ApproxConfig, out, *, device=None, backend: str | None = None, progress: bool = True,
        say=None, autocast: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every run of ``cfg`` into ``out`` (resuming what is there): (comparison, curves), every
    trained and constructed row of both families, and the construction-only curves (empty when the
    config has no [curves]). ``say(message)`` as each construction stage starts."""
    plan = sweep(cfg)
    if plan.runs:
        run_sweep(plan, out, backend=backend, device=device, progress=progress, autocast=autocast)
    results = {r.run_id: st.read_result(st.run_dir(out, r.run_id)) for r in plan.runs}
    frames = []
    if cfg.transformer is not None:
        trained = [r for r in plan.runs if isinstance(r, AT.TransformerRun)]
        frames += [AT.construction_frame(cfg.transformer),
                   AT.trained_rows(trained, [results[r.run_id] for r in trained])]
    for study in cfg.mpnn:
        trained = [r for r in plan.runs if isinstance(r, AM.MPNNRun) and r.study == study]
        frames += [AM.trained_rows(trained, [results[r.run_id] for r in trained]), AM.construction_frame(study)]
    comparison = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    curves = pd.DataFrame()
    if cfg.curves:
        if say:
            say("construction curves: error vs lam, m, T, tau")
        curves = pd.concat([AC.universal_approx_curves(cfg.curves["seed"], cfg.curves["n_cases"]),
                            AC.mpnn_curves(cfg.curves["seed"], cfg.curves["n_cases"])], ignore_index=True)
    return comparison, curves


def summarize(comparison: pd.DataFrame) -> pd.DataFrame:
    """Median and worst error over the models that share (family, target, model, parameter, value)."""
    keys = ["family", "target", "model", "parameter", "value"]
    g = comparison.groupby(keys, sort=True, dropna=False)
    table = g.agg(width=("width", "first"), depth=("depth", "first"), median_error=("error", "median"),
                  worst_error=("error", "max"), median_rmse=("rmse", "median"), n_models=("error", "size"))
    return table.reset_index()[list(TABLE_COLUMNS)]


def fit_slope(values, errors, axis: str) -> float:
    """Least-squares slope of log error against log value (axis "log") or value ("linear"), as a
    construction's rate check fits it (``contract.fit_slope``); NaN with fewer than two distinct values."""
    values = [float(v) for v in values]
    if len(set(values)) < 2:
        return math.nan
    return fit_line_slope(values, [float(e) for e in errors], axis)


def slopes(table: pd.DataFrame, stated: dict | None = None) -> pd.DataFrame:
    """Per curve of the summary table: the fitted slope of the median error, and the stated one
    (``stated[(target, model)]``, NaN where the theory states none: trained models)."""
    rows = []
    for (family, target, model, parameter), part in table.groupby(["family", "target", "model", "parameter"],
                                                                  sort=True):
        axis = AXES.get(parameter, "log")
        rows.append({"family": family, "target": target, "model": model, "parameter": parameter, "axis": axis,
                     "slope": fit_slope(part["value"], part["median_error"], axis),
                     "stated_slope": (stated or {}).get((target, model), math.nan), "n_values": len(part)})
    return pd.DataFrame(rows, columns=list(SLOPE_COLUMNS))


def stated_slopes(cfg: ApproxConfig) -> dict:
    """(target, model) -> the construction's stated slope, from each family's module."""
    out = AT.stated_slopes(cfg.transformer) if cfg.transformer is not None else {}
    for study in cfg.mpnn:
        out |= AM.stated_slopes(study)
    return out


# ----------------------------------------------------------------------------------------------
# Files


def write(out: Path, cfg: ApproxConfig, comparison: pd.DataFrame, curves: pd.DataFrame) -> list[Path]:
    """comparison.csv, curves.csv, table.csv, slopes.csv, config.json (atomically) and the figures."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summarize(comparison) if len(comparison) else pd.DataFrame(columns=list(TABLE_COLUMNS))
    fitted = slopes(table, stated_slopes(cfg)) if len(table) else pd.DataFrame(columns=list(SLOPE_COLUMNS))
    frames = {"comparison.csv": comparison, "curves.csv": curves, "table.csv": table, "slopes.csv": fitted}
    paths = []
    for name, frame in frames.items():
        atomic_write_text(out / name, frame.to_csv(index=False))
        paths.append(out / name)
    atomic_write_json(out / "config.json", cfg.to_json())
    paths.append(out / "config.json")
    return paths + plots_approx.draw_all(comparison, curves, out / "figures")
