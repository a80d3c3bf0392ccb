"""Single-layer universal approximation: one softmax-attention layer + one ReLU MLP.

Claim (in the spirit of Yun et al. 2020 and the 2025 single-layer theorem). Any continuous
sequence-to-sequence map f on the compact set [-1, 1]^(n x d) is approximated by one attention
layer and one ReLU MLP: the attention gives every token a copy of the whole input, the MLP computes
f from the copy. The checkable form, with the sup error over inputs split into two terms:

    sup |model(X)_i - f(X)_i|  <=  eps_MLP(m)  +  Lip(f) * (n - 1) / (e^lam + n - 1) * diam(X)

Residual slots: x (d), pos (n, one-hot position), one (1), copy0 .. copy{n-1} (d each), out (1).
Tokens are [x_i; e_i] (Din = d + n); the embedding copies them into x and pos, b_E writes one = 1.

    attention   n heads, softmax with beta = 1, mask full. Head h: query = the one slot (W_Q = 1),
                key = lam * pos_h (W_K), value = x (W_V = I), output into copy_h (W_O = I). Every
                query sees scores lam at key h and 0 elsewhere, so the weights are exactly
                    e^lam / (e^lam + n - 1) at j = h,   1 / (e^lam + n - 1) elsewhere,
                and copy_h = x_h + sum_{j != h} (x_j - x_h) / (e^lam + n - 1): each coordinate is
                within (n - 1) / (e^lam + n - 1) * diam of x_h, diam = max_j x_jc - min_j x_jc
                (the copy is a convex combination, so it stays in [-1, 1]^d).
    MLP         width m, reads copy (the vec of the copy is vec(X) up to that error) and pos.
                For the ridge targets of :mod:`synthetic.targets`, f(X)_i = a0 + sum_r a_r g(t_ri)
                with t_ri = U_r . vec(X) + C_r . e_i, linear in the MLP's input. Ridge r gets
                m_r = m // R units relu(t - t_k), knots t_k = lo_r + k h_r (k < m_r, h_r =
                (hi_r - lo_r) / m_r), and output weights the slope changes of the piecewise-linear
                interpolant I_r of g on [lo_r, hi_r]; b_out = a0 + sum_r a_r g(lo_r). Then
                |I_r - g| <= h_r^2 / 8 sup|g''| (cosine: sup|g''| = 1), <= h_r / 2 (abs: a kink),
                and a ReLU target is represented exactly by its own R units (eps_MLP = 0).
                I_r is Lip(g)-Lipschitz, so the copy error costs at most Lip(f) times it.
    readout     W_U = e_out.

Checks (rate class). ``universal_approx_lambda``: the ReLU-network target (eps_MLP = 0), error vs
lam: log error against lam has slope -1 (the e^-lam above; n e^-lam << 1 on the swept values).
``universal_approx_width``: the sum-of-cosines target at lam = 40 (attention term ~1e-16), error
vs m: log-log slope -2 (a C^2 target, piecewise-linear interpolation). Both check the bound above
at every swept value. :func:`plateau_width` says where the two terms meet: beyond it more width
does not help at that lam (experiments/approx_curves.py shows the plateau).

What is measured: ``output`` = sup over B x n tokens of |model - f|; ``pattern`` = the largest
relative deviation of any attention weight from the values above (float64 round-off, ~1e-14,
when intact). The pattern is the step the proof rests on; it is reported beside the output so
that a perturbed query or key matrix, which only rescales an already tiny leak, is seen.
"""

from __future__ import annotations

import math

import torch

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, RateSweep, positive_float, positive_int, require
from synthetic.targets import (
    RidgeTarget,
    kink_probes,
    profile,
    sample_inputs,
    sample_target,
)

BATCH = 16  # input sequences per case: the sup error is taken over BATCH * n tokens


def layout(n: int, d: int) -> M.Layout:
    copies = tuple((f"copy{h}", d) for h in range(n))
    return M.Layout((("x", d), ("pos", n), ("one", 1)) + copies + (("out", 1),))


def config(n: int, d: int, m: int) -> M.ModelConfig:
    lay = layout(n, d)
    return M.ModelConfig(d_model=lay.width, n_layers=1, n_heads=n, d_head=d, d_in=d + n, d_out=1, d_mlp=m,
                         attention="softmax", beta=1.0, mask="full", mlp="relu", bias=True, layout=lay)


def tokens(X: torch.Tensor) -> torch.Tensor:
    """X (B, n, d) -> tokens (B, n, d + n): [x_i; e_i]."""
    B, n, _ = X.shape
    return torch.cat([X, torch.eye(n, dtype=X.dtype).expand(B, n, n)], dim=-1)


def _paint_attention(w: M.Weights, lay: M.Layout, n: int, d: int, lam: float) -> None:
    attn = w.blocks[0].attn
    for h in range(n):
        attn.W_Q[0, h, lay.index("one"), 0] = 1.0
        attn.W_K[0, h, lay.index("pos") + h, 0] = lam
        attn.W_V[0, h, lay["x"], :] = torch.eye(d, dtype=torch.float64)
        attn.W_O[0, h, :, lay[f"copy{h}"]] = torch.eye(d, dtype=torch.float64)


def _mlp_inputs(target: RidgeTarget, lay: M.Layout, n: int, d: int) -> torch.Tensor:
    """(D, R): column r reads t_r = U_r . vec(copy) + C_r . pos from the stream."""
    cols = torch.zeros(lay.width, target.n_ridges, dtype=torch.float64)
    for h in range(n):
        cols[lay[f"copy{h}"]] = target.U[:, h * d:(h + 1) * d].T
    cols[lay["pos"]] = target.C.T
    return cols


def interpolant(g, lo: torch.Tensor, hi: torch.Tensor, pieces: int):
    """Knots (R, pieces) and slope changes (R, pieces) of the piecewise-linear interpolant of g on
    [lo_r, hi_r] with ``pieces`` equal pieces: I(t) = g(lo) + sum_k c_k relu(t - t_k)."""
    k = torch.arange(pieces + 1, dtype=torch.float64)
    grid = lo[:, None] + (hi - lo)[:, None] * k / pieces  # (R, pieces + 1)
    slopes = (g(grid[:, 1:]) - g(grid[:, :-1])) / (grid[:, 1:] - grid[:, :-1])
    changes = torch.cat([slopes[:, :1], slopes[:, 1:] - slopes[:, :-1]], dim=1)
    return grid[:, :-1], changes


def _paint_mlp(w: M.Weights, lay: M.Layout, target: RidgeTarget, m: int) -> None:
    p, R, n, d = w.blocks[0].mlp, target.n_ridges, target.n, target.d
    cols, out = _mlp_inputs(target, lay, n, d), lay.index("out")
    if target.kind == "relu":  # the target is itself a ReLU network: copy it
        p.W_in[0, :, :R] = cols
        p.W_out[0, :R, out] = target.a
        p.b_out[0, out] = target.a0
        return
    pieces = m // R
    lo, hi = target.ranges()
    knots, changes = interpolant(lambda t: profile(target.kind, t), lo, hi, pieces)
    p.W_in[0, :, :R * pieces] = cols.repeat_interleave(pieces, dim=1)
    p.b_in[0, :R * pieces] = -knots.flatten()
    p.W_out[0, :R * pieces, out] = (changes * target.a[:, None]).flatten()
    p.b_out[0, out] = target.a0 + float((target.a * profile(target.kind, lo)).sum())


def build(target: RidgeTarget, lam: float, m: int) -> Built:
    """Weights for ``target`` with inverse temperature ``lam`` (in W_K) and MLP width ``m``."""
    positive_float("lam", lam)
    positive_int("m", m)
    R, n, d = target.n_ridges, target.n, target.d
    require(m >= R, f"m={m} must be >= the number of ridges R={R} (one unit per ridge at least)")
    cfg = config(n, d, m)
    w, lay = M.zeros(cfg), cfg.layout
    w.W_E[0, :d, lay["x"]] = torch.eye(d, dtype=torch.float64)
    w.W_E[0, d:, lay["pos"]] = torch.eye(n, dtype=torch.float64)
    w.b_E[0, lay.index("one")] = 1.0
    w.W_U[0, lay.index("out"), 0] = 1.0
    _paint_attention(w, lay, n, d, lam)
    _paint_mlp(w, lay, target, m)
    return Built(cfg, w)


# ----------------------------------------------------------------------------------------------
# The stated error terms


def mlp_error(target: RidgeTarget, m: int) -> float:
    """eps_MLP(m): sup |I - f| of the MLP on exact copies (0 for a ReLU target)."""
    if target.kind == "relu":
        return 0.0
    lo, hi = target.ranges()
    h = (hi - lo) / (m // target.n_ridges)
    per_ridge = h**2 / 8 if target.kind == "cosine" else h / 2
    return float((target.a.abs() * per_ridge).sum())


def attention_error(target: RidgeTarget, lam: float, diam: float) -> float:
    """Lip(f) (n - 1) / (e^lam + n - 1) diam: what the leaky copy costs."""
    n = target.n
    leak = (n - 1) / (math.exp(lam) + n - 1) if lam < 700 else 0.0
    return target.lipschitz() * leak * diam


def diameter(X: torch.Tensor) -> float:
    """max over sequences and features of (max_j x_jc - min_j x_jc)."""
    return float((X.max(-2).values - X.min(-2).values).max())


def bound(case: Case) -> float:
    """The two terms, plus float64 round-off: on n = 2, d = 1, one ridge the attention term is attained
    exactly (only one other token leaks), so the measured error meets it up to ~1e-16 relative."""
    p = case.params
    stated = mlp_error(p["target"], int(p["m"])) + attention_error(p["target"], p["lam"], diameter(case.data["X"]))
    return stated * (1 + 1e-9) + 1e-14


def plateau_width(target: RidgeTarget, lam: float, diam: float = 2.0) -> float:
    """The width m* at which eps_MLP(m*) equals the attention term (cosine targets: eps ~ m^-2, so
    m* = m sqrt(eps_MLP(m) / attention term)); beyond m* the error stays at the attention term."""
    if target.kind == "relu":
        return float(target.n_ridges)
    m_ref = 64 * target.n_ridges
    power = 2.0 if target.kind == "cosine" else 1.0
    return m_ref * (mlp_error(target, m_ref) / attention_error(target, lam, diam)) ** (1 / power)


def plateau_lam(target: RidgeTarget, m: int, diam: float = 2.0) -> float:
    """The lam* at which the attention term falls to eps_MLP(m): log(Lip (n - 1) diam / eps_MLP)."""
    eps = mlp_error(target, m)
    if eps == 0.0:
        return math.inf
    return math.log(max(target.lipschitz() * (target.n - 1) * diam / eps, 1.0))


# ----------------------------------------------------------------------------------------------
# Measuring


def expected_pattern(n: int, lam: float) -> torch.Tensor:
    """(H = n, T = n, T = n): head h puts e^lam / (e^lam + n - 1) on key h, 1 / (...) elsewhere."""
    scores = lam * torch.eye(n, dtype=torch.float64)[:, None, :].expand(n, n, n)
    return torch.softmax(scores, dim=-1)


def errors(built: Built, case: Case) -> dict[str, float]:
    X, target, lam = case.data["X"], case.params["target"], case.params["lam"]
    run = M.forward(built.cfg, built.weights, tokens(X), attention_patterns=True)
    got = run.out[0, :, :, 0]
    want_pattern = expected_pattern(target.n, lam)
    pattern = ((run.attention[0][0] - want_pattern).abs() / want_pattern).max()
    return {"output": float((got - target(X)).abs().max()), "pattern": float(pattern)}


def _sampler(kind: str, lam: float, m_per_ridge: int):
    """Cases of a ``kind`` ridge target (R = 1, 2 or 4 ridges) on BATCH input sequences, at inverse
    temperature ``lam`` and width m_per_ridge * R."""
    def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
               depth: int | None = None) -> Case:
        d, n = domains.small_sizes(gen, d, n)
        R = 2 ** domains.draw_int(gen, 0, 2)
        target = sample_target(gen, kind, n, d, n_ridges=R, frequency=2.0)
        X = sample_inputs(gen, n, d, BATCH)
        if kind == "abs":  # non-smooth: the sup is near the kinks, which random inputs rarely reach
            X = torch.cat([X, kink_probes(target)])
        return Case({"target": target, "lam": lam, "m": m_per_ridge * R}, data={"X": X})
    return sample


def _build(case: Case) -> Built:
    p = case.params
    return build(p["target"], float(p["lam"]), int(p["m"]))  # a RateSweep passes floats


def _rate_check(name: str, target: tuple[str, str], lam: float, m_per_ridge: int, summary: str,
                bound_note: str, sweep: RateSweep) -> Construction:
    """A rate check of this construction on ``target`` = (kind, description), sampled at
    ``lam`` and ``m_per_ridge``; the measured errors and the stated bound are the module's."""
    kind, description = target
    return Construction(name=name, exactness="rate", summary=summary, sweep=sweep, bound_note=bound_note,
                        algorithm=f"synthetic.targets.RidgeTarget ({description})",
                        sample=_sampler(kind, lam, m_per_ridge), build=_build, errors=errors, bound=bound)


LAMBDA_SWEEP = _rate_check(
    "universal_approx_lambda", ("relu", "a ReLU-network target"), 8.0, 1,
    summary="one attention layer (n heads copy the input) + ReLU MLP: error ~ e^-lam in the temperature",
    bound_note="Lip(f) (n-1)/(e^lam+n-1) diam (the MLP is exact on a ReLU target); slope of log error vs lam",
    # the exact local slope is -e^lam / (e^lam + n - 1), within 0.02 of -1 on these values for n <= 6
    sweep=RateSweep("lam", (6.0, 8.0, 10.0, 12.0, 14.0), slope=-1.0, tolerance=0.1, axis="linear"),
)

WIDTH_SWEEP = _rate_check(
    "universal_approx_width", ("cosine", "a sum of cosines"), 40.0, 64,
    summary="one attention layer + ReLU MLP of width m on a smooth target: error ~ m^-2 (lam = 40)",
    bound_note="sum_r |a_r| h_r^2 / 8 + Lip(f) (n-1) e^-lam diam, h_r = range_r R / m; log-log slope vs m",
    # tolerance: over 64 cases the fitted slope was within 0.05 of -2 for 95% of them, 0.1 at worst
    sweep=RateSweep("m", (64.0, 256.0, 1024.0, 4096.0), slope=-2.0, tolerance=0.3, axis="log"),
)
