"""Reference algorithms for in-context regression: what the constructions claim to compute.

Everything is batched over any leading axes (models, prompts, ...), runs on the tensors' device,
and keeps their dtype (use float64 for exactness checks). No Python loop over samples.

Conventions (the ones the linear-self-attention papers use):
    data        x (..., N, d), y (..., N)
    loss        L(w) = 1/(2N) sum_i (w.x_i - y_i)^2          gradient  S w - b
    statistics  S = X^T X / N  (d, d),   b = X^T y / N  (d)
    ridge       L(w) + (lam / 2) |w|^2                        solution  (S + lam I)^{-1} b

``prefix=True`` computes the same thing for every prefix at once: the statistics of the first n
examples for n = 0 .. N (n = 0 gives S = 0, b = 0), so results gain an axis of length N + 1 before
the last one. Entry n is the fit on examples 0 .. n-1, which is what predicts example n in context:
see :func:`prefix_predictions`.

Iterative methods return all iterates, stacked on a new leading axis of length n_steps + 1
(iterate 0 first).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def _check_xy(x: Tensor, y: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., N, d), got {tuple(x.shape)}")
    if x.shape[:-1] != y.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must agree on (..., N)")


def _check_steps(name: str, n_steps: int) -> None:
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n_steps!r}")


def statistics(x: Tensor, y: Tensor | None = None, *, prefix: bool = False) -> tuple[Tensor, Tensor | None]:
    """S = X^T X / N (..., [N+1,] d, d) and b = X^T y / N (..., [N+1,] d) (b is None without y)."""
    if y is not None:
        _check_xy(x, y)
    outer = x.unsqueeze(-1) * x.unsqueeze(-2)  # (..., N, d, d)
    xy = None if y is None else x * y.unsqueeze(-1)  # (..., N, d)
    if not prefix:
        n = x.shape[-2]
        return outer.sum(-3) / max(n, 1), None if xy is None else xy.sum(-2) / max(n, 1)
    zero_outer = torch.zeros_like(outer[..., :1, :, :])
    S = torch.cat([zero_outer, outer.cumsum(-3)], dim=-3)  # (..., N+1, d, d)
    counts = torch.arange(x.shape[-2] + 1, device=x.device, dtype=x.dtype).clamp(min=1)
    S = S / counts[:, None, None]
    if xy is None:
        return S, None
    b = torch.cat([torch.zeros_like(xy[..., :1, :]), xy.cumsum(-2)], dim=-2) / counts[:, None]
    return S, b


def _matvec(A: Tensor, v: Tensor) -> Tensor:
    return (A @ v.unsqueeze(-1)).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# Gradient descent and its variants


def preconditioned_gd(x: Tensor, y: Tensor, *, P: Tensor, n_steps: int, prefix: bool = False) -> Tensor:
    """w_{t+1} = w_t - P (S w_t - b), w_0 = 0. P: (d, d), or (n_steps, d, d) for one per step.

    Returns iterates (n_steps + 1, ..., [N+1,] d).
    """
    _check_steps("n_steps", n_steps)
    S, b = statistics(x, y, prefix=prefix)
    d = x.shape[-1]
    P = P.to(dtype=x.dtype, device=x.device)
    if P.shape not in ((d, d), (n_steps, d, d)):
        raise ValueError(f"P must have shape ({d}, {d}) or ({n_steps}, {d}, {d}), got {tuple(P.shape)}")
    Ps = P.expand(n_steps, d, d) if P.dim() == 2 else P
    w = torch.zeros_like(b)
    iterates = [w]
    for t in range(n_steps):
        w = w - _matvec(Ps[t], _matvec(S, w) - b)
        iterates.append(w)
    return torch.stack(iterates)


def gd(x: Tensor, y: Tensor, *, eta: float, n_steps: int, prefix: bool = False) -> Tensor:
    """Gradient descent from w_0 = 0 with step eta: iterates (n_steps + 1, ..., [N+1,] d)."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return preconditioned_gd(x, y, P=eta * eye, n_steps=n_steps, prefix=prefix)


class GDPlusPlusState(NamedTuple):
    """Token-level state of GD++ after each step (leading axis: step 0 .. n_steps)."""

    x: Tensor  # (n_steps + 1, ..., N, d)  transformed context inputs
    r: Tensor  # (n_steps + 1, ..., N)     residuals y_i - (prediction on x_i)
    x_query: Tensor  # (n_steps + 1, ..., d)
    prediction: Tensor  # (n_steps + 1, ...)   prediction for the query


def gd_plus_plus(x: Tensor, y: Tensor, x_query: Tensor, *, eta: float, gamma: float,
                 n_steps: int) -> GDPlusPlusState:
    """GD++ (von Oswald et al. 2023): a GD step on the current inputs, then x <- (I - gamma S) x.

    Step t, with S_t = X_t^T X_t / N from the current inputs X_t:
        r_i     <- r_i - (eta / N) sum_j r_j x_j.x_i       (residuals; r_0 = y; query r_q,0 = 0)
        x_i     <- (I - gamma S_t) x_i                      (every input, the query's too)
    The query's prediction after t steps is -r_q,t (its residual slot started at 0).
    """
    _check_xy(x, y)
    _check_steps("n_steps", n_steps)
    n = x.shape[-2]
    xs, rs, qs, rq = [x], [y], [x_query], torch.zeros_like(y[..., 0])
    preds = [-rq]
    for _ in range(n_steps):
        xt, rt, qt = xs[-1], rs[-1], qs[-1]
        grad_dir = torch.einsum("...j,...jd->...d", rt, xt) / n  # (1/N) sum_j r_j x_j
        S = statistics(xt)[0]
        rs.append(rt - eta * torch.einsum("...d,...id->...i", grad_dir, xt))
        rq = rq - eta * (grad_dir * qt).sum(-1)
        xs.append(xt - gamma * torch.einsum("...de,...ie->...id", S, xt))
        qs.append(qt - gamma * _matvec(S, qt))
        preds.append(-rq)
    return GDPlusPlusState(torch.stack(xs), torch.stack(rs), torch.stack(qs), torch.stack(preds))


# ----------------------------------------------------------------------------------------------
# Newton-Schulz iteration for the (pseudo-)inverse


def newton_schulz(A: Tensor, *, alpha: float, n_iter: int) -> Tensor:
    """M_0 = alpha A, M_{k+1} = 2 M_k - M_k A M_k, for symmetric PSD A (..., d, d).

    Converges quadratically to A^+ when 0 < alpha < 2 / |A|_2^2. Returns (n_iter + 1, ..., d, d).
    Rank caveat: a singular A is only singular up to round-off, and an eigenvalue lam ~ eps |A| is
    treated like any other (m_{k+1} = m_k (2 - lam m_k) ~ 2 m_k): after ~log2(1/eps) ~ 50
    iterations the null space of A is no longer null in M_k. Stop well before that.
    """
    _check_steps("n_iter", n_iter)
    M = alpha * A
    iterates = [M]
    for _ in range(n_iter):
        M = 2 * M - M @ A @ M
        iterates.append(M)
    return torch.stack(iterates)


def newton(x: Tensor, y: Tensor, *, alpha: float, n_iter: int, lam: float = 0.0,
           prefix: bool = False) -> Tensor:
    """Regression weights w_k = M_k b from Newton-Schulz on A = S + lam I: (n_iter+1, ..., [N+1,] d)."""
    S, b = statistics(x, y, prefix=prefix)
    A = S + lam * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return _matvec(newton_schulz(A, alpha=alpha, n_iter=n_iter), b)


# ----------------------------------------------------------------------------------------------
# Closed forms


def pinv_psd(A: Tensor, rtol: float | None = None) -> Tensor:
    """Moore-Penrose inverse of symmetric PSD matrices (..., d, d) by eigendecomposition.

    Eigenvalues below rtol * max(eigenvalue) count as zero; the default rtol = d * eps(dtype) is
    numpy's. This is where rank caveats live: in float32 (the GPU default) a rank-deficient S
    (fewer examples than dimensions) has "zero" eigenvalues of size ~1e-7 |S| that a tighter rtol
    would invert into noise.
    """
    d = A.shape[-1]
    rtol = d * torch.finfo(A.dtype).eps if rtol is None else rtol
    evals, evecs = torch.linalg.eigh(A)
    cutoff = rtol * evals.abs().amax(-1, keepdim=True)
    inv = torch.where(evals > cutoff, 1.0 / torch.where(evals > cutoff, evals, 1.0), 0.0)
    return (evecs * inv.unsqueeze(-2)) @ evecs.transpose(-1, -2)


def least_squares(x: Tensor, y: Tensor, *, prefix: bool = False, rtol: float | None = None) -> Tensor:
    """Minimum-norm least squares w = (X^T X)^+ X^T y = S^+ b: (..., [N+1,] d)."""
    S, b = statistics(x, y, prefix=prefix)
    return _matvec(pinv_psd(S, rtol), b)


def ridge(x: Tensor, y: Tensor, *, lam: float, prefix: bool = False) -> Tensor:
    """Ridge w = (S + lam I)^{-1} b, the minimiser of 1/(2N)|Xw - y|^2 + lam/2 |w|^2: (..., [N+1,] d)."""
    if not lam > 0:
        raise ValueError(f"ridge needs lam > 0 (use least_squares for lam = 0), got lam={lam!r}")
    S, b = statistics(x, y, prefix=prefix)
    A = S + lam * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# Predictions


def predict(w: Tensor, x: Tensor) -> Tensor:
    """w (..., d) applied to x (..., d) -> (...); broadcasts."""
    return (w * x).sum(-1)


def prefix_predictions(w_prefix: Tensor, x: Tensor) -> Tensor:
    """In-context predictions: w_prefix (..., N+1, d) from ``prefix=True``, x (..., N, d) -> (..., N).

    Entry i is w fitted on examples 0 .. i-1, applied to x_i: the prediction for y_i made before
    seeing it. Leading iterate axes broadcast.
    """
    return predict(w_prefix[..., :-1, :], x)
