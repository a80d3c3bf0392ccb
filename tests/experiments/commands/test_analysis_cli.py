"""`ttb demo --tiny`, `ttb compare` and `ttb plot`: files exist and are non-empty, JSON keeps its contract."""

from __future__ import annotations

import json

import pytest

from experiments.commands.main import main as ttb

pytestmark = pytest.mark.usefixtures("close_figures")


def test_demo_writes_an_index_that_shows_every_figure_and_table(demo):
    index = (demo / "index.html").read_text()
    assert "Constructions checked against their algorithms" in index and "(ttb compare)" in index
    pngs = sorted((demo / "figures").glob("*.png"))
    assert {p.name.split("_")[0].removesuffix(".png") for p in pngs} >= {"errors", "heatmap", "probes", "rates",
                                                                         "interpolation"}
    for png in pngs:
        assert png.name in index
        for suffix in (".png", ".svg", ".csv"):
            assert png.with_suffix(suffix).stat().st_size > 0
    assert "Approximation theorems beside trained models" in index
    for name in ("transformer_error_vs_width", "mpnn_error_vs_width", "mpnn_error_vs_depth"):
        assert f"approx/figures/{name}.png" in index and (demo / "approx" / "figures" / f"{name}.svg").exists()


def test_demo_finds_each_construction_to_be_its_own_algorithm(demo):
    """The GD (3 steps) and Newton (3 iterations) constructions, scored like trained models."""
    rows = {r["model"]: r for r in json.loads((demo / "compare.json").read_text())}
    gd_row = rows["gd construction (3 steps)"]
    assert gd_row["closest_algorithm"].startswith("gd") and gd_row["closest_iteration"] == 3
    assert gd_row["prediction_difference"] < 1e-20
    name = next(k for k in gd_row["algorithms"] if k.startswith("gd"))
    assert gd_row["algorithms"][name]["best_iteration_per_layer"] == [0, 1, 2, 3]
    newton_row = next(r for k, r in rows.items() if k.startswith("newton construction (3 iterations"))
    assert newton_row["closest_algorithm"].startswith("newton") and newton_row["closest_iteration"] == 3


def test_compare_json_gives_closest_algorithm_and_best_iteration_per_layer(demo, capsys):
    assert ttb(["compare", str(demo / "sweep"), "--algorithms", "gd,newton,ols", "--json", "--prompts", "32"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    for row in rows:
        assert row["closest_algorithm"] in ("gd", "newton", "ols")
        assert set(row["algorithms"]) == {"gd", "newton", "ols"}
        layers = {len(a["best_iteration_per_layer"]) for a in row["algorithms"].values()}
        assert len(layers) == 1 and layers.pop() >= 2  # embedding + every layer


def test_compare_table_on_one_run_directory(demo, capsys):
    run = sorted((demo / "sweep" / "runs").iterdir())[0]
    assert ttb(["compare", str(run), "--prompts", "32", "--algorithms", "gd:eta=best:n_iter=1,ols"]) == 0
    out = capsys.readouterr().out
    assert "closest" in out and "best iteration per layer" in out and "gd[eta=" in out


def test_plot_writes_png_svg_and_csv_for_a_kind(demo, tmp_path, capsys):
    run = sorted((demo / "sweep" / "runs").iterdir())[0]
    assert ttb(["plot", "heatmap", str(run), "--out", str(tmp_path), "--prompts", "32"]) == 0
    pngs = list(tmp_path.glob("heatmap_*.png"))
    assert len(pngs) == 1 and all(p.with_suffix(".svg").stat().st_size > 0 for p in pngs)


@pytest.mark.parametrize("argv, message", [
    (["compare", "/nonexistent/dir"], "neither a finished run directory"),
    (["plot", "pie", "."], "unknown plot kind 'pie'"),
])
def test_bad_arguments_are_errors_that_say_what_is_wrong(argv, message, capsys):
    assert ttb(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_algorithm_names_the_known_ones(demo, capsys):
    assert ttb(["compare", str(demo / "sweep"), "--algorithms", "svm"]) == 2
    assert "known: zero, averaging, ols" in capsys.readouterr().err
