"""Trained and constructed weights in one weight space: alignment, interpolation, fine-tuning.

Interpolation needs both weight sets in ONE config (the straight line (1 - t) W_trained +
t W_constructed is only meaningful coordinate by coordinate). :func:`align` puts a construction
into a trained model's config when that is exact, i.e. when the padded model computes the same
function:

    may differ  layout (labels only); n_positions (a construction without learned positions gets
                zero position vectors); bias (missing biases become zero); n_heads, d_head, d_mlp
                (extra heads / head or MLP units get zero weights, which add nothing; for softmax
                the effective inverse temperature must stay the same); mlp "none" -> any MLP (zero
                weights add nothing); d_model when norm = "none" (extra residual coordinates stay
                zero; with a norm they would change the normalisation)
    must agree  d_in, d_out, n_layers, attention, mask, norm, final_norm, residual, qk_source,
                mlp_input, the MLP kind (when both have one), and the softmax temperature

Anything else raises ValueError naming the fields that differ: there is no exact way to compare
those weights coordinate by coordinate, and an inexact one would be misleading.

Metrics (tidy frames with an extra coordinate column):
``nmse`` along the path, with column ``t`` (t = 0 the first weights, t = 1 the second);
``relative_distance_moved`` = |theta_end - theta_start| / |theta_start| of training started from a
construction, and that run's ``nmse`` at the start and at the end (column ``step``).
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from constructions import model as M
from experiments.analysis.core import Learner, Prompts, frame, layer_predictions
from experiments.training.regression import make_trainer

PADDABLE = ("n_heads", "d_head", "d_mlp", "d_model")


def _mismatches(src: M.ModelConfig, dst: M.ModelConfig) -> list[str]:
    a, b = src.to_dict(), dst.to_dict()
    free = {"layout", "n_positions", "bias", "mlp", "beta", "norm_eps"} | set(PADDABLE)
    bad = [k for k in a if k not in free and a[k] != b[k]]
    bad += [k for k in PADDABLE if b[k] < a[k]]
    if src.norm != "none" and src.d_model != dst.d_model:
        bad.append("d_model (padding changes the norm)")
    if src.n_positions and src.n_positions != dst.n_positions:
        bad.append("n_positions")
    if src.bias and not dst.bias:
        bad.append("bias")
    if src.mlp != "none" and src.mlp != dst.mlp:
        bad.append("mlp")
    if src.attention == "softmax" and src.softmax_beta != dst.softmax_beta:
        bad.append("beta (effective softmax temperature)")
    return bad


def align(src_cfg: M.ModelConfig, w: M.Weights, dst_cfg: M.ModelConfig) -> M.Weights:
    """``w`` (config ``src_cfg``) as weights of ``dst_cfg`` computing the same function (see the
    module docstring for what may differ); ValueError naming the fields otherwise."""
    bad = _mismatches(src_cfg, dst_cfg)
    if bad:
        raise ValueError(f"cannot align weights: configs differ in {', '.join(bad)}; "
                         f"interpolation needs one config (see experiments.analysis.interp)")
    src = M.to_state_dict(w)
    out = M.to_state_dict(M.zeros(dst_cfg, w.K, dtype=w.W_E.dtype))
    for key, tensor in src.items():
        corner = tuple(slice(0, n) for n in tensor.shape)
        out[key][corner] = tensor
    return M.from_state_dict(out)


def mix(a: M.Weights, b: M.Weights, t: float) -> M.Weights:
    """(1 - t) a + t b, key by key (both in one config)."""
    sa, sb = M.to_state_dict(a), M.to_state_dict(b)
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError("mix: weights have different keys or shapes; align() them first")
    return M.from_state_dict({k: (1 - t) * sa[k] + t * sb[k] for k in sa})


def interpolation(learner: Learner, other: M.Weights, p: Prompts, ts=None) -> pd.DataFrame:
    """``nmse`` of the output along the straight line from the learner's weights (t = 0) to
    ``other`` (t = 1, same config), at n_examples = N; column ``t``."""
    ts = [i / 10 for i in range(11)] if ts is None else ts
    other = other.map(lambda x: x.to(torch.float64))
    rows = []
    for t in ts:
        moved = dataclasses.replace(learner, weights=mix(learner.weights, other, float(t)))
        pred = layer_predictions(moved, p)[-1]
        rows.append({"run": learner.run, "model": learner.model, "layer": learner.n_layers, "algorithm": "model",
                     "n_examples": p.n, "metric": "nmse", "value": float((pred - p.y_query).pow(2).mean() / p.d),
                     "t": float(t)})
    return frame(rows, extra=("t",))


def train_from(run_config, weights: M.Weights, *, device: str = "cpu"):
    """Train one run (an ``experiments.training.config.RunConfig``) starting from ``weights`` (its config,
    e.g. an aligned construction) instead of a random init. Returns (trained weights, frame with
    ``relative_distance_moved`` and the logged ``nmse`` per ``step``)."""
    trainer = make_trainer([run_config], device=device)
    state = trainer.initial_state()
    theta0 = trainer.spec.flatten(weights).to(dtype=trainer.dtype, device=trainer.device)
    state.tensors = state.tensors._replace(theta=theta0.clone())
    trainer.fit(state)
    moved = float((state.theta - theta0).norm() / theta0.norm().clamp(min=1e-30))
    rows = [{"run": run_config.run_id, "model": "from construction", "algorithm": "model", "metric": "nmse",
             "value": r["nmse"], "step": r["step"]} for r in state.metrics[0]]
    rows.append({"run": run_config.run_id, "model": "from construction", "algorithm": "model",
                 "metric": "relative_distance_moved", "value": moved, "step": state.step})
    return trainer.weights(state, 0), frame(rows, extra=("step",))
