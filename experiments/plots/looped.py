"""Error against loop iteration for looped models (``ttb plot loops``): the model after each loop,
GD and Newton after each iteration, least squares as a horizontal line, the loop counts the model
was trained on shaded (Yang et al. 2023, figure 3's layout).

Drawing follows :mod:`experiments.plots.core`: each iterative curve is one ``Line2D`` in ``ax.lines``
(models first, then references, in the frame's order) with its 95% band across prompt batches in
``ax.collections``; then one horizontal line per closed form; the trained range is the one patch in
``ax.patches``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.analysis import looped as al
from experiments.analysis import prompts
from experiments.analysis import runs as ar
from experiments.plots import core as plots

LOOP_FACTOR = 3  # default --max-loops: three times the trained loop count


def curve_names(data: pd.DataFrame) -> pd.Series:
    """The model's label for model rows, the algorithm's name for the others."""
    return data["model"].where(data["algorithm"] == "model", data["algorithm"]).astype(str)


def loop_curves(data: pd.DataFrame, *, x: str = "step", y: str = "value", hue: str = "curve",
                trained: tuple[int, int] | None = None, ax=None):
    """Normalized squared error against the loop (model) or iteration (references) count, log y.
    Rows whose ``x`` is <NA> (closed forms) are drawn as horizontal lines at their mean; ``trained``
    (first, last) shades the loop counts the training loss saw."""
    if hue == "curve" and "curve" not in data:
        data = data.assign(curve=curve_names(data))
    iterative, closed = data[data[x].notna()], data[data[x].isna()]
    models = list(pd.unique(iterative.loc[iterative["algorithm"] == "model", hue].astype(str)))
    styles = {level: plots.curve_style(level, models) for level in pd.unique(data[hue].astype(str))}
    ax = plt.subplots(figsize=(8, 4))[1] if ax is None else ax  # room for the legend at the right
    ax = plots.lines(iterative.assign(**{x: iterative[x].astype(float)}), x=x, y=y, hue=hue, ax=ax, logy=True,
                     styles=styles)
    low, high = plots.error_limits(data[y])
    for level, group in closed.groupby(hue, sort=False):
        mean = float(group[y].mean())
        shown = f"{level} ({mean:.1e}, below the axis)" if mean < low else str(level)  # exact fits: ~1e-30
        ax.axhline(mean, label=shown, **{**styles[str(level)], "linestyle": "--"})
    if trained is not None:
        ax.axvspan(trained[0] - 0.5, trained[1] + 0.5, color="grey", alpha=0.15, lw=0, label="trained loops")
    ax.set_xlabel("loop (model) / iteration (algorithms)")
    ax.set_ylabel("squared error / d")
    ax.set_ylim(low, high)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax


def loops_frame(run: ar.Run, max_loops: int | None = None, n_prompts: int = 512, seed: int = 0) -> pd.DataFrame:
    """:func:`experiments.analysis.looped.loop_errors` of a trained run on its own task's prompts,
    up to ``max_loops`` (default LOOP_FACTOR times its n_loops)."""
    max_loops = max_loops or LOOP_FACTOR * run.config.model.n_loops
    p = prompts.prompts_for_task(run.config.task, n_prompts, seed=seed)
    return al.loop_errors(run.learner, p, max_loops)


def draw(runs: list[ar.Run], out: Path, max_loops: int | None = None, n_prompts: int = 512) -> list[Path]:
    """Per run: ``loops_<run>`` (PNG, SVG, CSV of the frame) and ``loops_<run>_convergence.csv``
    (:func:`experiments.analysis.looped.convergence`); returns the PNG paths."""
    paths, names, out = [], ar.file_names(runs), Path(out)
    for run in runs:
        data = loops_frame(run, max_loops, n_prompts)
        trained = al.trained_loops(run.config)
        ax = loop_curves(data, trained=trained)
        ax.set_title(f"{run.label}: error per loop (trained {trained[0]}-{trained[1]})", fontsize="small")
        stem = out / f"loops_{names[run.run_id]}"
        paths.append(plots.save(ax, data, stem)[0])
        al.convergence(data, trained).to_csv(stem.with_name(stem.name + "_convergence.csv"), index=False)
    return paths
