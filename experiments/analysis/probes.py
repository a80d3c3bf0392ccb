"""Per-layer readouts and linear probes of the residual stream at the query token.

Two ways to read a layer l (0 = embedding, L = output):

``readout_nmse``   the model's own readout (final norm and unembedding) applied to layer l's residual
                   at the query token, scored as nmse = mean_b (yhat_b - y_b)^2 / d. For the GD
                   construction every layer's readout is that many GD steps' prediction.
``probe_r2[T]``    a linear probe (ridge with a tiny penalty, with intercept) fitted on one half of
                   the prompts from layer l's query residual to the target T, scored on the other
                   half as R^2 = 1 - SSE / SST (summed over the target's coordinates). Targets:
                     prediction  the model's final prediction (where is the answer formed?)
                     w           the weights that generated the prompt (min-norm least squares
                                 when they are not known)
                     Xty         X^T y / N;   XtX  the upper triangle of X^T X / N
                   R^2 near 1 means the layer holds the target linearly; 0 means no better than
                   the held-out mean (it can be negative).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from constructions.reference import algorithms as alg
from experiments.analysis.core import Learner, Prompts, frame, layer_states
from experiments.training import tasks as T

PROBE_TARGETS = ("prediction", "w", "Xty", "XtX")


def readout_nmse(learner: Learner, p: Prompts) -> pd.DataFrame:
    """``readout_nmse`` of every layer (see the module docstring)."""
    preds = layer_states(learner, p.x, p.y, p.x_query)[1]
    err = (preds - p.y_query).pow(2).mean(-1) / p.d
    return frame([{"run": learner.run, "model": learner.model, "layer": layer, "algorithm": "model",
                   "n_examples": p.n, "metric": "readout_nmse", "value": float(v)} for layer, v in enumerate(err)])


def probe_targets(learner: Learner, p: Prompts) -> dict[str, Tensor]:
    """Every target of PROBE_TARGETS as (B, k)."""
    S, b = alg.statistics(p.x, p.y)
    iu = torch.triu_indices(p.d, p.d)
    w = p.w if p.w is not None else alg.least_squares(p.x, p.y)
    final = layer_states(learner, p.x, p.y, p.x_query)[1][-1]
    return {"prediction": final[:, None], "w": w, "Xty": b, "XtX": S[:, iu[0], iu[1]]}


def fit_probe(h: Tensor, target: Tensor, lam: float = 1e-8) -> Tensor:
    """Ridge probe with intercept: h (B, D), target (B, k) -> coefficients (D + 1, k).
    The penalty lam * tr(H^T H) / D keeps it well posed when features are collinear."""
    H = torch.cat([h, torch.ones_like(h[:, :1])], dim=-1)
    G = H.T @ H
    G = G + lam * G.diagonal().mean().clamp(min=1e-30) * torch.eye(G.shape[0], dtype=G.dtype)
    return torch.linalg.solve(G, H.T @ target)


def probe_r2(coef: Tensor, h: Tensor, target: Tensor) -> float:
    """Held-out R^2 = 1 - SSE / SST, summed over the target's coordinates."""
    pred = torch.cat([h, torch.ones_like(h[:, :1])], dim=-1) @ coef
    sse = (target - pred).pow(2).sum()
    sst = (target - target.mean(0)).pow(2).sum()
    return float(1 - sse / sst) if sst > 1e-24 else float("nan")


def probes(learner: Learner, p: Prompts, targets=PROBE_TARGETS, fraction: float = 0.5) -> pd.DataFrame:
    """``probe_r2[T]`` for every layer and target: fitted on a ``fraction`` of the prompts, scored on
    the rest. Prompts of a kind without a linear weight (trees, networks, quadratics, mixtures: ``w``
    is NaN there) have no ``w`` target; the others are kept."""
    if p.task is not None and p.task.kind not in T.LINEAR_W_KINDS:
        targets = [name for name in targets if name != "w"]
    fit, held = p.split(fraction)
    h_fit, h_held = layer_states(learner, fit.x, fit.y, fit.x_query)[0], layer_states(learner, held.x, held.y,
                                                                                       held.x_query)[0]
    t_fit, t_held = probe_targets(learner, fit), probe_targets(learner, held)
    rows = []
    for name in targets:
        for layer in range(len(h_fit)):
            coef = fit_probe(h_fit[layer], t_fit[name])
            rows.append({"run": learner.run, "model": learner.model, "layer": layer, "algorithm": "model",
                         "n_examples": p.n, "metric": f"probe_r2[{name}]",
                         "value": probe_r2(coef, h_held[layer], t_held[name])})
    return frame(rows)
