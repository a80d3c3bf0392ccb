"""Ridge regression by Newton-Schulz on S + lam I, in linear self-attention (k + 2 layers).

Claim: the Newton construction of :mod:`constructions.icl.newton`, run on A = S + lam I, predicts with
w_k = M_k b -> (S + lam I)^{-1} b, the ridge solution of 1/(2N)|Xw - y|^2 + lam/2 |w|^2.

How lam enters. Attention only ever forms averages over tokens, (1/n_keys) sum_j k_j v_j^T, so the
regulariser must come from tokens: after the N examples we place d "regulariser tokens"
x = sqrt(N lam) e_m, y = 0 (m = 1..d), then the query. They are keys like the examples, so every
head averages over N + d keys and sees

    (1/(N+d)) (X^T X + N lam I) = c A,        c = N / (N + d).

Running the Newton layers on c A instead of A only rescales the iterates: if M_t is the Newton
sequence of A with M_0 = alpha A, then M'_t = M_t / c is the sequence of A' = c A started at
M'_0 = (alpha / c^2) A', because 2 M'_t - M'_t A' M'_t = (2 M_t - M_t A M_t) / c. So the start layer
writes with scale alpha / c^2 (that is where N enters the weights: this construction is built for
a fixed number of examples), the middle layers are exactly Newton's, u_i = M_t x_i / c after layer
t + 1, and the prediction head gives (1/(N+d)) sum_j y_j u_j.x_q = (1/N) sum_j y_j x_j^T M_k x_q =
w_k.x_q (regulariser tokens have y = 0). The regulariser tokens' own u and pred slots are not
claimed to mean anything and are not compared.

Exactness: exact. Domain: |x| <= radius, lam > 0, 0 < alpha < 2 / (radius^2 + lam)^2 (so that
alpha < 2 / |S + lam I|^2 on every prompt).
"""

from __future__ import annotations

import math

import torch

from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, positive_float, positive_int
from constructions.icl.layerwise import require_examples
from constructions.icl.newton import check_alpha, check_domain, newton_errors, newton_weights
from constructions.reference import algorithms
from constructions.tokens import example_tokens


def tokens(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, lam: float) -> torch.Tensor:
    """Examples, then d regulariser tokens (sqrt(N lam) e_m, 0), then the query: (..., N+d+1, d+1)."""
    n, d = x.shape[-2], x.shape[-1]
    reg_x = math.sqrt(n * lam) * torch.eye(d, dtype=x.dtype, device=x.device).expand(*x.shape[:-2], d, d)
    all_x = torch.cat([x, reg_x], dim=-2)
    all_y = torch.cat([y, torch.zeros_like(reg_x[..., 0])], dim=-1)
    return example_tokens(all_x, all_y, x_query)


def build(d: int, n_examples: int, n_iter: int, lam: float, alpha: float, radius: float = 1.0) -> Built:
    """Weights for n_iter Newton iterations on S + lam I, for prompts of exactly n_examples examples."""
    positive_int("d", d)
    positive_int("n_examples", n_examples)
    positive_int("n_iter", n_iter, lowest=0)
    positive_float("lam", lam)
    check_alpha(alpha, radius, lam)
    c = n_examples / (n_examples + d)
    return newton_weights(d, n_iter, alpha / c**2)


def errors(built: Built, case: Case) -> dict[str, float]:
    p = case.params
    require_examples("ridge_newton", case)
    check_domain(case, p["radius"])
    n, d = case.x.shape[-2], case.x.shape[-1]
    S, b = algorithms.statistics(case.x, case.y)
    A = S + p["lam"] * torch.eye(d, dtype=S.dtype)
    M_iters = algorithms.newton_schulz(A, alpha=p["alpha"], n_iter=p["n_iter"])
    w_last = algorithms.predict(M_iters[-1], b.unsqueeze(-2))
    # Drop the regulariser tokens (positions N .. N+d-1) so the rows line up with examples + query.
    c = n / (n + d)
    keep = list(range(n)) + [n + d]
    toks = tokens(case.x, case.y, case.x_query, p["lam"])
    return newton_errors(built, case, M_iters, w_last, toks, keep, 1.0 / c)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """Inputs in a ball of radius uniform in [0.5, 1.5], lam log-uniform in [1e-3, 1], then alpha in
    [0.05, 0.95] times 2 / (radius^2 + lam)^2; the construction is built for the N drawn."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 1.5), log10_lam=(-3.0, 0.0))
    alpha = domains.draw_float(gen, 0.05, 0.95) * 2.0 / (p.radius**2 + p.lam) ** 2
    return p.case(d=p.d, n_examples=p.n, n_iter=p.depth, lam=p.lam, alpha=alpha, radius=p.radius)


CONSTRUCTION = Construction(
    name="ridge_newton", exactness="exact", algorithm="algorithms.newton (lam > 0) -> algorithms.ridge",
    summary="k Newton-Schulz iterations on S + lam I (d regulariser tokens) in k + 2 layers",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=1e-10,
    bound_note="as newton: float64 round-off of a convergent Newton-Schulz iteration, < 1e-12",
)
