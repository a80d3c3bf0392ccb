"""Gradient descent in ReLU attention: two heads of opposite sign carry one linear-attention GD step.

Claim (Bai et al. 2023). ReLU attention scores A_ij = ReLU(q_i.k_j) / N. Since
ReLU(a) - ReLU(-a) = a for every real a, two heads that differ only in the sign of the query and of
the output,

    head +   query  P x_i,  key x_j,  value y_j,  output -1 into the y slot
    head -   query -P x_i,  key x_j,  value y_j,  output +1 into the y slot

add  -(1/N) sum_j [ReLU(a_ij) - ReLU(-a_ij)] y_j = -(1/N) sum_j a_ij y_j,  a_ij = x_i^T P^T x_j,
to token i's y slot: exactly the linear-attention layer of :mod:`constructions.icl.preconditioned_gd`
(whose docstring proves that this is one step w <- w - P grad when the y slots hold residuals).
With P = eta I, L layers are L steps of GD from w_0 = 0; the readout -y of the query is w_l.x_q
after every layer l.

Exactness: exact (float64: ReLU(a) and ReLU(-a) are exact, and their difference is a computed
sum of one nonzero term). Domain as gd: |x| <= radius, 0 < eta < 2 / radius^2.
"""

from __future__ import annotations

import dataclasses

import torch

from constructions import model as M
from constructions.check.contract import Built, Construction, positive_float, positive_int
from constructions.icl.gd import errors, sample
from constructions.icl.preconditioned_gd import canvas, config, paint_gd_step


def relu_config(d: int, n_steps: int) -> M.ModelConfig:
    """preconditioned_gd's config with ReLU attention and two heads per layer."""
    return dataclasses.replace(config(d, n_steps, n_heads=2), attention="relu")


def build(d: int, n_steps: int, eta: float) -> Built:
    """Weights for n_steps of GD with step eta on 1/(2N) sum (w.x_i - y_i)^2 in ReLU attention."""
    positive_int("d", d)
    positive_int("n_steps", n_steps)
    positive_float("eta", eta)
    cfg = relu_config(d, n_steps)
    w = canvas(cfg, d)
    P = eta * torch.eye(d, dtype=torch.float64)
    for layer in range(n_steps):
        paint_gd_step(w, cfg.layout, layer, P, head=0)
        paint_gd_step(w, cfg.layout, layer, -P, head=1)  # query -P x_i ...
        w.blocks[layer].attn.W_O[0, 1] *= -1.0  # ... and output +1: ReLU(a) - ReLU(-a) = a
    return Built(cfg, w)


CONSTRUCTION = Construction(
    name="gd_relu", exactness="exact", algorithm="algorithms.gd",
    summary="L ReLU-attention layers (two heads of opposite sign) = L GD steps from w_0 = 0",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=1e-10,
    bound_note="as gd: float64 round-off of a stable iteration, ~ d N eps ~ 1e-13",
)
