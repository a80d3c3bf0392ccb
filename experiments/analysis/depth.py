"""How a model uses its depth (after Csordás et al. 2025, "Do language models use their depth
efficiently?"), for constructed and trained models side by side.

Three views of every applied block l (``blocks.{l}``, l = 0 .. L-1; a looped model counts every
application), each a tidy frame with :data:`experiments.analysis.core.COLUMNS` (``model`` tells the
models apart):

:func:`contributions`   what block l writes into the residual stream, relative to what it reads.
    Extra column ``positions``: "all" (every token) or "query" (the last token). Metrics, for the
    block's attention output a_l, MLP output m_l and total update u_l = resid_post - resid_pre =
    a_l + m_l (a block without an MLP has m_l = 0):
        {attn,mlp,block}_norm_ratio   mean_tokens |f| / mean_tokens |resid_pre|
        {attn,mlp,block}_cosine       mean over tokens of cos(f, resid_pre) (0 where either is 0)
    A ratio near 0 is a block that barely writes; a cosine near -1 a block that erases what it reads.
:func:`skip_effects`    block l made the identity (resid_post := resid_pre, through forward's hooks):
        skip_prediction_change   mean (yhat_skip - yhat)^2 / d at the query
        skip_delta_nmse          nmse(yhat_skip) - nmse(yhat), nmse = mean (yhat - y)^2 / d
:func:`linear_maps`     a linear map (with intercept) fitted by least squares from the stream after
    layer l to the stream after layer l + k (layer 0 = embedding, as in ``core``), over the fit
    prompts' tokens; R^2 on held-out prompts. Extra column ``to_layer`` (= l + k). Metrics:
        linear_map_r2   1 - SSE / SST of the fitted map (SST around the held-out mean)
        identity_r2     the same with h_{l+k} predicted by h_l itself (what the blocks added)
    R^2 = 1 says layers l+1 .. l+k act, across prompts, as one linear map of the stream.

:func:`depth_use` runs all three on several learners; :func:`construction` builds a registered
construction as a :class:`~experiments.analysis.core.Learner` at a run's depth (``gd``: L steps at
the best step size for the fit prompts), so a trained model and its construction sit side by side.

Glossary: B prompts, T tokens, D residual width, L applied blocks, d input dimension.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor
from torch.nn import functional as F

from constructions import model as M
from constructions.icl import gd as gd_construction
from experiments.analysis import references
from experiments.analysis.core import Learner, Prompts, frame, query_nmse, tokens

COMPONENTS = ("attn", "mlp", "block")
TINY = 1e-300  # guards a division by a norm that is exactly zero (an all-zero stream)


def applied_blocks(cfg: M.ModelConfig) -> int:
    """L: blocks applied in one forward pass (n_layers times n_loops)."""
    return cfg.n_layers * cfg.n_loops


def _residual_only(cfg: M.ModelConfig, what: str) -> None:
    if not cfg.residual or cfg.mlp_input == "concat":
        raise ValueError(f"{what} needs a residual stream (model config residual=True, mlp_input='residual'), "
                         f"got residual={cfg.residual}, mlp_input={cfg.mlp_input!r}")


def _base(learner: Learner, p: Prompts) -> dict:
    return {"run": learner.run, "model": learner.model, "algorithm": "model", "n_examples": p.n}


def predictions(learner: Learner, p: Prompts, hooks: dict | None = None) -> Tensor:
    """The model's prediction at the query token, (B,), optionally under forward ``hooks``."""
    out = M.forward(learner.cfg, learner.weights, tokens(learner.format, p.x, p.y, p.x_query), hooks=hooks)
    return out.out[0, :, -1, 0]


# ----------------------------------------------------------------------------------------------
# Contributions


def block_updates(learner: Learner, p: Prompts) -> dict[str, Tensor]:
    """Per applied block, stacked over blocks: ``resid_pre``, ``attn_out``, ``mlp_out`` (zeros
    without an MLP) and ``resid_post``, each (L, B, T, D); resid_post - resid_pre = attn_out + mlp_out."""
    cfg = learner.cfg
    _residual_only(cfg, "block_updates")
    L = applied_blocks(cfg)
    names = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "resid_post": "hook_resid_post"}
    if cfg.mlp != "none":
        names["mlp_out"] = "hook_mlp_out"
    wanted = [f"blocks.{l}.{hook}" for l in range(L) for hook in names.values()]
    cache = M.forward(cfg, learner.weights, tokens(learner.format, p.x, p.y, p.x_query), cache=wanted).cache
    out = {key: torch.stack([cache[f"blocks.{l}.{hook}"][0] for l in range(L)]) for key, hook in names.items()}
    out.setdefault("mlp_out", torch.zeros_like(out["attn_out"]))
    return out


def _cosine(f: Tensor, h: Tensor) -> Tensor:
    """cos(f, h) over the last axis, 0 where either vector is 0."""
    return F.cosine_similarity(f, h, dim=-1, eps=TINY)


def contributions(learner: Learner, p: Prompts) -> pd.DataFrame:
    """Norm ratio and cosine of each block's attention, MLP and total update against the residual
    it reads, over all tokens and at the query (see the module docstring)."""
    u = block_updates(learner, p)
    parts = {"attn": u["attn_out"], "mlp": u["mlp_out"], "block": u["resid_post"] - u["resid_pre"]}
    rows, base = [], _base(learner, p)
    for positions, cut in (("all", slice(None)), ("query", slice(-1, None))):
        h = u["resid_pre"][:, :, cut]  # (L, B, T', D)
        h_norm = h.norm(dim=-1).flatten(1).mean(1)  # (L,)
        for name in COMPONENTS:
            f = parts[name][:, :, cut]
            ratio = f.norm(dim=-1).flatten(1).mean(1) / h_norm.clamp(min=TINY)
            cos = _cosine(f, h).flatten(1).mean(1)
            for layer in range(len(h)):
                rows.append({**base, "layer": layer, "metric": f"{name}_norm_ratio", "value": float(ratio[layer]),
                             "positions": positions})
                rows.append({**base, "layer": layer, "metric": f"{name}_cosine", "value": float(cos[layer]),
                             "positions": positions})
    return frame(rows, extra=("positions",))


# ----------------------------------------------------------------------------------------------
# Skipping a block


def skip_hooks(layer: int) -> dict:
    """Forward hooks that make applied block ``layer`` the identity: its resid_post := its resid_pre."""
    kept = {}

    def keep(h: Tensor) -> None:
        kept["pre"] = h

    return {f"blocks.{layer}.hook_resid_pre": keep, f"blocks.{layer}.hook_resid_post": lambda h: kept["pre"]}


def skip_predictions(learner: Learner, p: Prompts) -> Tensor:
    """(L, B): the prediction at the query with each applied block skipped in turn (one forward each,
    every prompt at once)."""
    _residual_only(learner.cfg, "skip_predictions")
    return torch.stack([predictions(learner, p, skip_hooks(l)) for l in range(applied_blocks(learner.cfg))])


def skip_effects(learner: Learner, p: Prompts) -> pd.DataFrame:
    """skip_prediction_change and skip_delta_nmse of every block (see the module docstring)."""
    full, skipped = predictions(learner, p), skip_predictions(learner, p)
    rows, base = [], _base(learner, p)
    for layer, pred in enumerate(skipped):
        rows.append({**base, "layer": layer, "metric": "skip_prediction_change",
                     "value": float((pred - full).pow(2).mean() / p.d)})
        rows.append({**base, "layer": layer, "metric": "skip_delta_nmse", "value": query_nmse(pred, p) - query_nmse(full, p)})
    return frame(rows)


# ----------------------------------------------------------------------------------------------
# Linear maps between layers


def residual_stack(learner: Learner, p: Prompts) -> Tensor:
    """The stream after every layer, (L+1, B, T, D) (0 = embedding)."""
    run = M.forward(learner.cfg, learner.weights, tokens(learner.format, p.x, p.y, p.x_query), residuals=True)
    return torch.stack([r[0] for r in run.residuals])


def fit_linear_map(h_from: Tensor, h_to: Tensor) -> Tensor:
    """Least-squares (D+1, D') map with intercept from rows of h_from (n, D) to h_to (n, D')."""
    X = torch.cat([h_from, torch.ones_like(h_from[:, :1])], dim=1)
    return torch.linalg.lstsq(X, h_to, driver="gelsd").solution


def r2(pred: Tensor, target: Tensor) -> float:
    """1 - SSE / SST over every coordinate (SST around target's column means); 1.0 for a constant
    target predicted exactly."""
    sse = (pred - target).pow(2).sum()
    sst = (target - target.mean(0)).pow(2).sum()
    if float(sst) == 0.0:
        return 1.0 if float(sse) == 0.0 else float("-inf")
    return float(1 - sse / sst)


def linear_maps(learner: Learner, p: Prompts, *, max_gap: int | None = None, fraction: float = 0.5
                ) -> pd.DataFrame:
    """linear_map_r2 and identity_r2 from every layer l to every l + k, 1 <= k <= max_gap (default
    all), fitted on the first ``fraction`` of the prompts, scored on the rest (all their tokens)."""
    if not 0 < fraction < 1 or p.B < 2:
        raise ValueError(f"linear_maps needs 0 < fraction < 1 and at least 2 prompts, got fraction={fraction}, "
                         f"B={p.B}")
    h = residual_stack(learner, p)
    cut = max(1, min(p.B - 1, int(round(p.B * fraction))))
    fit, test = h[:, :cut].flatten(1, 2), h[:, cut:].flatten(1, 2)  # (L+1, n, D)
    top = len(h) - 1 if max_gap is None else max_gap
    rows, base = [], _base(learner, p)
    for l in range(len(h)):
        for to in range(l + 1, min(len(h), l + top + 1)):
            A = fit_linear_map(fit[l], fit[to])
            pred = torch.cat([test[l], torch.ones_like(test[l][:, :1])], dim=1) @ A
            rows.append({**base, "layer": l, "metric": "linear_map_r2", "value": r2(pred, test[to]), "to_layer": to})
            rows.append({**base, "layer": l, "metric": "identity_r2", "value": r2(test[l], test[to]), "to_layer": to})
    out = frame(rows, extra=("to_layer",))
    out["to_layer"] = pd.array(out["to_layer"].tolist(), dtype="Int64")
    return out


# ----------------------------------------------------------------------------------------------
# Several models side by side


def depth_use(learners: list[Learner], p: Prompts, *, max_gap: int | None = None) -> dict[str, pd.DataFrame]:
    """``{"contributions", "skips", "maps"}``: each view of every learner, concatenated (column
    ``model`` tells them apart). Learners without a residual stream are refused (ValueError)."""
    parts = {"contributions": [], "skips": [], "maps": []}
    for learner in learners:
        parts["contributions"].append(contributions(learner, p))
        parts["skips"].append(skip_effects(learner, p))
        parts["maps"].append(linear_maps(learner, p, max_gap=max_gap))
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}


def _gd(d: int, n_layers: int, fit: Prompts):
    return gd_construction.build(d, n_layers, references.best_eta(fit, n_layers))


# name -> (d, applied blocks, fit prompts) -> Built: constructions that can take any depth
CONSTRUCTIONS = {"gd": _gd}


def construction(name: str, d: int, n_layers: int, fit: Prompts) -> Learner:
    """Registered construction ``name`` (a key of :data:`CONSTRUCTIONS`) with ``n_layers`` layers for
    d-dimensional prompts, as a Learner labelled "<name> construction (<n_layers> layers)"."""
    if name not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {', '.join(CONSTRUCTIONS)}, got {name!r}")
    built = CONSTRUCTIONS[name](d, n_layers, fit)
    label = f"{name} construction ({n_layers} layer{'s' if n_layers != 1 else ''})"
    return Learner(built.cfg, built.weights, "example", model=label)
