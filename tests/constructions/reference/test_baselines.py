"""Bayes-optimal, Lasso, task-pool and feature baselines: conventions, optimality, convergence,
agreement with per-sample reference computations, bad input."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from constructions.reference import algorithms, baselines
from synthetic.regression import RegressionTask, make_generators, sample
from synthetic.tasks import RepresentationTask, TaskPoolTask
from synthetic.tasks import sample as sample_task

F64 = torch.float64


def _data(seed, B=6, N=5, d=3, noise=0.5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=gen, dtype=F64)
    w = torch.randn(B, d, generator=gen, dtype=F64)
    y = (x * w[:, None]).sum(-1) + noise * torch.randn(B, N, generator=gen, dtype=F64)
    return x, y, w


# ---------------------------------------------------------------------------------------------
# Ridge conventions and the Bayes-optimal lambda


def test_ridge_sum_is_algorithms_ridge_with_lambda_over_n_on_every_prefix():
    x, y, _ = _data(0)
    lam = 0.7
    prefix = baselines.ridge_sum(x, y, lam=lam, prefix=True)
    assert torch.equal(prefix[:, 0], torch.zeros_like(prefix[:, 0]))  # no examples: w = 0
    for n in range(1, x.shape[1] + 1):
        want = algorithms.ridge(x[:, :n], y[:, :n], lam=lam / n)
        assert torch.allclose(prefix[:, n], want, atol=1e-12)
    assert torch.allclose(baselines.ridge_sum(x, y, lam=lam), prefix[:, -1], atol=1e-12)


def test_bayes_lambda_is_noise_variance_over_prior_variance():
    assert baselines.bayes_ridge_lambda(0.5, 2.0) == pytest.approx(0.0625)


def test_bayes_ridge_without_noise_is_min_norm_least_squares():
    x, y, _ = _data(1, N=2, noise=0.0)
    assert torch.allclose(baselines.bayes_ridge(x, y, noise_std=0.0), algorithms.least_squares(x, y))


def _conditional_risk(x, lam, sigma, tau):
    """E|w_hat - w|^2 given X, over w ~ N(0, tau^2 I) and the noise, for ridge_sum at lam:
    w_hat - w = -lam G^{-1} w + G^{-1} X^T sigma eps, G = X^T X + lam I, so the risk is
    lam^2 tau^2 tr(G^{-2}) + sigma^2 tr(G^{-1} X^T X G^{-1})."""
    XtX = x.transpose(-1, -2) @ x
    Ginv = torch.linalg.inv(XtX + lam * torch.eye(x.shape[-1], dtype=x.dtype))
    trace = lambda m: torch.diagonal(m, dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    return lam**2 * tau**2 * trace(Ginv @ Ginv) + sigma**2 * trace(Ginv @ XtX @ Ginv)


def test_bayes_lambda_minimises_the_exact_conditional_risk_of_every_prompt():
    """Exact, not Monte Carlo: for each X the risk is a closed form in lam; the posterior mean
    minimises it for every X, so every other lam is worse on every prompt."""
    x, _, _ = _data(2, B=50, N=4, d=5)
    sigma, tau = 0.8, 1.3
    best = _conditional_risk(x, baselines.bayes_ridge_lambda(sigma, tau), sigma, tau)
    for factor in (0.25, 0.5, 0.9, 1.1, 2.0, 4.0):
        other = _conditional_risk(x, factor * baselines.bayes_ridge_lambda(sigma, tau), sigma, tau)
        assert (other > best).all()


def test_bayes_ridge_beats_every_other_lambda_on_its_own_prior():
    """Monte Carlo on RegressionTask (d = 5, N = 5, sigma = 1, tau = 1): squared error on the query
    (the last point, noisy) of ridge at lam* = 1 and at lam* times 1/10, 1/3, 3, 10, paired over the
    same prompts. Each mean difference other - best must exceed 3 standard errors (the Bayes rule is
    optimal in expectation; 3 SE makes a false failure a ~1e-3 event per comparison)."""
    task = RegressionTask(d=5, n_points=6, noise_std=1.0)
    batch = sample(task, make_generators([0]), 20000, dtype=F64)
    x, y, xq, yq = batch.context_x[0], batch.context_y[0], batch.query_x[0], batch.query_y[0]
    err = lambda lam: (algorithms.predict(baselines.ridge_sum(x, y, lam=lam), xq) - yq) ** 2  # noqa: E731
    best = err(baselines.bayes_ridge_lambda(1.0, 1.0))
    for lam in (0.1, 1 / 3, 3.0, 10.0):
        diff = err(lam) - best
        se = diff.std() / math.sqrt(diff.numel())
        assert diff.mean() > 3 * se, f"lam={lam}: mean advantage {diff.mean():.4f}, SE {se:.4f}"


# ---------------------------------------------------------------------------------------------
# Posterior under a mixture of noise levels


def test_gaussian_log_evidence_matches_the_n_by_n_multivariate_normal():
    x, y, _ = _data(3)
    got = baselines.gaussian_log_evidence(x, y, 0.7, 1.2)
    cov = 1.2**2 * x @ x.transpose(-1, -2) + 0.7**2 * torch.eye(x.shape[1], dtype=F64)
    assert torch.allclose(got, MultivariateNormal(torch.zeros_like(y), cov).log_prob(y), atol=1e-10)


def test_gaussian_log_evidence_of_every_prefix_is_that_of_the_prefix_alone():
    """The prefix path solves with the folded QR factor, the per-prefix one with a fresh solve."""
    x, y, _ = _data(3)
    got = baselines.gaussian_log_evidence(x, y, 0.7, 1.2, prefix=True)
    for n in range(1, x.shape[1] + 1):
        assert torch.allclose(got[:, n], baselines.gaussian_log_evidence(x[:, :n], y[:, :n], 0.7, 1.2), atol=1e-12)


def test_noise_mixture_posterior_matches_a_per_prompt_computation():
    """The reference loops over prompts and levels with the N x N covariance (no d x d identities)."""
    x, y, _ = _data(4)
    levels, probs = (0.1, 0.5, 2.0), (0.2, 0.3, 0.5)
    w, post = baselines.noise_mixture_posterior(x, y, noise_levels=levels, probs=probs)
    for b in range(x.shape[0]):
        X, Y = x[b], y[b]
        logp = torch.stack([math.log(p) + MultivariateNormal(
            torch.zeros_like(Y), X @ X.T + s**2 * torch.eye(len(Y), dtype=F64)).log_prob(Y)
            for s, p in zip(levels, probs)])
        weights = torch.softmax(logp, 0)
        means = [torch.linalg.solve(X.T @ X + s**2 * torch.eye(3, dtype=F64), X.T @ Y) for s in levels]
        assert torch.allclose(post[b], weights, atol=1e-10)
        assert torch.allclose(w[b], sum(p * m for p, m in zip(weights, means)), atol=1e-10)


def test_noise_mixture_with_one_level_is_bayes_ridge_and_prefixes_agree():
    x, y, _ = _data(5)
    w, post = baselines.noise_mixture_posterior(x, y, noise_levels=(0.5,))
    assert torch.allclose(w, baselines.bayes_ridge(x, y, noise_std=0.5)) and torch.all(post == 1)
    wp, pp = baselines.noise_mixture_posterior(x, y, noise_levels=(0.1, 1.0), prefix=True)
    wl, pl = baselines.noise_mixture_posterior(x, y, noise_levels=(0.1, 1.0))
    assert torch.allclose(wp[:, -1], wl, atol=1e-12) and torch.allclose(pp[:, -1], pl, atol=1e-12)
    assert torch.allclose(pp[:, 0], torch.full_like(pp[:, 0], 0.5))  # no data: the prior


# ---------------------------------------------------------------------------------------------
# Lasso


def test_ista_converges_to_the_coordinate_descent_lasso_solution():
    """N = 20 > d = 5 with Gaussian x: S is well conditioned, the Lasso is strongly convex and ISTA
    converges linearly, at rate 1 - lam_min / lam_max per step; 3000 steps leave < 1e-9."""
    x, y, _ = _data(6, B=8, N=20, d=5)
    alpha = 0.3
    cd = baselines.lasso_cd(x, y, alpha=alpha, n_sweeps=500)
    w = baselines.ista(x, y, alpha=alpha, n_steps=3000)
    assert torch.allclose(w[-1], cd, atol=1e-9)
    assert (cd == 0).any() and (cd != 0).any()  # both active and inactive coordinates occur


def test_coordinate_descent_solution_satisfies_the_lasso_optimality_conditions():
    """KKT: S w - b = -alpha sign(w_k) where w_k != 0, and |S w - b|_k <= alpha where w_k = 0."""
    x, y, _ = _data(7, B=8, N=20, d=5)
    alpha = 0.3
    w = baselines.lasso_cd(x, y, alpha=alpha, n_sweeps=500)
    S, b = algorithms.statistics(x, y)
    grad = (S @ w.unsqueeze(-1)).squeeze(-1) - b
    active = w != 0
    assert torch.allclose(grad[active], -alpha * torch.sign(w[active]), atol=1e-10)
    assert (grad[~active].abs() <= alpha + 1e-10).all()


def test_ista_in_one_dimension_is_the_soft_threshold_computed_by_hand():
    """d = 1: the Lasso solution is soft_threshold(b, alpha) / S. Examples x = (1, 2), y = (1, 3):
    S = 5/2, b = 7/2, alpha = 1: w = 5/2 / 5/2 = 1; ISTA with eta = 1/S reaches it in one step."""
    x = torch.tensor([[[1.0], [2.0]]], dtype=F64)
    y = torch.tensor([[1.0, 3.0]], dtype=F64)
    w = baselines.ista(x, y, alpha=1.0, n_steps=2)
    assert w[:, 0, 0].tolist() == pytest.approx([0.0, 1.0, 1.0], abs=1e-15)


def test_ista_objective_never_increases_and_iterates_cover_every_prefix():
    x, y, _ = _data(8, B=4, N=10, d=4)
    w = baselines.ista(x, y, alpha=0.2, n_steps=50)
    obj = baselines.lasso_objective(x.expand(51, *x.shape), y.expand(51, *y.shape), w, 0.2)
    assert (obj[1:] <= obj[:-1] + 1e-12).all()
    prefix = baselines.ista(x, y, alpha=0.2, n_steps=5, prefix=True)
    assert prefix.shape == (6, 4, 11, 4)
    assert torch.allclose(prefix[:, :, -1], baselines.ista(x, y, alpha=0.2, n_steps=5), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Finite task pool and representation tasks


def test_pool_posterior_matches_a_per_prompt_bayes_rule():
    task = TaskPoolTask(d=3, n_points=6, pool_size=5, noise_std=0.5)
    batch = sample_task(task, make_generators([1]), 7, dtype=F64)
    pool, x, y = task.pool(), batch.x[0], batch.y[0]
    got = baselines.pool_posterior(x, y, pool, noise_std=0.5)
    for b in range(x.shape[0]):
        loglik = torch.stack([-((y[b] - x[b] @ wk) ** 2).sum() / (2 * 0.25) for wk in pool])
        post = torch.softmax(loglik, 0)
        assert torch.allclose(got.probs[b], post, atol=1e-12)
        assert torch.allclose(got.mean[b], post @ pool, atol=1e-12)


def test_pool_posterior_concentrates_on_the_true_task_and_starts_at_the_prior():
    task = TaskPoolTask(d=4, n_points=12, pool_size=8, noise_std=0.01)
    batch = sample_task(task, make_generators([2]), 16, dtype=F64)
    got = baselines.pool_posterior(batch.x[0], batch.y[0], task.pool(), noise_std=0.01, prefix=True)
    assert torch.equal(got.probs[:, -1].argmax(-1), batch.task_index[0])
    assert torch.allclose(got.mean[:, -1], batch.w[0], atol=1e-6)
    assert torch.allclose(got.mean[:, 0], task.pool().mean(0).expand(16, 4), atol=1e-12)


def test_feature_ridge_recovers_a_noiseless_representation_task():
    """Noiseless y = w.Phi(x) with 200 examples and width 8: ridge on Phi(x) with a tiny lam predicts
    a fresh query to ~lam; ridge on x itself does not (Phi is not linear)."""
    task = RepresentationTask(d=3, n_points=201, depth=2, width=8)
    batch = sample_task(task, make_generators([3]), 4, dtype=F64)
    f, x, y = batch.features[0], batch.x[0], batch.y[0]
    w = baselines.feature_ridge(f[:, :-1], y[:, :-1], lam=1e-8)
    assert torch.allclose(algorithms.predict(w, f[:, -1]), y[:, -1], atol=1e-6)
    linear = algorithms.predict(baselines.ridge_sum(x[:, :-1], y[:, :-1], lam=1e-8), x[:, -1])
    assert not torch.allclose(linear, y[:, -1], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("call, match", [
    (lambda: baselines.bayes_ridge_lambda(-0.1), "noise_std must be a finite number >= 0"),
    (lambda: baselines.bayes_ridge_lambda(0.1, 0.0), "w_std must be a finite number > 0"),
    (lambda: baselines.noise_mixture_posterior(*_data(0)[:2], noise_levels=(0.1, 0.0)), r"noise_levels\[1\]"),
    (lambda: baselines.noise_mixture_posterior(*_data(0)[:2], noise_levels=(0.1,), probs=(0.5, 0.5)), "probs"),
    (lambda: baselines.ista(*_data(0)[:2], alpha=-1.0, n_steps=1), "alpha must be"),
    (lambda: baselines.pool_posterior(*_data(0)[:2], torch.zeros(0, 3), noise_std=1.0), "pool must have shape"),
    (lambda: baselines.pool_posterior(*_data(0)[:2], torch.zeros(2, 3), noise_std=0.0), "noise_std must be"),
])
def test_impossible_baseline_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_knn_averages_the_k_nearest_examples_of_every_prefix():
    """By hand: examples at 0, 1, 3, 10 on a line, query 2.2; neighbours by distance 3 (0.8),
    1 (1.2), 0 (2.2), 10 (7.8)."""
    x = torch.tensor([[[0.0], [1.0], [3.0], [10.0]]])
    y = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    got = baselines.knn(x, y, torch.tensor([[2.2]]), k=2, prefix=True)[0]
    assert got.tolist() == pytest.approx([0.0, 10.0, 15.0, 25.0, 25.0])
    assert float(baselines.knn(x, y, torch.tensor([[2.2]]), k=3)[0]) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        baselines.knn(x, y, torch.tensor([[2.2]]), k=0)
