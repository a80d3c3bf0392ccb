"""A looped transformer's prediction after every loop, beside the iterations of GD and Newton.

Yang et al. 2023 ("Looped transformers are better at learning learning algorithms") train one block
applied b times and ask whether the loop behaves like an iterative solver: does the error keep
falling, or at least stay put, when the model runs more loops than it was trained with? Here a
looped model (``ModelConfig.n_loops``; any model.py transformer can be run for any loop count) is
run once for ``max_loops`` loops and read out after each loop i (the model's own readout applied to
the stream after i loops at the query token), and compared with iteration k of GD and Newton and
with least squares, on the same prompts.

Frame (:func:`loop_errors`): the tidy columns of :mod:`experiments.analysis.core` plus ``step``,

    model rows      algorithm "model", step = the loop count i (0 = the embedding's readout),
                    layer = i * n_layers (blocks applied), iteration <NA>
    iterative refs  algorithm "gd" / "newton" ..., step = iteration = k (0 = w_0 = 0)
    closed forms    algorithm "ols" ..., step and iteration <NA>

with metric ``nmse`` = mean_b (yhat_b - y_b)^2 / d over one of ``n_batches`` equal batches of the
prompts (rows sharing (algorithm, step) are replicates for a band).

Glossary: B prompts, N context examples, d input dimension, L layers per loop, I loops / iterations.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor

from constructions import model as M
from constructions.reference import algorithms as alg
from experiments.analysis.core import Learner, Prompts, frame, tokens
from experiments.analysis.metrics import _batch_means
from experiments.analysis.references import Reference, reference

EXTRA = ("step",)
DEFAULT_REFERENCES = ("gd", "newton", "ols")


def loop_predictions(learner: Learner, p: Prompts, max_loops: int) -> Tensor:
    """The readout at the query after 0 .. max_loops loops: (max_loops + 1, B). One forward pass:
    the stream after loop i of a max_loops run is the stream of an i-loop run (input injection
    included), so every loop count is read from the same pass."""
    if not isinstance(max_loops, int) or isinstance(max_loops, bool) or max_loops < 1:
        raise ValueError(f"max_loops must be an int >= 1, got {max_loops!r}")
    cfg, w = learner.cfg, learner.weights
    run = M.forward(cfg, w, tokens(learner.format, p.x, p.y, p.x_query), residuals=True, loops=max_loops)
    h = torch.stack([run.residuals[i * cfg.n_layers][0, :, -1, :] for i in range(max_loops + 1)])  # (I+1, B, D)
    return M.readout(cfg, w, h.unsqueeze(0))[0, :, :, 0]


def default_references(max_loops: int) -> list[Reference]:
    """GD (eta = 1 / lambda_max(S) per prompt) and Newton (alpha = 1 / lambda_max(S)^2) for
    max_loops iterations, and minimum-norm least squares."""
    return [reference(name, n_iter=max_loops) for name in DEFAULT_REFERENCES]


def loop_errors(learner: Learner, p: Prompts, max_loops: int, refs: list[Reference] | None = None,
                n_batches: int = 8) -> pd.DataFrame:
    """``nmse`` of the model after every loop 0 .. max_loops and of every reference iteration
    0 .. max_loops (closed forms once): the frame of the module docstring."""
    refs = default_references(max_loops) if refs is None else refs
    err = (loop_predictions(learner, p, max_loops) - p.y_query).pow(2) / p.d  # (I+1, B)
    rows = [{"run": learner.run, "model": learner.model, "layer": i * learner.cfg.n_layers, "algorithm": "model",
             "step": i, "metric": "nmse", "n_examples": p.n, "value": float(v)}
            for i in range(max_loops + 1) for v in _batch_means(err[i], n_batches)]
    for ref in refs:
        ref_err = (alg.predict(ref.weights(p.x, p.y, False), p.x_query) - p.y_query).pow(2) / p.d  # (I'+1, B)
        for k in range(min(len(ref_err), max_loops + 1)):
            step = k if ref.iterative else None
            rows += [{"algorithm": ref.name, "iteration": step, "step": step, "metric": "nmse", "n_examples": p.n,
                      "value": float(v)} for v in _batch_means(ref_err[k], n_batches)]
    out = frame(rows, EXTRA)
    out["step"] = pd.array(out["step"].tolist(), dtype="Int64")
    return out


def trained_loops(config) -> tuple[int, int]:
    """(first, last) loop count whose readout the training loss saw (a RunConfig): with a window T
    and a curriculum from b_0, every count from max(1, b_0 - T + 1) up to model.n_loops; without a
    curriculum, the last T loops; without a window, the final loop alone."""
    b, tr = config.model.n_loops, config.train
    window = tr.loop_window or 1
    start = tr.loops_start or b
    return max(1, start - window + 1), b


def convergence(data: pd.DataFrame, trained: tuple[int, int]) -> pd.DataFrame:
    """Per model (and per reference): mean ``nmse`` at the last trained loop, the lowest over all
    loops and where, and at the largest loop count: columns model, algorithm, at_trained,
    best, best_step, at_max, max_step, ratio_max_to_trained (below 1: it kept converging past
    the trained loops; about 1: it stayed at a fixed point; above 1: it drifted away)."""
    sub = data[(data.metric == "nmse") & data["step"].notna()]
    means = sub.groupby(["model", "algorithm", "step"])["value"].mean()
    rows = []
    for (model, algorithm), s in means.groupby(level=[0, 1], sort=False):
        s = s.droplevel([0, 1]).sort_index()
        last = int(s.index.max())
        at_trained = float(s.get(trained[1], math.nan))
        rows.append({"model": model, "algorithm": algorithm, "at_trained": at_trained, "best": float(s.min()),
                     "best_step": int(s.idxmin()), "at_max": float(s[last]), "max_step": last,
                     "ratio_max_to_trained": float(s[last]) / at_trained if 0 < at_trained < math.inf else math.nan})
    return pd.DataFrame(rows)
