"""Gradient descent approximated in softmax attention: two heads with scores +eps q.k and -eps q.k.

Claim (the small-score expansion used by von Oswald et al. 2023 and Bai et al. 2023). One softmax
head with scores eps a_ij over the keys j of query i, a_ij = q_i.k_j, and values v_j outputs

    h(eps) = sum_j e^{eps a_ij} v_j / sum_j e^{eps a_ij} = E[v e^{eps a}] / E[e^{eps a}]

(E = uniform average over the keys). Its odd part in eps is eps Cov(a, v) + O(eps^3), so two heads,
scores +eps a and -eps a, differenced and rescaled by 1/(2 eps), give

    (h(eps) - h(-eps)) / (2 eps) = E[a v] - E[a] E[v] + eps^2 c_3 + O(eps^4)           (*)

Mean-centring term. The linear-attention GD layer needs E[a v] = (1/N) sum_j (x_i.x_j) r_j (see
:mod:`constructions.icl.preconditioned_gd`); softmax leaves E[a] E[v] = (x_i.xbar) rbar, the centring of
keys and values that its normalisation imposes (without it the layers run GD on centred data,
covariance S - xbar xbar^T). We remove it exactly with mirrored examples: the prompt holds every
example z_j = (x_j, y_j) and its negative -z_j, then the query. Least squares does not change
(X^T X and X^T y only double, and are averaged over 2N), and every residual is odd in its token
(r(-z) = -y + w.x = -r(z)), so at every layer E[x] = 0 and E[r] = 0 over the keys: the centring
term is exactly zero, and the mirrored tokens stay the negatives of the examples (the layer update
is odd in the query token too). With the pair (a, v) -> (-a, -v) symmetric, h is odd in eps and (*)
reads  E[v sinh(eps a)] / (eps E[cosh(eps a)]) = E[a v] + eps^2 (E[a^3 v]/6 - E[a v] E[a^2]/2) + O(eps^4).

Weights per layer (softmax with beta = 1, keys exclude the query):

    head +   query eps x_i, key x_j, value y_j (the residual r_j), output -eta / (2 eps) into y
    head -   query -eps x_i, key x_j, value y_j,                   output +eta / (2 eps) into y

so the y slots get -eta (E[a r] + O(eps^2)): one GD step with error O(eps^2) per layer; the errors of
L layers add up linearly (each later step is a fixed linear map), so the total error is C eps^2 with
C ~ L eta |x|^4 |r| / 6, plus float round-off amplified by 1/eps.

Exactness: rate. Expected slope of log(error) against log(eps): 2 (the eps^2 term of (*)). The
check sweeps eps over 1e-3 .. 8e-3 with |x| <= radius <= 1, so |eps a| <= 8e-3: the next term of the
expansion moves the local slope by ~ 2 (eps a)^2 / 10 < 2e-5, round-off (~1e-16 eta / eps < 1e-12)
is far below C eps^2 (> 1e-10 for C > 1e-4), and the fitted slope is 2 to about 1e-3. Tolerance 0.05:
margin for small C, where round-off starts to matter, while a perturbed weight leaves an eps-free
error and a slope near 0.
"""

from __future__ import annotations

import torch

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, RateSweep, positive_float, positive_int
from constructions.icl.layerwise import EXAMPLES, Claim, layer_errors
from constructions.icl.preconditioned_gd import canvas, gd_claims
from constructions.paint import paint_head
from constructions.reference import algorithms
from constructions.tokens import example_tokens


def tokens(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
    """Examples (x_j, y_j), then their negatives (-x_j, -y_j), then the query: (..., 2N + 1, d + 1)."""
    return example_tokens(torch.cat([x, -x], dim=-2), torch.cat([y, -y], dim=-1), x_query)


def config(d: int, n_steps: int) -> M.ModelConfig:
    return M.ModelConfig(d_model=d + 1, n_layers=n_steps, n_heads=2, d_head=d, d_in=d + 1, attention="softmax",
                         beta=1.0, mask="exclude_query", mlp="none", bias=False, layout=M.Layout.of(x=d, y=1))


def build(d: int, n_steps: int, eta: float, eps: float) -> Built:
    """Weights for n_steps of GD with step eta, from softmax heads with score scale eps."""
    positive_int("d", d)
    positive_int("n_steps", n_steps)
    positive_float("eta", eta)
    positive_float("eps", eps)
    cfg = config(d, n_steps)
    w = canvas(cfg, d)
    eye = torch.eye(d, dtype=torch.float64)
    e1 = eye[:1]
    for layer in range(n_steps):
        for head, sign in ((0, 1.0), (1, -1.0)):
            paint_head(w, cfg.layout, layer, head, Q={"x": sign * eps * eye}, K={"x": eye}, V={"y": e1},
                       O={"y": -sign * eta / (2 * eps) * e1.T})
    return Built(cfg, w)


def mirrored(claims: list[Claim]) -> list[Claim]:
    """The claims on the mirrored prompt: the examples' slots hold v for the examples, then -v for
    their negatives (token axis 1); the query's claims are unchanged."""
    return [Claim(c.slot, c.rows, torch.cat([c.want, -c.want], dim=1)) if c.rows == EXAMPLES else c
            for c in claims]


def errors(built: Built, case: Case) -> dict[str, float]:
    """Per layer l: readout vs w_l.x_q; y slots vs +-residuals of w_l; x slots vs +-x."""
    p = case.params
    iterates = algorithms.gd(case.x, case.y, eta=p["eta"], n_steps=p["n_steps"])
    claims = [mirrored(gd_claims(case, w_l)) for w_l in iterates]
    return layer_errors(built, tokens(case.x, case.y, case.x_query), claims)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """Inputs in a ball of radius in [0.5, 1] (so |eps a| stays small over the sweep), stable eta,
    and eps = 1e-5 (the sweep replaces it; at 1e-5 the error is round-off, ~1e-11, under the bound)."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 1.0))
    return p.case(d=p.d, n_steps=p.depth, eta=domains.stable_step(gen, p.radius), eps=1e-5)


SWEEP = RateSweep(parameter="eps", values=(1e-3, 2e-3, 4e-3, 8e-3), slope=2.0, tolerance=0.05)

CONSTRUCTION = Construction(
    name="gd_softmax", exactness="rate", algorithm="algorithms.gd",
    summary="L softmax layers (scores +-eps q.k, mirrored examples) = L GD steps up to O(eps^2)",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=5e-10,
    bound_note="at the sampled eps = 1e-5 round-off dominates: ~ 1e-16 eta / eps ~ 1e-11 per layer (9e-11 the "
               "largest of 300 cases), C eps^2 < 1e-10 for C < 1; the sweep checks the slope 2 in eps",
    sweep=SWEEP,
)
