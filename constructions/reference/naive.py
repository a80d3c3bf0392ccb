"""Per-sample reference implementations in plain numpy: one prompt, one prefix at a time.

They exist to be obviously right, not fast: the tests check the batched :mod:`algorithms` against
them, and ``ttb bench algorithms`` times both on the same data. Conventions as in
:mod:`constructions.reference.algorithms` (loss 1/(2N) |Xw - y|^2, w_0 = 0).
"""

from __future__ import annotations

import numpy as np


def gd(x: np.ndarray, y: np.ndarray, eta: float, n_steps: int) -> np.ndarray:
    """x (N, d), y (N) -> final GD iterate (d)."""
    n, d = x.shape
    w = np.zeros(d)
    for _ in range(n_steps):
        grad = x.T @ (x @ w - y) / max(n, 1)
        w = w - eta * grad
    return w


def newton(x: np.ndarray, y: np.ndarray, alpha: float, n_iter: int, lam: float = 0.0) -> np.ndarray:
    """x (N, d), y (N) -> M_k b with M Newton-Schulz on S + lam I."""
    n, d = x.shape
    A = x.T @ x / max(n, 1) + lam * np.eye(d)
    M = alpha * A
    for _ in range(n_iter):
        M = 2 * M - M @ A @ M
    return M @ (x.T @ y / max(n, 1))


def least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Minimum-norm least squares by numpy's SVD-based lstsq (d); zero for an empty prefix."""
    if x.shape[0] == 0:
        return np.zeros(x.shape[1])
    return np.linalg.lstsq(x, y, rcond=None)[0]


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge with lam on the mean loss: (S + lam I)^{-1} b."""
    n, d = x.shape
    return np.linalg.solve(x.T @ x / max(n, 1) + lam * np.eye(d), x.T @ y / max(n, 1))


def ridge_sum(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Ridge with lam on the summed loss: (X^T X + lam I)^{-1} X^T y."""
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)


def every_prefix(fn, x: np.ndarray, y: np.ndarray, **kwargs) -> np.ndarray:
    """Loop over prompts and prefixes: x (B, N, d), y (B, N) -> (B, N + 1, d), entry n fitted on
    the first n examples (the layout of ``prefix=True`` in :mod:`algorithms`)."""
    B, N, d = x.shape
    out = np.zeros((B, N + 1, d))
    for b in range(B):
        for n in range(N + 1):
            out[b, n] = fn(x[b, :n], y[b, :n], **kwargs)
    return out
