"""Figures of the in-context task experiments (noisy regression, noise mixtures, task pools,
representations), in the manner of :mod:`experiments.plots.core`: ``f(data, *, x, y, hue, ax=None) -> Axes``
on the tidy tables of :mod:`experiments.analysis.icl`.

Statistics apart from drawing: :func:`closest_modes`, :func:`oracle_rows`, :func:`pool_rows` and
:func:`probe_rows` pick and summarise rows; the drawing functions only draw them. Artists, as in
``plots``: each curve is one ``Line2D`` in ``ax.lines`` (hue order), each 95% band across runs one
``PolyCollection`` in ``ax.collections``.

The last section turns loaded runs into saved figures for ``ttb plot noise|pool|representation``
(registered in ``analysis_figures.DRAW``); each refuses runs of a task kind it does not draw, naming the kinds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.analysis import icl as ai
from experiments.analysis import runs as ar
from experiments.plots import core as plots

PROBE_TARGETS = {"probe_r2[phi]": "Phi(x_q)", "probe_r2[feature_ridge]": "feature ridge"}
POOL_CURVES = ("model", "pool_posterior", "bayes_ridge")


# ----------------------------------------------------------------------------------------------
# Statistics (no drawing)


def algorithm_order(data: pd.DataFrame, *, x: str = "noise_std", y: str = "closest_algorithm") -> list[str]:
    """The algorithms of column ``y`` ordered by the mean ``x`` at which they are closest (ties by
    name): at low noise least squares comes first, at high noise the stronger ridges."""
    mean_x = data.groupby(y)[x].mean().reset_index()
    return list(mean_x.sort_values([x, y])[y])


def closest_modes(data: pd.DataFrame, *, x: str = "noise_std", y: str = "closest_algorithm",
                  hue: str = "n_layers") -> pd.DataFrame:
    """Per (hue, x): the most frequent closest algorithm across runs (seeds; ties by name), its
    ``position`` in :func:`algorithm_order` and the ``share`` of runs that agree with it."""
    order = algorithm_order(data, x=x, y=y)
    counts = data.groupby([hue, x, y]).size().rename("count").reset_index()
    counts = counts.sort_values([hue, x, "count", y], ascending=[True, True, False, True])
    top = counts.groupby([hue, x], as_index=False).first()
    total = data.groupby([hue, x]).size().rename("total").reset_index()
    top = top.merge(total, on=[hue, x])
    return top.assign(position=top[y].map(order.index), share=top["count"] / top["total"])


def oracle_rows(table: pd.DataFrame) -> pd.DataFrame:
    """nmse rows of ``noise_level_table`` tables (with an ``n_layers`` column), each labelled by
    ``curve``: "model L<depth>" for models, the algorithm's name for references."""
    rows = table[table.metric == "nmse"]
    depth = rows["n_layers"].astype("Int64").astype(str)
    curve = ("model L" + depth).where(rows.algorithm == "model", rows.algorithm)
    return rows.assign(curve=curve)


def pool_rows(table: pd.DataFrame) -> pd.DataFrame:
    """nmse rows of ``pool_table`` tables (with a ``pool_size`` column) for the model, the pool
    posterior and Bayes ridge."""
    return table[(table.metric == "nmse") & table.algorithm.isin(POOL_CURVES)]


def probe_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Probe rows of ``representation_table`` tables (with a ``phi_depth`` column), each labelled
    by ``target``: "Phi(x_q), Phi depth 2" or "feature ridge, Phi depth 2"."""
    rows = table[table.metric.isin(list(PROBE_TARGETS))]
    depth = rows["phi_depth"].astype("Int64").astype(str)
    return rows.assign(target=rows.metric.map(PROBE_TARGETS) + ", Phi depth " + depth)


# ----------------------------------------------------------------------------------------------
# Drawing


def closest_algorithm(data: pd.DataFrame, *, x: str = "noise_std", y: str = "closest_algorithm",
                      hue: str = "n_layers", ax=None):
    """Closest algorithm against ``x``, one line per ``hue`` level (the most frequent algorithm
    across seeds, :func:`closest_modes`); the y ticks name the algorithms."""
    ax = plt.subplots(figsize=(5, 3.6))[1] if ax is None else ax
    modes = closest_modes(data, x=x, y=y, hue=hue)
    for level, part in modes.groupby(hue, sort=True):
        ax.plot(part[x].astype(float), part["position"], marker="o", label=str(level))
    order = algorithm_order(data, x=x, y=y)
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(-0.5, len(order) - 0.5)
    ax.set_xlabel(x)
    ax.set_ylabel("closest algorithm")
    ax.legend(title=hue, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def noise_closest(data: pd.DataFrame, *, x: str = "noise_std", hue: str = "n_layers"):
    """Two panels from ``closest_table`` rows: the closest algorithm and the model's prediction
    difference to it, against the noise level, one line per depth. Returns the two Axes."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    closest_algorithm(data, x=x, hue=hue, ax=axes[0])
    plots.lines(data, x=x, y="prediction_difference", hue=hue, ax=axes[1], logy=True, marker="o")
    axes[1].set_ylabel("prediction difference / d")
    return list(axes)


def oracle_gap(data: pd.DataFrame, *, x: str = "noise_std", y: str = "value", hue: str = "curve", ax=None):
    """nmse per noise level of the models (one line per depth) against the per-noise Bayes oracle
    and the mixture posterior (rows from :func:`oracle_rows`)."""
    ax = plots.lines(data, x=x, y=y, hue=hue, ax=ax, logy=True, marker="o")
    ax.set_ylabel("squared error / d")
    ax.set_ylim(*plots.error_limits(data[y]))
    return ax


def pool_errors(data: pd.DataFrame, *, x: str = "pool_size", y: str = "value", hue: str = "algorithm",
                col: str = "prompts"):
    """nmse against pool size (log x), one panel per ``col`` level (prompts from the pool, fresh
    Gaussian prompts), one line per algorithm (rows from :func:`pool_rows`). Returns the Axes."""
    levels = list(pd.unique(data[col]))
    sizes = sorted(pd.unique(data[x]))
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.6), squeeze=False, sharey=True)
    for ax, level in zip(axes[0], levels):
        plots.lines(data[data[col] == level], x=x, y=y, hue=hue, ax=ax, logy=True, marker="o")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_ylim(*plots.error_limits(data[y]))  # exact fits (1e-28) would squash the curves
        ax.set_title(f"{col}: {level}", fontsize="small")
        ax.set_ylabel("squared error / d")
    return list(axes[0])


def representation_probes(data: pd.DataFrame, *, x: str = "layer", y: str = "value", hue: str = "target", ax=None):
    """Held-out probe R^2 per layer of Phi(x_q) and of the feature-ridge answer (rows from
    :func:`probe_rows`): which layers compute Phi(x), which fit w."""
    ax = plots.probe_quality(data, x=x, y=y, hue=hue, ax=ax)
    ax.set_xticks(sorted(pd.unique(data[x].astype(int))))
    return ax


# ----------------------------------------------------------------------------------------------
# Figures of runs (``ttb plot noise|pool|representation DIR``)

NOISE_KINDS = ("isotropic", "noise_mixture")


def require_kinds(runs, kinds: tuple[str, ...], plot: str) -> None:
    """ValueError naming the task kinds found when some run's ``task.kind`` is not in ``kinds``."""
    found = sorted({r.config.task.kind for r in runs})
    other = [k for k in found if k not in kinds]
    if other:
        raise ValueError(f"ttb plot {plot} draws runs of task.kind {' or '.join(kinds)}, but the directory "
                         f"holds runs of task.kind {', '.join(other)} (use the plot kind of that task)")


def _tables(runs, n_prompts: int) -> pd.DataFrame:
    parts = [ai.run_table(run, n_prompts=n_prompts).assign(
        n_layers=run.config.model.n_layers, pool_size=run.config.task.pool_size,
        phi_depth=run.config.task.phi_depth) for run in runs]
    return pd.concat(parts, ignore_index=True)


def _closest(runs, n_prompts: int) -> pd.DataFrame:
    summaries = [s for run in runs for s in ar.compare_runs(run.directory, ai.NOISY_ALGORITHMS,
                                                            n_prompts=n_prompts)[0]]
    return ai.closest_table(summaries, {run.run_id: run.config for run in runs})


def noise(runs, out: Path, n_prompts: int = 512) -> list[Path]:
    """Noisy regression runs: closest algorithm and prediction difference vs noise level per depth
    (``noise_closest``); noise-mixture runs: nmse per noise level vs the Bayes oracle (``noise_mixture``)."""
    require_kinds(runs, NOISE_KINDS, "noise")
    paths, out = [], Path(out)
    noisy = [r for r in runs if r.config.task.kind == "isotropic"]
    mixture = [r for r in runs if r.config.task.kind == "noise_mixture"]
    if noisy:
        data = _closest(noisy, n_prompts)
        axes = noise_closest(data)
        axes[0].figure.suptitle("which algorithm the trained model is closest to", fontsize="small")
        paths.append(plots.save(axes, data, out / "noise_closest")[0])
    if mixture:
        data = oracle_rows(_tables(mixture, n_prompts))
        ax = oracle_gap(data)
        ax.set_title("noise mixture: model vs per-noise Bayes oracle", fontsize="small")
        paths.append(plots.save(ax, data, out / "noise_mixture")[0])
    return paths


def pool(runs, out: Path, n_prompts: int = 512) -> list[Path]:
    """Task-pool runs: nmse of model, pool posterior and Bayes ridge vs pool size, on pool prompts
    and on fresh Gaussian prompts."""
    require_kinds(runs, ("pool",), "pool")
    data = pool_rows(_tables(runs, n_prompts))
    axes = pool_errors(data)
    axes[0].figure.suptitle("task pool: pool posterior or ridge?", fontsize="small")
    return [plots.save(axes, data, Path(out) / "pool")[0]]


def representation(runs, out: Path, n_prompts: int = 512) -> list[Path]:
    """Representation runs: per-layer probe R^2 of Phi(x_q) and of the feature-ridge answer."""
    require_kinds(runs, ("representation",), "representation")
    data = probe_rows(_tables(runs, n_prompts))
    ax = representation_probes(data)
    ax.set_title("which layers compute Phi(x), which fit w", fontsize="small")
    return [plots.save(ax, data, Path(out) / "representation")[0]]

