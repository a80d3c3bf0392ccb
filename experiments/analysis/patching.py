"""Activation patching between two models of one shape (a construction and a trained model, two
seeds of a run, any two Learners whose hook points have equal shapes).

The source model runs once with a cache; then, for every (site, layer, positions[, head]), the
target model runs once on the same prompts with one forward hook that replaces that activation, at
those token positions, by the source's. All prompts go through in one batch: one forward per patch.

Sites (hook points of :func:`constructions.model.hook_names`; ``layer`` l counts applied blocks):
    resid_pre    blocks.{l}.hook_resid_pre    the stream entering block l
    attn_out     blocks.{l}.hook_attn_out     block l's attention output (all heads, after W_O)
    mlp_out      blocks.{l}.hook_mlp_out      block l's MLP output (models with an MLP only)
    resid_post   blocks.{l}.hook_resid_post   the stream leaving block l
    z            blocks.{l}.attn.hook_z       one head's mixed values (column ``head``)
Positions: ``query`` (the last token, where the prediction is read), ``examples`` (every other
token), ``all``.

Metrics (yhat_t, yhat_s: the target's and the source's prediction at the query; yhat_p: the patched
target's; sums over the B prompts):
    gap_closed          <yhat_p - yhat_t, yhat_s - yhat_t> / |yhat_s - yhat_t|^2: the least-squares
                        fraction of the gap the patch closes (1: the patched target predicts what the
                        source does; 0: no change; NaN when source and target agree on every prompt)
    prediction_change   mean (yhat_p - yhat_t)^2 / d
    delta_nmse          nmse(yhat_p) - nmse(yhat_t), nmse = mean (yhat - y)^2 / d: what the patch
                        does to the target's error against the true y

:func:`patching` returns the tidy frame (:data:`experiments.analysis.core.COLUMNS` with ``model`` =
the target, ``layer`` = l, plus ``source``, ``site``, ``positions``, ``head``).
:func:`aligned_construction` puts a construction into a trained model's config (exactly, see
:func:`experiments.analysis.interp.align`) so the two can be patched.

Glossary: K = 1 model, B prompts, T tokens, D residual width, H heads, Dh head width, L applied blocks.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import torch
from torch import Tensor

from constructions import model as M
from experiments.analysis import depth, interp
from experiments.analysis.core import Learner, Prompts, frame, query_nmse, tokens

SITES = ("resid_pre", "attn_out", "mlp_out", "resid_post", "z")
POSITIONS = ("query", "examples", "all")
HOOKS = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
         "resid_post": "hook_resid_post", "z": "attn.hook_z"}
EXTRA = ("source", "site", "positions", "head")


def hook_name(site: str, layer: int) -> str:
    """The forward hook name of ``site`` at applied block ``layer``."""
    if site not in HOOKS:
        raise ValueError(f"site must be one of {', '.join(SITES)}, got {site!r}")
    return f"blocks.{layer}.{HOOKS[site]}"


def position_index(positions: str, T: int) -> Tensor:
    """Token indices (long) of a position set in a prompt of T tokens whose last token is the query."""
    table = {"query": [T - 1], "examples": list(range(T - 1)), "all": list(range(T))}
    if positions not in table:
        raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
    return torch.tensor(table[positions], dtype=torch.long)


def check_patchable(source: Learner, target: Learner) -> None:
    """ValueError naming what differs if the two models' hook points cannot be swapped (format,
    widths, depth)."""
    if source.format != target.format:
        raise ValueError(f"cannot patch between token formats {source.format!r} and {target.format!r}")
    fields = ("d_in", "d_model", "n_heads", "d_head", "d_mlp", "mlp", "n_layers", "n_loops")
    a, b = source.cfg, target.cfg
    bad = [f"{f} ({getattr(a, f)} vs {getattr(b, f)})" for f in fields if getattr(a, f) != getattr(b, f)]
    if bad:
        raise ValueError(f"cannot patch between models of different shapes: {', '.join(bad)} "
                         f"(align a construction to the trained model's config first)")


def sites_of(cfg: M.ModelConfig, sites=SITES) -> list[tuple[str, int, int | None]]:
    """(site, layer, head or None) of every patch a model with this config has, in forward order."""
    known, out = set(M.hook_names(cfg)), []
    for layer in range(depth.applied_blocks(cfg)):
        for site in sites:
            if hook_name(site, layer) not in known:
                continue  # e.g. mlp_out of a model without an MLP
            heads = range(cfg.n_heads) if site == "z" else [None]
            out += [(site, layer, h) for h in heads]
    return out


def _replace(source_act: Tensor, index: Tensor, head: int | None):
    """A hook that writes the source's activation at token ``index`` (and ``head``) into the target's."""
    def hook(act: Tensor) -> Tensor:
        out = act.clone()
        if head is None:
            out[:, :, index] = source_act[:, :, index]
        else:
            out[:, :, index, head] = source_act[:, :, index, head]
        return out
    return hook


def source_cache(source: Learner, p: Prompts, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """(the source's predictions (B,), its activations at ``names``) from one forward."""
    run = M.forward(source.cfg, source.weights, tokens(source.format, p.x, p.y, p.x_query), cache=names)
    return run.out[0, :, -1, 0], run.cache


def patched_prediction(target: Learner, p: Prompts, name: str, source_act: Tensor, positions: str = "all",
                       head: int | None = None) -> Tensor:
    """The target's prediction (B,) with activation ``name`` replaced by ``source_act`` at ``positions``
    (and only ``head``, for ``attn.hook_z``): one forward over every prompt."""
    index = position_index(positions, source_act.shape[2])
    return depth.predictions(target, p, {name: _replace(source_act, index, head)})


def gap_closed(patched: Tensor, target: Tensor, source: Tensor) -> float:
    """<patched - target, source - target> / |source - target|^2 (NaN if source == target)."""
    gap = source - target
    size = float(gap.pow(2).sum())
    return math.nan if size == 0.0 else float(((patched - target) * gap).sum()) / size


def patching(source: Learner, target: Learner, p: Prompts, *, sites=SITES, positions=POSITIONS,
             heads: bool = True) -> pd.DataFrame:
    """Every patch from ``source`` into ``target`` (see the module docstring); ``heads=False`` leaves
    out the per-head ``z`` patches."""
    check_patchable(source, target)
    for s in sites:
        hook_name(s, 0)
    for where in positions:
        position_index(where, 2)
    plan = [(s, l, h) for s, l, h in sites_of(target.cfg, sites) if heads or s != "z"]
    names = sorted({hook_name(s, l) for s, l, _ in plan})
    y_source, cache = source_cache(source, p, names)
    y_target = depth.predictions(target, p)
    base = {"run": target.run, "model": target.model, "algorithm": "model", "n_examples": p.n,
            "source": source.model}
    rows = []
    for site, layer, head in plan:
        name = hook_name(site, layer)
        for where in positions:
            y = patched_prediction(target, p, name, cache[name], where, head)
            at = {**base, "layer": layer, "site": site, "positions": where, "head": head}
            rows += [{**at, "metric": "gap_closed", "value": gap_closed(y, y_target, y_source)},
                     {**at, "metric": "prediction_change", "value": float((y - y_target).pow(2).mean() / p.d)},
                     {**at, "metric": "delta_nmse", "value": query_nmse(y, p) - query_nmse(y_target, p)}]
    out = frame(rows, extra=EXTRA)
    out["head"] = pd.array([None if pd.isna(h) else int(h) for h in out["head"]], dtype="Int64")
    return out


def aligned_construction(name: str, target: Learner, d: int, fit: Prompts) -> Learner:
    """Construction ``name`` (see :func:`experiments.analysis.depth.construction`) with the target's
    number of layers (a looped target loops it too), its weights aligned into the target's config
    (ValueError naming the fields if that is not exact, e.g. a softmax or LayerNorm target) and the
    target's token format."""
    built = depth.construction(name, d, target.cfg.n_layers, fit)
    weights = interp.align(built.cfg, built.weights, target.cfg)
    return dataclasses.replace(built, cfg=target.cfg, weights=weights, format=target.format)
