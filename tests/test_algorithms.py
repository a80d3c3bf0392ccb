"""Reference algorithms: batched equals per-sample, analytic facts, and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from constructions.reference import algorithms as A
from constructions.reference import naive
from synthetic.regression import RegressionTask, make_generators, sample
from synthetic.strategies import seeds


def _data(seed, B=3, N=7, d=4, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=gen, dtype=dtype) / math.sqrt(d)
    y = torch.randn(B, N, generator=gen, dtype=dtype)
    return x, y


@given(seed=seeds(), n=st.integers(1, 12), d=st.integers(1, 6), steps=st.integers(0, 5))
def test_batched_gd_over_every_prefix_equals_the_per_sample_loop(seed, n, d, steps):
    """Not vacuous: the loop fits each prefix separately in numpy, with its own 1/n."""
    x, y = _data(seed, N=n, d=d)
    got = A.gd(x, y, eta=0.7, n_steps=steps, prefix=True)
    assert got.shape == (steps + 1, 3, n + 1, d)
    want = naive.every_prefix(naive.gd, x.numpy(), y.numpy(), eta=0.7, n_steps=steps)
    np.testing.assert_allclose(got[-1].numpy(), want, atol=1e-12)


@given(seed=seeds(), n=st.integers(1, 12), d=st.integers(1, 6), k=st.integers(0, 5))
def test_batched_newton_over_every_prefix_equals_the_per_sample_loop(seed, n, d, k):
    x, y = _data(seed, N=n, d=d)
    for lam in (0.0, 0.3):
        got = A.newton(x, y, alpha=0.2, n_iter=k, lam=lam, prefix=True)[-1]
        want = naive.every_prefix(naive.newton, x.numpy(), y.numpy(), alpha=0.2, n_iter=k, lam=lam)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


@given(seed=seeds(), n=st.integers(1, 12), d=st.integers(1, 6))
def test_batched_ridge_over_every_prefix_equals_the_per_sample_loop(seed, n, d):
    x, y = _data(seed, N=n, d=d)
    got = A.ridge(x, y, lam=0.25, prefix=True)
    want = naive.every_prefix(naive.ridge, x.numpy(), y.numpy(), lam=0.25)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-11)


@given(seed=seeds(), n=st.integers(1, 12), d=st.integers(1, 6))
def test_batched_least_squares_over_every_prefix_equals_numpy_lstsq(seed, n, d):
    """Min-norm solutions agree also for n < d (rank-deficient). The batched path goes through the
    normal equations, which square X's condition number: the tolerance 1e-7 covers cond(X)^2 eps
    for cond(X) up to ~1e4, far beyond what Gaussian data with these sizes produces."""
    x, y = _data(seed, N=n, d=d)
    got = A.least_squares(x, y, prefix=True)
    want = naive.every_prefix(naive.least_squares, x.numpy(), y.numpy())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-7)


def test_prefix_entry_n_is_the_fit_on_the_first_n_examples():
    x, y = _data(0, N=6)
    full = A.ridge(x, y, lam=0.1, prefix=True)
    for n in (0, 3, 6):
        alone = A.ridge(x[:, :n], y[:, :n], lam=0.1) if n else torch.zeros_like(full[:, 0])
        assert torch.allclose(full[:, n], alone, atol=1e-13)
    preds = A.prefix_predictions(full, x)
    assert torch.allclose(preds[:, 4], A.predict(full[:, 4], x[:, 4]))


def test_gd_iterates_start_at_zero_and_converge_to_least_squares():
    x, y = _data(1, N=30, d=3)
    its = A.gd(x, y, eta=1.0, n_steps=3000)
    assert torch.equal(its[0], torch.zeros_like(its[0]))
    assert torch.allclose(its[-1], A.least_squares(x, y), atol=1e-9)


def test_preconditioned_gd_with_eta_identity_is_gd():
    x, y = _data(2)
    P = 0.3 * torch.eye(4, dtype=torch.float64)
    assert torch.allclose(A.preconditioned_gd(x, y, P=P, n_steps=4), A.gd(x, y, eta=0.3, n_steps=4))


def test_gd_plus_plus_without_whitening_predicts_like_gd():
    x, y = _data(3)
    xq = torch.randn(3, 4, dtype=torch.float64)
    state = A.gd_plus_plus(x, y, xq, eta=0.4, gamma=0.0, n_steps=5)
    want = A.predict(A.gd(x, y, eta=0.4, n_steps=5), xq)
    assert torch.allclose(state.prediction, want, atol=1e-14)


def test_gd_plus_plus_whitening_contracts_the_inputs_by_hand():
    """d = 1, N = 1, x = 2: S = 4, so with gamma = 1/8 the input becomes (1 - 4/8) * 2 = 1."""
    x = torch.tensor([[[2.0]]], dtype=torch.float64)
    state = A.gd_plus_plus(x, torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64),
                           eta=0.1, gamma=0.125, n_steps=1)
    assert state.x[1].item() == pytest.approx(1.0)


def test_newton_schulz_converges_quadratically_to_the_pseudo_inverse():
    x, _ = _data(4, N=2, d=4)  # rank 2 < d: the limit is the pseudo-inverse
    S = A.statistics(x)[0]
    alpha = 1.0 / torch.linalg.matrix_norm(S, ord=2).max().item() ** 2
    # 25 iterations, not more: S's "zero" eigenvalues are ~1e-17, and Newton-Schulz doubles them
    # each step (2^k eps), so after ~50 steps the null space would be visibly non-zero.
    its = A.newton_schulz(S, alpha=alpha, n_iter=25)
    assert torch.allclose(its[-1], torch.linalg.pinv(S, hermitian=True), atol=1e-8)


def test_ridge_is_the_minimiser_of_the_regularised_objective():
    x, y = _data(5)
    w = A.ridge(x, y, lam=0.5)
    grad = A.statistics(x, y)[0] @ w.unsqueeze(-1) - A.statistics(x, y)[1].unsqueeze(-1) + 0.5 * w.unsqueeze(-1)
    assert grad.abs().max() < 1e-13


@pytest.mark.parametrize("n", [0, 2, 4, 5, 7])
def test_noiseless_min_norm_least_squares_error_is_d_minus_n(n):
    """x, w ~ N(0, I), d = 5, no noise: min-norm least squares recovers the projection of w on the
    span of the n inputs, so the squared error on a fresh query is |(I - P) w|^2-weighted chi^2 with
    mean max(d - n, 0) and variance 2 (d-n)^2 + 6 (d-n). The tolerance is 5 standard errors of the
    Monte Carlo mean (estimated from the sample), plus 1e-9 for the exact-zero case n >= d."""
    d, B = 5, 20000
    task = RegressionTask(d=d, n_points=n + 1)
    batch = sample(task, make_generators([n]), B, dtype=torch.float64)
    w_hat = A.least_squares(batch.context_x, batch.context_y)
    err = (A.predict(w_hat, batch.query_x) - batch.query_y) ** 2
    mean, se = err.mean().item(), err.std().item() / math.sqrt(err.numel())
    assert abs(mean - max(d - n, 0)) <= 5 * se + 1e-9


@pytest.mark.parametrize("call, match", [
    (lambda x, y: A.ridge(x, y, lam=0.0), "lam > 0"),
    (lambda x, y: A.gd(x, y[..., :-1], eta=0.1, n_steps=1), "must agree on"),
    (lambda x, y: A.gd(x, y, eta=0.1, n_steps=-1), "n_steps must be a non-negative int"),
    (lambda x, y: A.preconditioned_gd(x, y, P=torch.eye(3), n_steps=1), r"P must have shape \(4, 4\)"),
])
def test_bad_input_to_algorithms_is_named(call, match):
    x, y = _data(6)
    with pytest.raises(ValueError, match=match):
        call(x, y)


def test_float32_algorithms_keep_dtype():
    x, y = _data(7, dtype=torch.float32)
    assert A.gd(x, y, eta=0.1, n_steps=2, prefix=True).dtype == torch.float32
    assert A.least_squares(x, y, prefix=True).dtype == torch.float32


@pytest.mark.gpu
def test_algorithms_on_cuda_equal_cpu():
    x, y = _data(8)
    for fn in (lambda a, b: A.least_squares(a, b, prefix=True), lambda a, b: A.gd(a, b, eta=0.3, n_steps=5, prefix=True),
               lambda a, b: A.newton(a, b, alpha=0.1, n_iter=4, prefix=True)):
        assert torch.allclose(fn(x.cuda(), y.cuda()).cpu(), fn(x, y), atol=1e-10)
