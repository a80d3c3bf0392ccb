"""Iterative Newton (Newton-Schulz) in linear self-attention: k iterations in k + 2 layers.

Claim (Fu et al. 2023). M_0 = alpha A, M_{t+1} = 2 M_t - M_t A M_t converges quadratically to A^+
for 0 < alpha < 2 / |A|_2^2; here A = S = X^T X / N (and A = S + lam I in
:mod:`constructions.icl.ridge_newton`). Residual slots: x (d), y (1), u (d), pred (1). Every token i
(the query too) carries u_i = M_t x_i after layer t + 1. Linear attention scaled 1/N over the N
examples (the query is not a key); every M_t is a polynomial in S, hence symmetric.

    layer 0 (start)    head: query x_i, key x_j, value x_j, output alpha into u:
                       u_i = alpha (1/N) sum_j x_j x_j^T x_i = alpha S x_i = M_0 x_i
    layer t (t=1..k)   head: query x_i, key u_j, value u_j, output -1/2 into u, then an identity MLP
                       (W_in reads u, W_out writes +1 into u) that doubles the slot:
                       u_i <- 2 (u_i - 1/2 (1/N) sum_j u_j u_j^T x_i) = 2 M_t x_i - M_t S M_t x_i
                       because (1/N) sum_j u_j u_j^T = M_t ((1/N) sum_j x_j x_j^T) M_t = M_t S M_t.
                       (The MLP reads the stream after the attention update, which is why the head
                       writes -1/2 and the MLP doubles: 2 (u - v/2) = 2u - v.)
    layer k + 1        head: query x_i, key u_j, value y_j, output +1 into pred:
                       pred_i = (1/N) sum_j y_j u_j.x_i = x_i^T M_k (X^T y / N) = w_k.x_i
    readout            W_U = e_pred.

So every intermediate layer t + 1 holds u = M_t x for every token and the last layer predicts with
w_k = M_k b, the k-th Newton iterate of the regression weights (-> least squares as k grows).

Numerics. Unlike the matrix iteration, the token-level one does not correct its own round-off: an
error e_q in the query's u slot (the query is not a key, so it never feeds back) becomes 2 e_q in the
next layer, and so does any error in the examples' u slots that is not of the form E x_i. Round-off
therefore grows like 2^k eps: ~1e-13 after 6 iterations, ~1e-5 after 40. The check's bound is for
the depths it draws (k <= 6); use fewer, well-started iterations (alpha near 2 / |S|^2) in practice.

Exactness: exact. Domain: |x| <= radius, so |S|_2 <= radius^2, and build() requires
0 < alpha < 2 / radius^4, which guarantees 0 < alpha < 2 / |S|_2^2 for every prompt in the domain
(outside it the iterates can grow doubly exponentially and round-off with them).
"""

from __future__ import annotations

import torch

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, positive_float, positive_int, require
from constructions.icl.layerwise import EVERY, READOUT, Claim, every_input, layer_errors
from constructions.paint import paint_head, paint_mlp, selector, unit
from constructions.reference import algorithms
from constructions.tokens import example_tokens


def layout(d: int) -> M.Layout:
    return M.Layout.of(x=d, y=1, u=d, pred=1)


def config(d: int, n_iter: int) -> M.ModelConfig:
    lay = layout(d)
    return M.ModelConfig(d_model=lay.width, n_layers=n_iter + 2, n_heads=1, d_head=d, d_in=d + 1,
                         d_mlp=d, attention="linear", mask="exclude_query", mlp="identity", bias=False,
                         layout=lay)


def alpha_bound(radius: float, lam: float = 0.0) -> float:
    """2 / (radius^2 + lam)^2: the largest alpha that converges on every prompt with |x| <= radius."""
    return 2.0 / (radius**2 + lam) ** 2


def check_alpha(alpha: float, radius: float, lam: float = 0.0) -> None:
    positive_float("alpha", alpha)
    positive_float("radius", radius)
    bound = alpha_bound(radius, lam)
    require(alpha < bound, f"alpha={alpha:g} violates 0 < alpha < 2 / (radius^2 + lam)^2 = {bound:g} "
                           f"(radius={radius:g}, lam={lam:g}): Newton-Schulz may diverge on this domain")


def paint_newton_layers(w: M.Weights, lay: M.Layout, d: int, n_iter: int, start_scale: float) -> None:
    """Layers 0 .. n_iter + 1 as in the module docstring; start writes start_scale * (attn avg) into u."""
    eye = torch.eye(d, dtype=torch.float64)
    e1 = eye[:1]
    paint_head(w, lay, 0, 0, Q={"x": eye}, K={"x": eye}, V={"x": eye}, O={"u": start_scale * eye})
    for layer in range(1, n_iter + 1):
        paint_head(w, lay, layer, 0, Q={"x": eye}, K={"u": eye}, V={"u": eye}, O={"u": -0.5 * eye})
        paint_mlp(w, lay, layer, W_in={"u": eye}, W_out={"u": eye})
    paint_head(w, lay, n_iter + 1, 0, Q={"x": eye}, K={"u": eye}, V={"y": e1}, O={"pred": e1.T})


def newton_weights(d: int, n_iter: int, start_scale: float) -> Built:
    """Tokens (x, y) into the x and y slots, the layers of :func:`paint_newton_layers`, readout e_pred."""
    cfg = config(d, n_iter)
    w = M.zeros(cfg)
    w.W_E[:] = selector(cfg.layout, {"x": 0, "y": d}, d + 1)
    w.W_U[:] = unit(cfg.layout, "pred")
    paint_newton_layers(w, cfg.layout, d, n_iter, start_scale)
    return Built(cfg, w)


def build(d: int, n_iter: int, alpha: float, radius: float = 1.0) -> Built:
    """Weights for n_iter Newton-Schulz iterations on S, then the prediction x_q^T M_k b."""
    positive_int("d", d)
    positive_int("n_iter", n_iter, lowest=0)
    check_alpha(alpha, radius)
    return newton_weights(d, n_iter, alpha)


def check_domain(case: Case, radius: float) -> None:
    biggest = max(case.x.norm(dim=-1).max().item(), case.x_query.norm(dim=-1).max().item())
    require(biggest <= radius * (1 + 1e-12),
            f"inputs leave the domain |x| <= radius={radius:g} (largest |x| = {biggest:g}); alpha's "
            f"convergence bound 2 / radius^4 no longer covers them")


def newton_errors(built: Built, case: Case, M_iters: torch.Tensor, w_last: torch.Tensor, tokens: torch.Tensor,
                  keep: slice | list[int], u_scale: float = 1.0) -> dict[str, float]:
    """Compare the token rows ``keep`` (the examples, then the query) with the reference:
    layer 0 holds x; layer t + 1 holds u = u_scale * M_t x; the readout is pred = w_k.x."""
    x_all = every_input(case.x, case.x_query)  # (B, N+1, d)
    claims = [[Claim("x", keep, x_all)]]
    claims += [[Claim("u", keep, u_scale * torch.einsum("bde,bne->bnd", M_t, x_all))] for M_t in M_iters]
    claims.append([Claim(READOUT, keep, algorithms.predict(w_last.unsqueeze(-2), x_all))])
    return layer_errors(built, tokens, claims)


def errors(built: Built, case: Case) -> dict[str, float]:
    p = case.params
    check_domain(case, p["radius"])
    S, b = algorithms.statistics(case.x, case.y)
    M_iters = algorithms.newton_schulz(S, alpha=p["alpha"], n_iter=p["n_iter"])  # (k+1, B, d, d)
    w_last = algorithms.predict(M_iters[-1], b.unsqueeze(-2))  # M_k b, as M_k is symmetric
    tokens = example_tokens(case.x, case.y, case.x_query)
    return newton_errors(built, case, M_iters, w_last, tokens, EVERY)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """Inputs in a ball of radius uniform in [0.5, 1.5], then alpha in [0.05, 0.95] * alpha_bound."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 1.5))
    alpha = domains.draw_float(gen, 0.05, 0.95) * alpha_bound(p.radius)
    return p.case(d=p.d, n_iter=p.depth, alpha=alpha, radius=p.radius)


CONSTRUCTION = Construction(
    name="newton", exactness="exact", algorithm="algorithms.newton_schulz",
    summary="k Newton-Schulz iterations in k + 2 linear-attention layers (u = M_t x checked per layer)",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=1e-10,
    bound_note="float64 round-off, doubled by every Newton layer (see Numerics in the docstring): "
               "~ 2^k d N eps < 1e-12 for k <= 6",
)
