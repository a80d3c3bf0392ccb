"""Iterative Newton (Newton-Schulz) as one looped group of two blocks, with no prologue.

Claim (Fu et al. 2023; looped as Giannou et al. 2023). The unlooped construction
(:mod:`constructions.icl.newton`) is a start layer (u_i = alpha S x_i = M_0 x_i), k identical
iteration layers (u_i <- 2 u_i - (1/N) sum_j u_j u_j^T x_i) and a predict layer. A loop cannot
have a start layer of its own (every loop applies the same blocks), so the start is folded into
the first loop by a slot that erases itself, and the prediction is made at the end of every loop.
Residual slots: x (d), y (1), u (d), start (d), pred (1); write g_i for token i's start slot.

    embedding        x, y copied; u = 0; start g_i = sqrt(alpha) x_i; pred = 0.
    block 0 (step)   head: query x_i, key u_j + g_j, value u_j - g_j, output -1/2 into u, so
                         u_i <- u_i - 1/2 (1/N) sum_j (u_j - g_j)(u_j + g_j)^T x_i;
                     then an identity MLP (W_in reads u, start, pred; W_out writes +u, -start, -pred):
                         u doubles, start and pred are cleared.
    block 1 (predict) head: query x_i, key u_j, value y_j, output +1 into pred:
                         pred_i = (1/N) sum_j y_j u_j.x_i = x_i^T M (X^T y / N) = w.x_i.
    readout          W_U = e_pred.

Why the first loop starts and the later ones iterate. With u_j = M x_j and g_j = G x_j,
(1/N) sum_j (u_j - g_j)(u_j + g_j)^T = (M - G) S (M + G) = M S M + M S G - G S M - G S G.
Loop 1 has M = 0 and G = sqrt(alpha) I: block 0 leaves u = 2 (0 + 1/2 alpha S x) = alpha S x = M_0 x
and clears the start slot. Every later loop has G = 0 exactly (g - g = 0 in floating point too), so
block 0 is the Newton layer of :mod:`constructions.icl.newton`: u <- 2 M_t x - M_t S M_t x = M_{t+1} x.
Block 1 then predicts with the iterate just formed; pred was cleared by block 0's MLP, so it holds
w_t.x_i, not a sum over loops. So b loops hold M_{b-1}: loop 1 is the start, loops 2..b are
Newton-Schulz iterations 1..b-1, and the readout after loop t is the prediction of w_{t-1} = M_{t-1} b.
The parameters are newton's: ``build(d, n_iter, alpha, radius)`` loops n_iter + 1 times and computes
the same prediction as ``newton.build(d, n_iter, alpha, radius)`` (2 (n_iter + 1) applied blocks
against n_iter + 2 layers: the predict layer runs in every loop).

Numerics: as newton's (round-off doubles per iteration, ~ 2^k d N eps), over the check's deepest
run k = 5 + EXTRA_LOOPS = 7: < 1e-12. Domain: newton's (|x| <= radius, 0 < alpha < 2 / radius^4).
"""

from __future__ import annotations

import math

import torch

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, positive_int
from constructions.icl import newton
from constructions.icl.layerwise import EVERY, READOUT, Claim, every_input
from constructions.icl.looped import EXTRA_LOOPS, loop_errors
from constructions.paint import paint_head, paint_mlp, selector, unit
from constructions.reference import algorithms
from constructions.tokens import example_tokens

GROUP = 2  # blocks per loop: the Newton step, then the prediction


def layout(d: int) -> M.Layout:
    return M.Layout.of(x=d, y=1, u=d, start=d, pred=1)


def config(d: int, n_loops: int) -> M.ModelConfig:
    """Two linear-attention blocks looped n_loops times; the identity MLP is 2d + 1 wide (u, start, pred)."""
    lay = layout(d)
    return M.ModelConfig(d_model=lay.width, n_layers=GROUP, n_heads=1, d_head=d, d_in=d + 1, d_mlp=2 * d + 1,
                         attention="linear", mask="exclude_query", mlp="identity", bias=False, layout=lay,
                         n_loops=n_loops)


def _columns(d: int, start: int, width: int, scale: float = 1.0) -> torch.Tensor:
    """(width, 2d + 1): scale * I in columns [start, start + width) of the MLP's hidden units."""
    block = torch.zeros(width, 2 * d + 1, dtype=torch.float64)
    block[:, start: start + width] = scale * torch.eye(width, dtype=torch.float64)
    return block


def paint_group(w: M.Weights, lay: M.Layout, d: int) -> None:
    """Blocks 0 (start-or-iterate, then double u and clear start and pred) and 1 (predict)."""
    eye = torch.eye(d, dtype=torch.float64)
    e1 = eye[:1]
    paint_head(w, lay, 0, 0, Q={"x": eye}, K={"u": eye, "start": eye}, V={"u": eye, "start": -eye},
               O={"u": -0.5 * eye})
    units = {"u": (0, d, 1.0), "start": (d, d, -1.0), "pred": (2 * d, 1, -1.0)}  # slot -> hidden columns, sign
    paint_mlp(w, lay, 0, W_in={s: _columns(d, a, n) for s, (a, n, _) in units.items()},
              W_out={s: _columns(d, a, n, sign).T for s, (a, n, sign) in units.items()})
    paint_head(w, lay, 1, 0, Q={"x": eye}, K={"u": eye}, V={"y": e1}, O={"pred": e1.T})


def build(d: int, n_iter: int, alpha: float, radius: float = 1.0) -> Built:
    """Weights of the two-block group, looped n_iter + 1 times: the start, then n_iter iterations."""
    positive_int("d", d)
    positive_int("n_iter", n_iter, lowest=0)
    newton.check_alpha(alpha, radius)
    cfg = config(d, n_iter + 1)
    w = M.zeros(cfg)
    w.W_E[:] = selector(cfg.layout, {"x": 0, "y": d}, d + 1)
    w.W_E[0, :d, cfg.layout["start"]] = math.sqrt(alpha) * torch.eye(d, dtype=torch.float64)
    w.W_U[:] = unit(cfg.layout, "pred")
    paint_group(w, cfg.layout, d)
    return Built(cfg, w)


def claims(case: Case, M_iters: torch.Tensor, b: torch.Tensor) -> list[list[Claim]]:
    """What the stream holds after every applied block, for len(M_iters) loops: the embedding
    (x, and sqrt(alpha) x in start); after loop t's step block u = M_{t-1} x with start and pred
    cleared; after its predict block u = M_{t-1} x and the readout w_{t-1}.x, w = M b."""
    x_all = every_input(case.x, case.x_query)  # (B, N+1, d)
    zeros = torch.zeros_like(x_all)
    out = [[Claim("x", EVERY, x_all), Claim("start", EVERY, math.sqrt(case.params["alpha"]) * x_all)]]
    for M_t in M_iters:  # (B, d, d), symmetric
        u = torch.einsum("bde,bne->bnd", M_t, x_all)
        w_t = algorithms.predict(M_t, b.unsqueeze(-2))  # M_t b
        out.append([Claim("u", EVERY, u), Claim("start", EVERY, zeros), Claim("pred", EVERY, zeros[..., 0])])
        out.append([Claim("u", EVERY, u), Claim(READOUT, EVERY, algorithms.predict(w_t.unsqueeze(-2), x_all))])
    return out


def errors(built: Built, case: Case) -> dict[str, float]:
    """Every applied block (and those of EXTRA_LOOPS more loops) against the Newton-Schulz iterates."""
    p = case.params
    newton.check_domain(case, p["radius"])
    S, b = algorithms.statistics(case.x, case.y)
    M_iters = algorithms.newton_schulz(S, alpha=p["alpha"], n_iter=p["n_iter"] + EXTRA_LOOPS)  # (k+3, B, d, d)
    return loop_errors(built, example_tokens(case.x, case.y, case.x_query), claims(case, M_iters, b))


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """newton's domain with depth = the number of loops (n_iter = depth - 1 iterations after the start)."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 1.5))
    alpha = domains.draw_float(gen, 0.05, 0.95) * newton.alpha_bound(p.radius)
    return p.case(d=p.d, n_iter=p.depth - 1, alpha=alpha, radius=p.radius)


CONSTRUCTION = Construction(
    name="newton_looped", exactness="exact", algorithm="algorithms.newton_schulz",
    summary="one two-block group looped k + 1 times = start + k Newton-Schulz iterations (+2 loops checked)",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=newton.CONSTRUCTION.bound,
    bound_note="as newton: float64 round-off doubled per iteration, ~ 2^k d N eps < 1e-12 for k <= 7 "
               f"(depth <= 6 loops, then {EXTRA_LOOPS} more)",
)
