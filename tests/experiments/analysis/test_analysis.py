"""The comparison metrics on models whose answer is known: constructions that ARE the algorithm."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constructions import model as M
from constructions.icl import gd, newton
from constructions.reference import algorithms as alg
from constructions.reference import baselines as bl
from experiments.analysis import core as an
from experiments.analysis import interp as ai
from experiments.analysis import metrics as am
from experiments.analysis import probes as ap
from experiments.analysis import prompts, references

# Exact constructions in float64: outputs agree with the algorithm to ~ d N eps ~ 1e-14, so squared
# differences are ~1e-28 and cosines 1 - 1e-12; 1e-20 and 1e-9 leave wide margins yet are far
# below what any perturbation of the weights produces (> 1e-8 for a 1e-4 relative perturbation).
TINY_DIFF, COS_TOL = 1e-20, 1e-9


def gd_learner(d=3, n=12, steps=3, seed=0, n_prompts=256):
    p = prompts.sample_prompts(d, n, n_prompts, seed=seed)
    eta = references.default_eta(p.x)
    built = gd.build(d, steps, eta)
    return an.Learner(built.cfg, built.weights, "example", model="gd"), p, eta


def value(df, **where):
    for key, v in where.items():
        df = df[df[key].isna()] if v is None else df[df[key] == v]
    assert len(df) == 1, f"expected one row for {where}, got {len(df)}"
    return float(df.value.iloc[0])


def test_a_construction_scores_similarity_one_and_difference_zero_against_its_algorithm():
    learner, p, eta = gd_learner()
    refs = [references.reference("gd", eta=eta, n_iter=5)]
    cmp = am.compare(learner, p, refs)
    at = dict(layer=3, algorithm="gd", iteration=3)
    assert value(cmp, metric="prediction_difference", **at) < TINY_DIFF
    assert value(cmp, metric="error_similarity", **at) == pytest.approx(1.0, abs=COS_TOL)
    assert value(cmp, metric="model_cosine", **at) == pytest.approx(1.0, abs=COS_TOL)
    iw = am.implicit_weights(learner, p, refs, n_prompts=8, n_queries=16)
    assert value(iw, metric="implicit_weight_difference", **at) < TINY_DIFF
    assert value(iw, metric="implicit_weight_r2", layer=3) == pytest.approx(1.0, abs=1e-9)


def test_the_model_rows_give_mean_and_median_error_of_every_layer():
    learner, p, _ = gd_learner()
    cmp = am.compare(learner, p, [])
    err = (an.layer_predictions(learner, p) - p.y_query).pow(2) / p.d
    for layer in range(learner.n_layers + 1):
        assert value(cmp, metric="nmse", layer=layer, algorithm="model") == pytest.approx(float(err[layer].mean()))
        assert value(cmp, metric="median_nmse", layer=layer, algorithm="model") == pytest.approx(
            float(err[layer].median()))


def test_a_perturbed_construction_no_longer_scores_difference_zero():
    """The metrics are not vacuous: one perturbed matrix moves the difference far above TINY_DIFF."""
    learner, p, eta = gd_learner()
    sd = M.to_state_dict(learner.weights)
    sd["blocks.1.attn.W_Q"] = sd["blocks.1.attn.W_Q"] * (1 + 1e-3)
    moved = an.Learner(learner.cfg, M.from_state_dict(sd), "example")
    cmp = am.compare(moved, p, [references.reference("gd", eta=eta, n_iter=5)])
    assert value(cmp, metric="prediction_difference", layer=3, algorithm="gd", iteration=3) > 1e-12


def test_the_gd_construction_at_depth_three_is_matched_to_iteration_three_layer_by_layer():
    learner, p, eta = gd_learner(steps=3)
    best = am.best_iterations(am.compare(learner, p, [references.reference("gd", eta=eta, n_iter=8)]))
    got = best[best.metric == "best_iteration"].sort_values("layer").value.tolist()
    assert got == [0, 1, 2, 3]


def test_the_newton_construction_with_three_iterations_is_matched_to_newton_iteration_three():
    d, p = 3, prompts.sample_prompts(3, 16, 256, seed=2)
    radius = float(p.x.norm(dim=-1).max())
    alpha = 0.9 * newton.alpha_bound(radius)
    built = newton.build(d, 3, alpha, radius=radius)
    learner = an.Learner(built.cfg, built.weights, "example", model="newton")
    cmp = am.compare(learner, p, [references.reference("newton", alpha=alpha, n_iter=8)])
    closest = am.closest_algorithm(cmp)
    assert (closest.algorithm.iloc[0], int(closest.iteration.iloc[0])) == ("newton", 3)
    assert closest.value.iloc[0] < TINY_DIFF
    best = am.best_iterations(cmp)
    assert value(best, metric="best_iteration", layer=learner.n_layers) == 3


@settings(max_examples=8, deadline=None)
@given(d=st.integers(1, 4), n=st.integers(6, 12), steps=st.integers(1, 4), seed=st.integers(0, 99))
def test_gd_constructions_of_any_depth_match_their_depth(d, n, steps, seed):
    """Not vacuous: iterates differ (eta is a fixed fraction of the stable range, so w_k != w_{k+1}
    unless the context is degenerate), so the argmax must single out the right one."""
    learner, p, eta = gd_learner(d=d, n=n, steps=steps, seed=seed, n_prompts=64)
    closest = am.closest_algorithm(am.compare(learner, p, [references.reference("gd", eta=eta, n_iter=steps + 3)]))
    assert int(closest.iteration.iloc[0]) == steps


def test_fitted_relations_recover_hand_made_slopes():
    assert am.fit_relation([1, 2, 3], [2, 4, 6], "linear") == pytest.approx(2.0)
    assert am.fit_relation([1, 2, 3], [2, 4, 8], "log") == pytest.approx(math.log(2))
    assert math.isnan(am.fit_relation([1], [3], "linear"))


def test_zero_predictor_scores_one_and_least_squares_scores_d_minus_n_over_d():
    """Analytic: E y^2 = d for x, w ~ N(0, I), and noiseless min-norm least squares with n < d
    examples has expected error (d - n) on a fresh query. Var(y^2) / d^2 = 2 (d + 3) / d = 3.5 at
    d = 4, so the mean of 4096 prompts has sd 0.03: 0.12 is 4 sd."""
    p = prompts.sample_prompts(4, 6, 4096, seed=3)
    curves = am.baseline_curves(p, [references.reference("zero"), references.reference("ols")])
    mean = curves.groupby(["algorithm", "n_examples"]).value.mean()
    assert mean["zero", 3] == pytest.approx(1.0, abs=0.12)
    assert mean["ols", 2] == pytest.approx(0.5, abs=0.12)
    assert mean["ols", 5] < 1e-20


def test_reference_defaults_agree_with_the_algorithms_module():
    p = prompts.sample_prompts(3, 10, 32, seed=4)
    eta = references.default_eta(p.x)
    default = references.reference("gd", n_iter=4).weights(p.x, p.y, False)
    for b in (0, 1):  # the default step is 1 / lambda_max(S) of each prompt
        step = 1 / float(torch.linalg.eigvalsh(alg.statistics(p.x[b])[0])[-1])
        assert torch.allclose(default[:, b], alg.gd(p.x[b], p.y[b], eta=step, n_steps=4))
    prefix = references.reference("gd", n_iter=4).weights(p.x, p.y, True)
    assert torch.allclose(prefix[:, :, -1], default)
    plain = references.reference("gd", eta=eta, n_iter=3).weights(p.x, p.y, False)
    assert torch.allclose(references.reference("gd_plus_plus", eta=eta, gamma=0.0, n_iter=3).weights(p.x, p.y, False), plain)
    newton_last = references.reference("newton", n_iter=30).weights(p.x, p.y, False)[-1]
    assert torch.allclose(newton_last, alg.least_squares(p.x, p.y), atol=1e-8)
    ridge_prefix = references.reference("ridge", lam=0.3).weights(p.x, p.y, True)[0, :, -1]
    assert torch.allclose(ridge_prefix, alg.ridge(p.x, p.y, lam=0.3 / 10))


def test_best_eta_for_one_step_is_the_least_squares_step():
    """One GD step predicts eta b.x_q, so the best eta on the prompts solves a 1-d least squares."""
    p = prompts.sample_prompts(3, 20, 512, seed=5)
    eta = references.best_eta(p)
    err = lambda e: (e * alg.predict(alg.statistics(p.x, p.y)[1], p.x_query) - p.y_query).pow(2).mean()  # noqa: E731
    assert err(eta) <= min(err(eta * 0.98), err(eta * 1.02))


def test_implicit_weights_of_an_affine_function_are_exact():
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(5, 20, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    w_hat, r2 = am.fit_implicit_weights((queries * w[:, None]).sum(-1) + 0.7, queries)
    assert torch.allclose(w_hat, w) and torch.allclose(r2, torch.ones(5, dtype=torch.float64))


def test_probes_read_the_prediction_from_the_last_layer_but_not_w_from_the_embedding():
    """Layer L's query y slot holds -w_L.x_q, the prediction itself (R^2 = 1 up to round-off); the
    embedding holds x_q alone, independent of w, so held-out R^2 for w is ~0 (sd ~ sqrt(d / B))."""
    learner, p, _ = gd_learner(n_prompts=512)
    probes = ap.probes(learner, p)
    assert value(probes, layer=3, metric="probe_r2[prediction]") > 0.999
    assert value(probes, layer=0, metric="probe_r2[w]") < 0.2
    readouts = ap.readout_nmse(learner, p)
    assert value(readouts, layer=0) == pytest.approx(float(p.y_query.pow(2).mean() / p.d))


def test_align_pads_a_construction_into_a_wider_config_without_changing_its_outputs():
    learner, p, _ = gd_learner()
    wide = M.ModelConfig(d_model=16, n_layers=3, n_heads=2, d_head=16, d_in=4, attention="linear",
                         mask="exclude_query", mlp="none", bias=False, n_positions=13)
    w = ai.align(learner.cfg, learner.weights, wide)
    padded = an.Learner(wide, w, "example")
    assert torch.allclose(an.layer_predictions(padded, p), an.layer_predictions(learner, p), atol=1e-12)


def test_align_names_the_fields_that_cannot_be_padded():
    learner, _, _ = gd_learner()
    other = M.ModelConfig(d_model=4, n_layers=2, n_heads=1, d_head=3, d_in=4, attention="softmax",
                          mask="exclude_query", mlp="none", bias=False)
    with pytest.raises(ValueError, match="n_layers.*attention|attention.*n_layers"):
        ai.align(learner.cfg, learner.weights, other)


def test_interpolation_ends_at_each_endpoints_error():
    learner, p, eta = gd_learner()
    other = gd.build(3, 3, eta * 0.5).weights
    path = ai.interpolation(learner, other, p, ts=[0.0, 0.5, 1.0])
    moved = an.Learner(learner.cfg, other, "example")
    nmse = lambda lr: float((an.layer_predictions(lr, p)[-1] - p.y_query).pow(2).mean() / p.d)  # noqa: E731
    assert path.value.iloc[0] == pytest.approx(nmse(learner)) and path.value.iloc[-1] == pytest.approx(nmse(moved))
    assert list(path.t) == [0.0, 0.5, 1.0]


def test_training_from_a_construction_reports_how_far_it_moved():
    from experiments.training.config import RunConfig

    run = RunConfig.from_dict({
        "task": {"d": 3, "n_points": 8, "format": "example", "eval_batch_size": 8},
        "model": {"n_layers": 1, "d_model": 4, "n_heads": 1, "d_head": 3, "attention": "linear", "mlp": "none",
                  "norm": "none", "final_norm": False, "bias": False},
        "train": {"steps": 4, "batch_size": 8, "log_every": 2, "dtype": "float64", "lr": 1e-3}})
    built = gd.build(3, 1, 0.5)
    start = ai.align(built.cfg, built.weights, run.model_config())
    trained, frame = ai.train_from(run, start)
    moved = frame[frame.metric == "relative_distance_moved"].value.iloc[0]
    assert 0 < moved < 0.1  # Adam moves each weight by <= lr per step: 4 steps of 1e-3
    assert trained.K == 1


@pytest.mark.slow
def test_a_trained_one_layer_linear_attention_model_matches_the_gd_construction():
    """von Oswald et al. 2023: one trained LSA layer implements one GD step. Trained on CPU for
    800 steps (nmse reaches the one-step optimum 1 - N / (N + d + 1) = 0.2 within ~600), its
    gradient in the query must align with the GD step's direction b = X^T y / N."""
    from experiments.training.config import RunConfig
    from experiments.training.regression import train_runs

    run = RunConfig.from_dict({
        "task": {"d": 4, "n_points": 21, "format": "example", "eval_batch_size": 256},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 1, "d_head": 16, "attention": "linear", "mlp": "none",
                  "norm": "none", "final_norm": False, "bias": False, "init_std": 0.2},
        "train": {"steps": 800, "batch_size": 128, "lr": 1e-2, "log_every": 100, "grad_clip": 0.0,
                  "min_lr_ratio": 0.01}})
    trainer, state = train_runs([run], device="cpu")
    learner = an.Learner(trainer.cfg, trainer.weights(state, 0), "example")
    p = prompts.prompts_for_task(run.task, 512, seed=7)
    eta = references.best_eta(prompts.prompts_for_task(run.task, 512, seed=8))
    cmp = am.compare(learner, p, [references.reference("gd", eta=eta, n_iter=1)])
    assert value(cmp, metric="model_cosine", layer=1, algorithm="gd", iteration=1) > 0.99
    assert value(cmp, metric="prediction_difference", layer=1, algorithm="gd", iteration=1) < 0.02


def test_interleaved_tokens_end_at_the_query_x_token():
    """A causal model reads x_1, y_1, ..., x_N, y_N, x_q and predicts at x_q: the full interleaved
    sequence with the query appended, minus its (unknown) y token."""
    from constructions.tokens import interleaved_tokens

    p = prompts.sample_prompts(2, 3, 4, seed=6)
    toks = an.tokens("interleaved", p.x, p.y, p.x_query)
    full = interleaved_tokens(torch.cat([p.x, p.x_query[:, None]], 1), torch.cat([p.y, p.y_query[:, None]], 1))
    assert toks.shape == (4, 7, 3) and torch.equal(toks, full[:, :-1])


@pytest.mark.parametrize("name, option", [("gd", "eta"), ("newton", "alpha"), ("gd_plus_plus", "eta"), ("ridge", "lam")])
def test_an_explicit_zero_step_is_an_error_that_names_it_not_the_default(name, option):
    """eta=0.0 used to pass `if eta:` and silently become 1 / lambda_max(S); None is the default."""
    with pytest.raises(ValueError, match=f"{name}: {option} must be > 0, got 0.0"):
        references.reference(name, **{option: 0.0})
    with pytest.raises(ValueError, match=f"{option} must be > 0"):
        references.parse_references(f"{name}:{option}=0")


def test_references_run_the_one_ridge_gd_and_newton_of_the_algorithms_module():
    """ridge is algorithms.ridge in the sum convention (bitwise: the same code), baselines.ridge_sum
    too; the default gd and newton steps are 1 / lambda_max(S) and its square per prompt and prefix."""
    p = prompts.sample_prompts(3, 8, 16, seed=9)
    ridge = references.reference("ridge", lam=0.3).weights(p.x, p.y, True)[0]
    assert torch.equal(ridge, alg.ridge(p.x, p.y, lam=0.3, prefix=True, convention="sum"))
    assert torch.equal(ridge, bl.ridge_sum(p.x, p.y, lam=0.3, prefix=True))
    top = references.top_eigenvalue(p.x, prefix=True).clamp(min=1e-12)  # (B, N+1)
    gd_prefix = references.reference("gd", n_iter=3).weights(p.x, p.y, True)
    assert torch.equal(gd_prefix, alg.gd(p.x, p.y, eta=1 / top, n_steps=3, prefix=True))
    newton_prefix = references.reference("newton", n_iter=3).weights(p.x, p.y, True)
    assert torch.equal(newton_prefix, alg.newton(p.x, p.y, alpha=top**-2, n_iter=3, prefix=True))


@pytest.mark.parametrize("spec, message", [("svm", "known: zero"), ("gd:speed=2", "bad option"),
                                           ("gd:eta=best", "eta=best needs prompts"), ("", "at least one")])
def test_algorithm_specs_fail_with_a_message_that_names_the_problem(spec, message):
    with pytest.raises((KeyError, ValueError), match=message):
        references.parse_references(spec)


def test_the_averaging_reference_is_x_transpose_y_over_n_for_every_prefix():
    p = prompts.sample_prompts(3, 6, 5, seed=2)
    W = references.reference("averaging").weights(p.x, p.y, True)[0]  # (B, N + 1, d)
    for n in range(1, 7):
        torch.testing.assert_close(W[:, n], (p.x[:, :n] * p.y[:, :n, None]).sum(1) / n)
