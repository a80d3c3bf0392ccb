"""Positional attention running parallel algorithms: the pointer head, its hardmax-limit bound, and
the layer-by-layer measurement shared by the scans (:mod:`constructions.positional.scan`) and the
bitonic sort (:mod:`constructions.positional.sort`).

Claim (de Luca et al. 2024). With positional attention (``qk_source="positions"``: queries and keys
are rows of W_Q, W_K indexed by position, values come from the stream) a layer can route to every
position t the value held at a position target(t) fixed in advance; the MLP, fed [stream, attention
output] (``mlp_input="concat"``), then combines the two. Parallel algorithms whose communication
pattern depends on positions only (Hillis-Steele scans, sorting networks) run one parallel step per
layer, and the attention pattern is the same for every input.

The pointer head (one per layer). Dh = T (tokens), one-hot positions:

    W_Q[t] = e_{target(t)},   W_K[j] = e_j        so the score q_t . k_j = [j == target(t)]
    W_V[v] = e_0,             W_O[0] = e_v        the value slot v of the key, back into slot v

With inverse temperature beta, query t over V_t visible keys puts weight e^beta / (e^beta + V_t - 1)
on its target and 1 / (e^beta + V_t - 1) on each other key. So the attention output is

    a_t = h_target(t) + sum_{j != target(t)} A_tj (h_j - h_target(t)),   |a_t - h_target(t)| <= omega * spread(h)

with the leakage omega = (V - 1) / (e^beta + V - 1) <= (V - 1) e^{-beta}, V the most keys any query
sees. Each construction propagates this through its MLP (1-Lipschitz for min / max / compare-exchange,
2-Lipschitz for +) to a bound on the final error of the form C(n) * R * omega: the error falls like
e^{-beta} (slope -1 of log error against beta, which the construction's RateSweep checks), and is
exactly zero in the hardmax limit beta -> infinity.

What is measured, per layer l (labels):
    "layer l"    the readout of the stream after l layers against iterate l of the algorithm
    "read l"     the attention output of layer l (slot v) against iterate l-1 at the targets: the
                 value the algorithm reads (nonzero for every input, so the slope fit always has
                 a signal, even where min / max happen to discard the leaked value)
    "pattern l"  max |log A - log A*| over visible entries, A* = softmax(beta * one-hot(target)):
                 zero up to round-off (~1e-15); it is what sees a perturbed W_Q or W_K, whose
                 effect on values is only a relative change of the (tiny) leakage
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case

EPS = torch.finfo(torch.float64).eps
# The inverse temperatures of the constructions' RateSweep: e^{-beta} from 3e-4 (leakage still small
# against 1, so log error is linear in beta) to 2e-9 (still far above float64 round-off, ~1e-14).
BETAS = (8.0, 14.0, 20.0)


def leakage(n_keys: int, beta: float) -> float:
    """omega = (V - 1) / (e^beta + V - 1): the attention weight a query with V visible keys puts off
    its target (computed without overflowing e^beta)."""
    if n_keys <= 1:
        return 0.0
    r = (n_keys - 1) * math.exp(-beta)
    return r / (1.0 + r)


def beta_for(prefactor: float, target: float) -> float:
    """The inverse temperature at which prefactor * e^{-beta} = target."""
    return math.log(prefactor / target)


def value_case(gen: torch.Generator, n: int | None, prefactor: Callable[[int], float]) -> Case:
    """The domain of the scans and the sort, drawn in this order: n (as given, or from N_RANGE), R
    uniform in [0.5, 4], beta = beta_for(prefactor(n), 1e-9) + U[0, 3], then BATCH prompts of n
    values uniform in [-R, R]. prefactor(n) e^-beta bounds the leakage part of the construction's
    bound divided by R (C(n) times the number of keys that leak), so beta puts that part near
    1e-9 R, and a perturbed weight, which moves values by ~1e-3, is far outside it."""
    n = domains.draw_int(gen, *domains.N_RANGE) if n is None else n
    radius = domains.draw_float(gen, 0.5, 4.0)
    beta = beta_for(prefactor(n), 1e-9) + domains.draw_float(gen, 0.0, 3.0)
    x = radius * (2 * torch.rand(domains.BATCH, n, generator=gen, dtype=torch.float64) - 1)
    return Case({"n": n, "beta": beta, "radius": radius}, data={"x": x})


def one_hot_rows(targets: Tensor, T: int) -> Tensor:
    """(T, T) float64 with row t = e_{targets[t]}."""
    return torch.nn.functional.one_hot(targets.long(), T).to(torch.float64)


def paint_pointer(w: M.Weights, layer: int, targets: Tensor, slot: int) -> None:
    """Layer ``layer``'s head 0 sends to every position t the value in ``slot`` at targets[t]."""
    attn, T = w.blocks[layer].attn, len(targets)
    attn.W_Q[0, 0, :T, :T] = one_hot_rows(targets, T)
    attn.W_K[0, 0, :T, :T] = torch.eye(T, dtype=torch.float64)
    attn.W_V[0, 0, slot, 0] = 1.0
    attn.W_O[0, 0, 0, slot] = 1.0


def designed_log_patterns(targets: list[Tensor], mask: str, beta: float) -> Tensor:
    """log softmax(beta * one-hot(target)) over the visible keys, one (T, T) per layer: (L, T, T),
    -inf where masked."""
    T = len(targets[0])
    scores = beta * one_hot_rows(torch.stack(targets), T)
    scores = scores.masked_fill(~M.key_mask(mask, T), -math.inf)
    return torch.log_softmax(scores, dim=-1)


def pattern_errors(patterns: list[Tensor], targets: list[Tensor], mask: str, beta: float) -> list[float]:
    """Per layer, max over prompts and visible entries of |log A - log A*|; patterns (B, T, T) each."""
    if not patterns:
        return []
    visible = M.key_mask(mask, len(targets[0]))
    want = designed_log_patterns(targets, mask, beta)  # (L, T, T)
    gap = (torch.stack(patterns, dim=1).log() - want).abs()  # (B, L, T, T)
    gap = torch.where(visible, gap, torch.zeros_like(gap)).nan_to_num(nan=math.inf)
    return gap.amax(dim=(0, 2, 3)).tolist()


def pointer_errors(built: Built, tokens: Tensor, states: list[Tensor], targets: list[Tensor],
                   slot: int) -> dict[str, float]:
    """Labels "layer l", "read l", "pattern l" (see the module docstring) for one pointer head per
    layer. tokens (B, T, Din); states: the algorithm's iterates on all T positions, (B, T) each,
    one more than there are layers; targets: one (T,) index tensor per layer."""
    cfg, w = built.cfg, built.weights
    if len(states) != cfg.n_layers + 1 or len(targets) != cfg.n_layers:
        raise ValueError(f"need {cfg.n_layers + 1} iterates and {cfg.n_layers} target maps, got "
                         f"{len(states)} and {len(targets)}")
    run = M.forward(cfg, w, tokens, residuals=True, attention_patterns=True)
    out = {}
    for l, h in enumerate(run.residuals):
        out[f"layer {l}"] = _max_abs(M.readout(cfg, w, h)[0, ..., 0] - states[l])
    for l, (p, pattern) in enumerate(zip(w.blocks, run.attention)):
        read = M.attention(cfg, p.attn, run.residuals[l], pattern)[0, ..., slot]  # (B, T)
        out[f"read {l + 1}"] = _max_abs(read - states[l][:, targets[l]])
    heads = [a[0, :, 0] for a in run.attention]
    for l, err in enumerate(pattern_errors(heads, targets, cfg.mask, cfg.softmax_beta)):
        out[f"pattern {l + 1}"] = err
    return out


def blank(cfg: M.ModelConfig) -> M.Weights:
    """All-zero float64 weights for ``cfg`` (K = 1, no norms), the canvas the constructions paint:
    :func:`model.zeros` without the state-dict round trip, which dominates the time of a check."""
    if cfg.norm != "none":
        raise ValueError("blank: the positional constructions use no norms")
    D, H, Dh, Mw = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    qk = cfg.n_qk_positions if cfg.qk_source == "positions" else D
    mlp_in = 2 * D if cfg.mlp_input == "concat" else D

    def z(*shape):
        return torch.zeros(1, *shape, dtype=torch.float64)

    def bias(*shape):
        return z(*shape) if cfg.bias else None

    blocks = [
        M.Block(
            attn=M.Attention(z(H, qk, Dh), z(H, qk, Dh), z(H, D, Dh), z(H, Dh, D),
                             bias(H, Dh), bias(H, Dh), bias(H, Dh), bias(D)),
            mlp=None if cfg.mlp == "none" else M.MLP(z(mlp_in, Mw), z(Mw, D), bias(Mw), bias(D)),
        )
        for _ in range(cfg.n_layers)
    ]
    return M.Weights(W_E=z(cfg.d_in, D), blocks=blocks, W_U=z(D, cfg.d_out), b_E=bias(D),
                     W_pos=z(cfg.n_positions, D) if cfg.n_positions else None, b_U=bias(cfg.d_out))


def _max_abs(t: Tensor) -> float:
    err = t.abs().max().item()
    return float("inf") if err != err else err  # NaN counts as failure


def patterns(built: Built, tokens: Tensor) -> list[Tensor]:
    """The attention pattern of every layer, (B, T, T) for head 0 of model 0."""
    run = M.forward(built.cfg, built.weights, tokens, attention_patterns=True)
    return [a[0, :, 0] for a in run.attention]


def roundoff(n_tokens: int, n_layers: int, scale: float) -> float:
    """A float64 round-off allowance: each layer sums n_tokens weighted values of size <= scale
    (error <= n_tokens * eps * scale) and combines two of them (a few eps * scale more)."""
    return 4.0 * (n_tokens + 4) * max(n_layers, 1) * EPS * max(scale, 1.0)
