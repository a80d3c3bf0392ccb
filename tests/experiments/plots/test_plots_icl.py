"""Figures of the in-context task experiments, inspected through their artists on hand-made tidy
tables, and `ttb plot noise|pool|representation` end to end on tiny sweeps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.analysis import core as an
from experiments.analysis import runs as ar
from experiments.plots import figures as af
from experiments.plots import icl as pi
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep

pytestmark = pytest.mark.usefixtures("close_figures")


# ----------------------------------------------------------------------------------------------
# Hand-made tables


def closest_rows():
    """Depth 1 moves ols -> ridge[lam=1] -> ridge[lam=4] as noise grows (0, 0.5, 1); depth 3 stays at
    ols then bayes_ridge. Two seeds each; at depth 1, noise 1 the seeds disagree (ridge[lam=4] twice
    against one ridge[lam=1] for a third seed). prediction_difference = 0.01 * (1 + noise) * depth."""
    picks = {1: ["ols", "ridge[lam=1]", "ridge[lam=4]"], 3: ["ols", "bayes_ridge", "bayes_ridge"]}
    rows = [{"run": f"r{depth}{i}{seed}", "kind": "isotropic", "noise_std": noise, "n_layers": depth, "seed": seed,
             "closest_algorithm": picks[depth][i], "prediction_difference": 0.01 * (1 + noise) * depth, "nmse": 0.1}
            for depth in (1, 3) for i, noise in enumerate((0.0, 0.5, 1.0)) for seed in (0, 1)]
    rows.append({**rows[5], "run": "extra", "seed": 2, "closest_algorithm": "ridge[lam=1]"})
    return pd.DataFrame(rows)


def test_algorithms_are_ordered_by_the_noise_at_which_they_are_closest():
    """Mean noise: ols 0, ridge[lam=1] (0.5 + 0.5 + 1) / 3, bayes_ridge 0.75, ridge[lam=4] 1."""
    assert pi.algorithm_order(closest_rows()) == ["ols", "ridge[lam=1]", "bayes_ridge", "ridge[lam=4]"]


def test_closest_modes_take_the_most_frequent_algorithm_and_its_share():
    modes = pi.closest_modes(closest_rows()).set_index(["n_layers", "noise_std"])
    assert modes.loc[(1, 1.0), "closest_algorithm"] == "ridge[lam=4]"
    assert modes.loc[(1, 1.0), "share"] == pytest.approx(2 / 3)
    assert modes.loc[(3, 0.5), "share"] == 1.0


def test_closest_algorithm_draws_one_line_per_depth_through_the_algorithm_positions():
    ax = pi.closest_algorithm(closest_rows())
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_xydata(), [[0, 0], [0.5, 1], [1, 3]])
    np.testing.assert_allclose(ax.lines[1].get_xydata(), [[0, 0], [0.5, 2], [1, 2]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ols", "ridge[lam=1]", "bayes_ridge", "ridge[lam=4]"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1", "3"]


def test_noise_closest_puts_the_prediction_difference_per_depth_on_a_log_axis_beside_it():
    """Right panel: the mean over seeds, which agree on the difference, so the bands have zero width
    (one PolyCollection per depth, drawn because each point has two rows)."""
    left, right = pi.noise_closest(closest_rows())
    assert len(left.lines) == 2 and len(right.lines) == 2 and len(right.collections) == 2
    assert right.get_yscale() == "log"
    np.testing.assert_allclose(right.lines[1].get_xydata(), [[0, 0.03], [0.5, 0.045], [1, 0.06]])


def noise_table():
    """noise_level_table rows of two runs (depths 1 and 2) at levels 0.1 and 1: model nmse
    0.2 * level / depth, the oracle 0.1 * level, the mixture posterior 0.15 * level (identical in
    both runs: the same prompts), and prediction differences that the figure must leave out."""
    rows = []
    for depth in (1, 2):
        for level in (0.1, 1.0):
            base = {"run": f"r{depth}", "n_examples": 8, "noise_std": level, "n_layers": depth}
            rows.append({**base, "algorithm": "model", "metric": "nmse", "value": 0.2 * level / depth})
            for name, scale in (("bayes_oracle", 0.1), ("mixture_posterior", 0.15)):
                rows.append({**base, "algorithm": name, "metric": "nmse", "value": scale * level})
                rows.append({**base, "algorithm": name, "metric": "prediction_difference", "value": 9.0})
    return an.frame(rows, extra=("noise_std",)).assign(n_layers=[r["n_layers"] for r in rows])


def test_oracle_gap_draws_each_depth_and_each_reference_once():
    data = pi.oracle_rows(noise_table())
    ax = pi.oracle_gap(data)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["model L1", "bayes_oracle", "mixture_posterior", "model L2"]
    lines = dict(zip(labels, ax.lines))
    np.testing.assert_allclose(lines["model L2"].get_xydata(), [[0.1, 0.01], [1.0, 0.1]])
    np.testing.assert_allclose(lines["bayes_oracle"].get_xydata(), [[0.1, 0.01], [1.0, 0.1]])
    assert ax.get_yscale() == "log" and (data.metric == "nmse").all()


def pool_table():
    """pool_table rows at pool sizes 1, 4, 64: on pool prompts the model follows the pool posterior
    (0.01) up to 4 and ridge (0.3) at 64; on Gaussian prompts the pool posterior's error is 2."""
    rows = []
    for size, model in ((1, 0.01), (4, 0.01), (64, 0.3)):
        for prompts, post in (("pool", 0.01), ("gaussian", 2.0)):
            base = {"run": f"p{size}", "n_examples": 10, "prompts": prompts, "metric": "nmse"}
            rows += [{**base, "algorithm": "model", "value": model}, {**base, "algorithm": "pool_posterior", "value": post},
                     {**base, "algorithm": "bayes_ridge", "value": 0.3},
                     {**base, "algorithm": "pool_posterior", "metric": "prediction_difference", "value": 5.0}]
    sizes = [int(r["run"][1:]) for r in rows]
    return an.frame(rows, extra=("prompts",)).assign(pool_size=sizes)


def test_pool_errors_draw_one_panel_per_prompt_source_with_three_curves_on_log_axes():
    axes = pi.pool_errors(pi.pool_rows(pool_table()))
    assert [ax.get_title() for ax in axes] == ["prompts: pool", "prompts: gaussian"]
    for ax in axes:
        assert len(ax.lines) == 3 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model", "pool_posterior", "bayes_ridge"]
    np.testing.assert_allclose(axes[0].lines[0].get_xydata(), [[1, 0.01], [4, 0.01], [64, 0.3]])
    np.testing.assert_allclose(axes[1].lines[1].get_xydata()[:, 1], [2.0, 2.0, 2.0])


def test_representation_probes_draw_a_line_per_target_and_phi_depth():
    """Layers 0..2 of two runs (Phi depth 1 and 2): R^2 of Phi rises to 0.9 at layer 1, the ridge
    answer's only at layer 2. The model's nmse row is not a probe and stays out."""
    rows = [{"run": f"r{depth}", "layer": layer, "algorithm": "model", "metric": metric, "value": value}
            for depth in (1, 2) for metric, values in (("probe_r2[phi]", (0.1, 0.9, 0.9)),
                                                        ("probe_r2[feature_ridge]", (0.0, 0.2, 0.8)))
            for layer, value in enumerate(values)]
    rows.append({"run": "r1", "layer": 2, "algorithm": "model", "metric": "nmse", "value": 0.5})
    table = an.frame(rows).assign(phi_depth=[int(r["run"][1]) for r in rows])
    ax = pi.representation_probes(pi.probe_rows(table))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Phi(x_q), Phi depth 1", "feature ridge, Phi depth 1", "Phi(x_q), Phi depth 2",
                      "feature ridge, Phi depth 2"]
    np.testing.assert_allclose(ax.lines[1].get_xydata(), [[0, 0.0], [1, 0.2], [2, 0.8]])
    assert len(ax.lines) == 5  # four targets and the R^2 = 1 guide


# ----------------------------------------------------------------------------------------------
# End to end on tiny sweeps


def tiny_sweep(out, task: dict, grid: dict):
    """A few float64 training steps of 1-layer width-8 models on d = 3, 6 points (as in
    tests/test_experiments_icl.py), trained into ``out``; returns the loaded runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sweep = sw.parse_sweep({
            "task": {"d": 3, "n_points": 6, "eval_batch_size": 8, "format": "example", **task},
            "model": {"n_layers": 1, "d_model": 8, "n_heads": 2},
            "train": {"steps": 4, "batch_size": 4, "dtype": "float64", "log_every": 2},
            "grid": grid})
        run_sweep(sweep, out, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    return [ar.load_run(d) for d in ar.find_runs(out)]


@pytest.fixture(scope="module")
def mixture_runs(tmp_path_factory):
    return tiny_sweep(tmp_path_factory.mktemp("mixture"), {"kind": "noise_mixture", "noise_levels": [0.1, 1.0]},
                      {"model.n_layers": [1, 2]})


def test_plot_noise_writes_png_svg_and_csv_of_the_mixture_runs(mixture_runs, tmp_path):
    paths = af.draw("noise", mixture_runs, tmp_path, n_prompts=32)
    assert [p.name for p in paths] == ["noise_mixture.png"]
    for suffix in (".png", ".svg", ".csv"):
        assert paths[0].with_suffix(suffix).stat().st_size > 0
    csv = pd.read_csv(paths[0].with_suffix(".csv"))
    assert set(csv.curve) == {"model L1", "model L2", "bayes_oracle", "mixture_posterior"}
    assert set(csv.noise_std) == {0.1, 1.0}


@pytest.mark.parametrize("kind", ["pool", "representation"])
def test_a_kind_refuses_runs_of_another_task_kind_and_names_them(mixture_runs, tmp_path, kind):
    with pytest.raises(ValueError, match=f"ttb plot {kind} draws runs of task.kind {kind}.*noise_mixture"):
        af.draw(kind, mixture_runs, tmp_path, n_prompts=32)
    assert not list(tmp_path.iterdir())


SWEEPS = {
    "noise": ({"noise_std": 0.5}, {"task.noise_std": [0.0, 0.5]}, ["noise_closest"]),
    "pool": ({"kind": "pool", "pool_size": 2}, {"task.pool_size": [1, 4]}, ["pool"]),
    "representation": ({"kind": "representation", "phi_depth": 1, "phi_width": 4}, {}, ["representation"]),
}


@pytest.mark.parametrize("kind", list(SWEEPS))
def test_each_kind_writes_its_figures_from_a_tiny_sweep_of_its_task(tmp_path, kind):
    task, grid, names = SWEEPS[kind]
    runs = tiny_sweep(tmp_path / "sweep", task, grid)
    paths = af.draw(kind, runs, tmp_path / "figures", n_prompts=32)
    assert [p.stem for p in paths] == names
    for suffix in (".png", ".svg", ".csv"):
        assert paths[0].with_suffix(suffix).stat().st_size > 0


def test_plot_noise_refuses_pool_runs(tmp_path):
    runs = tiny_sweep(tmp_path / "sweep", {"kind": "pool", "pool_size": 2}, {})
    with pytest.raises(ValueError, match="isotropic or noise_mixture.*task.kind pool"):
        af.draw("noise", runs, tmp_path / "figures")


def test_cli_lists_the_task_plot_kinds_when_the_kind_is_unknown(tmp_path, capsys):
    from experiments.commands.main import main

    assert main(["plot", "bogus", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert all(kind in err for kind in ("noise", "pool", "representation"))
