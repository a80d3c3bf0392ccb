"""`ttb approx` and `ttb plot approx`: config fields are checked and named, the summary and slope
tables compute what they say, the figures carry one fitted line per curve, and the command writes
its files."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from support import toml_text

from experiments.approx import study as approx
from experiments.commands.main import main
from experiments.common.validate import ConfigError
from experiments.plots import approx as plots_approx

pytestmark = pytest.mark.usefixtures("close_figures")

TINY = {
    "name": "tiny", "device": "cpu",
    "transformer": {"n": 3, "d": 1, "targets": ["cosine", "relu"], "widths": [4, 8], "construction_widths": [4, 16],
                    "lams": [40.0], "seeds": [0, 1], "steps": 2, "batch_size": 8, "eval_inputs": 32, "lr": 0.003},
}


def test_a_config_without_any_family_is_rejected():
    with pytest.raises(ConfigError, match="at least one"):
        approx.parse_config({"name": "x"})


@pytest.mark.parametrize("section, key, value, message", [
    ("transformer", "widths", [0], "transformer.widths"),
    ("transformer", "targets", ["sine"], "transformer.targets"),
    ("transformer", "lr", -1.0, "transformer.lr"),
    ("transformer", "lr", "fast", "transformer.lr"),
    ("transformer", "depth", 2, "unknown field transformer.depth"),
    ("curves", "n_cases", 0, "curves.n_cases"),
    ("curves", "cases", 2, "unknown field curves.cases"),
])
def test_a_bad_config_field_is_named(section, key, value, message):
    data = {**TINY, section: {**TINY.get(section, {}), key: value}}
    with pytest.raises(ConfigError, match=message):
        approx.parse_config(data)


def test_unknown_top_level_fields_and_dtypes_are_named():
    with pytest.raises(ConfigError, match="unknown field widths"):
        approx.parse_config({**TINY, "widths": [1]})
    with pytest.raises(ConfigError, match="dtype"):
        approx.parse_config({**TINY, "dtype": "float16"})


def test_training_fields_go_to_the_studys_hyperparameters():
    cfg = approx.parse_config({**TINY, "transformer": {**TINY["transformer"], "warmup": 7}})
    assert dict(cfg.transformer.hyper)["warmup"] == 7.0 and dict(cfg.transformer.hyper)["lr"] == 0.003


def test_fit_slope_recovers_a_power_law_and_an_exponential():
    """3 m^-2 on a log-log axis has slope -2; 5 e^(-0.7 lam) on a semilog axis has slope -0.7."""
    m = np.array([8.0, 16.0, 64.0, 256.0])
    assert approx.fit_slope(m, 3 * m ** -2.0, "log") == pytest.approx(-2.0, abs=1e-12)
    lam = np.array([1.0, 2.0, 5.0])
    assert approx.fit_slope(lam, 5 * np.exp(-0.7 * lam), "linear") == pytest.approx(-0.7, abs=1e-12)
    assert math.isnan(approx.fit_slope([4.0, 4.0], [1.0, 2.0], "log"))  # one x value: no slope


def _frame(errors_by_seed: dict) -> pd.DataFrame:
    rows = [{"family": "transformer", "target": "cosine", "model": "trained", "seed": s, "parameter": "m",
             "value": float(m), "width": m, "depth": 1, "n_params": 0, "error": e, "rmse": e / 2}
            for m, errs in errors_by_seed.items() for s, e in enumerate(errs)]
    return pd.DataFrame(rows)


def test_summary_takes_median_and_worst_over_seeds_and_slopes_fit_the_medians():
    """Medians 4 m^-1 at m = 4, 16 (the worst seed is the largest); their slope is -1."""
    table = approx.summarize(_frame({4: [1.0, 0.9, 5.0], 16: [0.25, 0.3, 0.1]}))
    assert list(table.median_error) == [1.0, 0.25] and list(table.worst_error) == [5.0, 0.3]
    assert list(table.n_models) == [3, 3]
    fitted = approx.slopes(table, {("cosine", "trained"): -9.0})
    assert fitted.slope.iloc[0] == pytest.approx(-1.0) and fitted.stated_slope.iloc[0] == -9.0


def test_each_panel_draws_one_fitted_line_per_model_with_its_slope():
    """Two models, errors exactly 2 m^-1 and 3 m^-2: two lines whose legend labels carry those slopes."""
    m = np.array([4.0, 8.0, 16.0])
    rows = [{"family": "transformer", "target": "cosine", "model": name, "parameter": "m", "value": x, "error": c * x ** p}
            for name, c, p in (("a", 2.0, -1.0), ("b", 3.0, -2.0)) for x in m]
    axes, _ = plots_approx.transformer_width(pd.DataFrame(rows))
    labels = [line.get_label() for line in axes[0].lines]
    assert labels == ["a slope -1.00", "b slope -2.00"]
    np.testing.assert_allclose(axes[0].lines[1].get_ydata(), 3 * m ** -2.0)


def test_redraw_of_an_empty_folder_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="ttb approx"):
        plots_approx.redraw(tmp_path, tmp_path / "figures")


def test_ttb_approx_writes_tables_and_figures_and_plot_redraws_them(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(toml_text(TINY))
    out = tmp_path / "out"
    assert main(["approx", str(path), "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in rows} == {"trained", "construction (lam=40)"}
    assert set(rows[0]) == {"family", "target", "model", "parameter", "axis", "slope", "stated_slope", "n_values"}
    comparison = pd.read_csv(out / "comparison.csv")
    assert len(comparison) == 2 * 2 * 2 + 2 * 2  # trained: targets x seeds x widths; built: targets x widths
    for name in ("table.csv", "slopes.csv", "config.json", "figures/transformer_error_vs_width.png"):
        assert (out / name).exists()
    assert main(["plot", "approx", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "transformer_error_vs_width.svg").exists()


def test_mpnn_figures_put_trained_models_beside_the_constructions_at_their_width_and_depth(tmp_path):
    """A tiny [mpnn] section for both attention kinds: the width figure has, per kind, the trained
    line and every construction's line; the depth figure the same; a bad mpnn field is named."""
    data = {"name": "m", "mpnn": {"attention": ["linear", "softmax"], "n": 3, "d": 1, "d_head": 1, "widths": [2, 4],
                                  "depths": [1, 2], "width_at": 2, "depth_at": 1, "d_node": 4, "d_vn": 4, "seeds": [0],
                                  "steps": 2, "batch_size": 4, "eval_graphs": 8, "relu_widths": [4, 8],
                                  "taylor_orders": [2, 4], "taus": [2.0, 4.0], "lr": 0.01}}
    cfg = approx.parse_config(data)
    assert [s.attention for s in cfg.mpnn] == ["linear", "softmax"] and cfg.mpnn[0].lr == 0.01
    comparison, curves = approx.run(cfg, tmp_path / "runs", device="cpu", progress=False)
    assert curves.empty
    paths = approx.write(tmp_path, cfg, comparison, curves)
    assert {p.name for p in paths} >= {"mpnn_error_vs_width.png", "mpnn_error_vs_depth.png"}
    axes, drawn = plots_approx.mpnn_size(comparison, "depth")
    labels = {line.get_label().split(" slope")[0].removesuffix(" (one size)") for ax in axes for line in ax.lines}
    assert labels == {"trained", "construction: relu products", "construction: exact units",
                      "construction: power sums", "construction: selection"}
    assert set(drawn[drawn.model == "trained"].parameter) == {"depth"}
    with pytest.raises(ConfigError, match="mpnn.n"):
        approx.parse_config({"mpnn": {**data["mpnn"], "n": 1}})


def test_ttb_approx_names_a_bad_field_before_training(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(toml_text({**TINY, "transformer": {**TINY["transformer"], "widths": [0]}}))
    assert main(["approx", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "transformer.widths" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
