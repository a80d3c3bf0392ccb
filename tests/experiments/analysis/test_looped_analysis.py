"""The per-loop analysis of looped models, anchored on a looped GD construction (one GD block applied
b times is b steps of GD, exactly)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from constructions.icl import gd
from experiments.analysis.core import COLUMNS, Learner
from experiments.analysis.looped import convergence, loop_errors, loop_predictions, trained_loops
from experiments.analysis.prompts import sample_prompts
from experiments.analysis.references import reference
from experiments.training.config import RunConfig

D, N, ETA = 3, 12, 0.2


def looped_gd(n_loops: int = 3) -> Learner:
    """One GD layer (von Oswald et al.'s construction) as the single block of a looped model."""
    built = gd.build(D, 1, ETA)
    return Learner(dataclasses.replace(built.cfg, n_loops=n_loops), built.weights, "example", model="looped gd")


@pytest.fixture(scope="module")
def prompts():
    return sample_prompts(D, N, 64, seed=3)


def test_the_frame_has_a_row_per_loop_and_batch_and_per_reference_iteration(prompts):
    data = loop_errors(looped_gd(), prompts, 6, n_batches=4)
    assert list(data.columns) == list(COLUMNS) + ["step"]
    model = data[data.algorithm == "model"]
    assert sorted(model.step.unique()) == list(range(7)) and len(model) == 7 * 4
    assert (model.layer == model.step).all()  # one block per loop
    for name in ("gd", "newton"):
        assert sorted(data[data.algorithm == name].step.unique()) == list(range(7))
    ols = data[data.algorithm == "ols"]
    assert len(ols) == 4 and ols.step.isna().all() and ols.iteration.isna().all()


def test_a_looped_gd_block_errs_like_gd_at_every_loop_beyond_the_trained_count(prompts):
    """Built with n_loops = 3, run for 10: the error after loop k equals GD's after k steps of the same
    eta (exact construction in float64: round-off ~ d N eps ~ 1e-14, bound 1e-10)."""
    refs = [reference("gd", eta=ETA, n_iter=10)]
    data = loop_errors(looped_gd(3), prompts, 10, refs, n_batches=1)
    model = data[data.algorithm == "model"].set_index("step").value
    gd_err = data[data.algorithm == "gd"].set_index("step").value
    assert model.index.tolist() == list(range(11))
    assert (model - gd_err).abs().max() < 1e-10
    assert gd_err[10] < 0.5 * gd_err[1]  # GD is still moving: the comparison is not between constants


def test_loop_predictions_of_a_longer_run_start_with_the_shorter_runs(prompts):
    """The stream after loop i does not depend on how many loops follow (read from one pass)."""
    long, short = loop_predictions(looped_gd(), prompts, 8), loop_predictions(looped_gd(), prompts, 3)
    torch.testing.assert_close(long[:4], short, rtol=0, atol=0)


def test_convergence_reports_the_error_at_the_trained_and_the_largest_loop_count(prompts):
    data = loop_errors(looped_gd(3), prompts, 9, [reference("gd", eta=ETA, n_iter=9)], n_batches=2)
    table = convergence(data, (1, 3)).set_index("algorithm")
    model = data[(data.algorithm == "model")].groupby("step").value.mean()
    assert table.loc["model", "at_trained"] == pytest.approx(model[3])
    assert table.loc["model", "at_max"] == pytest.approx(model[9]) and table.loc["model", "max_step"] == 9
    assert table.loc["model", "ratio_max_to_trained"] < 1  # GD keeps converging past loop 3


def test_the_trained_loops_run_from_the_first_window_to_n_loops():
    def run(**train):
        return RunConfig.from_dict({"model": {"n_layers": 1, "n_loops": 8, "input_injection": True},
                                    "train": {"steps": 5, **train}})
    assert trained_loops(run(loops_start=1, loop_window=4)) == (1, 8)
    assert trained_loops(run(loops_start=6, loop_window=4)) == (3, 8)
    assert trained_loops(run(loop_window=4)) == (5, 8)
    assert trained_loops(run()) == (8, 8)


def test_max_loops_must_be_a_positive_int(prompts):
    with pytest.raises(ValueError, match="max_loops"):
        loop_predictions(looped_gd(), prompts, 0)
