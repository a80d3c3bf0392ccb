"""Gradient descent in linear self-attention: L layers = L steps of GD from w_0 = 0.

Claim (von Oswald et al. 2023). With tokens z_i = (x_i, y_i), the query z_q = (x_q, 0) and linear
attention scaled 1/N over the N examples, a layer with one head

    query x_i (W_Q = I on x),  key x_j (W_K = I on x),  value y_j (W_V = e_1 on y),
    output  -eta  into the y slot

adds -(eta / N) sum_j y_j x_j.x_i to every y slot. If the y slots hold the residuals
r_i = y_i - w.x_i (and the query's holds -w.x_q), that is the residual after one GD step
w <- w - eta grad, grad = (1/N) sum_j (w.x_j - y_j) x_j = -(1/N) sum_j r_j x_j. So layer l holds the
residuals of iterate w_l, and the readout -y slot of the query is w_l.x_q at every layer.

This is preconditioned GD with P = eta I (see :mod:`constructions.icl.preconditioned_gd`, which carries
the full derivation); it has its own module because it is the construction people cite.

Exactness: exact. Domain: |x| <= radius and 0 < eta < 2 / radius^2 (GD is then stable: every
eigenvalue of I - eta S lies in (-1, 1]).
"""

from __future__ import annotations

import torch

from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, positive_float, positive_int
from constructions.icl.preconditioned_gd import build as build_preconditioned
from constructions.icl.preconditioned_gd import gd_errors


def build(d: int, n_steps: int, eta: float) -> Built:
    """Weights for n_steps of GD with step eta on 1/(2N) sum (w.x_i - y_i)^2."""
    positive_int("d", d)
    positive_int("n_steps", n_steps)
    positive_float("eta", eta)
    return build_preconditioned(d, n_steps, eta * torch.eye(d, dtype=torch.float64))


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """Inputs in a ball of radius uniform in [0.5, 2], then a stable step eta < 2 / radius^2."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 2.0))
    return p.case(d=p.d, n_steps=p.depth, eta=domains.stable_step(gen, p.radius))


def errors(built: Built, case: Case) -> dict[str, float]:
    d, eta = case.params["d"], case.params["eta"]
    return gd_errors(built, case, eta * torch.eye(d, dtype=torch.float64), case.params["n_steps"])


CONSTRUCTION = Construction(
    name="gd", exactness="exact", algorithm="algorithms.gd",
    summary="L linear-attention layers = L GD steps from w_0 = 0 (every layer's readout checked)",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=1e-10,
    bound_note="float64 round-off of a stable iteration (eta < 2 / radius^2): ~ d N eps ~ 1e-13",
)
