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
def test_batched_ridge_in_the_sum_convention_over_every_prefix_equals_the_per_sample_loop(seed, n, d):
    """Not vacuous: the batched side folds examples into a QR factor, the loop solves each prefix."""
    x, y = _data(seed, N=n, d=d)
    got = A.ridge(x, y, lam=0.25, prefix=True, convention="sum")
    want = naive.every_prefix(naive.ridge_sum, x.numpy(), y.numpy(), lam=0.25)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-11)


def _condition_numbers(x: np.ndarray) -> np.ndarray:
    """cond(X_n) of every non-empty prefix of every prompt: (B, N)."""
    return np.array([[np.linalg.cond(xb[:n]) for n in range(1, xb.shape[0] + 1)] for xb in x])


@given(seed=seeds(), n=st.integers(1, 12), d=st.integers(1, 6))
def test_batched_least_squares_over_every_prefix_equals_numpy_lstsq(seed, n, d):
    """Min-norm solutions agree also for n < d (rank-deficient). Both sides are backward stable, so
    they differ by what the problem's own condition allows: ~cond(X_n) eps |w| without residual and
    ~cond(X_n)^2 eps |r| / |X_n| with one (y is noise here, so n > d has residuals). 1e-13 cond^2
    (1 + |w|) covers both with a margin of ~100 over eps = 2.2e-16."""
    x, y = _data(seed, N=n, d=d)
    got = A.least_squares(x, y, prefix=True).numpy()
    want = naive.every_prefix(naive.least_squares, x.numpy(), y.numpy())
    tol = 1e-13 * _condition_numbers(x.numpy()) ** 2 * (1 + np.abs(want[:, 1:]).max(-1))
    assert (np.abs(got[:, 1:] - want[:, 1:]).max(-1) <= tol).all()
    assert (got[:, 0] == 0).all()


def _ill_conditioned(d: int, n: int, cond: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (1, n, d) whose first d rows have singular values 1 .. 1/cond (log-spaced), the rest
    Gaussian; y = x w exactly, for a w ~ N(0, I) that every prefix n >= d recovers."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    sigma = torch.logspace(0, -math.log10(cond), d, dtype=torch.float64)
    x = torch.cat([u @ torch.diag(sigma) @ v.T, torch.randn(n - d, d, generator=gen, dtype=torch.float64)])
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    return x[None], (x @ w)[None], w


def test_least_squares_keeps_the_accuracy_of_lstsq_where_the_normal_equations_lose_cond_squared():
    """cond(X_d) = 1e6: a backward-stable method recovers w to ~cond eps = 2e-10 (here 3e-11, numpy's
    lstsq 2e-11), while solving with S (condition number 1e12) loses up to cond^2 eps = 2e-4 (pinv_psd
    of S: 3e-5). 1e-8 relative lies between the two with two orders of magnitude to spare on either
    side. Every prefix n >= d holds w exactly (y has no noise), prefixes and the whole prompt alike."""
    x, y, w = _ill_conditioned(d=5, n=9, cond=1e6)
    got = A.least_squares(x, y, prefix=True)[0, 5:]
    assert (got - w).norm(dim=-1).max() <= 1e-8 * w.norm()
    assert (A.least_squares(x[:, :5], y[:, :5])[0] - w).norm() <= 1e-8 * w.norm()
    assert (A.least_squares(x, y)[0] - w).norm() <= 1e-8 * w.norm()


def test_ridge_in_the_sum_convention_stays_accurate_with_a_tiny_lambda():
    """lam = 1e-6 (the noise floor of the posteriors, sigma = 1e-3): with n < d examples X^T X + lam I
    has condition number ~|X|^2 / lam ~ 1e7, and solving with it loses ~1e-9 (what the per-prefix
    solve did); the factorisations of [X | sqrt(lam) I] lose ~cond(X) eps. Checked against the SVD
    form V diag(s / (s^2 + lam)) U^T y of every prefix; 1e-12 relative sits between the two."""
    x, y = _data(11, B=32, N=9, d=5)
    x = x * math.sqrt(5)  # x ~ N(0, I)
    got = A.ridge(x, y, lam=1e-6, prefix=True, convention="sum")
    for n in range(1, 10):
        U, s, Vh = torch.linalg.svd(x[:, :n], full_matrices=False)
        want = (Vh.mT @ (s / (s**2 + 1e-6) * (U.mT @ y[:, :n, None]).squeeze(-1)).unsqueeze(-1)).squeeze(-1)
        assert ((got[:, n] - want).norm(dim=-1) <= 1e-12 * want.norm(dim=-1)).all()


def test_least_squares_falls_back_to_the_pseudo_inverse_on_rank_deficient_prompts():
    """A repeated example and an input coordinate that is always 0 make S singular beyond rounding:
    those prompts take pinv_psd and still match numpy's min-norm lstsq, as do the regular prompts
    batched with them, and an unbatched prompt."""
    x, y = _data(9, B=4, N=8, d=3)
    x[1, 1] = x[1, 0]
    x[2, :, 1] = 0
    want = naive.every_prefix(naive.least_squares, x.numpy(), y.numpy())
    np.testing.assert_allclose(A.least_squares(x, y, prefix=True).numpy(), want, atol=1e-12)
    np.testing.assert_allclose(A.least_squares(x, y).numpy(), want[:, -1], atol=1e-12)
    np.testing.assert_allclose(A.least_squares(x[1], y[1], prefix=True).numpy(), want[1], atol=1e-12)


@given(seed=seeds(), n=st.integers(1, 12), d=st.integers(1, 6), k=st.integers(0, 8), c=st.floats(0.1, 1.5))
def test_newton_equals_the_newton_schulz_iteration_applied_to_b(seed, n, d, k, c):
    """The batched newton never forms M_k; the definition does. In the convergent range (here
    alpha = c / lambda_max(A)^2, c < 2, one per prompt and prefix) both round to within ~k eps of
    M_k b, whose size is at most 2^k alpha |A| |b|: 1e-10 leaves room for 2^8 growth."""
    x, y = _data(seed, N=n, d=d)
    for lam in (0.0, 0.2):
        S, b = A.statistics(x, y, prefix=True)
        M = S + lam * torch.eye(d, dtype=torch.float64)
        alpha = c / torch.linalg.eigvalsh(M)[..., -1].clamp(min=1e-12) ** 2  # (B, n+1)
        want = A.newton_schulz(M, alpha=alpha[..., None, None], n_iter=k) @ b.unsqueeze(-1)
        got = A.newton(x, y, alpha=alpha, n_iter=k, lam=lam, prefix=True)
        np.testing.assert_allclose(got.numpy(), want.squeeze(-1).numpy(), atol=1e-10)


def test_steps_and_ridge_lambdas_can_differ_per_prompt_and_prefix():
    """A tensor eta / alpha / lam is the same as calling one prompt (and prefix) at a time."""
    x, y = _data(10, B=3, N=5, d=2)
    eta = torch.linspace(0.1, 0.9, 18, dtype=torch.float64).reshape(3, 6)  # (prompts, prefixes)
    lam = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    gd_all, newton_all = A.gd(x, y, eta=eta, n_steps=3, prefix=True), A.newton(x, y, alpha=eta, n_iter=3, prefix=True)
    for b in range(3):
        for n in (0, 2, 5):
            one = A.gd(x[b, :n], y[b, :n], eta=float(eta[b, n]), n_steps=3)
            assert torch.allclose(gd_all[:, b, n], one, atol=1e-14)
            one = A.newton(x[b, :n], y[b, :n], alpha=float(eta[b, n]), n_iter=3)
            assert torch.allclose(newton_all[:, b, n], one, atol=1e-14)
        for convention in ("mean", "sum"):
            both = A.ridge(x, y, lam=lam, prefix=True, convention=convention)[b]
            assert torch.allclose(both, A.ridge(x[b], y[b], lam=float(lam[b]), prefix=True, convention=convention),
                                  atol=1e-13)


@pytest.mark.parametrize("fit", [lambda x, y, **kw: A.ridge(x, y, lam=0.1, **kw),
                                 lambda x, y, **kw: A.ridge(x, y, lam=0.1, convention="sum", **kw),
                                 lambda x, y, **kw: A.least_squares(x, y, **kw)], ids=["ridge", "ridge_sum", "ols"])
def test_prefix_entry_n_is_the_fit_on_the_first_n_examples(fit):
    """d = 4, N = 7: prefixes 3 and 4 come from the LQ factor, 6 and 7 from folding examples in."""
    x, y = _data(0, N=7)
    full = fit(x, y, prefix=True)
    for n in (0, 3, 4, 6, 7):
        alone = fit(x[:, :n], y[:, :n]) if n else torch.zeros_like(full[:, 0])
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
    (lambda x, y: A.ridge(x, y, lam=0.1, convention="per-example"), "convention must be 'mean' or 'sum'"),
    (lambda x, y: A.ridge(x, y, lam=torch.tensor([0.1, -1.0, 0.1]), convention="sum"), "lam > 0"),
    (lambda x, y: A.gd(x, y, eta=torch.ones(3, 7), n_steps=1, prefix=True), "eta of shape \\(3, 7\\) does not broadcast"),
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
               lambda a, b: A.newton(a, b, alpha=0.1, n_iter=4, prefix=True),
               lambda a, b: A.ridge(a, b, lam=0.2, prefix=True), lambda a, b: A.ridge(a, b, lam=0.2, prefix=True, convention="sum")):
        assert torch.allclose(fn(x.cuda(), y.cuda()).cpu(), fn(x, y), atol=1e-10)
