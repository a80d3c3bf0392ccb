"""Bayes-optimal and sparse baselines for the in-context regression tasks of :mod:`synthetic.tasks`.

Batched over any leading axes, on the tensors' device, in their dtype (float64 for checks); no
Python loop over samples (coordinate descent loops over coordinates, batched over prompts).

Two ridge conventions, both :func:`constructions.reference.algorithms.ridge` (its ``convention``).
Its default scales the loss by 1/(2N):

    mean          1/(2N) |Xw - y|^2 + (lam/2) |w|^2     w = (S + lam I)^{-1} b,  S = X^T X / N, b = X^T y / N

Here (and in the Sherman-Morrison construction) the regulariser is on the *sum*:

    sum           1/2 |Xw - y|^2 + (lam/2) |w|^2         w = (X^T X + lam I)^{-1} X^T y

They agree when lam_sum = N lam_mean, so on prefixes a fixed lam_sum is a per-example lam
of lam_sum / n on the first n examples (the tests check :func:`ridge_sum` against the mean
convention that way). The sum convention is the one with a Bayesian meaning: with w ~ N(0, tau^2 I) and
y = w.x + sigma eps, the posterior mean is ridge_sum with lam = sigma^2 / tau^2 for every N.

Functions
    sums(x, y)                                X^T X, X^T y and n (unnormalised statistics)
    ridge_sum(x, y, lam)                      (X^T X + lam I)^{-1} X^T y
    bayes_ridge_lambda(noise_std, w_std)      sigma^2 / tau^2 (sum convention)
    bayes_ridge(x, y, noise_std, w_std)       posterior mean (min-norm least squares if sigma = 0)
    noise_mixture_posterior(x, y, levels, probs, w_std)   posterior mean under a mixture of sigmas
    ista(x, y, alpha, n_steps)                Lasso iterates (objective 1/(2N)|Xw-y|^2 + alpha |w|_1)
    lasso_cd(x, y, alpha, n_sweeps)           the Lasso solution by cyclic coordinate descent
    pool_posterior(x, y, pool, noise_std)     posterior over a finite task pool, and its mean
    feature_ridge(features, y, lam)           ridge_sum on features Phi(x) (representation tasks)

``prefix=True`` (where offered) gives the fit on the first n examples for n = 0 .. N, on a new axis
of length N + 1 before the last, as in :mod:`constructions.reference.algorithms`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from constructions.reference import algorithms


def _nonneg(name: str, value: float) -> float:
    value = float(value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def sums(x: Tensor, y: Tensor, *, prefix: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Unnormalised statistics: G = X^T X (..., [N+1,] d, d), c = X^T y (..., [N+1,] d), and n, the
    number of examples ((N+1,) for prefixes, else a scalar tensor)."""
    G, c = algorithms.sums(x, y, prefix=prefix)
    N = x.shape[-2]
    n = torch.arange(N + 1, dtype=x.dtype, device=x.device) if prefix else torch.tensor(N, dtype=x.dtype,
                                                                                        device=x.device)
    return G, c, n


# ----------------------------------------------------------------------------------------------
# Ridge and its Bayesian reading


def ridge_sum(x: Tensor, y: Tensor, *, lam: float, prefix: bool = False) -> Tensor:
    """(X^T X + lam I)^{-1} X^T y, the minimiser of 1/2 |Xw - y|^2 + lam/2 |w|^2: (..., [N+1,] d).
    algorithms.ridge in its sum convention."""
    return algorithms.ridge(x, y, lam=_positive("lam", lam), prefix=prefix, convention="sum")


def bayes_ridge_lambda(noise_std: float, w_std: float = 1.0) -> float:
    """lam = sigma^2 / tau^2 in the sum convention (per-example lam = sigma^2 / (N tau^2))."""
    return _nonneg("noise_std", noise_std) ** 2 / _positive("w_std", w_std) ** 2


def bayes_ridge(x: Tensor, y: Tensor, *, noise_std: float, w_std: float = 1.0, prefix: bool = False) -> Tensor:
    """Posterior mean of w under w ~ N(0, w_std^2 I), y = w.x + noise_std eps: ridge_sum at
    sigma^2 / tau^2, and the minimum-norm interpolant (its sigma -> 0 limit) when noise_std = 0."""
    lam = bayes_ridge_lambda(noise_std, w_std)
    if lam == 0:
        return algorithms.least_squares(x, y, prefix=prefix)
    return ridge_sum(x, y, lam=lam, prefix=prefix)


def gaussian_log_evidence(x: Tensor, y: Tensor, noise_std: float, w_std: float, *,
                          prefix: bool = False) -> Tensor:
    """log N(y; 0, tau^2 X X^T + sigma^2 I_n) for each prompt (..., [N+1]), in d x d form:

        log det = n log sigma^2 + log det(I + (tau^2 / sigma^2) X^T X)
        quad    = (|y|^2 - c^T (X^T X + (sigma^2/tau^2) I)^{-1} c) / sigma^2,   c = X^T y
    (the solve is :func:`ridge_sum` at lam = sigma^2 / tau^2).
    """
    sigma2, tau2 = _positive("noise_std", noise_std) ** 2, _positive("w_std", w_std) ** 2
    G, c, n = sums(x, y, prefix=prefix)
    yy = (y * y).cumsum(-1) if prefix else (y * y).sum(-1)
    if prefix:
        yy = torch.cat([torch.zeros_like(yy[..., :1]), yy], dim=-1)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    logdet = n * math.log(sigma2) + torch.linalg.slogdet(eye + (tau2 / sigma2) * G)[1]
    quad = (yy - (c * ridge_sum(x, y, lam=sigma2 / tau2, prefix=prefix)).sum(-1)) / sigma2
    return -0.5 * (n * math.log(2 * math.pi) + logdet + quad)


def noise_mixture_posterior(x: Tensor, y: Tensor, *, noise_levels, probs=None, w_std: float = 1.0,
                            prefix: bool = False) -> tuple[Tensor, Tensor]:
    """Posterior mean of w when sigma is drawn from ``noise_levels`` with prior ``probs`` (uniform
    by default): sum_m p(m | data) * bayes_ridge(sigma_m), p(m | data) ~ probs_m N(y; 0, C_m).

    Returns (w (..., [N+1,] d), posterior over levels (..., [N+1,] M)). Levels must be > 0 (a zero
    level has no density on noisy data).
    """
    levels = [_positive(f"noise_levels[{m}]", s) for m, s in enumerate(noise_levels)]
    if not levels:
        raise ValueError("noise_levels must hold at least one noise level")
    probs = [1.0 / len(levels)] * len(levels) if probs is None else [float(p) for p in probs]
    if len(probs) != len(levels) or any(not p > 0 for p in probs):
        raise ValueError(f"probs must be {len(levels)} positive numbers, got {probs!r}")
    log_prior = torch.tensor(probs, dtype=x.dtype, device=x.device).log()
    evidence = torch.stack([gaussian_log_evidence(x, y, s, w_std, prefix=prefix) for s in levels], dim=-1)
    post = torch.softmax(evidence + log_prior, dim=-1)  # (..., [N+1,] M)
    means = torch.stack([bayes_ridge(x, y, noise_std=s, w_std=w_std, prefix=prefix) for s in levels], dim=-1)
    return (means * post.unsqueeze(-2)).sum(-1), post


# ----------------------------------------------------------------------------------------------
# Lasso


def soft_threshold(v: Tensor, t) -> Tensor:
    """sign(v) max(|v| - t, 0), elementwise (t broadcasts)."""
    return torch.sign(v) * torch.clamp(v.abs() - t, min=0.0)


def lasso_objective(x: Tensor, y: Tensor, w: Tensor, alpha: float) -> Tensor:
    """1/(2N) |Xw - y|^2 + alpha |w|_1 per prompt (...)."""
    r = (x * w.unsqueeze(-2)).sum(-1) - y
    return 0.5 * (r * r).mean(-1) + alpha * w.abs().sum(-1)


def ista(x: Tensor, y: Tensor, *, alpha: float, n_steps: int, eta: float | None = None,
         prefix: bool = False) -> Tensor:
    """ISTA for the Lasso 1/(2N)|Xw - y|^2 + alpha |w|_1 from w_0 = 0:

        w_{t+1} = soft_threshold(w_t - eta (S w_t - b), eta alpha)

    eta defaults to 1 / |S|_2 per prompt (the largest step with the O(1/t) guarantee). Returns the
    iterates (n_steps + 1, ..., [N+1,] d)."""
    alpha = _nonneg("alpha", alpha)
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
    S, b = algorithms.statistics(x, y, prefix=prefix)
    if eta is None:
        step = 1.0 / torch.linalg.eigvalsh(S)[..., -1].clamp(min=torch.finfo(x.dtype).tiny)
        step = step.unsqueeze(-1)
    else:
        step = _positive("eta", eta)
    w = torch.zeros_like(b)
    iterates = [w]
    for _ in range(n_steps):
        w = soft_threshold(w - step * ((S @ w.unsqueeze(-1)).squeeze(-1) - b), step * alpha)
        iterates.append(w)
    return torch.stack(iterates)


def lasso_cd(x: Tensor, y: Tensor, *, alpha: float, n_sweeps: int = 200) -> Tensor:
    """The Lasso solution by cyclic coordinate descent (exact minimisation in one coordinate at a
    time): w_k <- soft_threshold(b_k - sum_{l != k} S_kl w_l, alpha) / S_kk. Batched over prompts;
    the loop is over sweeps and coordinates. Coordinates with S_kk = 0 stay 0. Returns (..., d)."""
    alpha = _nonneg("alpha", alpha)
    S, b = algorithms.statistics(x, y)
    d = x.shape[-1]
    w = torch.zeros_like(b)
    diag = torch.diagonal(S, dim1=-2, dim2=-1)
    safe = torch.where(diag > 0, diag, torch.ones_like(diag))
    for _ in range(n_sweeps):
        for k in range(d):
            partial = b[..., k] - (S[..., k, :] * w).sum(-1) + S[..., k, k] * w[..., k]
            w[..., k] = torch.where(diag[..., k] > 0, soft_threshold(partial, alpha) / safe[..., k], 0.0)
    return w


# ----------------------------------------------------------------------------------------------
# Finite task pool


class PoolPosterior(NamedTuple):
    mean: Tensor  # (..., [N+1,] d)   posterior mean of w
    probs: Tensor  # (..., [N+1,] P)  posterior over the pool


def pool_posterior(x: Tensor, y: Tensor, pool: Tensor, *, noise_std: float, probs=None,
                   prefix: bool = False) -> PoolPosterior:
    """Posterior over a finite pool (P, d) (or (..., P, d)) of weight vectors with prior ``probs``
    (uniform by default), under y = w.x + noise_std eps: p(k | data) ~ probs_k exp(-|y - X w_k|^2 /
    (2 sigma^2)); the mean is sum_k p(k | data) w_k. With no examples it is the prior mean."""
    sigma = _positive("noise_std", noise_std)
    if pool.dim() < 2 or pool.shape[-1] != x.shape[-1] or pool.shape[-2] < 1:
        raise ValueError(f"pool must have shape (P >= 1, d={x.shape[-1]}), got {tuple(pool.shape)}")
    pool = pool.to(dtype=x.dtype, device=x.device)
    P = pool.shape[-2]
    prior = torch.full((P,), 1.0 / P, dtype=x.dtype, device=x.device) if probs is None else \
        torch.as_tensor(probs, dtype=x.dtype, device=x.device)
    if prior.shape != (P,) or not bool((prior > 0).all()):
        raise ValueError(f"probs must be {P} positive numbers, got {probs!r}")
    preds = torch.einsum("...nd,...pd->...np", x, pool)  # (..., N, P)
    sq = (y.unsqueeze(-1) - preds) ** 2
    if prefix:
        sq = torch.cat([torch.zeros_like(sq[..., :1, :]), sq.cumsum(-2)], dim=-2)  # (..., N+1, P)
    else:
        sq = sq.sum(-2)
    post = torch.softmax(prior.log() - sq / (2 * sigma**2), dim=-1)
    weights = pool.unsqueeze(-3) if prefix else pool  # broadcast over the prefix axis
    return PoolPosterior((post.unsqueeze(-1) * weights).sum(-2), post)


# ----------------------------------------------------------------------------------------------
# Representation tasks


def feature_ridge(features: Tensor, y: Tensor, *, lam: float, prefix: bool = False) -> Tensor:
    """ridge_sum on features Phi(x) (..., N, m): the weights (..., [N+1,] m) in feature space. With
    lam = sigma^2 / tau^2 it is the posterior mean of a representation task (w ~ N(0, tau^2 I_m))."""
    return ridge_sum(features, y, lam=lam, prefix=prefix)


def knn(x: Tensor, y: Tensor, x_query: Tensor, *, k: int = 3, prefix: bool = False) -> Tensor:
    """k-nearest-neighbour regression (Garg et al.'s baseline): the mean of the y of the k examples
    nearest to the query (Euclidean), all of them when there are fewer than k, 0 with none.

    x (..., N, d), y (..., N), x_query (..., d) -> (...,), or (..., N + 1) with ``prefix`` (entry n
    uses the first n examples). Ties go to the earlier example."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dist = (x - x_query.unsqueeze(-2)).pow(2).sum(-1)  # (..., N)
    N = x.shape[-2]
    sizes = range(N + 1) if prefix else [N]
    out = []
    for n in sizes:
        if n == 0:
            out.append(torch.zeros_like(y[..., 0]))
            continue
        idx = dist[..., :n].topk(min(k, n), dim=-1, largest=False).indices
        out.append(y[..., :n].gather(-1, idx).mean(-1))
    return torch.stack(out, dim=-1) if prefix else out[0]
