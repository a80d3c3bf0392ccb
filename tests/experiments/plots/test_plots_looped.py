"""The loop-iteration figure, inspected through its artists."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from constructions.icl import gd
from experiments.analysis.core import Learner
from experiments.analysis.looped import loop_errors
from experiments.analysis.prompts import sample_prompts
from experiments.analysis.references import reference
from experiments.plots.looped import curve_names, loop_curves

pytestmark = pytest.mark.usefixtures("close_figures")


@pytest.fixture(scope="module")
def data():
    """A looped GD block (3 loops built, 6 read) against GD, Newton and least squares, 2 batches."""
    built = gd.build(2, 1, 0.3)
    learner = Learner(dataclasses.replace(built.cfg, n_loops=3), built.weights, "example", model="looped gd")
    refs = [reference("gd", eta=0.3, n_iter=6), reference("newton", n_iter=6), reference("ols")]
    return loop_errors(learner, sample_prompts(2, 8, 32, seed=1), 6, refs, n_batches=2)


def test_curves_are_the_model_then_the_iterative_references_then_least_squares_flat(data):
    ax = loop_curves(data, trained=(1, 3))
    labels = [line.get_label() for line in ax.lines]
    assert labels[:3] == ["looped gd", "gd", "newton"] and labels[3].startswith("ols")
    model = data[data.algorithm == "model"].groupby("step").value.mean()
    np.testing.assert_allclose(ax.lines[0].get_xydata(), np.c_[model.index.astype(float), model.to_numpy()])
    ols = float(data[data.algorithm == "ols"].value.mean())
    assert ax.lines[3].get_ydata()[0] == pytest.approx(ols) and ax.lines[3].get_ydata()[1] == pytest.approx(ols)
    assert len(ax.collections) == 3  # one band per iterative curve (2 batches of prompts each)
    assert ax.get_yscale() == "log"


def test_the_trained_loops_are_shaded_from_the_first_to_the_last_trained_count(data):
    ax = loop_curves(data, trained=(2, 3))
    (span,) = ax.patches
    assert (span.get_x(), span.get_x() + span.get_width()) == pytest.approx((1.5, 3.5))  # half a loop each side
    assert not loop_curves(data).patches


def test_model_rows_are_named_by_model_and_references_by_algorithm(data):
    names = curve_names(data)
    assert set(names[data.algorithm == "model"]) == {"looped gd"}
    assert set(names[data.algorithm != "model"]) == {"gd", "newton", "ols"}


TINY_LOOPED = """
[sweep]
name = "tiny_looped"
[task]
d = 2
n_points = 4
eval_batch_size = 8
[model]
n_layers = 1
n_loops = 3
input_injection = true
d_model = 8
n_heads = 2
[train]
steps = 4
batch_size = 4
log_every = 2
loops_start = 1
loops_every = 1
loop_window = 2
"""


def test_ttb_plot_loops_draws_each_run_of_a_sweep_up_to_max_loops(tmp_path, capsys):
    from experiments.commands.main import main as ttb

    (tmp_path / "tiny.toml").write_text(TINY_LOOPED)
    assert ttb(["sweep", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "sweep")]) == 0
    assert ttb(["plot", "loops", str(tmp_path / "sweep"), "--max-loops", "5", "--prompts", "16",
                "--out", str(tmp_path / "figs")]) == 0
    (png,) = sorted((tmp_path / "figs").glob("loops_*.png"))
    frame = pd.read_csv(png.with_suffix(".csv"))
    assert sorted(frame[frame.algorithm == "model"].step.unique()) == list(range(6))
    table = pd.read_csv(png.with_name(png.stem + "_convergence.csv")).set_index("algorithm")
    assert table.loc["model", "max_step"] == 5 and png.with_suffix(".svg").stat().st_size > 0
    capsys.readouterr()
    assert ttb(["plot", "errors", str(tmp_path / "sweep"), "--max-loops", "5"]) != 0
    assert "--max-loops" in capsys.readouterr().err
