"""The figure of `ttb ood`: relative error against the test range c, one panel per model kind."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def error_vs_c(table: pd.DataFrame):
    """Median error (markers) and worst error (dashed) versus c, log scale, one panel per model
    kind side by side with a shared y axis; one colour per task (and n when there are several).
    ``table``: the rows of ``experiments.ood.experiment.summarize``. Returns the Figure."""
    kinds = list(pd.unique(table["model_kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.4 * len(kinds), 3.6), sharey=True, squeeze=False)
    label = _curve_label(table)
    for ax, kind in zip(axes[0], kinds):
        part = table[table["model_kind"] == kind]
        for i, (name, curve) in enumerate(part.groupby(label.loc[part.index], sort=True)):
            curve = curve.sort_values("c")
            (line,) = ax.plot(curve["c"], curve["median_error"], marker="o", ms=4, label=name, color=f"C{i}")
            ax.plot(curve["c"], curve["worst_error"], ls="--", lw=0.8, color=line.get_color())
        ax.set_yscale("log")
        ax.set_xlabel("test range c (values in [-c, c])")
        ax.set_title(f"{kind} attention")
    axes[0][0].set_ylabel("relative squared error\n(median; dashed: worst seed)")
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _curve_label(table: pd.DataFrame) -> pd.Series:
    if table["n"].nunique() > 1:
        return table["task"].astype(str) + " n=" + table["n"].astype(str)
    return table["task"].astype(str)
