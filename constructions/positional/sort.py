"""Sorting by a bitonic network in p(p + 1)/2 layers of positional attention, m = 2^p positions.

Token layout. n values are padded to m = max(2, next power of two >= n) positions with +R (values
lie in [-R, R], so the padding sorts to the end and the first n outputs are x sorted). One input
feature; the residual stream has the value slot ``v`` and one direction flag per stage,
``dir[l]``, written by the learned positions W_pos (n_positions = m):

    dir[l] at position t = 1 if stage l keeps the maximum at t, 0 if it keeps the minimum

(:func:`sequence_algorithms.bitonic_schedule`: stage (k, j) pairs t with t XOR j, and t keeps the
minimum iff (t & j == 0) == (t & k == 0)). Flags are data-independent, fixed by position, like the
attention pattern.

Layer l. The pointer head (full mask) brings the partner's value a = v_{t XOR j} to every t. The MLP
reads [h, flags, a] and writes the stream anew (no residual), with B = 4R and s = dir[l]:

    u0 = ReLU(a),  u1 = ReLU(-a),  u2 = ReLU(a - h - B s),  u3 = ReLU(h - a - B (1 - s))
    v <- u0 - u1 - u2 + u3
    dir[l'] <- ReLU(dir[l']) for the later stages l' > l (flags are 0 / 1: copied exactly)

For s = 0: u3 = 0 (h - a <= 2R < B), so v = a - ReLU(a - h) = min(h, a). For s = 1: u2 = 0 and
v = a + ReLU(h - a) = max(h, a). So layer l is compare-exchange stage l and, after all
p(p + 1)/2 layers, v holds the sorted sequence (bitonic sorting network, Batcher 1968).

Hardmax-limit bound. With leakage omega for V = m keys (every query sees all of them) the partner's
value is read to within E_l + omega * 2R (every iterate lies in [-R, R]); min and max are
1-Lipschitz, so E_{l+1} <= E_l + 2 R omega and E_L <= 2 L R omega. The gate needs |a - h| < B,
which holds while E_L <= R, i.e. omega <= 1 / (2L); below that the bound is reported as infinite.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from constructions import model as M
from constructions.check.contract import Built, Case, Construction, RateSweep, positive_float, positive_int, require
from constructions.positional import pointer as P
from synthetic import sequences as S

GATE = 4.0  # B = GATE * R: larger than the largest |a - h| = 2R (plus the leakage error, <= R)


def padded_length(n: int) -> int:
    """m = max(2, the next power of two >= n)."""
    positive_int("n", n)
    return max(2, 1 << (n - 1).bit_length())


def n_layers_for(n: int) -> int:
    """p (p + 1) / 2 compare-exchange stages for m = 2^p."""
    p = padded_length(n).bit_length() - 1
    return p * (p + 1) // 2


def config(n: int, beta: float) -> M.ModelConfig:
    m, L = padded_length(n), n_layers_for(n)
    return M.ModelConfig(
        d_model=1 + L, n_layers=L, n_heads=1, d_head=m, d_in=1, d_out=1, d_mlp=3 + L,
        attention="softmax", beta=float(beta), mask="full", mlp="relu", bias=True, n_positions=m,
        layout=M.Layout.of(v=1, dir=L), qk_source="positions", n_qk_positions=m, mlp_input="concat",
    )


def build(n: int, beta: float, radius: float) -> Built:
    """Weights that sort n values in [-radius, radius] (padded to m positions) at inverse temperature beta."""
    positive_int("n", n)
    positive_float("beta", beta)
    positive_float("radius", radius)
    require(GATE * radius < torch.finfo(torch.float64).max,
            f"radius={radius:g} overflows float64: the gate B = {GATE:g} * radius must be finite")
    cfg = config(n, beta)
    w = P.blank(cfg)
    w.W_E[0, 0, 0] = 1.0
    w.W_U[0, 0, 0] = 1.0
    schedule = S.bitonic_schedule(padded_length(n))
    W_in, W_in_gate, b_in_gate, W_out = _compare_exchange_tables(n)
    gate = GATE * radius
    for layer, (partner, takes_min) in enumerate(schedule):
        w.W_pos[0, :, 1 + layer] = (~takes_min).to(torch.float64)
        P.paint_pointer(w, layer, partner, slot=0)
        mlp = w.blocks[layer].mlp
        mlp.W_in[0] = W_in[layer] + gate * W_in_gate[layer]
        mlp.b_in[0] = gate * b_in_gate[layer]
        mlp.W_out[0] = W_out[layer]
    return Built(cfg, w)


@functools.lru_cache(maxsize=16)
def _compare_exchange_tables(n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The MLPs of all layers, (L, 2D, M) W_in = W_in + B * W_in_gate, (L, M) b_in = B * b_in_gate,
    (L, M, D) W_out. Rows of W_in: stream coordinates 0 .. D-1 (h = 0, dir[l] = 1 + l), then the
    attention output (its slot v is row D). Cached per n (read-only; build adds them into fresh
    weights)."""
    cfg = config(n, 1.0)
    L, D, Mw = cfg.n_layers, cfg.d_model, cfg.d_mlp
    W_in, gated = torch.zeros(L, 2 * D, Mw, dtype=torch.float64), torch.zeros(L, 2 * D, Mw, dtype=torch.float64)
    b_in, W_out = torch.zeros(L, Mw, dtype=torch.float64), torch.zeros(L, Mw, D, dtype=torch.float64)
    h, a = 0, D
    for layer in range(L):
        s = 1 + layer
        W_in[layer, a, 0], W_in[layer, a, 1] = 1.0, -1.0  # u0 = ReLU(a), u1 = ReLU(-a)
        W_in[layer, a, 2], W_in[layer, h, 2], gated[layer, s, 2] = 1.0, -1.0, -1.0  # u2 = ReLU(a - h - B s)
        W_in[layer, h, 3], W_in[layer, a, 3], gated[layer, s, 3] = 1.0, -1.0, 1.0  # u3 = ReLU(h - a - B + B s)
        b_in[layer, 3] = -1.0
        W_out[layer, :4, 0] = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
        for unit, later in enumerate(range(layer + 1, L), start=4):  # copy the later flags
            W_in[layer, 1 + later, unit] = 1.0
            W_out[layer, unit, 1 + later] = 1.0
    return W_in, gated, b_in, W_out


def tokens(x: Tensor, radius: float) -> Tensor:
    """(B, n) values -> (B, m, 1) tokens, padded with +radius."""
    require(x.dim() == 2, f"x must have shape (B, n), got {tuple(x.shape)}")
    require(bool((x.abs() <= radius).all()),
            f"values must lie in [-radius, radius] = [{-radius:g}, {radius:g}] (the padding +radius "
            f"must sort last); got max |x| = {x.abs().max().item():g}")
    pad = padded_length(x.shape[-1]) - x.shape[-1]
    return torch.cat([x, torch.full_like(x[:, :pad], radius)], dim=1).unsqueeze(-1)


def sorted_values(built: Built, x: Tensor, radius: float) -> Tensor:
    """The model's output for the first n positions: x sorted (in the hardmax limit)."""
    out = M.forward(built.cfg, built.weights, tokens(x, radius)).out
    return out[0, :, : x.shape[-1], 0]


def bound(n: int, beta: float, radius: float) -> float:
    L, m = n_layers_for(n), padded_length(n)
    omega = P.leakage(m, beta)
    if omega > 1 / (2 * L):
        return float("inf")  # the gate's margin is not guaranteed (module docstring)
    return 2 * L * radius * omega + P.roundoff(m, L, GATE * radius)


def errors(built: Built, case: Case) -> dict[str, float]:
    x, radius = case.data["x"], case.params["radius"]
    toks = tokens(x, radius)
    schedule = S.bitonic_schedule(toks.shape[1])
    return P.pointer_errors(built, toks, S.bitonic_sort(toks[..., 0]), [p for p, _ in schedule], slot=0)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """n values uniform in [-R, R] (B = 4 prompts), R in [0.5, 4], beta putting the leakage part
    of the bound near 1e-9 R; d and depth are ignored (the depth is fixed by n)."""
    return P.value_case(gen, n, lambda n: 2 * n_layers_for(n) * padded_length(n))


CONSTRUCTION = Construction(
    name="positional_bitonic_sort",
    exactness="hardmax-limit",
    algorithm="sequence_algorithms.bitonic_sort",
    summary="sort n values by a bitonic network: p(p+1)/2 positional-attention layers for m = 2^p "
            "(partner t XOR j by position, compare-exchange in the ReLU MLP)",
    sample=sample,
    build=lambda case: build(**case.params),
    errors=errors,
    bound=lambda case: bound(**case.params),
    bound_note="2 L R omega + round-off, omega = (m-1) / (e^beta + m-1) <= (m-1) e^-beta (leakage of "
               "softmax over m keys; min / max are 1-Lipschitz)",
    sweep=RateSweep("beta", P.BETAS, slope=-1.0, tolerance=0.1, axis="linear"),
)
