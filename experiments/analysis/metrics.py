"""The comparison metrics: a model (or one of its layers) against iterations of reference algorithms.

Every function returns a tidy frame (``experiments.analysis.core.COLUMNS``). Definitions, for B prompts
with targets y_b, the model's (or a layer's) prediction yhat_b, and an algorithm's iterate-k
prediction a_b = w_k . x_q (d the input dimension):

``nmse``                   normalized squared error  mean_b (yhat_b - y_b)^2 / d  (the zero predictor
                           scores 1 on the isotropic task with w ~ N(0, I); min-norm least squares
                           scores max(d - n, 0) / d without noise)
``median_nmse``            median_b (yhat_b - y_b)^2 / d: where a few prompts carry the mean (a
                           model polynomial in its inputs, as stacked linear attention is, can
                           answer a rare large-norm prompt with an error thousands of times the
                           typical one), the typical prompt's error
``prediction_difference``  mean_b (yhat_b - a_b)^2 / d
``error_similarity``       cosine between the residual vectors (yhat_b - y_b)_b and (a_b - y_b)_b over
                           the B prompts (Fu et al. 2023's similarity of errors)
``model_cosine``           mean_b cos(d yhat_b / d x_q, w_k): the model's gradient in the query (by
                           autograd) against the algorithm's (its weights, as it is linear in x_q)
``implicit_weight_r2``     fit yhat = w_hat . x_q + c by least squares on many queries of one prompt
                           (same context); R^2 of that fit, averaged over prompts (1: the model is an
                           affine function of the query)
``implicit_weight_difference``  mean_b |w_hat_b - w_k,b|^2 / d (the scale of nmse: |w|^2 / d ~ 1)
``best_iteration``         argmax_k error_similarity (argmin_k for a difference metric) per layer
``iterations_per_layer``   slope of best_iteration against layer (least squares; Newton: linear)
``log_iterations_per_layer``  slope of log(best_iteration) against layer (GD: exponential), over the
                           layers whose best iteration is at least 1
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from experiments.analysis.core import Learner, Prompts, frame, layer_predictions, prediction_gradients
from experiments.analysis.references import Reference

EPS = 1e-300
LOWER_IS_BETTER = ("prediction_difference", "implicit_weight_difference", "nmse", "median_nmse")


def _cos(a: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Cosine along ``dim``; 1 where both are zero (identical), 0 where only one is."""
    na, nb = a.norm(dim=dim), b.norm(dim=dim)
    c = (a * b).sum(dim) / (na * nb).clamp(min=EPS)
    both_zero = (na <= EPS) & (nb <= EPS)
    return torch.where(both_zero, torch.ones_like(c), c)


# ----------------------------------------------------------------------------------------------
# Error versus number of in-context examples


def _batch_means(err: Tensor, n_batches: int) -> Tensor:
    """(..., B) -> (..., n_batches): the mean of each of n_batches equal slices of the prompts."""
    B = err.shape[-1]
    n_batches = max(1, min(n_batches, B))
    keep = (B // n_batches) * n_batches
    return err[..., :keep].reshape(*err.shape[:-1], n_batches, -1).mean(-1)


def baseline_curves(p: Prompts, refs: list[Reference], iterations=(1, 2, 4, 8), n_batches: int = 8,
                    model: str = "") -> pd.DataFrame:
    """``nmse`` of every reference against n_examples = 1 .. N (every prefix at once).

    Each row is the mean over one of ``n_batches`` equal batches of prompts, so rows that share
    (algorithm, iteration, n_examples) are independent replicates (plots draw a band across them).
    Iterative references appear at the listed iterations that they have.
    """
    rows = []
    for ref in refs:
        pred = ref.prefix_predictions(p)[..., 1:]  # (I+1, B, N): n = 1 .. N
        err = (pred - p.y_query[:, None]).pow(2) / p.d  # (I+1, B, N)
        ks = [k for k in iterations if k < pred.shape[0]] if ref.iterative else [0]
        for k in ks:
            means = _batch_means(err[k].T, n_batches)  # (N, n_batches)
            rows += [{"model": model, "algorithm": ref.name, "iteration": k if ref.iterative else None,
                      "n_examples": n + 1, "metric": "nmse", "value": float(v)}
                     for n in range(p.n) for v in means[n]]
    return frame(rows)


def model_curve(learner: Learner, p: Prompts, n_batches: int = 8, layers: str = "last",
                n_values=None) -> pd.DataFrame:
    """``nmse`` of the model's prediction for the same queries with n = 1 .. N examples in context,
    or the ``n_values`` given (one forward pass per n; ``layers="all"`` adds every layer's readout)."""
    rows = []
    for n in (range(1, p.n + 1) if n_values is None else n_values):
        preds = layer_predictions(learner, p.crop(n))  # (L+1, B)
        err = (preds - p.y_query).pow(2) / p.d
        chosen = range(len(err)) if layers == "all" else [len(err) - 1]
        rows += [{"run": learner.run, "model": learner.model, "layer": layer, "algorithm": "model",
                  "n_examples": n, "metric": "nmse", "value": float(v)}
                 for layer in chosen for v in _batch_means(err[layer], n_batches)]
    return frame(rows)


# ----------------------------------------------------------------------------------------------
# Layer x iteration comparison at the full context


def _pairwise(preds: Tensor, grads: Tensor, a: Tensor, W: Tensor, p: Prompts) -> dict[str, Tensor]:
    """preds (L+1, B), grads (L+1, B, d), a reference's predictions (I+1, B) and gradients in x_q
    W (I+1, B, d) (its weights; NaN for a nonlinear one) -> metrics (L+1, I+1)."""
    diff = (preds[:, None, :] - a[None]).pow(2).mean(-1) / p.d
    sim = _cos((preds - p.y_query)[:, None, :], (a - p.y_query)[None], dim=-1)
    cos = _cos(grads[:, None], W[None], dim=-1).mean(-1)
    return {"prediction_difference": diff, "error_similarity": sim, "model_cosine": cos}


def compare(learner: Learner, p: Prompts, refs: list[Reference]) -> pd.DataFrame:
    """``prediction_difference``, ``error_similarity`` and ``model_cosine`` of every layer's
    readout against every iteration of every reference, at n_examples = N; plus each layer's
    ``nmse`` and ``median_nmse`` (algorithm "model")."""
    preds, grads = layer_predictions(learner, p), prediction_gradients(learner, p)
    base = {"run": learner.run, "model": learner.model, "n_examples": p.n}
    err = (preds - p.y_query).pow(2) / p.d  # (L+1, B)
    rows = [{**base, "layer": layer, "algorithm": "model", "metric": metric, "value": float(v)}
            for layer, e in enumerate(err) for metric, v in (("nmse", e.mean()), ("median_nmse", e.median()))]
    for ref in refs:
        for metric, table in _pairwise(preds, grads, ref.predictions(p), ref.query_gradients(p), p).items():
            rows += [{**base, "layer": layer, "algorithm": ref.name,
                      "iteration": k if ref.iterative else None, "metric": metric, "value": float(v)}
                     for (layer, k), v in np.ndenumerate(table.numpy())]
    return frame(rows)


def reference_nmse(p: Prompts, refs: list[Reference]) -> pd.DataFrame:
    """``nmse`` of every iterate of every reference at n_examples = N (the baselines' table)."""
    rows = []
    for ref in refs:
        err = (ref.predictions(p) - p.y_query).pow(2).mean(-1) / p.d
        rows += [{"algorithm": ref.name, "iteration": k if ref.iterative else None, "n_examples": p.n,
                  "metric": "nmse", "value": float(v)} for k, v in enumerate(err)]
    return frame(rows)


# ----------------------------------------------------------------------------------------------
# Implicit weights


def _repeat_with_queries(p: Prompts, n_prompts: int, n_queries: int, gen: torch.Generator) -> tuple[Prompts, Tensor]:
    """The first n_prompts contexts, each repeated with n_queries queries drawn from the inputs of
    all prompts (they share the task's input distribution): (prompts of size P*Q, queries (P, Q, d))."""
    P = min(n_prompts, p.B)
    pool = p.x.reshape(-1, p.d)
    queries = pool[torch.randint(len(pool), (P, n_queries), generator=gen)]  # (P, Q, d)
    rep = lambda t: t[:P].repeat_interleave(n_queries, dim=0)  # noqa: E731
    flat = queries.reshape(-1, p.d)
    return Prompts(rep(p.x), rep(p.y), flat, torch.zeros(len(flat), dtype=p.x.dtype)), queries


def fit_implicit_weights(preds: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
    """preds (..., P, Q), queries (P, Q, d) -> (w_hat (..., P, d), R^2 (..., P)) of yhat ~ w.x + c."""
    X = torch.cat([queries, torch.ones_like(queries[..., :1])], dim=-1)  # (P, Q, d+1)
    coef = torch.linalg.lstsq(X.expand(*preds.shape[:-1], *X.shape[-2:]), preds.unsqueeze(-1)).solution
    fitted = (X @ coef).squeeze(-1)
    sse = (preds - fitted).pow(2).sum(-1)
    sst = (preds - preds.mean(-1, keepdim=True)).pow(2).sum(-1)
    r2 = torch.where(sst > 1e-24, 1 - sse / sst.clamp(min=EPS), torch.ones_like(sst))
    return coef.squeeze(-1)[..., :-1], r2


def implicit_weights(learner: Learner, p: Prompts, refs: list[Reference], *, n_prompts: int = 32,
                     n_queries: int = 64, seed: int = 0) -> pd.DataFrame:
    """``implicit_weight_r2`` per layer and ``implicit_weight_difference`` per layer, reference and
    iteration (definitions in the module docstring); n_queries must exceed d."""
    if n_queries <= p.d:
        raise ValueError(f"n_queries must exceed d = {p.d} to fit w from the predictions, got {n_queries}")
    rep, queries = _repeat_with_queries(p, n_prompts, n_queries, torch.Generator().manual_seed(seed))
    P = queries.shape[0]
    preds = layer_predictions(learner, rep).reshape(-1, P, n_queries)  # (L+1, P, Q)
    w_hat, r2 = fit_implicit_weights(preds, queries)  # (L+1, P, d), (L+1, P)
    base = {"run": learner.run, "model": learner.model, "n_examples": p.n}
    rows = [{**base, "layer": layer, "algorithm": "model", "metric": "implicit_weight_r2", "value": float(v)}
            for layer, v in enumerate(r2.mean(-1))]
    for ref in (r for r in refs if r.linear):  # a nonlinear reference has no weights to compare
        W = ref.weights(p.x[:P], p.y[:P], False)  # (I+1, P, d)
        diff = (w_hat[:, None] - W[None]).pow(2).sum(-1).mean(-1) / p.d  # (L+1, I+1)
        rows += [{**base, "layer": layer, "algorithm": ref.name, "iteration": k if ref.iterative else None,
                  "metric": "implicit_weight_difference", "value": float(v)}
                 for (layer, k), v in np.ndenumerate(diff.numpy())]
    return frame(rows)


# ----------------------------------------------------------------------------------------------
# Best iteration per layer, the fitted relation, the closest algorithm


def best_iterations(cmp: pd.DataFrame, metric: str = "error_similarity") -> pd.DataFrame:
    """Per (run, model, algorithm, layer): the iteration that scores best on ``metric``
    (``best_iteration``) and that score (``best_<metric>``); iterative algorithms only."""
    sub = cmp[(cmp.metric == metric) & cmp.iteration.notna()]
    if sub.empty:
        return frame([])
    keys = ["run", "model", "algorithm", "layer", "n_examples"]
    lower = metric in LOWER_IS_BETTER
    idx = sub.groupby(keys, sort=True)["value"].idxmin() if lower else sub.groupby(keys, sort=True)["value"].idxmax()
    best = sub.loc[idx.values]
    it = best.assign(metric="best_iteration", value=best.iteration.astype(float))
    score = best.assign(metric=f"best_{metric}")
    return frame(pd.concat([it, score]).to_dict("records"))


def fit_relation(layers, iterations, kind: str) -> float:
    """Least-squares slope of iterations (kind "linear") or log(iterations) (kind "log") against
    layers; the log fit uses the layers whose best iteration is >= 1. NaN with < 2 usable points."""
    layers, its = np.asarray(layers, float), np.asarray(iterations, float)
    if kind == "log":
        keep = its >= 1
        layers, its = layers[keep], np.log(its[keep])
    if len(layers) < 2 or np.ptp(layers) == 0:
        return math.nan
    return float(np.polyfit(layers, its, 1)[0])


RELATION = {"newton": ("linear", "iterations_per_layer"), "gd": ("log", "log_iterations_per_layer"),
            "gd_plus_plus": ("log", "log_iterations_per_layer")}


def relations(best: pd.DataFrame) -> pd.DataFrame:
    """The fitted relation per (run, model, algorithm): linear for Newton, log for GD / GD++, both
    reported for any other iterative algorithm."""
    rows = []
    its = best[best.metric == "best_iteration"]
    for (run, model, name), g in its.groupby(["run", "model", "algorithm"], sort=True):
        g = g[g.layer > 0]  # layer 0 is the embedding: nothing computed yet
        kinds = [RELATION[name]] if name in RELATION else list(RELATION.values())[:2]
        for kind, metric in kinds:
            rows.append({"run": run, "model": model, "algorithm": name, "metric": metric,
                         "value": fit_relation(g.layer.astype(float), g.value, kind)})
    return frame(rows)


def closest_algorithm(cmp: pd.DataFrame) -> pd.DataFrame:
    """Per (run, model): at the output layer, the (algorithm, iteration) with the smallest
    ``prediction_difference``; one row per model with that difference as value."""
    sub = cmp[(cmp.metric == "prediction_difference")]
    sub = sub[sub.layer == sub.groupby(["run", "model"])["layer"].transform("max")]
    best = sub.loc[sub.groupby(["run", "model"], sort=True)["value"].idxmin().values]
    return frame(best.assign(metric="closest_prediction_difference").to_dict("records"))
