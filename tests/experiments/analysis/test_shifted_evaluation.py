"""``--shift`` of ``ttb compare`` and ``ttb plot errors``: shifted evaluation prompts, finite errors,
a ``shift`` key per row, one panel per shift, and one-line errors for unknown names."""

from __future__ import annotations

import json

import matplotlib
import pandas as pd
import pytest
import torch

from experiments.analysis import prompts
from experiments.analysis import runs as ar
from experiments.analysis import shifts as ashifts
from experiments.commands.main import main as ttb
from experiments.plots import shifts as plots_shifts
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep
from experiments.training.config import TaskSpec
from synthetic import shifts as S

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")
TASK = TaskSpec(d=3, n_points=6, format="example")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """Two tiny runs (4 float64 steps, d = 3, 5 examples): one per token format."""
    out = tmp_path_factory.mktemp("shifted")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(sw.parse_sweep({
            "task": {"d": 3, "n_points": 6, "eval_batch_size": 8},
            "model": {"n_layers": 1, "d_model": 8, "n_heads": 2},
            "train": {"steps": 4, "batch_size": 4, "dtype": "float64", "log_every": 2},
            "grid": {"task.format": ["example", "interleaved"]}}), out, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


# ----------------------------------------------------------------------------------------------
# Parsing and prompts


def test_shift_options_may_repeat_and_hold_comma_separated_names_and_factors():
    got = ashifts.parse_shifts(["skewed,scale_x:3", "noisy_y", "skewed"])
    assert got == [S.Shift("skewed"), S.Shift("scale_x", 3.0), S.Shift("noisy_y", 1.0)]
    assert ashifts.parse_shifts(None) == []


def test_an_unknown_shift_is_a_one_line_error_naming_the_known_ones(sweep_dir, capsys):
    assert ttb(["compare", str(sweep_dir), "--shift", "skewed,tilted"]) != 0
    err = capsys.readouterr().err.strip()
    assert "unknown shift 'tilted'" in err and ", ".join(S.SHIFTS) in err and "\n" not in err


def test_shifted_prompts_differ_from_the_task_and_the_standard_shift_is_the_task():
    plain = prompts.prompts_for_task(TASK, 32, seed=3)
    same = prompts.prompts_for_task(TASK, 32, seed=3, shift=S.Shift("standard"))
    skewed = prompts.prompts_for_task(TASK, 32, seed=3, shift=S.Shift("skewed"))
    assert torch.equal(same.x, plain.x) and torch.equal(same.y_query, plain.y_query)
    assert not torch.allclose(skewed.x, plain.x)
    torch.testing.assert_close((skewed.w[:, None] * skewed.x).sum(-1), skewed.y, rtol=0, atol=1e-12)  # noiseless


# ----------------------------------------------------------------------------------------------
# ttb compare --shift


def test_compare_reports_every_run_once_per_shift_with_a_shift_key_and_finite_error(sweep_dir, capsys):
    assert ttb(["compare", str(sweep_dir), "--shift", "scale_x:3", "--shift", "orthant", "--json",
                "--prompts", "64"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["shift"] for r in rows] == ["scale_x:3", "orthant"] * 2
    assert all(pd.notna(r["nmse"]) and r["nmse"] < float("inf") for r in rows)
    plain, _ = ar.compare_runs(sweep_dir, n_prompts=64)
    by_run = {r["run"]: r["nmse"] for r in plain}
    assert all(r["nmse"] != by_run[r["run"]] for r in rows)  # the shift changed the prompts evaluated


def test_compare_without_shift_has_no_shift_key(sweep_dir, capsys):
    assert ttb(["compare", str(sweep_dir), "--json", "--prompts", "16"]) == 0
    assert all("shift" not in r for r in json.loads(capsys.readouterr().out))


def test_scaled_input_prompts_give_the_zero_predictor_the_squared_factor_times_its_error():
    """The zero baseline's error is mean y_q^2 / d; on a noiseless task scale_x:c makes every y_q c
    times larger on the same draw, so the error c^2 times larger (a shift that was ignored: 1 times)."""
    p1 = prompts.prompts_for_task(TASK, 64, seed=0, shift=S.Shift("standard"))
    p3 = prompts.prompts_for_task(TASK, 64, seed=0, shift=S.parse_shift("scale_x:3"))
    torch.testing.assert_close(p3.y_query.pow(2).mean(), 9 * p1.y_query.pow(2).mean(), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------
# ttb plot errors --shift


def test_shift_curves_are_finite_with_the_model_only_at_its_trained_sizes(sweep_dir):
    run = ar.load_run(ar.find_runs(sweep_dir)[0])
    for shift in (S.Shift("skewed"), S.Shift("query_in_context")):
        data = ashifts.shift_curves(run, shift, n_prompts=32)
        assert set(data["shift"]) == {str(shift)} and data.value.notna().all()
        assert set(data[data.algorithm == "model"].n_examples) == set(ar.trained_sizes(run.config))
        assert set(data[data.algorithm == "ols"].n_examples) == {1, 2, 3, 4, 5}


def test_query_in_context_curves_draw_the_query_from_the_examples_at_each_context_size(sweep_dir):
    """With the query one of its n examples, noiseless least squares fits it exactly at every n; the
    cropped batch of the other shifts would leave the query outside the first n examples."""
    run = ar.load_run(ar.find_runs(sweep_dir)[0])
    data = ashifts.shift_curves(run, S.Shift("query_in_context"), n_prompts=32)
    assert data[data.algorithm == "ols"].value.max() < 1e-20  # float64 least squares on a copy of an example


def test_orthogonal_query_curves_stop_where_the_examples_span_the_inputs(sweep_dir):
    run = ar.load_run(ar.find_runs(sweep_dir)[1])  # interleaved: trained at every n
    data = ashifts.shift_curves(run, S.Shift("orthogonal_query"), n_prompts=32)
    assert data.n_examples.max() == run.config.task.d - 1


def test_plot_errors_with_shifts_draws_one_panel_per_shift_with_the_baselines(sweep_dir, tmp_path):
    runs = [ar.load_run(d) for d in ar.find_runs(sweep_dir)]
    shifts = [S.Shift("standard"), S.parse_shift("scale_y:2")]
    data = pd.concat([ashifts.shift_curves(runs[1], s, n_prompts=32) for s in shifts], ignore_index=True)
    axes = plots_shifts.shift_panels(plots_shifts.shift_rows(data))
    try:
        assert [ax.get_title() for ax in axes] == ["shift standard", "shift scale_y:2"]
        labels = [line.get_label() for line in axes[1].lines]
        assert runs[1].label in labels and {"ols", "zero", "gd k=1"} <= set(labels)
    finally:
        matplotlib.pyplot.close(axes[0].figure)
    assert ttb(["plot", "errors", str(runs[1].directory), "--shift", "standard,scale_y:2", "--prompts", "16",
                "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("errors_shifted_*.png"))) == 1


def test_shift_on_another_plot_kind_is_an_error(sweep_dir, capsys):
    assert ttb(["plot", "heatmap", str(sweep_dir), "--shift", "skewed"]) != 0
    assert "--shift applies to `ttb plot errors` only" in capsys.readouterr().err
