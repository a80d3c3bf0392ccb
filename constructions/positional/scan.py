"""Prefix sum / min / max in ceil(log2 n) layers of positional attention (Hillis-Steele).

Token layout (T = n + 1 tokens, one input feature, one residual slot ``v``):

    position 0        the scratch token, holding the identity e of the operation
    position i >= 1   the value x_i

Layer l (l = 0 .. L-1, L = max(1, ceil(log2 n))): token i >= 1 attends to i - 2^l if that is >= 1,
and to the scratch token 0 otherwise; the scratch token attends to itself (causal mask: every
target is at or before its query). The pointer head (:mod:`constructions.positional.pointer`)
brings a = v_target into the MLP, which reads [h, a] and writes the combined value as the new stream:

    sum   h + a     = ReLU(h) - ReLU(-h) + ReLU(a) - ReLU(-a)
    min   min(h, a) = a - ReLU(a - h)  = ReLU(a) - ReLU(-a) - ReLU(a - h)
    max   max(h, a) = a + ReLU(h - a)  = ReLU(a) - ReLU(-a) + ReLU(h - a)

By induction token i holds op(x_{max(1, i - 2^l + 1)}, ..., x_i) after l layers (reading the
scratch combines with e, which changes nothing), so after L layers it holds the prefix. With
L - 1 layers token n has seen only 2^{L-1} < n values (one layer fewer fails: tests). n need not be
a power of two.

The identity. e = 0 for sum; for min and max no finite number is an identity of all reals, and
e = +inf breaks the arithmetic (a - ReLU(a - h) = inf - inf = nan; a zero attention weight times inf
is nan too). On the domain |x_i| <= R the finite e = +R (min) / -R (max) is an identity, and the
MLP then only forms differences of size <= 2R: :func:`scratch_identity` refuses R that is not finite
or whose 2R (n R for sums) overflows the dtype.

Hardmax-limit bound. Let E_l be the largest error after l layers and omega the leakage for V = n + 1
keys. The read value is off by at most E_l + omega * spread, the spread of the exact iterate:
    sum:      iterate l holds window sums of <= 2^l values: spread <= 2^{l+1} R, and h + a doubles
              errors: E_{l+1} <= 2 E_l + 2^{l+1} R omega, so E_L <= L 2^L R omega;
    min/max:  every iterate lies in [-R, R] (e = +-R included): spread <= 2R, and min / max is
              1-Lipschitz: E_{l+1} <= E_l + 2 R omega, so E_L <= 2 L R omega.
Every "read l" error is below the bound of layer l, so one bound(case) covers every label. Plus a
float64 round-off allowance (:func:`positional_algorithms.roundoff`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from constructions import model as M
from constructions.check.contract import Built, Case, Construction, RateSweep, positive_float, positive_int, require
from constructions.positional import pointer as P
from synthetic import sequences as S

MLP_WIDTH = {"sum": 4, "min": 3, "max": 3}
# Unit -> (weight on h, weight on a, weight in the output): the three identities above.
UNITS = {
    "sum": ((1, 0, 1), (-1, 0, -1), (0, 1, 1), (0, -1, -1)),
    "min": ((0, 1, 1), (0, -1, -1), (-1, 1, -1)),
    "max": ((0, 1, 1), (0, -1, -1), (1, -1, 1)),
}


def scratch_identity(op: str, radius: float, n: int = 1, dtype=torch.float64) -> float:
    """The value the scratch token holds: 0 (sum), +radius (min), -radius (max).

    Refuses a radius for which the arithmetic overflows ``dtype``: an infinite one (the identity
    +-inf turns a - ReLU(a - h) into inf - inf = nan), or one where the largest intermediate
    (2 radius for min / max, n radius for sums) exceeds the dtype's largest finite value.
    """
    S._check_op(op)
    finite_max = torch.finfo(dtype).max
    require(math.isfinite(radius) and radius > 0,
            f"radius must be finite and > 0, got {radius}: the scratch token holds the identity "
            "+-radius, and an infinite identity makes min(h, a) = a - ReLU(a - h) compute inf - inf = nan")
    largest = n * radius if op == "sum" else 2 * radius
    require(largest < finite_max,
            f"radius={radius:g} overflows {dtype}: the construction forms values up to "
            f"{'n * radius' if op == 'sum' else '2 * radius'} = {largest:g} > {finite_max:g}")
    return {"sum": 0.0, "min": float(radius), "max": -float(radius)}[op]


def n_layers_for(n: int) -> int:
    """The depth of the construction: max(1, ceil(log2 n)) (one layer even for n = 1)."""
    return max(1, S.scan_depth(n))


def targets(n: int, layer: int) -> Tensor:
    """(n + 1,) long: the position each token reads at ``layer`` (0 = the scratch token)."""
    i = torch.arange(n + 1)
    return torch.where(i - 2**layer >= 1, i - 2**layer, torch.zeros_like(i))


def config(op: str, n: int, beta: float, n_layers: int) -> M.ModelConfig:
    T = n + 1
    return M.ModelConfig(
        d_model=1, n_layers=n_layers, n_heads=1, d_head=T, d_in=1, d_out=1, d_mlp=MLP_WIDTH[op],
        attention="softmax", beta=float(beta), mask="causal", mlp="relu", bias=False,
        layout=M.Layout.of(v=1), qk_source="positions", n_qk_positions=T, mlp_input="concat",
    )


def build(op: str, n: int, beta: float, radius: float, n_layers: int | None = None) -> Built:
    """Weights for the prefix ``op`` of n values in [-radius, radius] at inverse temperature beta.

    ``n_layers`` defaults to :func:`n_layers_for` (n); fewer layers build a model that is wrong on
    some input (kept possible so that this can be tested)."""
    S._check_op(op)
    positive_int("n", n)
    positive_float("beta", beta)
    positive_float("radius", radius)
    scratch_identity(op, radius, n)
    n_layers = n_layers_for(n) if n_layers is None else n_layers
    positive_int("n_layers", n_layers, lowest=0)
    cfg = config(op, n, beta, n_layers)
    w = P.blank(cfg)
    w.W_E[0, 0, 0] = 1.0
    w.W_U[0, 0, 0] = 1.0
    for layer in range(n_layers):
        P.paint_pointer(w, layer, targets(n, layer), slot=0)
        mlp = w.blocks[layer].mlp
        for unit, (on_h, on_a, out) in enumerate(UNITS[op]):
            mlp.W_in[0, 0, unit], mlp.W_in[0, 1, unit] = on_h, on_a  # rows: [h, attention output]
            mlp.W_out[0, unit, 0] = out
    return Built(cfg, w)


def tokens(x: Tensor, op: str, radius: float) -> Tensor:
    """(B, n) values -> (B, n + 1, 1) tokens: the scratch identity, then x."""
    require(x.dim() == 2, f"x must have shape (B, n), got {tuple(x.shape)}")
    identity = scratch_identity(op, radius, x.shape[-1], x.dtype)
    require(bool((x.abs() <= radius).all()),
            f"values must lie in [-radius, radius] = [{-radius:g}, {radius:g}] (the scratch identity "
            f"{identity:g} is an identity only there); got max |x| = {x.abs().max().item():g}")
    scratch = torch.full_like(x[:, :1], identity)
    return torch.cat([scratch, x], dim=1).unsqueeze(-1)


def iterates(x: Tensor, op: str, radius: float, n_layers: int) -> list[Tensor]:
    """Hillis-Steele iterates on all n + 1 positions (the scratch keeps the identity): (B, n + 1) each."""
    identity = scratch_identity(op, radius, x.shape[-1], x.dtype)
    scratch = torch.full_like(x[:, :1], identity)
    return [torch.cat([scratch, s], dim=1) for s in S.hillis_steele(x, op, n_layers)]


def bound(op: str, n: int, beta: float, radius: float, n_layers: int | None = None) -> float:
    """The module docstring's bound on every label: C * R * omega plus round-off."""
    L = n_layers_for(n) if n_layers is None else n_layers
    omega = P.leakage(n + 1, beta)
    leak = L * 2**L * radius * omega if op == "sum" else 2 * L * radius * omega
    return leak + P.roundoff(n + 1, L, n * radius if op == "sum" else radius)


def errors(op: str, built: Built, case: Case) -> dict[str, float]:
    x, radius, L = case.data["x"], case.params["radius"], built.cfg.n_layers
    maps = [targets(x.shape[-1], layer) for layer in range(L)]
    return P.pointer_errors(built, tokens(x, op, radius), iterates(x, op, radius, L), maps, slot=0)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None, op: str = "sum") -> Case:
    """n values uniform in [-R, R] (B = 4 prompts), R in [0.5, 4]; beta puts the leakage part of the
    bound near 1e-9 R (so a perturbed weight, which moves values by ~1e-3, is far outside it). d and
    depth are ignored: the depth is fixed by n."""
    def prefactor(n: int) -> int:  # C(n) n, C(n) = L 2^L for sums and 2 L for min / max
        L = n_layers_for(n)
        return (L * 2**L if op == "sum" else 2 * L) * n

    return P.value_case(gen, n, prefactor)


def _construction(op: str) -> Construction:
    prefactor = "L 2^L" if op == "sum" else "2 L"
    return Construction(
        name=f"positional_prefix_{op}",
        exactness="hardmax-limit",
        algorithm=f"sequence_algorithms.prefix_{op}",
        summary=f"prefix {op} of n values in max(1, ceil(log2 n)) positional-attention layers "
                "(Hillis-Steele, scratch token holds the identity)",
        sample=lambda gen, **kw: sample(gen, **kw, op=op),
        build=lambda case: build(op, **case.params),
        errors=lambda built, case: errors(op, built, case),
        bound=lambda case: bound(op, **case.params),
        bound_note=f"{prefactor} R omega + round-off, omega = n / (e^beta + n) <= n e^-beta (leakage "
                   "of softmax over n + 1 keys, propagated through the MLP)",
        sweep=RateSweep("beta", P.BETAS, slope=-1.0, tolerance=0.1, axis="linear"),
    )


PREFIX_SUM = _construction("sum")
PREFIX_MIN = _construction("min")
PREFIX_MAX = _construction("max")
CONSTRUCTIONS = (PREFIX_SUM, PREFIX_MIN, PREFIX_MAX)
