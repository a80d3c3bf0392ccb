"""Error against in-context examples under test-time distribution shifts: one panel per shift, the
model beside the baselines (``ttb plot errors DIR --shift NAME[:FACTOR]``).

Statistics apart from drawing: :func:`shift_rows` picks and labels the rows of
:func:`experiments.analysis.shifts.shift_curves`; :func:`shift_panels` draws them, one
:func:`experiments.plots.core.error_curves` Axes per level of ``col`` (each curve one ``Line2D`` in
``ax.lines``, in hue order). :func:`errors` turns loaded runs into saved figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.analysis import runs as ar
from experiments.analysis import shifts as ashifts
from experiments.plots import core as plots

BASELINE_CURVES = ("ols", "ridge", "zero", "gd k=1", "gd k=8", "newton k=2", "newton k=8")  # as `ttb plot errors`


def shift_rows(data: pd.DataFrame, *, single_size: int | None = None, label: str = "") -> pd.DataFrame:
    """The model's rows and the BASELINE_CURVES rows, each with its ``curve`` label (the model's
    says "(trained at n = K only)" when ``single_size`` is K)."""
    data = data.assign(curve=plots.curve_labels(data))
    if single_size is not None:
        data.loc[data.algorithm == "model", "curve"] = f"{label} (trained at n = {single_size} only)"
    return data[(data.algorithm == "model") | data.curve.isin(BASELINE_CURVES)]


def shift_panels(data: pd.DataFrame, *, col: str = "shift", x: str = "n_examples", y: str = "value",
                 hue: str = "curve", axes=None) -> list:
    """One error-curve panel per level of ``col`` (first-seen order), side by side with a shared
    y axis; the legend on the last panel only. Returns the list of Axes."""
    levels = list(pd.unique(data[col]))
    if axes is None:
        fig, axes = plt.subplots(1, len(levels), figsize=(3.6 * len(levels) + 1.6, 3.4), sharey=True, squeeze=False)
        axes = list(axes[0])
    for i, (level, ax) in enumerate(zip(levels, axes)):
        plots.error_curves(data[data[col] == level], x=x, y=y, hue=hue, ax=ax)
        ax.set_title(f"{col} {level}", fontsize="small")
        legend = ax.get_legend()
        if legend is not None and i < len(levels) - 1:
            legend.remove()
    axes[0].set_ylim(*plots.error_limits(data[y]))
    return axes


def errors(runs: list[ar.Run], out: Path, shifts, n_prompts: int = 512) -> list[Path]:
    """Per run: its error against n_examples under each shift (one panel each) with the baselines,
    saved as errors_shifted_<run>.png / .svg / .csv."""
    paths, names = [], ar.file_names(runs)
    for run in runs:
        sizes = ar.trained_sizes(run.config)
        data = pd.concat([ashifts.shift_curves(run, shift, n_prompts=n_prompts) for shift in shifts],
                         ignore_index=True)
        data = shift_rows(data, single_size=sizes[0] if len(sizes) == 1 else None, label=run.label)
        axes = shift_panels(data)
        axes[0].figure.suptitle(f"{run.label}: error vs in-context examples under shifts", fontsize="small")
        paths.append(plots.save(axes, data, Path(out) / f"errors_shifted_{names[run.run_id]}")[0])
    return paths
