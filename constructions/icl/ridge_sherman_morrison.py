"""Closed-form ridge by Sherman-Morrison: one example folded in per block of three layers.

Claim (Akyurek et al. 2022). Ridge in the sum convention (:mod:`constructions.reference.baselines`):
A_n = (lam I + sum_{j<n} x_j x_j^T)^{-1}, w_n = A_n sum_{j<n} y_j x_j, which is algorithms.ridge
on the first n examples with per-example lam / n. Folding in example c (Sherman-Morrison, recursive
least squares), with u = A_c x_c, s = 1 + x_c^T A_c x_c and r_c = y_c - w_c.x_c:

    A_{c+1} = A_c - u u^T / s            w_{c+1} = w_c + (r_c / s) u

Token i (example or query) carries u_i = A_c x_i and its residual r_i = y_i - w_c.x_i (the query,
y = 0, carries -w_c.x_q, so the readout -y is w_c.x_q). Since A_c is symmetric, the fold is

    u_i <- u_i - (x_i.u) u / s          r_i <- r_i - (x_i.u) r_c / s.

Tokens: examples (x_i, y_i), then the query (x_q, 0); T = N + 1. Residual slots: x, y (residual),
one, pos (one-hot position, T wide: learned positions W_pos = e_pos[t] + e_one), u, and scratch
xb, ub, ua, ra, g, gr. The embedding writes u = x / lam (A_0 = I / lam). Attention is over all T
tokens ("full" mask), scaled 1/T. Fold c uses three layers:

    1 (linear)      head 0: query T * one, key pos[c], value (x, u)  -> (xb, ub): every token gets
                    x_c, u (the pattern is 1 at key c). head 1: query T w_i from pos, key pos[c],
                    value (u, y) -> (ua, ra) = w_i (u, r_c), with w = 1 at the query and -1/(T-1)
                    at the examples: signed copies with sum_i w_i = 0.
    2 (normalized)  query (one, xb), key (T pos[T-1], ub), value (ua, ra) -> (g, gr). Scores
                    T [j = query] + x_c.u; their sum over keys is T (1 + x_c.u) = T s, and the
                    weighted values sum to T (u, r_c) (the x_c.u part meets sum_j w_j = 0), so
                    (g, gr) = (u, r_c) / s at every token: the division, exact.
    3 (linear)      query x_i, key ub, value (g, gr), output -1 into (u, y):
                    (1/T) sum_j (x_i.u)(u, r_c)/s = (x_i.u)(u, r_c)/s, the fold (every key holds the
                    same copies). Identity MLP: W_in reads the scratch, W_out writes minus it.

So after block c (layer 3c + 3) every token holds u = A_{c+1} x and r = y - w_{c+1}.x, the scratch
is zero, and the readout is the ridge prediction on the first c + 1 examples; inside a block the
y slots are unchanged, so every layer's readout is the ridge fit on the examples folded so far.

Why "normalized" attention. A division 1/(1 + x^T A x) is not polynomial, and model.py's exact
primitives are: linear attention and identity MLPs are polynomial, ReLU is piecewise linear, and
softmax and the norms divide only by sums of exponentials or by the root of the whole stream's mean
square. So the block's middle layer needs an attention whose pattern is the scores divided by their
sum over visible keys, A_ij = q_i.k_j / sum_j' q_i.k_j' (normalised linear attention, as in
linear transformers), and per-layer attention kinds: model.py's attention kind "normalized" and its
``layer_attention`` field. A head whose scores sum to zero (an unused, all-zero head) reads nothing
rather than 0/0.

Exactness: exact. Domain: lam > 0 (s >= 1, so no division by small numbers); |x| <= radius. The
construction is built for a fixed N (positions, the 1/T scalings and the weights w_i depend on T).
"""

from __future__ import annotations

import torch
from torch import Tensor

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, positive_float, positive_int
from constructions.icl.layerwise import EVERY, QUERY, READOUT, Claim, every_input, layer_errors, require_examples
from constructions.paint import paint_head, paint_mlp, selector, unit
from constructions.reference import baselines
from constructions.tokens import example_tokens

SCRATCH = ("xb", "ub", "ua", "ra", "g", "gr")


def layout(d: int, n_examples: int) -> M.Layout:
    return M.Layout.of(x=d, y=1, one=1, pos=n_examples + 1, u=d, xb=d, ub=d, ua=d, ra=1, g=d, gr=1)


def config(d: int, n_examples: int) -> M.ModelConfig:
    """Linear attention, except every fold's middle layer which is "normalized" (layer_attention)."""
    lay = layout(d, n_examples)
    return M.ModelConfig(d_model=lay.width, n_layers=3 * n_examples, n_heads=2, d_head=2 * d, d_in=d + 1,
                         d_mlp=4 * d + 2, attention="linear", mask="full", mlp="identity", bias=False,
                         n_positions=n_examples + 1, layout=lay,
                         layer_attention=("linear", "normalized", "linear") * n_examples)


# ----------------------------------------------------------------------------------------------
# Weights


F64 = torch.float64


def _cols(*blocks: Tensor) -> Tensor:
    return torch.cat(blocks, dim=1)


def _column(T: int, entries: dict[int, float], fill: float = 0.0) -> Tensor:
    """A (T, 1) column: ``fill`` everywhere, ``entries`` at the given positions."""
    col = torch.full((T, 1), fill, dtype=F64)
    for t, value in entries.items():
        col[t] = value
    return col


def paint_broadcast(w: M.Weights, lay: M.Layout, layer: int, c: int, d: int, T: int) -> None:
    """Layer 1 of fold c: (xb, ub) = (x_c, u_c) and (ua, ra) = w_i (u_c, r_c) at every token i."""
    eye, z, one = torch.eye(d, dtype=F64), torch.zeros(d, 1, dtype=F64), torch.ones(1, 1, dtype=F64)
    key_c = _column(T, {c: 1.0})
    paint_head(w, lay, layer, 0, Q={"one": T * one}, K={"pos": key_c},
               V={"x": _cols(eye, 0 * eye), "u": _cols(0 * eye, eye)},
               O={"xb": _cols(eye, 0 * eye).T, "ub": _cols(0 * eye, eye).T})
    signs = _column(T, {T - 1: 1.0}, fill=-1.0 / (T - 1))  # w_i: sums to 0 over the T tokens
    paint_head(w, lay, layer, 1, Q={"pos": T * signs}, K={"pos": key_c},
               V={"u": _cols(eye, z), "y": _cols(z.T, one)}, O={"ua": _cols(eye, z).T, "ra": _cols(z.T, one).T})


def paint_divide(w: M.Weights, lay: M.Layout, layer: int, d: int, T: int) -> None:
    """Layer 2 (normalised): scores T [j = query] + x_c.u, values w_j (u, r_c) -> (g, gr) = (u, r_c) / s."""
    eye, z, one = torch.eye(d, dtype=F64), torch.zeros(d, 1, dtype=F64), torch.ones(1, 1, dtype=F64)
    anchor = _cols(_column(T, {T - 1: float(T)}), torch.zeros(T, d, dtype=F64))
    paint_head(w, lay, layer, 0, Q={"one": _cols(one, z.T), "xb": _cols(z, eye)},
               K={"pos": anchor, "ub": _cols(z, eye)},
               V={"ua": _cols(eye, z), "ra": _cols(z.T, one)}, O={"g": _cols(eye, z).T, "gr": _cols(z.T, one).T})


def paint_update(w: M.Weights, lay: M.Layout, layer: int, d: int) -> None:
    """Layer 3: (u, y) -= (x_i.u_c) (g, gr); the identity MLP then writes minus every scratch slot."""
    eye, z, one = torch.eye(d, dtype=F64), torch.zeros(d, 1, dtype=F64), torch.ones(1, 1, dtype=F64)
    paint_head(w, lay, layer, 0, Q={"x": eye}, K={"ub": eye}, V={"g": _cols(eye, z), "gr": _cols(z.T, one)},
               O={"u": -_cols(eye, z).T, "y": -_cols(z.T, one).T})
    start, W_in, W_out = 0, {}, {}
    for slot in SCRATCH:  # hidden unit k copies scratch coordinate k; W_out subtracts it back
        size = lay[slot].stop - lay[slot].start
        block_ = torch.zeros(size, 4 * d + 2, dtype=F64)
        block_[:, start: start + size] = torch.eye(size, dtype=F64)
        W_in[slot], W_out[slot], start = block_, -block_.T, start + size
    paint_mlp(w, lay, layer, W_in=W_in, W_out=W_out)


def build(d: int, n_examples: int, lam: float, radius: float = 1.0) -> Built:
    """Weights folding in n_examples examples one block at a time (ridge, sum convention, lam).
    ``radius`` records the input domain |x| <= radius (the weights do not depend on it)."""
    positive_int("d", d)
    positive_int("n_examples", n_examples)
    positive_float("lam", lam)
    positive_float("radius", radius)
    fc = config(d, n_examples)
    lay, T = fc.layout, n_examples + 1
    w = M.zeros(fc)
    w.W_E[:] = selector(lay, {"x": 0, "y": d}, d + 1)
    w.W_E[0, :d, lay["u"]] = torch.eye(d, dtype=F64) / lam  # u = A_0 x = x / lam
    w.W_pos[0, :, lay["pos"]] = torch.eye(T, dtype=F64)
    w.W_pos[0, :, lay.index("one")] = 1.0
    w.W_U[:] = unit(lay, "y", -1.0)
    for c in range(n_examples):
        paint_broadcast(w, lay, 3 * c, c, d, T)
        paint_divide(w, lay, 3 * c + 1, d, T)
        paint_update(w, lay, 3 * c + 2, d)
    return Built(fc, w)


# ----------------------------------------------------------------------------------------------
# Checking


def reference(x: Tensor, y: Tensor, x_query: Tensor, lam: float) -> dict[str, Tensor]:
    """After f folds (f = 0 .. N, axis 1): A_f x for every token (B, N+1, T, d), residuals of the
    examples and of the query (B, N+1, T), and w_f (B, N+1, d)."""
    G, _, _ = baselines.sums(x, y, prefix=True)
    A = torch.linalg.inv(G + lam * torch.eye(x.shape[-1], dtype=x.dtype))  # (B, N+1, d, d)
    w = baselines.ridge_sum(x, y, lam=lam, prefix=True)
    x_all = every_input(x, x_query)  # (B, T, d)
    y_all = torch.cat([y, torch.zeros_like(y[..., :1])], dim=-1)
    u = torch.einsum("bfde,bte->bftd", A, x_all)
    r = y_all.unsqueeze(1) - torch.einsum("bfd,btd->bft", w, x_all)
    return {"u": u, "r": r, "w": w}


def expected(ref: dict[str, Tensor], x: Tensor, layer: int, T: int) -> dict[str, Tensor]:
    """What every claimed slot holds after ``layer`` layers, for every token: (B, T, size) each."""
    f, step = divmod(layer, 3)
    B, d = x.shape[0], x.shape[-1]
    out = {"u": ref["u"][:, f], "y": ref["r"][:, f, :, None]}
    zero = {slot: torch.zeros(B, T, d if slot in ("xb", "ub", "ua", "g") else 1, dtype=x.dtype) for slot in SCRATCH}
    if step == 0:
        return {**out, **zero}
    w = torch.full((T, 1), -1.0 / (T - 1), dtype=x.dtype)
    w[T - 1] = 1.0
    u_c, r_c = ref["u"][:, f, f], ref["r"][:, f, f]  # (B, d), (B,)
    s = 1.0 + (x[:, f] * u_c).sum(-1)
    every = lambda v: v.unsqueeze(1).expand(B, T, v.shape[-1])  # noqa: E731
    out.update(xb=every(x[:, f]), ub=every(u_c), ua=w * every(u_c), ra=w * every(r_c[:, None]))
    out.update(g=every(u_c / s[:, None]) if step == 2 else zero["g"],
               gr=every((r_c / s)[:, None]) if step == 2 else zero["gr"])
    return out


def claims(ref: dict[str, Tensor], case: Case, layer: int) -> list[Claim]:
    """After ``layer`` layers: the query's readout is the ridge prediction on the examples folded so
    far, every token's x is unchanged, and its u, y and scratch slots hold :func:`expected`."""
    pred = (ref["w"][:, layer // 3] * case.x_query).sum(-1)
    slots = expected(ref, case.x, layer, case.x.shape[-2] + 1)
    return ([Claim(READOUT, QUERY, pred), Claim("x", EVERY, every_input(case.x, case.x_query))]
            + [Claim(slot, EVERY, want) for slot, want in slots.items()])


def errors(built: Built, case: Case) -> dict[str, float]:
    """Per layer: every claim of :func:`claims`, for a prompt of the N examples the weights are for."""
    require_examples("ridge_sherman_morrison", case)
    ref = reference(case.x, case.y, case.x_query, case.params["lam"])
    per_layer = [claims(ref, case, layer) for layer in range(built.cfg.n_layers + 1)]
    return layer_errors(built, example_tokens(case.x, case.y, case.x_query), per_layer)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
           depth: int | None = None) -> Case:
    """d and N as given or drawn (depth is 3 N, so ``depth`` is ignored); lam log-uniform in
    [0.1, 10] (sum convention); inputs in a ball of radius in [0.5, 1.5]."""
    p = domains.ball_prompts(gen, d, n, depth, radius=(0.5, 1.5), log10_lam=(-1.0, 1.0))
    return p.case(d=p.d, n_examples=p.n, lam=p.lam, radius=p.radius)


CONSTRUCTION = Construction(
    name="ridge_sherman_morrison", exactness="exact",
    algorithm="baselines.ridge_sum (= algorithms.ridge with lam / n on n examples)",
    summary="ridge folded in one example per 3 layers (Sherman-Morrison; normalised-attention division)",
    sample=sample, build=lambda case: build(**case.params), errors=errors,
    bound=1e-10,
    bound_note="float64 round-off of N Sherman-Morrison folds with s >= 1 and |A| <= 1 / lam: ~ N d eps "
               "|x|^2 / lam^2 < 1e-12 on the domain",
)
