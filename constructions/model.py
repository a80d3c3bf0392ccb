"""The one forward pass, shared by hand-set and trained weights.

Read top to bottom: norm, masks, attention, MLP, block, embedding, readout, model (the config is in
:mod:`constructions.config`, the typed weights in :mod:`constructions.weights`). Every weight tensor
carries a leading model axis K, so K models of one shape run
(and train) in one call.

Glossary of shapes
    K   models in a batch (leading axis of every weight)
    B   prompts per model
    T   tokens per prompt
    D   residual width (d_model)
    H   heads;  Dh  head width
    M   MLP width
    L   layers
    Din token feature width (before the embedding);  Dout readout width

Attention kinds (config ``attention``):
    softmax  A = softmax(beta * q.k) over the visible keys (beta is an explicit inverse temperature;
             ``beta=None`` means the usual 1/sqrt(Dh))
    linear   A = (q.k) / N, unnormalised, N = number of keys the query sees
    linear_sum  A = q.k, without the 1 / N (von Oswald et al.'s linear self-attention: the same
             functions as ``linear``, but a trained layer's dynamics differ: its output is N times
             larger at the same weights)
    relu     A = ReLU(q.k) / N
    normalized  A = (q.k) / sum_j' (q.k_j') over the visible keys (normalised linear attention; a
             query whose scores sum to exactly 0, e.g. an unused all-zero head, reads nothing)
``layer_attention`` (a tuple, one kind per layer) overrides ``attention`` layer by layer.
Masks (config ``mask``): ``causal`` (key j visible to query i iff j <= i), ``full``,
``exclude_query`` (every query sees every token except the last one: the in-context regression
layout where the last token is the query and must not act as an example).
Positional attention (``qk_source="positions"``): queries and keys come from one-hot positions only
(W_Q, W_K have n_qk_positions rows: row t is position t's query / key), values from the stream, so
the attention pattern is the same for every input.
Norms (pre-norm): ``layernorm``, ``rmsnorm``, and ``crmsnorm`` (RMSNorm of the zero-mean vector whose
first D coordinates the stream stores; Jiang et al. 2023).
``mlp_input="concat"``: the MLP reads [stream, attention output] and its output replaces the
stream (no residual), as in the positional-attention constructions.
"""


from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

# The config and the typed weights live in their own modules; they are re-exported here so that
# `from constructions import model as M` gives the whole surface (M.ModelConfig, M.init, ...).
from constructions.config import (  # noqa: F401
    ATTENTION_KINDS,
    MASKS,
    MLP_INPUTS,
    MLP_KINDS,
    NORMS,
    QK_SOURCES,
    Layout,
    ModelConfig,
)
from constructions.weights import (  # noqa: F401
    MLP,
    Attention,
    Block,
    Norm,
    Weights,
    check_weights,
    from_state_dict,
    init,
    load_weights,
    save_weights,
    to_state_dict,
    weight_shapes,
    zeros,
)

# ----------------------------------------------------------------------------------------------
# The forward pass


def norm(cfg: ModelConfig, p: Norm | None, h: Tensor) -> Tensor:
    """Pre-norm over the last axis. h: (K, B, T, D); gains (K, D) broadcast over B, T."""
    if cfg.norm == "none" or p is None:
        return h
    if cfg.norm == "layernorm":
        h = F.layer_norm(h, h.shape[-1:], eps=cfg.norm_eps)  # (h - mean) / sqrt(var + eps), one kernel
    elif cfg.norm == "crmsnorm":
        # h holds the first D-1 coordinates of a zero-mean D-vector z (the last is -sum(h)), so
        # mean(z^2) = (|h|^2 + (sum h)^2) / (D_stored + 1): RMSNorm of z without storing it.
        ms = (h.pow(2).sum(-1, keepdim=True) + h.sum(-1, keepdim=True).pow(2)) / (h.shape[-1] + 1)
        h = h * torch.rsqrt(ms + cfg.norm_eps)
    else:
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
    h = h * p.w[:, None, None, :]
    if p.b is not None:
        h = h + p.b[:, None, None, :]
    return h


def linear(x: Tensor, W: Tensor, b: Tensor | None = None) -> Tensor:
    """x (K, B, T, i) @ W (K, i, o) + b (K, o) -> (K, B, T, o): one batched matmul for the K models."""
    K, B, T, i = x.shape
    flat = x.reshape(K, B * T, i)
    out = torch.bmm(flat, W) if b is None else torch.baddbmm(b.unsqueeze(1), flat, W)
    return out.view(K, B, T, W.shape[-1])


def heads(x: Tensor, Ws: list[Tensor], bs: list[Tensor | None]) -> list[Tensor]:
    """Per-head projections of x (K, B, T, D) by W (K, H, D, Dh) (+ b (K, H, Dh)), several at once
    in one matmul: a list of (K, B, H, T, Dh)."""
    K, B, T, D = x.shape
    H, Dh = Ws[0].shape[1], Ws[0].shape[-1]
    W = torch.cat([w.transpose(1, 2).reshape(K, D, H * Dh) for w in Ws], dim=-1)  # (K, D, n H Dh): small
    b = None if all(v is None for v in bs) else \
        torch.cat([torch.zeros(K, H * Dh, dtype=x.dtype, device=x.device) if v is None else v.reshape(K, H * Dh)
                   for v in bs], dim=-1)
    out = linear(x, W, b)
    return [part.view(K, B, T, H, Dh).transpose(2, 3) for part in out.split(H * Dh, dim=-1)]


def key_mask(kind: str, T: int, device=None) -> Tensor:
    """(T, T) bool, True where query i may read key j."""
    i = torch.arange(T, device=device)
    if kind == "causal":
        return i[None, :] <= i[:, None]
    if kind == "full":
        return torch.ones(T, T, dtype=torch.bool, device=device)
    if kind == "exclude_query":
        if T < 2:
            raise ValueError("mask 'exclude_query' needs at least 2 tokens (examples, then the query)")
        return (i[None, :] < T - 1).expand(T, T)
    raise ValueError(f"mask must be one of {MASKS}, got {kind!r}")


def _bias(b: Tensor | None, shape) -> Tensor | float:
    return 0.0 if b is None else b.view(shape)


def _softmax_weights(cfg: ModelConfig, scores: Tensor, visible: Tensor) -> Tensor:
    return torch.softmax((cfg.softmax_beta * scores).masked_fill(~visible, float("-inf")), dim=-1)


def _linear_weights(cfg: ModelConfig, scores: Tensor, visible: Tensor) -> Tensor:
    n_keys = visible.sum(-1, keepdim=True).to(scores.dtype)  # (T, 1): N for each query
    return scores * visible / n_keys


def _sum_weights(cfg: ModelConfig, scores: Tensor, visible: Tensor) -> Tensor:
    return scores * visible


def _relu_weights(cfg: ModelConfig, scores: Tensor, visible: Tensor) -> Tensor:
    return _linear_weights(cfg, F.relu(scores), visible)


def _normalized_weights(cfg: ModelConfig, scores: Tensor, visible: Tensor) -> Tensor:
    scores = scores * visible
    total = scores.sum(-1, keepdim=True)
    return torch.where(total == 0, 0.0, scores / torch.where(total == 0, 1.0, total))


# Attention kind -> (cfg, scores (K, B, H, T, T), visible (T, T)) -> weights: one entry per ATTENTION_KINDS.
ATTENTION_WEIGHTS = {"softmax": _softmax_weights, "linear": _linear_weights, "relu": _relu_weights,
                     "normalized": _normalized_weights, "linear_sum": _sum_weights}


def _queries_keys(cfg: ModelConfig, p: Attention, h: Tensor) -> tuple[Tensor, Tensor]:
    """q, k (K, B or 1, H, T, Dh): from the stream, or from one-hot positions (the same for every input)."""
    K, B, T, D = h.shape
    if cfg.qk_source == "positions":  # one-hot positions in: row t of W_Q / W_K is position t's vector
        if T > cfg.n_qk_positions:
            raise ValueError(f"prompt has {T} tokens but positional attention has n_qk_positions={cfg.n_qk_positions}")
        q = p.W_Q[:, None, :, :T, :] + _bias(p.b_Q, (K, 1, -1, 1, cfg.d_head))  # (K, 1, H, T, Dh)
        k = p.W_K[:, None, :, :T, :] + _bias(p.b_K, (K, 1, -1, 1, cfg.d_head))
        return q, k
    q, k = heads(h, [p.W_Q, p.W_K], [p.b_Q, p.b_K])
    return q, k


def attention_pattern(cfg: ModelConfig, p: Attention, h: Tensor, kind: str | None = None) -> Tensor:
    """Attention weights (K, B, H, T, T) for input h (K, B, T, D); kind defaults to cfg.attention."""
    kind = cfg.attention if kind is None else kind
    if kind not in ATTENTION_WEIGHTS:
        raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {kind!r}")
    K, B, T, D = h.shape
    q, k = _queries_keys(cfg, p, h)
    scores = (q @ k.transpose(-1, -2)).expand(K, B, -1, T, T)  # (K, B, H, T, T)
    return ATTENTION_WEIGHTS[kind](cfg, scores, key_mask(cfg.mask, T, h.device))


def _fused_softmax(cfg: ModelConfig, p: Attention, h: Tensor) -> Tensor:
    """Softmax attention's mixed values z (K, B, H, T, Dh) in one fused kernel (the pattern is never
    materialised): q, k, v from one matmul, then scaled_dot_product_attention over K * B prompts."""
    K, B, T, D = h.shape
    q, k, v = heads(h, [p.W_Q, p.W_K, p.W_V], [p.b_Q, p.b_K, p.b_V])
    causal = cfg.mask == "causal"
    mask = None if causal or cfg.mask == "full" else key_mask(cfg.mask, T, h.device)
    z = F.scaled_dot_product_attention(*(t.reshape(K * B, cfg.n_heads, T, cfg.d_head) for t in (q, k, v)),
                                       attn_mask=mask, is_causal=causal, scale=cfg.softmax_beta)
    return z.view(K, B, cfg.n_heads, T, cfg.d_head)


def attention(cfg: ModelConfig, p: Attention, h: Tensor, pattern: Tensor | None = None, kind: str | None = None
              ) -> Tensor:
    """Multi-head attention output (K, B, T, D); sums heads through W_O. With no ``pattern`` given,
    softmax attention on the stream runs fused (:func:`_fused_softmax`); other kinds build theirs."""
    K, B, T, D = h.shape
    kind = cfg.attention if kind is None else kind
    if pattern is None and kind == "softmax" and cfg.qk_source == "residual":
        z = _fused_softmax(cfg, p, h)
    else:
        if pattern is None:
            pattern = attention_pattern(cfg, p, h, kind)
        (v,) = heads(h, [p.W_V], [p.b_V])
        z = pattern @ v  # (K, B, H, T, Dh)
    z = z.transpose(2, 3).reshape(K, B, T, cfg.n_heads * cfg.d_head)
    return linear(z, p.W_O.reshape(K, cfg.n_heads * cfg.d_head, D), p.b_O)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda a: F.gelu(a, approximate="tanh"),
               "identity": lambda a: a}


def mlp(cfg: ModelConfig, p: MLP, h: Tensor) -> Tensor:
    """Position-wise MLP (K, B, T, D) -> (K, B, T, D)."""
    return linear(ACTIVATIONS[cfg.mlp](linear(h, p.W_in, p.b_in)), p.W_out, p.b_out)


def block(cfg: ModelConfig, p: Block, h: Tensor, keep: dict | None = None, layer: int = 0) -> Tensor:
    """One pre-norm block: h + attn(norm(h)), then h + mlp(norm(h)) (no residual if disabled)."""
    x, kind = norm(cfg, p.ln1, h), cfg.attention_kind(layer)
    pattern = None
    if keep is not None:
        pattern = attention_pattern(cfg, p.attn, x, kind)
        keep["attention"].append(pattern)
    a = attention(cfg, p.attn, x, pattern, kind)
    if cfg.mlp_input == "concat":  # MLP([h, attention output]) replaces the stream: no residual
        return mlp(cfg, p.mlp, torch.cat([h, a], dim=-1))
    h = h + a if cfg.residual else a
    if cfg.mlp != "none":
        m = mlp(cfg, p.mlp, norm(cfg, p.ln2, h))
        h = h + m if cfg.residual else m
    return h


def embed(cfg: ModelConfig, w: Weights, tokens: Tensor) -> Tensor:
    """tokens (B, T, Din) shared by all models, or (K, B, T, Din) -> residual (K, B, T, D)."""
    given = tuple(tokens.shape)
    if tokens.dim() == 3:
        tokens = tokens.unsqueeze(0).expand(w.K, *tokens.shape)
    if tokens.dim() != 4 or tokens.shape[0] != w.K or tokens.shape[-1] != cfg.d_in:
        raise ValueError(
            f"tokens must have shape (B, T, d_in={cfg.d_in}) or (K={w.K}, B, T, d_in={cfg.d_in}), got {given}"
        )
    T = tokens.shape[2]
    h = linear(tokens, w.W_E, w.b_E)
    if cfg.n_positions:
        if T > cfg.n_positions:
            raise ValueError(f"prompt has {T} tokens but the model has n_positions={cfg.n_positions}")
        h = h + w.W_pos[:, None, :T, :]
    return h


def readout(cfg: ModelConfig, w: Weights, h: Tensor) -> Tensor:
    """The model's readout (final norm, then unembedding) on any residual (K, B, T, D)."""
    h = norm(cfg, w.ln_f, h) if cfg.final_norm else h
    return linear(h, w.W_U, w.b_U)


@dataclass
class Output:
    out: Tensor  # (K, B, T, Dout)
    residuals: list[Tensor] | None = None  # L + 1 tensors (K, B, T, D): embedding, after each block
    attention: list[Tensor] | None = None  # L tensors (K, B, H, T, T)


def forward(cfg: ModelConfig, w: Weights, tokens: Tensor, *, residuals: bool = False,
            attention_patterns: bool = False) -> Output:
    """Run K models on tokens; optionally keep the residual stream after every layer."""
    if len(w.blocks) != cfg.n_layers:
        raise ValueError(f"weights have {len(w.blocks)} blocks, config says n_layers={cfg.n_layers}")
    if tokens.dtype != w.W_E.dtype:
        raise TypeError(f"tokens are {tokens.dtype} but weights are {w.W_E.dtype}")
    keep = {"attention": []} if attention_patterns else None
    h = embed(cfg, w, tokens)
    stream = [h]
    for layer, p in enumerate(w.blocks):
        h = block(cfg, p, h, keep, layer)
        stream.append(h)
    return Output(
        out=readout(cfg, w, h),
        residuals=stream if residuals else None,
        attention=keep["attention"] if keep else None,
    )
