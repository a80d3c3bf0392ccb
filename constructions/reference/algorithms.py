"""Reference algorithms for in-context regression: what the constructions claim to compute.

Everything is batched over any leading axes (models, prompts, ...), runs on the tensors' device,
and keeps their dtype (use float64 for exactness checks). No Python loop over samples.

Conventions (the ones the linear-self-attention papers use):
    data        x (..., N, d), y (..., N)
    loss        L(w) = 1/(2N) sum_i (w.x_i - y_i)^2          gradient  S w - b
    statistics  S = X^T X / N  (d, d),   b = X^T y / N  (d)
    ridge       L(w) + (lam / 2) |w|^2                        solution  (S + lam I)^{-1} b
                (``convention="sum"``: 1/2 |Xw - y|^2 + lam/2 |w|^2, solution (X^T X + lam I)^{-1} X^T y)

``prefix=True`` computes the same thing for every prefix at once: the statistics of the first n
examples for n = 0 .. N (n = 0 gives S = 0, b = 0), so results gain an axis of length N + 1 before
the last one. Entry n is the fit on examples 0 .. n-1, which is what predicts example n in context:
see :func:`prefix_predictions`. Each method does it at its own natural cost:

    least squares   orthogonal factorisations of X, never S: one LQ factorisation serves every prefix
                    n <= d, and each later example is folded into a triangular factor by d Givens
                    rotations (:func:`least_squares`); accurate to ~cond(X) eps, like numpy's lstsq
    ridge, sum      the same, for the rows of [X | sqrt(lam) I] and [sqrt(lam) I; X]: O(d^2) per prefix
    ridge, mean     the regulariser of prefix n is n lam on the sum, so consecutive prefixes differ by
                    x x^T + lam I, a rank-(d+1) change: one d x d solve per prefix
    GD              the gradient of prefix n in data space, (1/n) X_n^T (X_n w - y_n), when N <= 2d
                    (no d x d matrix per prefix); through S_n otherwise
    Newton          w_k = M_k b without M_k: one d x d product per prefix and iteration (the
                    iteration itself takes two), by repeated squaring (:func:`newton`)

Step sizes (``eta``, ``alpha``) are numbers or tensors broadcasting to the fits' shape (..., [N+1]):
one step per prompt and per prefix (a trailing axis of 1 gives one per prompt).

Iterative methods return all iterates, stacked on a new leading axis of length n_steps + 1
(iterate 0 first).
"""

from __future__ import annotations

import math
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


def _fit_shape(x: Tensor, prefix: bool) -> tuple[int, ...]:
    """The shape of the fits without d: (...) or (..., N + 1)."""
    return tuple(x.shape[:-2]) + ((x.shape[-2] + 1,) if prefix else ())


def _per_fit(name: str, value, shape: tuple[int, ...], like: Tensor) -> float | Tensor:
    """A number, or a tensor broadcasting to ``shape``; a tensor gains a trailing axis (for d)."""
    if not torch.is_tensor(value):
        return float(value)
    value = value.to(dtype=like.dtype, device=like.device)
    try:
        fits = torch.broadcast_shapes(value.shape, shape) == torch.Size(shape)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast to the fits' shape {shape}")
    return value.unsqueeze(-1)


def _running_sum(v: Tensor, dim: int) -> Tensor:
    """Sums of the first n entries along ``dim`` for n = 0 .. len: that axis grows by one, entry 0 is 0."""
    out = v.new_empty(v.shape[:dim] + (v.shape[dim] + 1,) + v.shape[dim:][1:])
    out.narrow(dim, 0, 1).zero_()
    torch.cumsum(v, dim=dim, out=out.narrow(dim, 1, v.shape[dim]))
    return out


def _counts(N: int, like: Tensor) -> Tensor:
    """max(n, 1) for n = 0 .. N: what the statistics of each prefix are divided by."""
    return torch.arange(N + 1, dtype=like.dtype, device=like.device).clamp(min=1)


def sums(x: Tensor, y: Tensor | None = None, *, prefix: bool = False) -> tuple[Tensor, Tensor | None]:
    """Unnormalised statistics G = X^T X (..., [N+1,] d, d) and c = X^T y (..., [N+1,] d) (None without y).

    Over prefixes G_{n+1} = G_n + x_n x_n^T is accumulated in place, one prefix at a time, so that
    nothing of the size of G is allocated twice.
    """
    if y is not None:
        _check_xy(x, y)
    if not prefix:
        return x.mT @ x, None if y is None else (x.mT @ y.unsqueeze(-1)).squeeze(-1)
    N, d = x.shape[-2:]
    G = x.new_empty(x.shape[:-2] + (N + 1, d, d))
    G[..., 0, :, :] = 0
    for n in range(N):
        torch.addcmul(G[..., n, :, :], x[..., n, :, None], x[..., n, None, :], out=G[..., n + 1, :, :])
    return G, None if y is None else _running_sum(x * y.unsqueeze(-1), dim=-2)


def statistics(x: Tensor, y: Tensor | None = None, *, prefix: bool = False) -> tuple[Tensor, Tensor | None]:
    """S = X^T X / N (..., [N+1,] d, d) and b = X^T y / N (..., [N+1,] d) (b is None without y)."""
    G, c = sums(x, y, prefix=prefix)
    if not prefix:
        n = float(max(x.shape[-2], 1))
        return G.div_(n), None if c is None else c.div_(n)
    n = _counts(x.shape[-2], x)
    return G.div_(n[:, None, None]), None if c is None else c.div_(n[:, None])


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


def _data_space_steps(x: Tensor, y: Tensor, step: float | Tensor, out: Tensor) -> None:
    """GD over every prefix with the gradient in data space, writing iterates into out (T+1, ..., N+1, d).

    The gradient of prefix n is S_n w - b_n = (1/n) X_n^T (X_n w - y_n). With W[n, i] = step_n / n
    for i < n and 0 else, and P[n, i] = x_i.w_n the predictions of every prefix's w on every
    example, a step is w <- w + (W * y) X - (W * P) X, where (W * y) X = step b is fixed: per step
    two batched products of 2 N d flops per prefix, nothing of size d^2 per prefix to write and read.
    """
    N, d = x.shape[-2:]
    before = torch.arange(N, device=x.device) < torch.arange(N + 1, device=x.device)[:, None]  # i < n
    B = math.prod(x.shape[:-2])
    W = ((before / _counts(N, x)[:, None]) * step).expand(x.shape[:-2] + (N + 1, N)).reshape(B, N + 1, N)
    xf = x.reshape(B, N, d)
    step_b = torch.bmm(W * y.reshape(B, 1, N), xf)  # (B, N+1, d)
    w = out.view(out.shape[0], B, N + 1, d)
    for t in range(out.shape[0] - 1):
        torch.add(w[t], step_b, out=w[t + 1]).baddbmm_(torch.bmm(w[t], xf.mT).mul_(W), xf, alpha=-1.0)


def gd(x: Tensor, y: Tensor, *, eta: float | Tensor, n_steps: int, prefix: bool = False) -> Tensor:
    """Gradient descent from w_0 = 0 with step eta: iterates (n_steps + 1, ..., [N+1,] d).

    eta: a number, or a tensor broadcasting to (..., [N+1]) (a step per prompt and prefix). Over
    prefixes with N <= 2d the gradient is taken in data space (:func:`_data_space_steps`), else
    from S_n: 2 N d against d^2 flops per prefix and step, but S costs d^2 numbers per prefix.
    """
    _check_xy(x, y)
    _check_steps("n_steps", n_steps)
    shape = _fit_shape(x, prefix)
    step = _per_fit("eta", eta, shape, x)
    out = x.new_empty((n_steps + 1,) + shape + (x.shape[-1],))
    out[0] = 0
    if prefix and 0 < x.shape[-2] <= 2 * x.shape[-1]:
        _data_space_steps(x, y, step, out)
        return out
    S, b = statistics(x, y, prefix=prefix)
    for t in range(n_steps):
        torch.sub(out[t], step * (_matvec(S, out[t]) - b), out=out[t + 1])
    return out


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


def newton(x: Tensor, y: Tensor, *, alpha: float | Tensor, n_iter: int, lam: float = 0.0,
           prefix: bool = False) -> Tensor:
    """Regression weights w_k = M_k b from Newton-Schulz on A = S + lam I: (n_iter+1, ..., [N+1,] d).

    M_0 = alpha A is a polynomial in A and the iteration keeps every M_k one, so M_k commutes with A
    and I - M_{k+1} A = I - 2 M_k A + M_k A M_k A = (I - M_k A)^2. With R = I - M_0 A = I - alpha A^2:

        I - M_k A = R^(2^k),    M_k = alpha A (I + R + ... + R^(2^k - 1))

    (the sum times I - R gives I - R^(2^k); as a sum it holds for singular A too). The sum doubles as
    sum_{j < 2^(k+1)} R^j = (I + R^(2^k)) sum_{j < 2^k} R^j, so with R_0 = R, R_{k+1} = R_k^2:

        w_0 = alpha A b,    w_{k+1} = w_k + R_k w_k

    one d x d product per iteration, where the iteration takes two, and no M_k kept. This equals
    :func:`newton_schulz` (A)[k] b up to round-off wherever the iteration converges
    (0 < alpha a^2 < 2 for every eigenvalue a of A), and shares its rank caveat. alpha: a number,
    or a tensor broadcasting to (..., [N+1]).
    """
    _check_steps("n_iter", n_iter)
    A, b = statistics(x, y, prefix=prefix)
    A.diagonal(dim1=-2, dim2=-1).add_(lam)
    alpha = _per_fit("alpha", alpha, _fit_shape(x, prefix), x)
    out = b.new_empty((n_iter + 1,) + b.shape)
    out[0] = alpha * _matvec(A, b)
    if n_iter == 0:
        return out
    R = torch.matmul(A, A).mul_(-alpha.unsqueeze(-1) if torch.is_tensor(alpha) else -alpha)
    R.diagonal(dim1=-2, dim2=-1).add_(1.0)  # R_0 = I - alpha A^2
    spare = A  # A is no longer needed: its memory takes the squares
    for k in range(n_iter):
        torch.add(out[k], _matvec(R, out[k]), out=out[k + 1])
        if k + 1 < n_iter:
            R, spare = torch.matmul(R, R, out=spare), R
    return out


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


def _fold_rows(Rz: Tensor, rows: Tensor) -> Tensor:
    """Least squares after each row: fold rows (..., M, d+1) = [x_k | y_k] one after another into the
    upper triangular factor Rz (..., d, d+1) = [R | z] of a least-squares problem and solve; returns
    (..., M, d), entry k the solution with rows 0 .. k added. (The factor of [A; x^T] is that of
    [R; x^T]: this is QR updating, O(d^2) per row.)

    Row k is zeroed left to right by Givens rotations: the one at column j turns the pair
    (R row j, row k) into (c R_j + s r, c r - s R_j) with c, s = R_jj / h, r_j / h and
    h = hypot(R_jj, r_j), which puts h on the diagonal and 0 at (k, j). It needs R row j after the
    rows before k and row k after the columns before j, so every pair with j + k = s can turn at once:
    M + d - 1 steps over all prompts and pairs (a wavefront), not M d. Factors are kept last row
    first (slot q = M-1-k holds the factor after row k, slot M holds Rz), so the pairs of one step are
    diagonals of the slots: R row j before row k is slot q+1, row j. Prompts go last in memory, so
    that every operation runs along them. A zero pair (R_jj = r_j = 0, a singular R) gives nan in
    that prompt only.
    """
    lead, M, d = rows.shape[:-2], rows.shape[-2], Rz.shape[-2]
    B = math.prod(lead)
    r = rows.reshape(B, M, d + 1).flip(-2).permute(1, 2, 0).contiguous()  # r[q] = rows[M-1-q]: (M, d+1, B)
    factors = r.new_empty((M + 1, d, d + 1, B))
    factors[M] = Rz.expand(lead + (d, d + 1)).reshape(B, d, d + 1).permute(1, 2, 0)
    for s in range(M + d - 1):
        j0, j1 = max(0, s - M + 1), min(d, s + 1)
        q0, q1 = M - 1 - s + j0, M - 1 - s + j1
        before = torch.diagonal(factors[q0 + 1:q1 + 1, j0:j1], dim1=0, dim2=1)  # (d+1, B, pairs)
        after = torch.diagonal(factors[q0:q1, j0:j1], dim1=0, dim2=1)
        row = r[q0:q1].permute(1, 2, 0)
        a = torch.diagonal(before, offset=-j0, dim1=0, dim2=2).T  # R_jj of each pair: (pairs, B)
        b = torch.diagonal(row, offset=-j0, dim1=0, dim2=2).T
        h = torch.hypot(a, b)
        c, sn = (a / h).T, (b / h).T  # (B, pairs), prompts contiguous
        torch.mul(before, c, out=after).addcmul_(row, sn)
        row.mul_(c).addcmul_(before, sn, value=-1.0)
    w = _solve_upper(factors[:M].permute(1, 2, 0, 3))  # (d, M, B)
    return w.permute(2, 1, 0).flip(-2).reshape(lead + (M, d))


def _solve_upper(Rz: Tensor) -> Tensor:
    """w with R w = z for augmented triangular factors Rz = [R | z] (d, d+1, ...) (batch axes last),
    by back substitution over all of them at once: w_i = (z_i - sum_{l>i} R_il w_l) / R_ii."""
    d = Rz.shape[0]
    w = Rz[:, d].clone()
    for i in reversed(range(d)):
        w[i] = (w[i] - (Rz[i, i + 1:d] * w[i + 1:]).sum(0)) / Rz[i, i]
    return w


def _augmented(x: Tensor, y: Tensor) -> Tensor:
    return torch.cat([x, y.unsqueeze(-1)], dim=-1)


def _with_root(top: Tensor, root: float | Tensor | None, rows: int) -> Tensor:
    """top (..., r, c) with the rows [sqrt(lam) I | 0] (rows x c) appended below; top itself if root is None."""
    if root is None:
        return top
    block = root * torch.eye(rows, top.shape[-1], dtype=top.dtype, device=top.device)
    return torch.cat([top, block.expand(top.shape[:-2] + block.shape[-2:])], dim=-2)


def _lq_prefixes(x: Tensor, y: Tensor, root: float | Tensor | None) -> tuple[Tensor, Tensor]:
    """Regularised least squares on the first n examples for n = 0 .. m, m = min(N, d), from one LQ
    factorisation; returns (w (..., m+1, d), R (..., m, m)). root = sqrt(lam), None for least squares.

    Least squares: X_m^T = Q R (Householder QR), so X_m = L Q^T with L = R^T lower triangular: row i
    of X is a combination of the first i+1 columns of Q, and the first n rows are X_n = L_n Q_n^T with
    L_n, Q_n the leading blocks. With X_n of full row rank its min-norm solution is w_n = Q_n L_n^{-1}
    y_n, and as L is lower triangular, L_n^{-1} y_n is the first n entries of z = L^{-1} y_m: so
    w_n = sum_{j<n} z_j q_j, a cumulative sum over the columns of Q.
    Ridge (sum convention): w_n = X_n^T (X_n X_n^T + lam I)^{-1} y_n. The rows [x_i | sqrt(lam) e_i]
    of [X_m | sqrt(lam) I] have Gram matrix X X^T + lam I and are again prefix-causal, so the same
    holds with Q's first d rows: w_n = sum_{j<n} z_j (q_j)_{:d}.
    """
    m, d = min(x.shape[-2], x.shape[-1]), x.shape[-1]
    Q, R = torch.linalg.qr(_with_root(x[..., :m, :].mT, root, m))
    z = torch.linalg.solve_triangular(R.mT, y[..., :m, None], upper=False).squeeze(-1)
    return _running_sum(Q[..., :d, :] * z.unsqueeze(-2), dim=-1).mT, R


def _regularised_prefixes(x: Tensor, y: Tensor, root: float | Tensor | None) -> tuple[Tensor, Tensor]:
    """Every prefix n = 0 .. N of least squares (root None) or ridge in the sum convention
    (root = sqrt(lam)): n <= d from :func:`_lq_prefixes`, then the examples after the d-th folded one
    by one into the QR factor of [X_d; sqrt(lam) I] (:func:`_fold_rows`). Returns (w, R of the LQ)."""
    N, d = x.shape[-2:]
    w, R = _lq_prefixes(x, y, root)
    if N > d:
        Rz = torch.linalg.qr(_with_root(_augmented(x[..., :d, :], y[..., :d]), root, d), mode="r")[1][..., :d, :]
        w = torch.cat([w, _fold_rows(Rz, _augmented(x[..., d:, :], y[..., d:]))], dim=-2)
    return w, R


def _least_squares_fast(x: Tensor, y: Tensor, prefix: bool) -> tuple[Tensor, Tensor]:
    """Least squares from orthogonal factorisations, assuming full rank; returns (w, T) with T the
    triangular factor of the first min(N, d) examples (N > d without prefixes: of all of them)."""
    N, d = x.shape[-2:]
    if prefix:
        return _regularised_prefixes(x, y, None)
    if N <= d:
        w, R = _lq_prefixes(x, y, None)
        return w[..., -1, :], R
    Rz = torch.linalg.qr(_augmented(x, y), mode="r")[1][..., :d, :]
    return torch.linalg.solve_triangular(Rz[..., :d], Rz[..., d:], upper=True).squeeze(-1), Rz[..., :d]


def _well_conditioned(x: Tensor, T: Tensor, rtol: float) -> Tensor:
    """True for prompts on which pinv_psd(S_n, rtol) keeps every non-zero eigenvalue of every prefix.

    S_n's non-zero eigenvalues are sigma_i(X_n)^2 / n, and pinv keeps them all when
    cond(X_n)^2 < 1 / rtol. sigma_max(X_n) <= |X|_F; sigma_min(X_n) >= sigma_min(T) >= 1 / |T^{-1}|_F
    (T is the factor of the first min(N, d) rows: for n <= d T_n^{-1} is a leading block of T^{-1},
    and adding rows never lowers sigma_min). So cond(X_n)^2 <= |X|_F^2 |T^{-1}|_F^2 for every n.
    """
    eye = torch.eye(T.shape[-1], dtype=T.dtype, device=T.device)
    inverse = torch.linalg.solve_triangular(T, eye, upper=True)
    bound = x.square().sum((-2, -1)) * inverse.square().sum((-2, -1))
    return bound * rtol < 1  # False for inf and nan (singular T)


def least_squares(x: Tensor, y: Tensor, *, prefix: bool = False, rtol: float | None = None) -> Tensor:
    """Minimum-norm least squares w = (X^T X)^+ X^T y = S^+ b: (..., [N+1,] d).

    Eigenvalues of S below rtol * max count as zero (default rtol = d eps, as :func:`pinv_psd`). On
    prompts where no prefix comes near that cutoff (:func:`_well_conditioned`) w is computed from
    orthogonal factorisations of X (:func:`_regularised_prefixes`), accurate to ~cond(X) eps like
    numpy's lstsq; S has condition number cond(X)^2, and solving with it loses as much (~1e-6 near
    n = d for Gaussian data). Other prompts, rank deficient or nearly, take pinv_psd(S) b, the definition.
    """
    _check_xy(x, y)
    N, d = x.shape[-2:]
    if N == 0:
        return x.new_zeros(_fit_shape(x, prefix) + (d,))
    rtol = d * torch.finfo(x.dtype).eps if rtol is None else rtol
    w, T = _least_squares_fast(x, y, prefix)
    ok = _well_conditioned(x, T, rtol)
    if not bool(ok.all()):
        S, b = statistics(x[~ok], y[~ok], prefix=prefix)
        w[~ok] = _matvec(pinv_psd(S, rtol), b)
    return w


def ridge(x: Tensor, y: Tensor, *, lam: float | Tensor, prefix: bool = False, convention: str = "mean") -> Tensor:
    """Ridge regression: (..., [N+1,] d). lam > 0: a number, or a tensor with one per prompt (...).

    convention "mean": w = (S + lam I)^{-1} b, the minimiser of 1/(2N)|Xw - y|^2 + lam/2 |w|^2.
    convention "sum":  w = (X^T X + lam I)^{-1} X^T y, the minimiser of 1/2 |Xw - y|^2 + lam/2 |w|^2
                       (the posterior mean for w ~ N(0, I sigma^2 / lam)). They agree at lam_sum = N lam.

    Both are (G_n + mu_n I)^{-1} c_n with G_n, c_n = X_n^T X_n, X_n^T y_n and mu_n = lam (sum) or
    max(n, 1) lam (mean). Over prefixes the sum convention folds one example at a time into a QR
    factor (:func:`_regularised_prefixes`); the mean convention, whose mu moves with n, solves each fit.
    """
    _check_xy(x, y)
    if convention not in ("mean", "sum"):
        raise ValueError(f"convention must be 'mean' or 'sum', got {convention!r}")
    lam, d = _per_fit("lam", lam, tuple(x.shape[:-2]), x), x.shape[-1]  # a number or (..., 1)
    if not (bool(((lam > 0) & lam.isfinite()).all()) if torch.is_tensor(lam) else 0 < lam < math.inf):
        raise ValueError(f"ridge needs lam > 0 (use least_squares for lam = 0), got lam={lam!r}")
    if prefix and convention == "sum":
        if x.shape[-2] == 0:
            return x.new_zeros(_fit_shape(x, prefix) + (d,))
        return _regularised_prefixes(x, y, math.sqrt(lam) if isinstance(lam, float) else lam.sqrt().unsqueeze(-1))[0]
    G, c = sums(x, y, prefix=prefix)
    if convention == "sum":
        mu = lam
    else:
        mu = lam * (_counts(x.shape[-2], x) if prefix else float(max(x.shape[-2], 1)))
    G.diagonal(dim1=-2, dim2=-1).add_(mu.unsqueeze(-1) if prefix else mu)
    return torch.linalg.solve(G, c)


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
