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
Looped models (``n_loops`` b > 1): the n_layers blocks are one group applied b times with shared
weights (Giannou et al. 2023; Yang et al. 2023); ``input_injection`` adds the embedding to the stream
before every loop after the first, as Yang et al.; ``forward(..., loops=b')`` runs any other count.

Hook points (TransformerLens's names, K first): ``forward(..., cache=True or [names])`` returns every
named activation in ``Output.cache``; ``forward(..., hooks={name: fn})`` lets ``fn(activation)``
replace one. :func:`hook_names` lists them with their shapes. Without either, the plain pass runs.
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
    # is_causal with a negative scale returns NaN (torch 2.13 on the CPU): a negative beta takes the mask
    causal = cfg.mask == "causal" and cfg.softmax_beta > 0
    mask = None if causal or cfg.mask == "full" else key_mask(cfg.mask, T, h.device)
    z = F.scaled_dot_product_attention(*(t.reshape(K * B, cfg.n_heads, T, cfg.d_head) for t in (q, k, v)),
                                       attn_mask=mask, is_causal=causal, scale=cfg.softmax_beta)
    return z.view(K, B, cfg.n_heads, T, cfg.d_head)


def _heads_out(cfg: ModelConfig, p: Attention, z: Tensor) -> Tensor:
    """Mixed values z (K, B, H, T, Dh) through W_O, summed over heads: (K, B, T, D)."""
    K, B, H, T, Dh = z.shape
    z = z.transpose(2, 3).reshape(K, B, T, H * Dh)
    return linear(z, p.W_O.reshape(K, H * Dh, -1), p.b_O)


def attention(cfg: ModelConfig, p: Attention, h: Tensor, pattern: Tensor | None = None, kind: str | None = None
              ) -> Tensor:
    """Multi-head attention output (K, B, T, D); sums heads through W_O. With no ``pattern`` given,
    softmax attention on the stream runs fused (:func:`_fused_softmax`); other kinds build theirs."""
    kind = cfg.attention if kind is None else kind
    if pattern is None and kind == "softmax" and cfg.qk_source == "residual":
        z = _fused_softmax(cfg, p, h)
    else:
        if pattern is None:
            pattern = attention_pattern(cfg, p, h, kind)
        (v,) = heads(h, [p.W_V], [p.b_V])
        z = pattern @ v  # (K, B, H, T, Dh)
    return _heads_out(cfg, p, z)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda a: F.gelu(a, approximate="tanh"),
               "identity": lambda a: a}


def mlp(cfg: ModelConfig, p: MLP, h: Tensor) -> Tensor:
    """Position-wise MLP (K, B, T, D) -> (K, B, T, D)."""
    return linear(ACTIVATIONS[cfg.mlp](linear(h, p.W_in, p.b_in)), p.W_out, p.b_out)


def block(cfg: ModelConfig, p: Block, h: Tensor, keep: dict | None = None, layer: int = 0) -> Tensor:
    """One pre-norm block: h + attn(norm(h)), then h + mlp(norm(h)) (no residual if disabled).
    ``layer`` is the block's index in the weights (it picks the attention kind)."""
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


# ----------------------------------------------------------------------------------------------
# The same block with hook points: every activation named, cached and replaceable


class Tap:
    """Where :func:`forward` passes each named activation when a cache or hooks are asked for.

    ``names``: the hook names to keep (None: none); ``hooks``: name -> fn(activation) returning a
    replacement tensor of the same shape (or None to leave it). The cache keeps the value that flows
    on, i.e. after the hook. :func:`forward` builds one; the fast path (no cache, no hooks) never does.
    """

    def __init__(self, names=None, hooks=None):
        self.names, self.hooks, self.cache = set(names or ()), dict(hooks or {}), {}

    def __call__(self, name: str, x: Tensor) -> Tensor:
        fn = self.hooks.get(name)
        if fn is not None:
            new = fn(x)
            if new is not None:
                if tuple(new.shape) != tuple(x.shape):
                    raise ValueError(f"hook {name!r} returned shape {tuple(new.shape)}, expected {tuple(x.shape)}")
                x = new
        if name in self.names:
            self.cache[name] = x
        return x

    def wants(self, prefix: str) -> bool:
        """Whether any cached or hooked name starts with ``prefix`` (e.g. ``blocks.2.attn.``)."""
        return any(n.startswith(prefix) for n in self.names | set(self.hooks))


def _heads_first(t: Tensor) -> Tensor:  # (K, B, T, H, Dh) -> (K, B, H, T, Dh)
    return t.transpose(2, 3)


def _tapped_heads(tap: Tap, name: str, t: Tensor, B: int) -> Tensor:
    """Per-head q / k / v / z (K, B or 1, H, T, Dh) through hook ``name`` as (K, B, T, H, Dh)."""
    t = t.expand(t.shape[0], B, *t.shape[2:])
    return _heads_first(tap(name, _heads_first(t)))


def tapped_attention(cfg: ModelConfig, p: Attention, x: Tensor, kind: str, tap: Tap, at: str) -> Tensor:
    """:func:`attention`, unfused, through hooks ``{at}attn.hook_q|k|v|attn_scores|pattern|z``."""
    K, B, T, D = x.shape
    q, k = _queries_keys(cfg, p, x)
    (v,) = heads(x, [p.W_V], [p.b_V])
    q, k, v = (_tapped_heads(tap, f"{at}attn.hook_{n}", t, B) for n, t in (("q", q), ("k", k), ("v", v)))
    visible = key_mask(cfg.mask, T, x.device)
    scores = q @ k.transpose(-1, -2)  # (K, B, H, T, T)
    if kind == "softmax":  # as TransformerLens: scaled, -inf where a key is hidden
        scores = tap(f"{at}attn.hook_attn_scores", (cfg.softmax_beta * scores).masked_fill(~visible, float("-inf")))
        pattern = torch.softmax(scores, dim=-1)
    else:
        pattern = ATTENTION_WEIGHTS[kind](cfg, tap(f"{at}attn.hook_attn_scores", scores), visible)
    pattern = tap(f"{at}attn.hook_pattern", pattern)
    z = _tapped_heads(tap, f"{at}attn.hook_z", pattern @ v, B)
    return _heads_out(cfg, p, z)


def tapped_block(cfg: ModelConfig, p: Block, h: Tensor, tap: Tap, layer: int, depth: int) -> Tensor:
    """:func:`block` through the hook points ``blocks.{depth}.*`` (``depth`` counts applied blocks,
    ``layer`` is the block's index in the weights: they differ in a looped model)."""
    at = f"blocks.{depth}."
    h = tap(at + "hook_resid_pre", h)
    x = tap(at + "ln1.hook_normalized", norm(cfg, p.ln1, h)) if cfg.norm != "none" else h
    kind = cfg.attention_kind(layer)
    if tap.wants(at + "attn."):
        a = tapped_attention(cfg, p.attn, x, kind, tap, at)
    else:
        a = attention(cfg, p.attn, x, None, kind)
    a = tap(at + "hook_attn_out", a)
    if cfg.mlp_input == "concat":
        m = _tapped_mlp(cfg, p.mlp, torch.cat([h, a], dim=-1), tap, at)
        return tap(at + "hook_resid_post", m)
    h = tap(at + "hook_resid_mid", h + a if cfg.residual else a)
    if cfg.mlp != "none":
        x = tap(at + "ln2.hook_normalized", norm(cfg, p.ln2, h)) if cfg.norm != "none" else h
        m = _tapped_mlp(cfg, p.mlp, x, tap, at)
        h = h + m if cfg.residual else m
    return tap(at + "hook_resid_post", h)


def _tapped_mlp(cfg: ModelConfig, p: MLP, x: Tensor, tap: Tap, at: str) -> Tensor:
    pre = tap(at + "mlp.hook_pre", linear(x, p.W_in, p.b_in))
    post = tap(at + "mlp.hook_post", ACTIVATIONS[cfg.mlp](pre))
    return tap(at + "hook_mlp_out", linear(post, p.W_out, p.b_out))


_ATTENTION_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z")


def hook_names(cfg: ModelConfig, loops: int | None = None) -> list[str]:
    """Every hook point of a model with this config, in the order the forward pass meets them.

    Shapes (K models, B prompts, T tokens; D, H, Dh, M as in the glossary):
        hook_embed, hook_pos_embed (if n_positions), blocks.{l}.hook_resid_pre,
        blocks.{l}.ln1.hook_normalized, blocks.{l}.hook_attn_out, blocks.{l}.hook_resid_mid,
        blocks.{l}.ln2.hook_normalized, blocks.{l}.hook_mlp_out, blocks.{l}.hook_resid_post,
        ln_final.hook_normalized                                             (K, B, T, D)
        blocks.{l}.attn.hook_q | hook_k | hook_v | hook_z                    (K, B, T, H, Dh)
        blocks.{l}.attn.hook_attn_scores | hook_pattern                      (K, B, H, T, T)
        blocks.{l}.mlp.hook_pre | hook_post                                  (K, B, T, M)
    ``hook_attn_scores`` are the scores the kind's weighting reads: for softmax beta * q.k with -inf
    where the mask hides a key (as TransformerLens), for the other kinds q.k before masking. Norm
    hooks exist only with a norm; ``resid_mid``, ``ln2`` and the MLP hooks only where the block has
    them (``mlp_input="concat"``: the MLP output is the new stream, so no ``resid_mid``). ``l``
    counts applied blocks: a looped model run for b loops has ``n_layers * b`` of them.
    """
    names = ["hook_embed"] + (["hook_pos_embed"] if cfg.n_positions else [])
    for depth in range(cfg.n_layers * (cfg.n_loops if loops is None else loops)):
        at = f"blocks.{depth}."
        names += [at + "hook_resid_pre"] + ([at + "ln1.hook_normalized"] if cfg.norm != "none" else [])
        names += [at + "attn." + n for n in _ATTENTION_HOOKS] + [at + "hook_attn_out"]
        if cfg.mlp_input == "concat":
            names += [at + "mlp.hook_pre", at + "mlp.hook_post", at + "hook_mlp_out"]
        else:
            names.append(at + "hook_resid_mid")
            if cfg.mlp != "none":
                names += [at + "ln2.hook_normalized"] if cfg.norm != "none" else []
                names += [at + "mlp.hook_pre", at + "mlp.hook_post", at + "hook_mlp_out"]
        names.append(at + "hook_resid_post")
    return names + (["ln_final.hook_normalized"] if cfg.final_norm else [])


def embed(cfg: ModelConfig, w: Weights, tokens: Tensor, tap: Tap | None = None) -> Tensor:
    """tokens (B, T, Din) shared by all models, or (K, B, T, Din) -> residual (K, B, T, D)."""
    given = tuple(tokens.shape)
    if tokens.dim() == 3:
        tokens = tokens.unsqueeze(0).expand(w.K, *tokens.shape)
    if tokens.dim() != 4 or tokens.shape[0] != w.K or tokens.shape[-1] != cfg.d_in:
        raise ValueError(
            f"tokens must have shape (B, T, d_in={cfg.d_in}) or (K={w.K}, B, T, d_in={cfg.d_in}), got {given}"
        )
    K, B, T = tokens.shape[:3]
    h = linear(tokens, w.W_E, w.b_E)
    if tap is not None:
        h = tap("hook_embed", h)
    if cfg.n_positions:
        if T > cfg.n_positions:
            raise ValueError(f"prompt has {T} tokens but the model has n_positions={cfg.n_positions}")
        pos = w.W_pos[:, None, :T, :]
        h = h + (pos if tap is None else tap("hook_pos_embed", pos.expand(K, B, T, -1)))
    return h


def readout(cfg: ModelConfig, w: Weights, h: Tensor, tap: Tap | None = None) -> Tensor:
    """The model's readout (final norm, then unembedding) on any residual (K, B, T, D)."""
    if cfg.final_norm:
        h = norm(cfg, w.ln_f, h)
        h = h if tap is None else tap("ln_final.hook_normalized", h)
    return linear(h, w.W_U, w.b_U)


@dataclass
class Output:
    out: Tensor  # (K, B, T, Dout)
    residuals: list[Tensor] | None = None  # L b + 1 tensors (K, B, T, D): embedding, after each applied block
    attention: list[Tensor] | None = None  # L b tensors (K, B, H, T, T)
    cache: dict[str, Tensor] | None = None  # hook name -> activation (see hook_names)


def _check_hook_names(cfg: ModelConfig, loops: int, asked, what: str) -> None:
    known = set(hook_names(cfg, loops))
    unknown = [n for n in asked if n not in known]
    if unknown:
        layers = cfg.n_layers * loops
        raise ValueError(f"{what}: unknown hook name(s) {unknown[:3]} for this model ({layers} applied blocks); "
                         f"names are e.g. 'blocks.0.hook_resid_post', 'blocks.0.attn.hook_pattern' "
                         f"(constructions.model.hook_names(cfg) lists them)")


def _tap_for(cfg: ModelConfig, loops: int, cache, hooks) -> Tap | None:
    if not cache and not hooks:
        return None
    names = hook_names(cfg, loops) if cache is True else list(cache or ())
    _check_hook_names(cfg, loops, names, "cache")
    _check_hook_names(cfg, loops, list(hooks or ()), "hooks")
    return Tap(names, hooks)


def _loops(cfg: ModelConfig, loops: int | None) -> int:
    if loops is None:
        return cfg.n_loops
    if not isinstance(loops, int) or isinstance(loops, bool) or loops < 1:
        raise ValueError(f"loops must be an int >= 1, got {loops!r}")
    return loops


def forward(cfg: ModelConfig, w: Weights, tokens: Tensor, *, residuals: bool = False,
            attention_patterns: bool = False, cache=None, hooks: dict | None = None,
            loops: int | None = None) -> Output:
    """Run K models on tokens.

    ``residuals``: keep the stream after every applied block; ``attention_patterns``: keep every
    pattern. ``cache``: True or a list of hook names (:func:`hook_names`) -> ``Output.cache``;
    ``hooks``: {name: fn(activation) -> replacement or None}. Without cache and hooks the pass is the
    plain one (softmax fused, nothing named). ``loops``: how many times the n_layers blocks are applied
    (default ``cfg.n_loops``; a looped model can run more loops than it was trained with); with
    ``cfg.input_injection`` the embedding is added to the stream before every loop after the first.
    """
    if len(w.blocks) != cfg.n_layers:
        raise ValueError(f"weights have {len(w.blocks)} blocks, config says n_layers={cfg.n_layers}")
    if tokens.dtype != w.W_E.dtype:
        raise TypeError(f"tokens are {tokens.dtype} but weights are {w.W_E.dtype}")
    loops = _loops(cfg, loops)
    tap = _tap_for(cfg, loops, cache, hooks)
    keep = {"attention": []} if attention_patterns and tap is None else None
    patterns = [f"blocks.{d}.attn.hook_pattern" for d in range(cfg.n_layers * loops)] if attention_patterns else []
    if tap is not None:  # with hooks, the patterns are the ones that flow (after any hook)
        extra = [n for n in patterns if n not in tap.names]
        tap.names.update(extra)
    h = e = embed(cfg, w, tokens, tap)
    stream = [h]
    for loop in range(loops):
        if loop and cfg.input_injection:
            h = h + e
        for layer, p in enumerate(w.blocks):
            if tap is None:
                h = block(cfg, p, h, keep, layer)
            else:
                h = tapped_block(cfg, p, h, tap, layer, loop * cfg.n_layers + layer)
            stream.append(h)
    out = readout(cfg, w, h, tap)
    if tap is not None:
        keep = {"attention": [tap.cache[n] for n in patterns]} if attention_patterns else None
        for n in extra:
            del tap.cache[n]
    return Output(
        out=out,
        residuals=stream if residuals else None,
        attention=keep["attention"] if keep else None,
        cache=tap.cache if tap is not None else None,
    )
