"""Error curves of the approximation constructions, as tidy DataFrames (no plotting, no files).

One row per (construction, case, swept value): columns ``construction``, ``case``, ``parameter``,
``value``, ``error`` (the construction's measured error: max over its labels), ``bound`` (its
stated bound at that value), ``width`` and ``depth`` of the built network, and any ``extra``
columns (e.g. the target kind or the fixed lam of a width curve). :func:`with_slopes` adds the
least-squares slope of log error per (construction, case, extras) group, on the construction's own
axis (log-log for widths, log-linear for lam / tau / T), and the stated slope beside it.

    universal_approx_curves   error vs lam (ReLU target) and vs width m at several lam, for smooth
                              (cosine) and non-smooth (abs) targets: the plateau where the MLP term
                              meets the attention term, with the predicted m* (plateau_width)
    mpnn_curves               MPNN + VN: error vs ReLU width m, vs Taylor order T (and the depth
                              it costs), vs selection temperature tau (depth n + 3)
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from constructions.approx import mpnn_attention as A
from constructions.approx import mpnn_selection as S
from constructions.approx import universal as U
from constructions.check.contract import Case, Construction, fit_slope


def _size(built) -> tuple[int, int]:
    cfg = built.cfg
    if hasattr(cfg, "d_mlp"):
        return cfg.d_mlp, cfg.n_layers
    return cfg.width, cfg.n_layers


def sweep_frame(c: Construction, case: Case, parameter: str, values, case_id: int = 0, **extra) -> pd.DataFrame:
    """Build and measure ``c`` on one case at every value of ``parameter``."""
    rows = []
    for value in values:
        swept = Case({**case.params, parameter: value}, case.x, case.y, case.x_query, case.data)
        built = c.build(swept)
        width, depth = _size(built)
        rows.append({"construction": c.name, "case": case_id, "parameter": parameter, "value": float(value),
                     "error": max(c.errors(built, swept).values()), "bound": c.bound_for(swept),
                     "width": width, "depth": depth, **extra})
    return pd.DataFrame(rows)


def with_slopes(df: pd.DataFrame, axes: dict[str, str], stated: dict[str, float] | None = None) -> pd.DataFrame:
    """Add ``slope`` (fitted per group) and ``stated_slope``; ``axes`` maps parameter -> "log" / "linear"."""
    keys = [k for k in df.columns if k not in ("value", "error", "bound", "width", "depth")]
    parts = []
    for _, group in df.groupby(keys, sort=False, dropna=False):
        axis = axes[group["parameter"].iloc[0]]
        parts.append(group.assign(slope=fit_slope(list(group["value"]), list(group["error"]), axis)))
    out = pd.concat(parts, ignore_index=True)
    return out.assign(stated_slope=out["construction"].map(stated or {}))


def universal_approx_curves(seed: int = 0, n_cases: int = 3, lams=(2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0),
                            widths=(16, 32, 64, 128, 256, 512, 1024), width_lams=(4.0, 8.0, 40.0)) -> pd.DataFrame:
    """Error vs lam (ReLU target, MLP exact) and error vs m (cosine and abs targets) at several lam.
    Width rows carry ``target``, ``lam`` and the predicted plateau ``m_star``."""
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for i in range(n_cases):
        case = U.LAMBDA_SWEEP.sample(gen)
        frames.append(sweep_frame(U.LAMBDA_SWEEP, case, "lam", lams, i, target="relu", lam=math.nan, m_star=math.nan))
        for kind in ("cosine", "abs"):
            case = U._sampler(kind, 40.0, 16)(gen)
            R = case.params["target"].n_ridges
            for lam in width_lams:
                case.params["lam"] = lam
                m_star = U.plateau_width(case.params["target"], lam, U.diameter(case.data["X"]))
                frames.append(sweep_frame(U.WIDTH_SWEEP, case, "m", [m * R for m in widths], i,
                                          target=kind, lam=lam, m_star=m_star))
    df = pd.concat(frames, ignore_index=True)
    return with_slopes(df, {"lam": "linear", "m": "log"}, {"universal_approx_lambda": -1.0, "universal_approx_width": -2.0})


def mpnn_curves(seed: int = 0, n_cases: int = 3, widths=(4, 8, 16, 32, 64, 128, 256, 512),
                orders=(2, 4, 6, 8, 10), taus=(2.0, 4.0, 6.0, 8.0, 10.0, 12.0)) -> pd.DataFrame:
    """Error vs ReLU width m, Taylor order T, selection temperature tau (each row has its depth)."""
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for i in range(n_cases):
        frames.append(sweep_frame(A.LINEAR_RELU, A.LINEAR_RELU.sample(gen), "m", widths, i))
        frames.append(sweep_frame(A.SOFTMAX_TAYLOR, A.SOFTMAX_TAYLOR.sample(gen), "T", orders, i))
        frames.append(sweep_frame(S.SELECTION, S.SELECTION.sample(gen), "tau", taus, i))
    df = pd.concat(frames, ignore_index=True)
    stated = {A.LINEAR_RELU.name: -2.0, A.SOFTMAX_TAYLOR.name: A.remainder_slope(tuple(map(float, orders))),
              S.SELECTION.name: -1.0}
    return with_slopes(df, {"m": "log", "T": "linear", "tau": "linear"}, stated)
