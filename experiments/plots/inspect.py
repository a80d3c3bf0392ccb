"""Figures of activation patching and depth use (``experiments.analysis.patching`` and
``experiments.analysis.depth``), constructions and trained models side by side, in the manner of
:mod:`experiments.plots.core`: ``f(data, *, ..., ax=None) -> Axes``.

Statistics apart from drawing: :func:`site_labels`, :func:`patching_table` and :func:`map_table`
pivot the tidy frames; the drawing functions only draw them. Artists: a heatmap is one ``QuadMesh``
in ``ax.collections`` (its array the table, row by row); each curve is one ``Line2D`` in ``ax.lines``
(hue order, :func:`depth_lines`).

:func:`patching_figure` draws one heatmap (layers x sites) per (source -> target pair, position
set); :func:`depth_figure` the contribution norm ratio and cosine per layer, the skip effect per
layer and one R^2 matrix (layer l -> layer l + k) per model.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.analysis import patching as ap
from experiments.plots import core as plots

COMPONENT_STYLES = {"block": "-", "attn": "--", "mlp": ":"}


# ----------------------------------------------------------------------------------------------
# Statistics (no drawing)


def site_labels(data: pd.DataFrame) -> pd.Series:
    """"resid_pre", "attn_out", ... and "z[h]" for a per-head row."""
    heads = data["head"].astype("Int64")
    suffix = np.where(heads.isna().to_numpy(), "", "[" + heads.fillna(0).astype(int).astype(str) + "]")
    return data["site"].astype(str) + suffix


def _site_order(label: str) -> tuple:
    site, _, head = label.partition("[")
    return (ap.SITES.index(site) if site in ap.SITES else len(ap.SITES), int(head.rstrip("]") or -1))


def patching_table(data: pd.DataFrame, *, metric: str = "gap_closed") -> pd.DataFrame:
    """Layers (rows) x site labels (columns, in forward order: resid_pre, attn_out, mlp_out,
    resid_post, z[0], z[1], ...) of the mean ``metric`` (NaN where a model has no such site)."""
    rows = data[data["metric"] == metric]
    rows = rows.assign(site_label=site_labels(rows), layer=rows["layer"].astype(int))
    table = rows.pivot_table(index="layer", columns="site_label", values="value", aggfunc="mean", dropna=False)
    return table.sort_index()[sorted(table.columns, key=_site_order)]


def map_table(data: pd.DataFrame, *, metric: str = "linear_map_r2") -> pd.DataFrame:
    """From-layer (rows) x to-layer (columns) of the mean ``metric`` (NaN where to <= from)."""
    rows = data[data["metric"] == metric].astype({"layer": int, "to_layer": int})
    table = rows.pivot_table(index="layer", columns="to_layer", values="value", aggfunc="mean")
    return table.sort_index().sort_index(axis=1)


def color_limit(values, cap: float = 2.0) -> float:
    """Symmetric colour limit of a diverging map: the largest |value|, at least 1 (a gap closed
    exactly) and at most ``cap`` (a patch into a model whose prediction barely differs can overshoot
    by orders of magnitude; beyond the cap colours saturate)."""
    v = np.abs(np.asarray(values, float))
    v = v[np.isfinite(v)]
    return min(cap, max(1.0, float(v.max()))) if len(v) else 1.0


# ----------------------------------------------------------------------------------------------
# Drawing


def _mesh(ax, table: pd.DataFrame, **style):
    values = table.to_numpy(float)
    mesh = ax.pcolormesh(np.arange(values.shape[1] + 1) - 0.5, np.arange(values.shape[0] + 1) - 0.5,
                         np.ma.masked_invalid(values), shading="flat", **style)
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(values.shape[0]), [str(i) for i in table.index])
    return mesh


def patching_heatmap(data: pd.DataFrame, *, metric: str = "gap_closed", ax=None, limit: float | None = None):
    """One panel: layers x sites of ``metric`` (rows of one source -> target pair and one position
    set), diverging colours centred at 0 with limits +-``limit`` (default :func:`color_limit`)."""
    ax = plt.subplots(figsize=(5, 3.6))[1] if ax is None else ax
    table = patching_table(data, metric=metric)
    limit = color_limit(table.to_numpy()) if limit is None else limit
    mesh = _mesh(ax, table, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.figure.colorbar(mesh, ax=ax, label=metric, extend="both")
    ax.set_xlabel("site")
    ax.set_ylabel("layer (block)")
    return ax


def patching_figure(data: pd.DataFrame, *, metric: str = "gap_closed") -> list:
    """One :func:`patching_heatmap` per (source -> target pair, position set): rows are pairs,
    columns position sets, one colour scale for all. Returns the Axes, row by row."""
    pairs = list(pd.unique(data["source"].astype(str) + " -> " + data["model"].astype(str)))
    where = [w for w in ap.POSITIONS if w in set(data["positions"])]
    fig, axes = plt.subplots(len(pairs), len(where), figsize=(4.6 * len(where), 3.6 * len(pairs)), squeeze=False)
    limit = color_limit(data.loc[data["metric"] == metric, "value"])
    pair_of = data["source"].astype(str) + " -> " + data["model"].astype(str)
    for row, pair in zip(axes, pairs):
        for ax, positions in zip(row, where):
            patching_heatmap(data[(pair_of == pair) & (data["positions"] == positions)], metric=metric, ax=ax,
                             limit=limit)
            ax.set_title(f"{pair}\npatched at: {positions}", fontsize="small")
    return [ax for row in axes for ax in row]


def depth_lines(data: pd.DataFrame, *, metrics: tuple[str, ...], ax=None):
    """Per-layer curves of ``metrics`` (e.g. block/attn/mlp norm ratios), one colour per model and
    one line style per component (block solid, attn dashed, mlp dotted). A model without an MLP (its
    mlp metric 0 at every layer) draws the block only: its attention update is the block's. Lines in
    (model, metric) order."""
    rows = data[data["metric"].isin(metrics)]
    models = list(pd.unique(rows["model"].astype(str)))
    nonzero = rows.groupby(["model", "metric"])["value"].transform(lambda v: bool((v.abs() > 0).any()))
    rows = rows[nonzero.astype(bool)]
    with_mlp = set(rows.loc[rows["metric"].str.startswith("mlp_"), "model"])
    rows = rows[~(rows["metric"].str.startswith("attn_") & ~rows["model"].isin(with_mlp))]  # attn == block
    rows = rows.assign(curve=rows["model"].astype(str) + ": " + rows["metric"].str.split("_").str[0])
    order = {(m, k): (models.index(m), metrics.index(k)) for m, k in zip(rows["model"], rows["metric"])}
    rows = rows.assign(_order=[order[(m, k)] for m, k in zip(rows["model"], rows["metric"])]).sort_values("_order")
    styles = {c: {"color": plots.MODEL_COLOURS[models.index(c.rsplit(": ", 1)[0]) % len(plots.MODEL_COLOURS)],
                  "linestyle": COMPONENT_STYLES.get(c.rsplit(": ", 1)[1], "-")} for c in pd.unique(rows["curve"])}
    ax = plots.lines(rows.astype({"layer": int}), x="layer", hue="curve", ax=ax, band=False, marker="o",
                     styles=styles)
    ax.set_xticks(sorted(pd.unique(rows["layer"].astype(int))))
    ax.set_xlabel("layer (block)")
    return ax


def map_heatmap(data: pd.DataFrame, *, metric: str = "linear_map_r2", ax=None):
    """From-layer x to-layer matrix of held-out R^2 of the fitted linear map (one model's rows);
    colours from 0 to 1 (a negative R^2 shows as 0)."""
    ax = plt.subplots(figsize=(4, 3.6))[1] if ax is None else ax
    mesh = _mesh(ax, map_table(data, metric=metric), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.figure.colorbar(mesh, ax=ax, label=f"held-out {metric}")
    ax.set_xlabel("to layer l + k")
    ax.set_ylabel("from layer l")
    return ax


def depth_figure(frames: dict[str, pd.DataFrame], *, positions: str = "all") -> list:
    """Panels: contribution norm ratio per layer, its cosine with the incoming residual (both over
    ``positions``), the skip effect per layer (change of nmse), then one R^2 matrix per model.
    ``frames``: :func:`experiments.analysis.depth.depth_use`'s output. Returns the Axes."""
    contrib = frames["contributions"]
    contrib = contrib[contrib["positions"] == positions]
    models = list(pd.unique(frames["maps"]["model"].astype(str)))
    n = 3 + len(models)
    cols = min(n, 3)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(5.2 * cols, 3.8 * math.ceil(n / cols)),
                             squeeze=False)
    flat = [ax for row in axes for ax in row]
    depth_lines(contrib, metrics=("block_norm_ratio", "attn_norm_ratio", "mlp_norm_ratio"), ax=flat[0])
    flat[0].set(title=f"|update| / |residual| ({positions} tokens)", ylabel="norm ratio")
    depth_lines(contrib, metrics=("block_cosine", "attn_cosine", "mlp_cosine"), ax=flat[1])
    flat[1].set(title="cos(update, incoming residual)", ylabel="cosine")
    flat[1].axhline(0.0, color="grey", lw=0.5, ls=":")
    depth_lines(frames["skips"], metrics=("skip_delta_nmse",), ax=flat[2])
    flat[2].set(title="skipping the block: change of error", ylabel="nmse(skipped) - nmse")
    flat[2].set_yscale("symlog", linthresh=1e-2)  # one fragile block can cost 1e5, the others 1e-2
    for ax in flat[1:3]:  # one legend (the first panel's) names every curve's model
        ax.get_legend().remove()
    maps = frames["maps"]
    for ax, model in zip(flat[3:], models):
        map_heatmap(maps[maps["model"].astype(str) == model], ax=ax)
        ax.set_title(f"{model}: linear map R^2", fontsize="small")
    for ax in flat[n:]:
        ax.set_visible(False)
    return flat[:n]
