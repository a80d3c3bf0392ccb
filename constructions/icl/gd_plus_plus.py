"""GD++ in linear self-attention: a GD step plus a data-whitening step per layer.

Claim (von Oswald et al. 2023, "GD++"). Each layer has two linear-attention heads, both reading the
same (pre-layer) residual stream, scaled 1/N over the N examples (the query is not a key):

    head 1 (GD step)   query x_i, key x_j, value y_j, output -eta into y:
                       r_i <- r_i - (eta / N) sum_j r_j x_j.x_i
    head 2 (x update)  query x_i, key x_j, value x_j, output -gamma into x:
                       x_i <- x_i - (gamma / N) sum_j x_j x_j^T x_i = (I - gamma S_t) x_i

Head 1 is the GD layer of :mod:`constructions.icl.gd` (its derivation applies verbatim to the current
inputs X_t); head 2 multiplies every input, the query's included, by I - gamma S_t, where
S_t = X_t^T X_t / N is formed from the current inputs. Both heads read the layer's input, so the GD
step uses X_t and the whitening takes effect from the next layer: exactly the recursion of
:func:`constructions.reference.algorithms.gd_plus_plus`. Per layer, the x slots, the examples' residual
slots and the readout -y_q are all compared with the reference's state after that many steps.

Exactness: exact. Domain: |x| <= radius, 0 < eta < 2 / radius^2 and 0 <= gamma < 1 / radius^2, so
I - gamma S_t is a contraction and the inputs stay in the ball.
"""

from __future__ import annotations

import torch

from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, positive_float, positive_int, require
from constructions.icl.layerwise import EXAMPLES, QUERY, READOUT, Claim, layer_errors
from constructions.icl.preconditioned_gd import canvas, config, paint_gd_step
from constructions.paint import paint_head
from constructions.reference import algorithms
from constructions.tokens import example_tokens


def build(d: int, n_steps: int, eta: float, gamma: float) -> Built:
    """Weights for n_steps of GD++ (step eta, whitening gamma)."""
    positive_int("d", d)
    positive_int("n_steps", n_steps)
    positive_float("eta", eta)
    require(isinstance(gamma, (int, float)) and gamma >= 0, f"gamma must be a number >= 0, got {gamma!r}")
    cfg = config(d, n_steps, n_heads=2)
    w = canvas(cfg, d)
    eye = torch.eye(d, dtype=torch.float64)
    for layer in range(n_steps):
        paint_gd_step(w, cfg.layout, layer, eta * eye, head=0)
        paint_head(w, cfg.layout, layer, 1, Q={"x": eye}, K={"x": eye}, V={"x": eye}, O={"x": -gamma * eye})
    return Built(cfg, w)


def errors(built: Built, case: Case) -> dict[str, float]:
    """Per layer l: the readout, the examples' residual and x slots and the query's x slot against
    the reference's state after l steps of GD++."""
    p = case.params
    ref = algorithms.gd_plus_plus(case.x, case.y, case.x_query, eta=p["eta"], gamma=p["gamma"],
                                  n_steps=p["n_steps"])
    claims = [[Claim(READOUT, QUERY, ref.prediction[layer]), Claim("y", EXAMPLES, ref.r[layer]),
               Claim("x", EXAMPLES, ref.x[layer]), Claim("x", QUERY, ref.x_query[layer])]
              for layer in range(p["n_steps"] + 1)]
    return layer_errors(built, example_tokens(case.x, case.y, case.x_query), claims)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """As gd's domain, then a whitening step gamma uniform in [0, 0.9] / radius^2."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 2.0))
    eta = domains.stable_step(gen, p.radius)
    gamma = domains.draw_float(gen, 0.0, 0.9) / p.radius**2
    return p.case(d=p.d, n_steps=p.depth, eta=eta, gamma=gamma)


CONSTRUCTION = Construction(
    name="gd_plus_plus", exactness="exact", algorithm="algorithms.gd_plus_plus",
    summary="L two-head linear-attention layers = L steps of GD++ (GD step + x <- (I - gamma S) x)",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=1e-10,
    bound_note="float64 round-off of contractions (eta < 2/radius^2, gamma < 1/radius^2): ~ d N eps",
)
