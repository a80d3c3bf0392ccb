"""Preconditioned gradient descent in linear self-attention: one layer = one step.

Claim (von Oswald et al. 2023; Ahn et al. 2023). Tokens z_i = (x_i, y_i) for i = 1..N and the
query z_q = (x_q, 0); linear attention scaled 1/N over the N examples (the query is not a key).
Each layer l has one head with

    query  P_l^T x_i   (W_Q = P_l on the x slot)         key    x_j   (W_K = I on the x slot)
    value  y_j         (W_V = e_1 on the y slot)          output -1 into the y slot (W_O)

so it adds  -(1/N) sum_j y_j x_j^T P_l^T x_i  to token i's y slot.

Why this is a GD step. Let the y slot of example i hold the residual r_i = y_i - w_l.x_i, and the
query's hold -w_l.x_q (both true for l = 0, w_0 = 0). One step of preconditioned GD on
L(w) = 1/(2N) sum_i (w.x_i - y_i)^2 is  w_{l+1} = w_l - P_l grad = w_l + (1/N) P_l sum_j r_j x_j,
hence  y_i - w_{l+1}.x_i = r_i - (1/N) sum_j r_j x_j^T P_l^T x_i: exactly the update above, for the
examples and (with y_q = 0) for the query. By induction every layer's y slots hold the residuals of
the matching iterate, and the readout W_U = -e_y gives w_l.x_q at every layer, not only the last.
The x slots never change (no head writes them).

Exactness: exact (float64 round-off). Domain: inputs in the ball |x| <= radius and preconditioners
with 0 < P <= (2 / radius^2) I in the sense of |P|_2 < 2 / radius^2, so the iteration is stable and
round-off does not grow.
"""

from __future__ import annotations

import torch

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, positive_int, require
from constructions.icl.layerwise import EXAMPLES, QUERY, READOUT, Claim, layer_errors
from constructions.paint import paint_head, selector, unit
from constructions.reference import algorithms
from constructions.tokens import example_tokens


def layout(d: int) -> M.Layout:
    return M.Layout.of(x=d, y=1)


def config(d: int, n_steps: int, n_heads: int = 1) -> M.ModelConfig:
    """Linear attention, keys exclude the query, no MLP, no norm, no biases."""
    return M.ModelConfig(d_model=d + 1, n_layers=n_steps, n_heads=n_heads, d_head=d, d_in=d + 1,
                         attention="linear", mask="exclude_query", mlp="none", bias=False,
                         layout=layout(d))


def canvas(cfg: M.ModelConfig, d: int) -> M.Weights:
    """Zero weights of ``cfg`` with the GD family's embedding and readout: tokens (x, y) copy into the
    x and y slots; the readout is -y (the query's y slot holds -w.x_q)."""
    w = M.zeros(cfg)
    w.W_E[:] = selector(cfg.layout, {"x": 0, "y": d}, d + 1)
    w.W_U[:] = unit(cfg.layout, "y", -1.0)
    return w


def paint_gd_step(w: M.Weights, lay: M.Layout, layer: int, P: torch.Tensor, head: int = 0) -> None:
    """One preconditioned GD step in layer ``layer``, head ``head`` (see the module docstring)."""
    d = P.shape[0]
    e1 = torch.zeros(1, d, dtype=torch.float64)
    e1[0, 0] = 1.0
    paint_head(w, lay, layer, head, Q={"x": P}, K={"x": torch.eye(d, dtype=torch.float64)},
               V={"y": e1}, O={"y": -e1.T})


def build(d: int, n_steps: int, P: torch.Tensor) -> Built:
    """Weights for n_steps of w <- w - P_l grad. P: (d, d) shared, or (n_steps, d, d) per step."""
    positive_int("d", d)
    positive_int("n_steps", n_steps)
    P = torch.as_tensor(P, dtype=torch.float64)
    require(P.shape in ((d, d), (n_steps, d, d)),
            f"P must have shape ({d}, {d}) or ({n_steps}, {d}, {d}), got {tuple(P.shape)}")
    Ps = P.expand(n_steps, d, d) if P.dim() == 2 else P
    cfg = config(d, n_steps)
    w = canvas(cfg, d)
    for layer in range(n_steps):
        paint_gd_step(w, cfg.layout, layer, Ps[layer])
    return Built(cfg, w)


def gd_claims(case: Case, w_l: torch.Tensor) -> list[Claim]:
    """What the stream holds when the y slots carry the residuals of the iterate w_l (B, d): the
    readout w_l.x_q at the query, the examples' residuals y_i - w_l.x_i, and x unchanged."""
    return [Claim(READOUT, QUERY, algorithms.predict(w_l, case.x_query)),
            Claim("y", EXAMPLES, case.y - algorithms.predict(w_l.unsqueeze(-2), case.x)),
            Claim("x", EXAMPLES, case.x)]


def gd_errors(built: Built, case: Case, P: torch.Tensor, n_steps: int) -> dict[str, float]:
    """Per layer l: the claims of :func:`gd_claims` for the l-th preconditioned GD iterate."""
    iterates = algorithms.preconditioned_gd(case.x, case.y, P=P, n_steps=n_steps)  # (L+1, B, d)
    tokens = example_tokens(case.x, case.y, case.x_query)
    return layer_errors(built, tokens, [gd_claims(case, w_l) for w_l in iterates])


def random_preconditioner(gen: torch.Generator, d: int, radius: float) -> torch.Tensor:
    """Symmetric positive definite P with |P|_2 in (0, 1.9 / radius^2): a random rotation of a
    diagonal with entries uniform in [0.05, 1.9] / radius^2."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    eigs = 0.05 + 1.85 * torch.rand(d, generator=gen, dtype=torch.float64)
    return (q * eigs) @ q.T / radius**2


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """Inputs in a ball of radius uniform in [0.5, 2], then P as :func:`random_preconditioner`."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 2.0))
    return p.case(d=p.d, n_steps=p.depth, P=random_preconditioner(gen, p.d, p.radius))


def errors(built: Built, case: Case) -> dict[str, float]:
    return gd_errors(built, case, case.params["P"], case.params["n_steps"])


CONSTRUCTION = Construction(
    name="preconditioned_gd", exactness="exact", algorithm="algorithms.preconditioned_gd",
    summary="L linear-attention layers = L steps of w <- w - P grad (every layer's readout checked)",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=1e-10,
    bound_note="float64: each step is a contraction (|I - P S| <= 1 on the domain), so round-off "
               "stays ~ d N eps ~ 1e-13; 1e-10 leaves margin and is 1e6 below a 1e-3 weight perturbation",
)
