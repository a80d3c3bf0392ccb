"""`ttb approx`: the approximation constructions beside models trained on the same targets.

Config (TOML); every field is checked before anything trains (a wrong one raises ``ConfigError``
naming it, e.g. ``transformer.widths``). Each family section is optional::

    name = "approx_cpu"
    device = "auto"                 # auto | cpu | cuda | cuda:N | mps
    dtype = "float32"               # training dtype; every evaluation runs in float64
    [transformer]                   # experiments.approx.transformer.TransformerStudy
    n = 4, d = 2, targets = ["cosine", "relu", "abs"], widths = [8, 16, 32, 64, 128],
    construction_widths = [...], lams = [8.0, 40.0], seeds = [0, 1, 2], steps, batch_size,
    lr, warmup, min_lr_ratio, weight_decay, clip, ...  (training fields of experiments.training.optim)
    [mpnn]                          # experiments.approx.mpnn.MPNNStudy
    attention = ["linear", "softmax"]   # one study per kind
    widths = [...], depths = [...], relu_widths = [...], taylor_orders = [...], taus = [...], ...
    [curves]                        # construction-only curves (experiments.approx.curves)
    n_cases = 3, seed = 0

Outputs (:func:`write`): ``comparison.csv`` (one row per model and swept value, both families:
columns of :data:`COMPARISON_COLUMNS`), ``curves.csv`` (error vs lam / m / T / tau of the registered
constructions), ``table.csv`` (median and worst error over seeds), ``slopes.csv`` (fitted slope of
log error per curve, the stated one beside it), ``config.json`` and the figures of
:mod:`experiments.plots.approx`. Pure functions apart from :func:`write`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from constructions.check.contract import RateSweep
from experiments.common.validate import ConfigError, read_toml
from experiments.plots.approx import AXES
from experiments.training.optim import HYPER_DEFAULTS

COMPARISON_COLUMNS = ("family", "target", "model", "seed", "parameter", "value", "width", "depth", "n_params",
                      "error", "rmse")
TABLE_COLUMNS = ("family", "target", "model", "parameter", "value", "width", "depth", "median_error", "worst_error",
                 "median_rmse", "n_models")
SLOPE_COLUMNS = ("family", "target", "model", "parameter", "axis", "slope", "stated_slope", "n_values")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
TOP = ("name", "device", "dtype", "transformer", "mpnn", "curves")


@dataclass(frozen=True)
class ApproxConfig:
    name: str
    transformer: object | None  # approx_transformer.TransformerStudy
    mpnn: tuple = ()  # approx_mpnn.MPNNStudy, one per attention kind
    curves: dict = field(default_factory=dict)  # {"n_cases": int, "seed": int} or empty (no curves)
    dtype: str = "float32"
    device: str = "auto"


# ----------------------------------------------------------------------------------------------
# Config


def _split_training(section: str, values: dict) -> tuple[dict, dict]:
    """(study fields, training hyperparameters) of a section; a hyperparameter must be a finite number."""
    hyper = {}
    for k in [k for k in values if k in HYPER_DEFAULTS and k != "total"]:
        v = values[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{section}.{k} must be a finite number >= 0, got {v!r}")
        hyper[k] = float(v)
    return {k: v for k, v in values.items() if k not in hyper}, hyper


def _study(section: str, cls, values: dict, hyper: dict, build):
    unknown = sorted(set(values) - set(cls.field_names()) - {"hyper"})
    if unknown:
        known = sorted(set(cls.field_names()) - {"hyper"}) + sorted(k for k in HYPER_DEFAULTS if k != "total")
        raise ConfigError(f"{section}.{unknown[0]}: unknown field; known: {known}")
    try:
        return build(values, hyper)
    except (TypeError, ValueError) as err:
        message = str(err)
        raise ConfigError(message if message.startswith(section) else f"{section}: {message}") from None


def parse_config(data: dict, default_name: str = "approx") -> ApproxConfig:
    """A config dict (as read from TOML) -> ApproxConfig, or ConfigError naming the bad field."""
    for key in data:
        if key not in TOP:
            raise ConfigError(f"{key}: unknown field; known: {TOP}")
    dtype, device = data.get("dtype", "float32"), data.get("device", "auto")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    if not isinstance(device, str):
        raise ConfigError(f"device must be a string, got {device!r}")
    for section in ("transformer", "mpnn", "curves"):
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"[{section}] must be a table, got {data[section]!r}")
    if not any(s in data for s in ("transformer", "mpnn", "curves")):
        raise ConfigError("the config needs at least one of [transformer], [mpnn], [curves]")
    transformer = None
    if "transformer" in data:
        from experiments.approx import transformer as AT

        values, hyper = _split_training("transformer", data["transformer"])
        transformer = _study("transformer", AT.TransformerStudy, values, hyper, AT.study_from)
    mpnn = ()
    if "mpnn" in data:
        from experiments.approx import mpnn as AM

        values, hyper = _split_training("mpnn", data["mpnn"])
        kinds = values.pop("attention", ["linear", "softmax"])
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not kinds:
            raise ConfigError("mpnn.attention must name at least one attention kind")
        mpnn = tuple(_study("mpnn", AM.MPNNStudy, {**values, "attention": k}, hyper, AM.study_from) for k in kinds)
    return ApproxConfig(str(data.get("name", default_name)), transformer, mpnn, _parse_curves(data.get("curves")),
                        dtype, device)


def _parse_curves(curves: dict | None) -> dict:
    if curves is None:
        return {}
    unknown = sorted(set(curves) - {"n_cases", "seed"})
    if unknown:
        raise ConfigError(f"curves.{unknown[0]}: unknown field; known: ['n_cases', 'seed']")
    out = {"n_cases": curves.get("n_cases", 3), "seed": curves.get("seed", 0)}
    for k, lo in (("n_cases", 1), ("seed", 0)):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"curves.{k} must be an int >= {lo}, got {v!r}")
    return out


def load_config(path) -> ApproxConfig:
    data = read_toml(path)
    return parse_config(data, default_name=Path(path).stem)


# ----------------------------------------------------------------------------------------------
# Running (math; no files)


def training_steps(cfg: ApproxConfig) -> int:
    """Optimiser steps the config trains, summed over its batches (for a progress bar)."""
    total = len(cfg.transformer.widths) * cfg.transformer.steps if cfg.transformer is not None else 0
    return total + sum(len(s.shapes()) * s.steps for s in cfg.mpnn)


def run(cfg: ApproxConfig, device=None, progress=None, tick=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparison, curves): every trained and constructed row of both families, and the
    construction-only curves (empty when the config has no [curves]). ``progress(message)`` as each
    stage starts; ``tick(steps done in the current batch)`` from inside training."""
    from experiments.approx import curves as AC

    name = device or cfg.device
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)
    dtype, frames = DTYPES[cfg.dtype], []
    if cfg.transformer is not None:
        from experiments.approx import transformer as AT

        frames.append(AT.comparison_frame(cfg.transformer, device=device, dtype=dtype, progress=progress, tick=tick))
    for study in cfg.mpnn:
        from experiments.approx import mpnn as AM

        frames.append(AM.comparison_frame(study, device=device, dtype=dtype, progress=progress, tick=tick))
    comparison = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    curves = pd.DataFrame()
    if cfg.curves:
        if progress:
            progress("construction curves: error vs lam, m, T, tau")
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
    construction's rate check fits it (``RateSweep.fit``); NaN with fewer than two distinct values."""
    values = [float(v) for v in values]
    if len(set(values)) < 2:
        return math.nan
    return RateSweep("value", tuple(values), 0.0, 0.0, axis=axis).fit([float(e) for e in errors])


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
    out = {}
    if cfg.transformer is not None:
        from experiments.approx import transformer as AT

        out |= AT.stated_slopes(cfg.transformer)
    for study in cfg.mpnn:
        from experiments.approx import mpnn as AM

        out |= AM.stated_slopes(study)
    return out


# ----------------------------------------------------------------------------------------------
# Files


def write(out: Path, cfg: ApproxConfig, comparison: pd.DataFrame, curves: pd.DataFrame) -> list[Path]:
    """comparison.csv, curves.csv, table.csv, slopes.csv, config.json (atomically) and the figures."""
    from experiments.common.atomic import atomic_write_json, atomic_write_text
    from experiments.plots import approx as plots_approx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summarize(comparison) if len(comparison) else pd.DataFrame(columns=list(TABLE_COLUMNS))
    fitted = slopes(table, stated_slopes(cfg)) if len(table) else pd.DataFrame(columns=list(SLOPE_COLUMNS))
    frames = {"comparison.csv": comparison, "curves.csv": curves, "table.csv": table, "slopes.csv": fitted}
    paths = []
    for name, frame in frames.items():
        atomic_write_text(out / name, frame.to_csv(index=False))
        paths.append(out / name)
    atomic_write_json(out / "config.json", config_json(cfg))
    paths.append(out / "config.json")
    return paths + plots_approx.draw_all(comparison, curves, out / "figures")


def config_json(cfg: ApproxConfig) -> dict:
    from dataclasses import asdict

    return {"name": cfg.name, "dtype": cfg.dtype, "device": cfg.device, "curves": cfg.curves,
            "transformer": asdict(cfg.transformer) if cfg.transformer is not None else None,
            "mpnn": [asdict(s) for s in cfg.mpnn]}
