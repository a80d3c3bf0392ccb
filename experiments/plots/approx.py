"""Figures of the approximation study: error against lam / width / T / tau / depth, construction
beside trained, each curve with its fitted slope in the legend.

Every panel is :func:`experiments.plots.core.rates`: one point per row (trained models: one per seed) and
the least-squares line of log error, against log x (width, depth: log-log axes) or against x (lam,
T, tau: semilog-y, where the rates are exponential). Panels side by side, one per target. Inputs
are the tidy frames of :mod:`experiments.approx.study` (``comparison``) and
:mod:`experiments.approx.curves` (``curves``); :func:`draw_all` writes PNG + SVG + CSV per figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.plots import core as plots

# The axis a swept parameter is drawn and fitted on: log-log for sizes, semilog-y where the rate is exponential.
AXES = {"m": "log", "width": "log", "depth": "log", "lam": "linear", "T": "linear", "tau": "linear"}
LABELS = {"m": "width m (units)", "width": "units per update", "depth": "layers",
          "lam": "inverse temperature lam", "T": "Taylor order T", "tau": "selection temperature tau"}


def panels(data: pd.DataFrame, *, x: str, col: str, hue: str = "model", axis: str = "log", y: str = "error"):
    """One :func:`plots.rates` panel per level of ``col``, side by side (each its own y range), a hue
    level keeping its colour in every panel; returns the Axes."""
    levels = list(pd.unique(data[col]))
    palette = {name: f"C{i}" for i, name in enumerate(sorted(pd.unique(data[hue].astype(str)), key=_order))}
    fig, axes = plt.subplots(1, len(levels), figsize=(5.6 * len(levels), 3.8), squeeze=False)
    for ax, level in zip(axes[0], levels):
        part = data[data[col] == level]
        part = part.assign(**{hue: part[hue].astype(str)})
        part = part.iloc[sorted(range(len(part)), key=lambda i: _order(part[hue].iloc[i]))]
        plots.rates(part, x=x, y=y, hue=hue, ax=ax, axis=axis, palette=palette)
        ax.set_title(f"{level}", fontsize="small")
        ax.set_xlabel(LABELS.get(x, x))
        ax.set_ylabel("sup |model - target|")
        ax.legend(fontsize="x-small", loc="lower left")
    return list(axes[0])


def _order(name: str) -> tuple:
    """Trained models first, then constructions in name order (fixes colours and legend order)."""
    return (name != "trained", name)


def transformer_width(comparison: pd.DataFrame) -> tuple[list, pd.DataFrame]:
    """Error vs MLP width m per target: trained one-layer transformers and the construction at each lam."""
    data = comparison[(comparison["family"] == "transformer") & (comparison["parameter"] == "m")]
    axes = panels(data, x="value", col="target")
    axes[0].figure.suptitle("one attention layer + one ReLU MLP: error vs width", fontsize="small")
    for ax in axes:
        ax.set_xlabel(LABELS["m"])
    return axes, data


def mpnn_size(comparison: pd.DataFrame, size: str) -> tuple[list, pd.DataFrame]:
    """Error vs ``size`` ("width" or "depth") per imitated attention kind: trained MPNN+VN models (their
    own sweep of that size) and every construction at the size it is built with."""
    mp = comparison[comparison["family"] == "mpnn"]
    trained = mp[(mp["model"] == "trained") & (mp["parameter"] == size)]
    data = pd.concat([trained, mp[mp["model"] != "trained"]], ignore_index=True)
    axes = panels(data, x=size, col="target")
    axes[0].figure.suptitle(f"MPNN + virtual node imitating attention: error vs {size}", fontsize="small")
    return axes, data


def construction_rates(curves: pd.DataFrame, parameter: str) -> tuple[list, pd.DataFrame]:
    """The registered constructions' error against one swept parameter (lam, m, T or tau)."""
    data = curves[curves["parameter"] == parameter]
    extra = data["target"].astype(str) + " lam=" + data["lam"].map("{:g}".format) if "target" in data else None
    label = data["construction"] if extra is None else data["construction"].where(
        data["lam"].isna() | (data["parameter"] != "m"), data["construction"] + " " + extra)
    data = data.assign(curve=label, panel=f"error vs {parameter}")
    axes = panels(data, x="value", col="panel", hue="curve", axis=AXES[parameter])
    axes[0].set_xlabel(LABELS[parameter])
    return axes, data


def draw_all(comparison: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """Every figure the frames hold data for; returns the PNG paths."""
    out, paths = Path(out), []
    if len(comparison) and (comparison["family"] == "transformer").any():
        axes, data = transformer_width(comparison)
        paths.append(plots.save(axes, data, out / "transformer_error_vs_width")[0])
    if len(comparison) and (comparison["family"] == "mpnn").any():
        for size in ("width", "depth"):
            axes, data = mpnn_size(comparison, size)
            paths.append(plots.save(axes, data, out / f"mpnn_error_vs_{size}")[0])
    for parameter in ("lam", "m", "T", "tau"):
        if len(curves) and (curves["parameter"] == parameter).any():
            axes, data = construction_rates(curves, parameter)
            paths.append(plots.save(axes, data, out / f"construction_error_vs_{parameter}")[0])
    return paths


def redraw(folder, out: Path) -> list[Path]:
    """The figures of a `ttb approx` output folder, from its comparison.csv and curves.csv."""
    folder = Path(folder)
    found = [folder / name for name in ("comparison.csv", "curves.csv") if (folder / name).exists()]
    if not found:
        raise FileNotFoundError(f"{folder} has neither comparison.csv nor curves.csv (run `ttb approx` first)")
    read = lambda name: pd.read_csv(folder / name) if (folder / name).exists() and (folder / name).stat().st_size > 1 \
        else pd.DataFrame(columns=["family", "parameter"])
    return draw_all(read("comparison.csv"), read("curves.csv"), out)
