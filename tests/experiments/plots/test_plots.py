"""Plots inspected through their artists (lines, collections), never pixels."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.analysis import core as an
from experiments.plots import core as plots

pytestmark = pytest.mark.usefixtures("close_figures")


def curve_rows():
    """Two algorithms, 3 x values, 4 replicate rows each: values x * (1, 2) + (-1, 0, 0, 1) * 0.1."""
    rows = [{"algorithm": name, "model": "", "iteration": None, "n_examples": x, "metric": "nmse",
             "value": scale * x + 0.1 * noise}
            for name, scale in (("a", 1.0), ("b", 2.0)) for x in (1, 2, 3) for noise in (-1, 0, 0, 1)]
    return an.frame(rows)


def test_mean_band_is_the_mean_plus_minus_the_normal_quantile_of_the_standard_error():
    stats = plots.mean_band(curve_rows(), x="n_examples", y="value", hue="algorithm")
    row = stats[(stats.algorithm == "b") & (stats.n_examples == 2)].iloc[0]
    sd = np.std([-0.1, 0, 0, 0.1], ddof=1)
    assert row["mean"] == pytest.approx(4.0)
    assert row["hi"] - row["mean"] == pytest.approx(plots.Z95 * sd / 2)
    assert row["n"] == 4


def test_lines_draw_one_line_through_the_means_and_one_band_per_hue_level():
    ax = plots.lines(curve_rows(), x="n_examples", hue="algorithm")
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    np.testing.assert_allclose(ax.lines[1].get_xydata(), [[1, 2], [2, 4], [3, 6]])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


def test_single_rows_get_no_band():
    data = curve_rows().groupby(["algorithm", "n_examples"], as_index=False).first()
    ax = plots.lines(data, x="n_examples", hue="algorithm")
    assert len(ax.lines) == 2 and len(ax.collections) == 0


def test_error_curves_label_models_and_iterations_and_use_a_log_axis():
    rows = [{"algorithm": "model", "model": "lsa", "layer": 1, "n_examples": n, "metric": "nmse", "value": 1 / n}
            for n in (1, 2, 4)]
    rows += [{"algorithm": "gd", "iteration": 2, "n_examples": n, "metric": "nmse", "value": 2 / n} for n in (1, 2, 4)]
    rows += [{"algorithm": "ols", "n_examples": n, "metric": "nmse", "value": 1e-30} for n in (1, 2, 4)]
    ax = plots.error_curves(an.frame(rows))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["lsa", "gd k=2", "ols"]
    assert ax.get_yscale() == "log"
    assert ax.get_ylim()[0] == pytest.approx(1e-3)  # exact fits do not squash the axis


def heat_rows(best_per_layer, n_iter=5):
    """error_similarity peaking (value 1) at the given iteration of each layer, falling off by 0.1 a step."""
    return an.frame([{"algorithm": "gd", "layer": layer, "iteration": k, "metric": "error_similarity",
                      "value": 1 - 0.1 * abs(k - best)}
                     for layer, best in enumerate(best_per_layer) for k in range(n_iter + 1)])


def test_heatmap_is_one_mesh_with_the_best_iteration_of_every_layer_overlaid():
    ax = plots.heatmap(heat_rows([0, 1, 3, 4]))
    mesh = ax.collections[0]
    assert mesh.get_array().shape == (4 * 6,) or mesh.get_array().shape == (4, 6)
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[0, 0], [1, 1], [3, 2], [4, 3]])


def test_heatmap_best_can_be_the_minimum_for_difference_metrics():
    data = heat_rows([2, 2]).assign(value=lambda df: -df.value)
    ax = plots.heatmap(data, best="min")
    np.testing.assert_allclose(ax.lines[0].get_xydata()[:, 0], [2, 2])


def test_heatmaps_draw_one_panel_per_algorithm_side_by_side():
    data = pd.concat([heat_rows([0, 1]), heat_rows([0, 2]).assign(algorithm="newton")], ignore_index=True)
    axes = plots.heatmaps(data)
    assert [ax.get_title() for ax in axes] == ["algorithm = gd", "algorithm = newton"]
    np.testing.assert_allclose(axes[1].lines[0].get_xydata()[:, 0], [0, 2])


def test_rates_fit_the_log_log_slope_and_show_it_in_the_legend():
    xs = np.array([1.0, 2.0, 4.0, 8.0])
    data = an.frame([{"model": "c", "metric": "error", "value": 3 * x ** -2.0, "x": x} for x in xs], extra=("x",))
    assert plots.loglog_slope(data.x, data.value)[0] == pytest.approx(-2.0)
    ax = plots.rates(data)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "slope -2.00" in ax.get_legend().get_texts()[0].get_text()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 3 * xs ** -2.0)
    assert len(ax.collections) == 1  # the measured points


def test_rates_on_a_linear_axis_fit_an_exponential():
    data = an.frame([{"model": "c", "metric": "error", "value": math.exp(-0.5 * x), "x": x} for x in (1, 2, 3)],
                    extra=("x",))
    ax = plots.rates(data, axis="linear")
    assert ax.get_xscale() == "linear"
    assert "slope -0.50" in ax.get_legend().get_texts()[0].get_text()


def test_probe_quality_draws_one_marked_line_per_target():
    data = an.frame([{"layer": layer, "algorithm": "model", "metric": f"probe_r2[{t}]", "value": layer / 3}
                     for t in ("w", "Xty") for layer in range(4)])
    ax = plots.probe_quality(data)
    assert len([line for line in ax.lines if line.get_marker() == "o"]) == 2


def test_save_writes_png_svg_and_the_csv_beside_them(tmp_path):
    data = curve_rows()
    paths = plots.save(plots.lines(data, x="n_examples", hue="algorithm"), data, tmp_path / "sub" / "fig")
    assert [p.suffix for p in paths] == [".png", ".svg", ".csv"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert pd.read_csv(paths[2]).shape == data.shape
