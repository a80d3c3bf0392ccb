"""The nonlinear baselines as named references: built by name and by the --algorithms syntax, read
through Reference.predictions / prefix_predictions, and chosen by default per nonlinear task kind."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from constructions.icl import gd
from constructions.reference import nonlinear as nl
from experiments.analysis import core as an
from experiments.analysis import icl as ai
from experiments.analysis import metrics as am
from experiments.analysis import prompts
from experiments.analysis import references as R
from experiments.training.config import TaskSpec

F64 = torch.float64
CHEAP = {"boosting": {"trees": 3}, "nn_gd": {"steps": 3, "width": 4}}


def task(kind, **fields):
    return TaskSpec(kind=kind, d=3, n_points=9, **fields)


@pytest.fixture(scope="module")
def p():
    return prompts.prompts_for_task(task("isotropic", noise_std=0.1), 6, seed=0)


@pytest.mark.parametrize("name", R.NONLINEAR_NAMES)
def test_every_nonlinear_reference_predicts_every_prefix_and_the_full_context(name, p):
    if name in ("tree", "deep_tree", "boosting"):
        pytest.importorskip("sklearn")
    ref = R.reference(name, **CHEAP.get(name, {}))
    assert not ref.linear and not ref.iterative
    curve = ref.prefix_predictions(p)
    assert curve.shape == (1, p.B, p.n + 1) and torch.isfinite(curve).all()
    assert torch.equal(curve[..., 0], torch.zeros(1, p.B, dtype=F64))  # no examples: predict 0
    # Float64 round-off, except nn_gd, which trains in float32 (batched differently in the two calls).
    tol = 1e-5 if name == "nn_gd" else 1e-12
    assert torch.allclose(ref.predictions(p), curve[..., -1], rtol=0, atol=tol)
    assert torch.isnan(ref.query_gradients(p)).all() and ref.query_gradients(p).shape == (1, p.B, p.d)


def test_a_nonlinear_reference_has_no_weights_and_says_so(p):
    with pytest.raises(ValueError, match="knn is not linear in the query"):
        R.reference("knn").weights(p.x, p.y, False)


def test_a_linear_reference_reads_the_same_through_predictions_and_weights(p):
    ref = R.reference("ridge", lam=0.3)
    W = ref.weights(p.x, p.y, True)  # (1, B, N+1, d)
    assert ref.linear
    assert torch.allclose(ref.prefix_predictions(p), (W * p.x_query[:, None, :]).sum(-1), atol=1e-12)
    assert torch.equal(ref.query_gradients(p), ref.weights(p.x, p.y, False))


def test_named_options_reach_the_baseline_and_name_the_reference(p):
    knn5, = R.parse_references("knn_distance:k=5")
    assert knn5.name == "knn_distance[k=5]"
    assert torch.equal(knn5.prefix_predictions(p)[0], nl.knn(p.x, p.y, p.x_query, k=5, weights="distance", prefix=True))
    logistic, = R.parse_references("logistic_mean:lam=2")
    y = torch.sign(p.y)
    assert torch.equal(logistic.predict(p.x, y, p.x_query, False)[0],
                       nl.logistic(p.x, y, p.x_query, lam=2.0, output="mean"))


@pytest.mark.parametrize("spec, match", [("knn:k=0", "knn: k must be an integer >= 1"),
                                         ("nn_gd:width=2.5", "nn_gd: width must be an integer"),
                                         ("nn_gd:lr=-1", "nn_gd: lr must be > 0"),
                                         ("tree:leaves=3", "bad option 'leaves=3'")])
def test_bad_options_of_a_nonlinear_baseline_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        R.parse_references(spec)


# ----------------------------------------------------------------------------------------------
# Task-aware: the Bayes selector and the default baselines per kind


def test_bayes_mixture_reference_is_the_selector_over_the_mixtures_families():
    t = task("mixture", mixture=["isotropic", "logistic"], mixture_probs=[0.25, 0.75], noise_std=0.2)
    q = prompts.prompts_for_task(t, 8, seed=1)
    families, probs = R.mixture_families(t)
    assert families == [nl.GaussianFamily(0.2), nl.SignFamily(lam=1.0, output="mean")] and probs == [0.25, 0.75]
    want = nl.bayes_mixture(q.x, q.y, q.x_query, families, probs=probs, prefix=True).prediction
    assert torch.equal(R.reference("bayes_mixture", task=t).prefix_predictions(q)[0], want)


def test_bayes_mixture_beats_each_single_family_baseline_on_mixture_prompts():
    """Regression prompts need ridge, classification prompts the label mean: only a selector that
    tells them apart does well on both (swap the families' posteriors and it falls behind both)."""
    t = TaskSpec(kind="mixture", mixture=["isotropic", "logistic"], d=4, n_points=13, noise_std=0.1)
    q = prompts.prompts_for_task(t, 400, seed=2)
    nmse = {name: float((R.reference(name, task=t, lam=1.0).predictions(q)[-1] - q.y_query).pow(2).mean())
            for name in ("bayes_mixture", "ols", "logistic_mean")}
    assert nmse["bayes_mixture"] < min(nmse["ols"], nmse["logistic_mean"]), nmse


def test_bayes_mixture_refuses_a_family_without_an_exact_posterior():
    with pytest.raises(ValueError, match="no exact posterior for task kind 'tree'"):
        R.reference("bayes_mixture", task=task("mixture", mixture=["isotropic", "tree"]))
    with pytest.raises(ValueError, match="'quadratic'"):
        R.mixture_families(task("quadratic", quadratic_form="inner"))


@pytest.mark.parametrize("kind, fields", [("tree", {}), ("relu2nn", {}), ("quadratic", {}), ("logistic", {}),
                                          ("mixture", {"mixture": ["isotropic", "sparse"], "k": 2})])
def test_each_nonlinear_kind_has_default_baselines_that_parse_for_its_task(kind, fields):
    t = task(kind, **fields)
    spec = R.default_spec(t, "gd,ols")
    assert spec == R.TASK_BASELINES[kind]
    names = [r.name for r in R.parse_references(spec, fit=prompts.prompts_for_task(t, 4))]
    assert names == spec.split(",")


def test_default_baselines_keep_the_linear_defaults_and_drop_an_impossible_selector():
    assert R.default_spec(task("isotropic"), "gd,newton,ols") == "gd,newton,ols"
    assert "bayes_mixture" not in R.default_spec(task("mixture", mixture=["isotropic", "relu2nn"]), "gd")
    assert "bayes_mixture" not in R.default_spec(task("quadratic", quadratic_form="inner"), "gd")


def test_icl_baseline_curves_draw_a_nonlinear_reference():
    t = task("tree")
    curves = ai.baseline_curves(t, [R.reference("knn"), R.reference("zero")], n_prompts=64)
    knn = curves[curves.algorithm == "knn"].set_index("n_examples").value
    assert knn.loc[0] == pytest.approx(curves[curves.algorithm == "zero"].value.iloc[0])  # both predict 0
    assert knn.loc[8] < knn.loc[1]  # more neighbours to average over: a better estimate


# ----------------------------------------------------------------------------------------------
# Through the metrics (``ttb compare`` and ``ttb plot errors``)


def test_compare_and_error_curves_take_nonlinear_references_beside_linear_ones():
    q = prompts.sample_prompts(3, 10, 64, seed=3)
    eta = R.default_eta(q.x)
    built = gd.build(3, 2, eta)
    learner = an.Learner(built.cfg, built.weights, "example", model="gd")
    refs = [R.reference("gd", eta=eta, n_iter=2), R.reference("knn")]
    cmp = am.compare(learner, q, refs)
    knn = cmp[(cmp.algorithm == "knn") & (cmp.layer == learner.n_layers)].set_index("metric").value
    want = (an.layer_predictions(learner, q)[-1] - refs[1].predictions(q)[0]).pow(2).mean() / q.d
    assert knn["prediction_difference"] == pytest.approx(float(want), rel=1e-12)
    assert pd.isna(knn["model_cosine"])  # k-NN has no gradient in the query to compare
    closest = am.closest_algorithm(cmp)
    assert closest.algorithm.iloc[0] == "gd"  # the construction is GD, not k-NN
    curves = am.baseline_curves(q, refs)
    assert set(curves.algorithm) == {"gd", "knn"}
    assert am.implicit_weights(learner, q, refs).algorithm.isin(["model", "gd"]).all()


def test_lasso_reference_matches_scikit_learn_at_every_prefix():
    """The same objective, 1/(2n)|Xw - y|^2 + alpha|w|_1 (scikit-learn's convention), solved
    independently: coordinate descent to convergence on both sides, so 1e-6 is their tolerance."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 3, dtype=torch.float64, generator=g)
    y = x[..., 0] * 2.0 + 0.1 * torch.randn(4, 6, dtype=torch.float64, generator=g)
    W = R.reference("lasso", alpha=0.05).weights(x, y, True)[0]  # (B, N + 1, d)
    assert W[:, 0].abs().max() == 0
    for b in range(4):
        for n in (1, 2, 3, 6):  # fewer examples than d = 3 too, where the features are collinear
            fit = sklearn.Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100000).fit(x[b, :n], y[b, :n])
            assert torch.allclose(W[b, n], torch.as_tensor(fit.coef_), atol=1e-6), (b, n)
    with pytest.raises(ValueError, match="lasso: alpha must be > 0"):
        R.reference("lasso", alpha=-1.0)
