"""Patching and depth-use figures, inspected through their artists (QuadMesh arrays, line data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.analysis import core as an
from experiments.plots import inspect as pi

pytestmark = pytest.mark.usefixtures("close_figures")


def patch_rows(value, *, source="a", model="b"):
    """gap_closed of two layers x (resid_pre, attn_out, z[0], z[1]) x two position sets, with
    value(layer, site index, positions index) as the value."""
    rows = []
    for positions_i, positions in enumerate(("query", "all")):
        for layer in (0, 1):
            for site_i, (site, head) in enumerate((("resid_pre", None), ("attn_out", None), ("z", 0), ("z", 1))):
                rows.append({"model": model, "layer": layer, "algorithm": "model", "metric": "gap_closed",
                             "value": value(layer, site_i, positions_i), "source": source, "site": site,
                             "positions": positions, "head": head})
    out = an.frame(rows, extra=("source", "site", "positions", "head"))
    return out.assign(head=pd.array(out["head"].tolist(), dtype="Int64"))


def test_patching_table_puts_layers_in_rows_and_sites_in_forward_order():
    table = pi.patching_table(patch_rows(lambda l, s, p: 10 * l + s)[lambda f: f.positions == "all"])
    assert list(table.columns) == ["resid_pre", "attn_out", "z[0]", "z[1]"]
    np.testing.assert_array_equal(table.to_numpy(), [[0, 1, 2, 3], [10, 11, 12, 13]])


def test_patching_heatmap_draws_the_table_with_colours_centred_at_zero():
    data = patch_rows(lambda l, s, p: 0.25 * s - 0.5 * l)[lambda f: f.positions == "query"]
    ax = pi.patching_heatmap(data)
    mesh = ax.collections[0]
    np.testing.assert_allclose(mesh.get_array().reshape(2, 4), [[0, 0.25, 0.5, 0.75], [-0.5, -0.25, 0, 0.25]])
    assert mesh.get_clim() == (-1.0, 1.0)  # at least +-1: a gap closed exactly is full colour
    assert [t.get_text() for t in ax.get_xticklabels()] == ["resid_pre", "attn_out", "z[0]", "z[1]"]


def test_colour_limit_covers_the_data_up_to_a_cap():
    assert pi.color_limit([0.1, -0.3]) == 1.0
    assert pi.color_limit([1.5, np.nan]) == 1.5
    assert pi.color_limit([-400.0]) == 2.0


def test_patching_figure_has_one_panel_per_pair_and_position_set():
    data = pd.concat([patch_rows(lambda l, s, p: p, source="gd"), patch_rows(lambda l, s, p: -p, source="seed 1")],
                     ignore_index=True)
    axes = pi.patching_figure(data)
    assert len(axes) == 4
    assert [ax.get_title().split("\n") for ax in axes] == [
        ["gd -> b", "patched at: query"], ["gd -> b", "patched at: all"],
        ["seed 1 -> b", "patched at: query"], ["seed 1 -> b", "patched at: all"]]
    assert np.all(axes[3].collections[0].get_array() == -1)


def contribution_rows():
    """Two models, two layers; model "b" has no MLP (its mlp rows are all 0)."""
    rows = []
    for model, scale in (("a", 1.0), ("b", 2.0)):
        for layer in (0, 1):
            for component, k in (("block", 1.0), ("attn", 0.5), ("mlp", 0.25 if model == "a" else 0.0)):
                rows.append({"model": model, "layer": layer, "algorithm": "model", "positions": "all",
                             "metric": f"{component}_norm_ratio", "value": scale * k * (layer + 1)})
    return an.frame(rows, extra=("positions",))


def test_depth_lines_draw_one_line_per_model_and_component_and_only_the_block_without_an_mlp():
    ax = pi.depth_lines(contribution_rows(), metrics=("block_norm_ratio", "attn_norm_ratio", "mlp_norm_ratio"))
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["a: block", "a: attn", "a: mlp", "b: block"]
    np.testing.assert_allclose(ax.lines[3].get_xydata(), [[0, 2.0], [1, 4.0]])
    np.testing.assert_allclose(ax.lines[2].get_xydata(), [[0, 0.25], [1, 0.5]])
    assert ax.lines[1].get_linestyle() == "--" and ax.lines[0].get_color() != ax.lines[3].get_color()


def map_rows(model="a"):
    rows = [{"model": model, "layer": l, "algorithm": "model", "metric": "linear_map_r2", "to_layer": t,
             "value": 1 - 0.1 * (t - l)} for l in range(3) for t in range(l + 1, 4)]
    return an.frame(rows, extra=("to_layer",))


def test_map_heatmap_shows_r2_from_each_layer_to_each_later_one():
    ax = pi.map_heatmap(map_rows())
    values = np.ma.filled(ax.collections[0].get_array().reshape(3, 3).astype(float), np.nan)
    np.testing.assert_allclose(values, [[0.9, 0.8, 0.7], [np.nan, 0.9, 0.8], [np.nan, np.nan, 0.9]])


def test_depth_figure_has_three_line_panels_and_one_map_per_model():
    skips = an.frame([{"model": m, "layer": l, "algorithm": "model", "metric": "skip_delta_nmse", "value": v}
                      for m in ("a", "b") for l, v in ((0, 0.5), (1, 0.1))])
    ratios = contribution_rows()
    cosines = ratios.assign(metric=ratios.metric.str.replace("norm_ratio", "cosine"), value=-0.5 * (ratios.value != 0))
    frames = {"contributions": pd.concat([ratios, cosines], ignore_index=True), "skips": skips,
              "maps": pd.concat([map_rows("a"), map_rows("b")], ignore_index=True)}
    axes = pi.depth_figure(frames)
    assert len(axes) == 5
    assert [len(ax.lines) for ax in axes[:3]] == [4, 5, 2]  # the cosine panel adds a line at 0
    assert axes[0].get_legend() is not None and axes[1].get_legend() is None
    assert all(len(ax.collections) == 1 for ax in axes[3:])
    assert axes[4].get_title() == "b: linear map R^2"
