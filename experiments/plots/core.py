"""Figures from the tidy analysis frames, in seaborn's manner: ``f(data, *, x, y, hue, ax=None) -> Axes``.

Statistics are computed apart from drawing (:func:`mean_band`, :func:`loglog_slope`), so a test can
check the numbers and then the artists: each curve is one ``Line2D`` in ``ax.lines`` (in hue
order), each confidence band one ``PolyCollection`` in ``ax.collections``; a heatmap is one
``QuadMesh`` in ``ax.collections`` with the best match per layer as the first line.
:func:`save` writes a figure as PNG and SVG with the tidy CSV it was drawn from beside it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from constructions.check.contract import fit_line

Z95 = 1.959963984540054  # two-sided 95% normal quantile

# One colour per algorithm on every figure (iterations of one algorithm share its colour and differ in
# line style); models take the remaining colours in order.
ALGORITHM_COLOURS = {"ols": "black", "least squares": "black", "ridge": "tab:brown", "bayes_ridge": "tab:brown",
                     "zero": "tab:gray", "gd": "tab:green", "newton": "tab:purple", "gd_plus_plus": "tab:olive",
                     "averaging": "tab:pink", "3-nn": "tab:cyan", "pool_posterior": "tab:red",
                     "mixture_posterior": "tab:red", "bayes_mixture": "tab:red", "knn": "tab:cyan",
                     "knn_distance": "darkcyan", "lasso": "sienna", "tree": "darkgreen", "deep_tree": "yellowgreen",
                     "boosting": "teal", "nn_gd": "magenta", "logistic": "indigo", "logistic_mean": "slateblue"}
MODEL_COLOURS = ("tab:blue", "tab:orange", "tab:red", "tab:olive", "navy", "darkgoldenrod")
ITERATION_STYLES = ("-", "--", ":", "-.")


def curve_style(label: str, models: list[str]) -> dict:
    """matplotlib style of one curve label ("gd k=8", "ols", or a model's label): the algorithm's
    colour with a line style per iteration, or the next model colour."""
    name, _, iteration = label.partition(" k=")
    if name in ALGORITHM_COLOURS:
        order = {"1": 0, "2": 1, "4": 2, "8": 3}.get(iteration, 0)
        return {"color": ALGORITHM_COLOURS[name], "linestyle": ITERATION_STYLES[order], "linewidth": 1.2}
    index = models.index(label) if label in models else len(models)
    return {"color": MODEL_COLOURS[index % len(MODEL_COLOURS)], "linewidth": 2.2}


# ----------------------------------------------------------------------------------------------
# Statistics (no drawing)


def mean_band(data: pd.DataFrame, *, x: str, y: str, hue: str | None) -> pd.DataFrame:
    """Per (hue, x): mean of y and the 95% normal band mean +- 1.96 sd / sqrt(n) across the rows
    that share (hue, x) (zero width where there is one row). Columns: hue, x, mean, lo, hi, n."""
    keys = [hue, x] if hue else [x]
    g = data.groupby(keys, sort=True, dropna=False)[y]
    out = g.agg(["mean", "std", "count"]).reset_index()
    half = Z95 * out["std"].fillna(0.0) / np.sqrt(out["count"])
    return out.assign(lo=out["mean"] - half, hi=out["mean"] + half).rename(columns={"count": "n"})


def loglog_slope(xs, ys, axis: str = "log") -> tuple[float, float]:
    """(slope, intercept) of log(y) against log(x) (axis "log") or against x (axis "linear"): the
    construction checks' own fit (``constructions.check.contract.fit_line``)."""
    return fit_line(np.asarray(xs, float), np.asarray(ys, float), axis)


def heat_table(data: pd.DataFrame, *, x: str, y: str, value: str) -> pd.DataFrame:
    """Pivot to a (y rows) x (x columns) table of the mean value."""
    return data.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index().sort_index(axis=1)


def _ax(ax):
    return plt.subplots(figsize=(5, 3.6))[1] if ax is None else ax


def _hue_levels(data: pd.DataFrame, hue: str | None) -> list:
    return [None] if hue is None else list(pd.unique(data[hue].astype(str)))


def _label(level) -> str:
    return "" if level is None else str(level)


# ----------------------------------------------------------------------------------------------
# Plots


def lines(data: pd.DataFrame, *, x: str, y: str = "value", hue: str | None = None, ax=None,
          band: bool = True, logy: bool = False, marker: str | None = None, styles: dict | None = None):
    """One line per hue level through the mean of y at each x, with a 95% band across the rows that
    share (hue, x) when there are several. On a log axis (``logy``) the band's lower edge is clipped
    at mean / 10: a band reaching zero cannot be drawn there. ``styles`` maps a hue level to
    matplotlib keyword arguments (colour, line style). A level with a single x is drawn as a marker."""
    ax = _ax(ax)
    data = data.assign(**{hue: data[hue].astype(str)}) if hue else data
    stats = mean_band(data, x=x, y=y, hue=hue)
    for level in _hue_levels(data, hue):
        s = stats if level is None else stats[stats[hue] == level]
        xs = s[x].astype(float).to_numpy()
        style = dict((styles or {}).get(level, {}))
        if len(xs) == 1:
            style.update(marker=marker or "o", markersize=7, linestyle="none")
        (line,) = ax.plot(xs, s["mean"].to_numpy(), marker=style.pop("marker", marker), label=_label(level), **style)
        if band and (s["n"] > 1).any():
            lo = np.maximum(s["lo"].to_numpy(), s["mean"].to_numpy() / 10) if logy else s["lo"].to_numpy()
            ax.fill_between(xs, lo, s["hi"].to_numpy(), color=line.get_color(), alpha=0.2, lw=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if hue:
        ax.legend(title=hue, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def error_curves(data: pd.DataFrame, *, x: str = "n_examples", y: str = "value", hue: str = "curve", ax=None):
    """Normalized squared error against the number of in-context examples: the model(s) and the
    baselines, 95% bands across prompt batches (and runs). ``hue="curve"`` labels each line by
    model or algorithm and iteration (:func:`curve_labels`)."""
    if hue == "curve" and "curve" not in data:
        data = data.assign(curve=curve_labels(data))
    models = list(pd.unique(data.loc[data["algorithm"] == "model", hue].astype(str))) if "algorithm" in data else []
    styles = {level: curve_style(level, models) for level in pd.unique(data[hue].astype(str))}
    ax = lines(data, x=x, y=y, hue=hue, ax=ax, logy=True, styles=styles)
    ax.set_ylabel("squared error / d")
    ax.set_ylim(*error_limits(data[y]))
    return ax


def error_limits(values, floor: float = 1e-3, ceiling: float = 10.0) -> tuple[float, float]:
    """y-limits for error curves: the data's range clipped to [floor, ceiling] (exact fits reach
    1e-30 and a diverging GD at few examples 1e4; neither should squash the curves in between)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    lo = floor if not len(v) else max(floor, v.min() / 2)
    hi = ceiling if not len(v) else min(ceiling, v.max() * 2)
    return (lo, max(hi, lo * 10))


def curve_labels(data: pd.DataFrame) -> pd.Series:
    """"model-name" for model rows, "gd k=4" for iterations, "ols" for closed forms."""
    it = data["iteration"].astype("Float64")
    is_model = data["algorithm"] == "model"
    named = np.where(is_model, data["model"].astype(str), data["algorithm"].astype(str))
    suffix = np.where(it.isna().to_numpy(na_value=True), "", " k=" + it.fillna(0).astype(int).astype(str))
    return pd.Series(named, index=data.index) + np.where(is_model, "", suffix)


def heatmap(data: pd.DataFrame, *, x: str = "iteration", y: str = "layer", hue: str = "value", ax=None,
            best: str = "max", cmap: str = "viridis"):
    """Layer-versus-iteration heatmap of ``hue`` (one QuadMesh) with the best iteration of every
    layer overlaid as white dots joined by a line (``ax.lines[0]``; best = "max" or "min")."""
    ax = _ax(ax)
    table = heat_table(data, x=x, y=y, value=hue)
    xs, ys, values = table.columns.to_numpy(float), table.index.to_numpy(float), table.to_numpy(float)
    mesh = ax.pcolormesh(_edges(xs), _edges(ys), values, cmap=cmap, shading="flat")
    pick = np.nanargmax if best == "max" else np.nanargmin
    ax.plot(xs[[pick(row) for row in values]], ys, "o-", color="white", mec="black", ms=5, label="best")
    ax.figure.colorbar(mesh, ax=ax, label=str(data["metric"].iloc[0]) if "metric" in data and len(data) else hue)
    ax.set_yticks(ys)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    return ax


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (unit width when there is one centre)."""
    if len(centers) == 1:
        return np.array([centers[0] - 0.5, centers[0] + 0.5])
    mids = (centers[1:] + centers[:-1]) / 2
    return np.concatenate([[2 * centers[0] - mids[0]], mids, [2 * centers[-1] - mids[-1]]])


def heatmaps(data: pd.DataFrame, *, col: str = "algorithm", x: str = "iteration", y: str = "layer",
             hue: str = "value", best: str = "max"):
    """One :func:`heatmap` per level of ``col``, side by side: returns the list of Axes."""
    levels = list(pd.unique(data[col]))
    fig, axes = plt.subplots(1, max(1, len(levels)), figsize=(4.2 * max(1, len(levels)), 3.6), squeeze=False)
    for ax, level in zip(axes[0], levels):
        heatmap(data[data[col] == level], x=x, y=y, hue=hue, ax=ax, best=best)
        ax.set_title(f"{col} = {level}")
    fig.tight_layout()
    return list(axes[0])


def rates(data: pd.DataFrame, *, x: str = "x", y: str = "value", hue: str = "model", ax=None,
          axis: str = "log", palette: dict | None = None):
    """Construction error against a swept parameter (temperature, width, depth): points per hue
    level and the fitted line, slope in the legend; log-log (axis "log") or semilog-y ("linear").
    A level with a single x value (one fixed size) gets its points and a tick at its smallest
    error, labelled "(one size)", instead of a line; non-finite errors are left out. ``palette``
    maps hue levels to colours (so a level keeps its colour across panels)."""
    ax = _ax(ax)
    for level in _hue_levels(data, hue):
        s = data if level is None else data[data[hue].astype(str) == level]
        s = s[np.isfinite(s[y].astype(float))]  # a diverged model (inf) has no place on a log axis
        color = (palette or {}).get(level)
        pts = ax.scatter(s[x].astype(float), s[y].astype(float), s=12, color=color)
        grid = np.unique(s[x].astype(float))
        if len(grid) < 2:  # one x value (a construction of fixed size): points, no line to fit
            ax.plot(grid, s[y].astype(float).min() * np.ones_like(grid), ls="none", marker="_", ms=10,
                    color=pts.get_facecolor()[0], label=f"{_label(level)} (one size)")
            continue
        slope, icept = loglog_slope(s[x], s[y], axis)
        fit = np.exp(icept + slope * (np.log(grid) if axis == "log" else grid))
        ax.plot(grid, fit, color=pts.get_facecolor()[0], label=f"{_label(level)} slope {slope:.2f}")
    ax.set_yscale("log")
    if axis == "log":
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
    metric = str(data["metric"].iloc[0]) if "metric" in data and len(data) else ""
    ax.set_xlabel(metric.removeprefix("error vs ") if metric.startswith("error vs ") else x)
    ax.set_ylabel("error")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def probe_quality(data: pd.DataFrame, *, x: str = "layer", y: str = "value", hue: str = "metric", ax=None):
    """Held-out probe R^2 (and readouts) per layer, one line per target."""
    ax = lines(data, x=x, y=y, hue=hue, ax=ax, marker="o")
    ax.set_ylabel("held-out R^2")
    ax.axhline(1.0, color="grey", lw=0.5, ls=":")
    return ax


# ----------------------------------------------------------------------------------------------
# Saving (the only I/O here)


def save(ax_or_fig, data: pd.DataFrame, path) -> list[Path]:
    """Write ``path``.png, ``path``.svg and ``path``.csv (the data drawn); close the figure."""
    fig = getattr(ax_or_fig, "figure", ax_or_fig)
    if isinstance(ax_or_fig, list):
        fig = ax_or_fig[0].figure
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".svg"), path.with_suffix(".csv")]
    with warnings.catch_warnings():  # a legend outside the axes may not fit; bbox_inches below takes it in
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.savefig(out[0], dpi=110, bbox_inches="tight")  # legends sit right of the axes: keep them in the file
    fig.savefig(out[1], bbox_inches="tight")
    data.to_csv(out[2], index=False)
    plt.close(fig)
    return out
