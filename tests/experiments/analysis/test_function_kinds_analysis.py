"""Runs of the nonlinear task kinds (trees, networks, quadratics, classification, mixtures) through the
analysis: prompts keep a mixture's family, probes leave out the linear weight these kinds do not have,
and ``ttb compare --shift`` / ``ttb plot errors --shift`` evaluate them with their kind's baselines."""

from __future__ import annotations

import math

import pytest

from experiments.analysis import prompts, shifts
from experiments.analysis import runs as ar
from experiments.analysis.probes import probes
from experiments.sweeps.runner import run_sweep
from experiments.sweeps.spec import parse_sweep
from experiments.training.config import TaskSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def task(kind: str, **fields) -> TaskSpec:
    return TaskSpec(kind=kind, d=3, n_points=6, format="example", **fields)


def test_mixture_prompts_carry_each_prompts_family():
    spec = task("mixture", mixture=["isotropic", "quadratic"], mixture_probs=[0.5, 0.5])
    p, extras = prompts.task_prompts(spec, 64, seed=0)
    assert extras["family"].shape == (64,) and set(extras["family"].tolist()) == {0, 1}


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tree")
    run_sweep(parse_sweep({"sweep": {"name": "tree"}, "task": {"kind": "tree", "d": 3, "n_points": 6,
                                                              "format": "example", "eval_batch_size": 16},
                           "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
                           "train": {"steps": 5, "batch_size": 8, "dtype": "float64"}}), out, progress=False)
    return out


def test_probes_of_a_tree_run_leave_out_w_and_stay_finite(tree_run):
    run = ar.load_run(ar.find_runs(tree_run)[0])
    frame = probes(run.learner, prompts.prompts_for_task(run.config.task, 64, seed=0))
    assert "probe_r2[w]" not in set(frame.metric) and "probe_r2[prediction]" in set(frame.metric)
    assert frame.value.map(math.isfinite).all()


def test_a_tree_run_compares_under_a_shift_with_the_tree_baselines(tree_run):
    pytest.importorskip("sklearn")
    summaries, frames = shifts.compare_shifted(tree_run, None, shifts.parse_shifts(["skewed,scale_y:2"]),
                                               n_prompts=32)
    assert [s["shift"] for s in summaries] == ["skewed", "scale_y:2"]
    algorithms = set(frames["compare"].algorithm)
    assert {"knn", "averaging", "tree", "deep_tree", "ols", "zero"} <= algorithms


def test_error_curves_of_a_tree_run_under_a_shift_include_the_tree_baseline(tree_run):
    pytest.importorskip("sklearn")
    run = ar.load_run(ar.find_runs(tree_run)[0])
    curves = shifts.shift_curves(run, shifts.parse_shifts(["orthant"])[0], n_prompts=16)
    assert {"knn", "averaging", "tree"} <= set(curves.algorithm) and set(curves["shift"]) == {"orthant"}
    assert curves.value.map(math.isfinite).all()
