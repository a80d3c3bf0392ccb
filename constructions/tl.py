"""Export to TransformerLens: model ``index`` of a batch as a TransformerLens model with hooks.

TransformerLens 4 removed ``HookedTransformer``; a model built from a config is now a
``TransformerBridge`` around its TL-native transformer (``TransformerBridge.boot_native(
TransformerBridgeConfig(...))``), with HookedTransformer's hook names (``blocks.{l}.attn.hook_pattern``,
``run_with_cache``, ``start_at_layer``) and its parameter conventions: TL's own converter
(``convert_tl_checkpoint``) reads a state dict in HookedTransformer's property format,

    W_Q, W_K, W_V [n_heads, d_model, d_head]   b_Q, b_K, b_V [n_heads, d_head]
    W_O [n_heads, d_head, d_model]   b_O [d_model]   W_in [d_model, d_mlp]   W_out [d_mlp, d_model]
    W_E [d_vocab, d_model]   W_pos [n_ctx, d_model]   W_U [d_model, d_vocab_out]   ln*.w, ln*.b

which is exactly our layout with the model axis K dropped (:func:`tl_state_dict`). So the export is a
re-keying, no transposes of ours. Our model reads real-valued token features, not token ids, so
TL's token table is ``W_E`` (d_vocab = d_in: a one-hot token i embeds to row i; ``b_E`` has no TL
place) and **the inputs are residuals**: :func:`tl_predictions` runs our embedding
(:func:`constructions.model.embed`, positions included) and feeds it to TL with
``start_at_layer=0``. The readout is TL's unembedding (d_vocab_out = d_out, with ``b_U``).

Variants (config fields of :class:`~constructions.config.ModelConfig`):
    softmax attention, causal / full mask   TL's own attention; ``beta`` is ``attn_scale = 1 / beta``
                  (TL divides the scores by attn_scale), or, where TL refuses that scale (beta = 1
                  with d_head > 1; beta <= 0), folded into W_Q and b_Q of those layers
    linear, linear_sum, relu, normalized attention, the ``exclude_query`` mask
                  a permanent hook on ``blocks.{l}.attn.hook_pattern`` recomputes the pattern from
                  that layer's q and k (captured at ``attn.q.hook_out`` / ``attn.k.hook_out``) with
                  :data:`constructions.model.ATTENTION_WEIGHTS`; TL multiplies the values by it, so
                  ``run_with_cache`` shows and patching edits the pattern that is used
    mlp 'identity'  TL's MLP with act_fn relu, and a permanent hook on ``blocks.{l}.mlp.out.hook_in``
                  (the activation) that puts back the pre-activation captured at ``mlp.in.hook_out``
    final_norm=False with a block norm   TL's final norm (unit gain) with a permanent hook that
                  puts back its input (``ln_final.hook_out`` returns ``ln_final.hook_in``)
    norm none / layernorm / rmsnorm (final norm the same), mlp none (attn_only) / relu / gelu /
                  gelu_tanh (TL's gelu_new), bias off (zero biases), looped models (the blocks
                  repeated n_loops times)
    rejected with one ValueError listing every field TL cannot express (:func:`tl_incompatibilities`):
                  qk_source='positions', crmsnorm, residual=False, mlp_input='concat',
                  input_injection, no blocks

The hooks are not weights: a state dict loaded into a bare ``boot_native`` model runs softmax
attention, a ReLU MLP and a final norm. :func:`bridge_from_config` rebuilds the hooks from the
``ttb_config`` entry that :func:`tl_config_dict` puts beside TL's fields (TL's ``from_dict`` ignores
unknown keys).

Numerics: TL's RMSNorm normalises in float32 whatever the model's dtype, so an rmsnorm model agrees
to float32 round-off (~1e-7) even in float64; everything else runs in the model's dtype.

Shapes: B prompts, T tokens, D = d_model, H heads of width Dh, Din / Dout token feature / readout
widths; TL's tensors have no model axis K (one model is exported).

transformer-lens is an optional dependency (``pip install -e ".[tl]"``), imported inside the
functions that need it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from constructions.model import ATTENTION_WEIGHTS, ModelConfig, Weights, check_weights, embed, key_mask

# Our mlp / norm kinds -> TransformerLens's act_fn / normalization_type.
ACT_FN = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new"}
NORMALIZATION = {"none": None, "layernorm": "LN", "rmsnorm": "RMS"}
DEFAULT_N_CTX = 1024  # TL bakes its causal mask at n_ctx tokens; a model without positions gets this
EXTRA = 'pip install -e ".[tl]"'


def require_transformer_lens():
    """(TransformerBridge with boot_native, TransformerBridgeConfig, convert_tl_checkpoint)."""
    try:
        import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
        from transformer_lens import TransformerBridge
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
    except ImportError as err:
        raise ImportError(f"exporting to TransformerLens needs the optional dependency transformer-lens>=4 "
                          f"(TransformerBridge.boot_native): {EXTRA} ({err})") from err
    return TransformerBridge, TransformerBridgeConfig, convert_tl_checkpoint


# ----------------------------------------------------------------------------------------------
# Config


def tl_incompatibilities(cfg: ModelConfig) -> list[str]:
    """The fields of ``cfg`` TransformerLens cannot express, even with hooks (empty: exportable)."""
    problems = []
    if cfg.qk_source != "residual":
        problems.append(f"qk_source={cfg.qk_source!r} (TL computes queries and keys from the stream)")
    if cfg.norm not in NORMALIZATION:
        problems.append(f"norm={cfg.norm!r} (TL has {sorted(NORMALIZATION)})")
    if cfg.mlp not in ("none", "identity", *ACT_FN):
        problems.append(f"mlp={cfg.mlp!r} (TL has 'none', 'identity' (by a hook) and {sorted(ACT_FN)})")
    if not cfg.residual:
        problems.append("residual=False (TL blocks always add to the stream)")
    if cfg.mlp_input != "residual":
        problems.append(f"mlp_input={cfg.mlp_input!r} (TL's MLP reads the stream)")
    if cfg.input_injection:
        problems.append("input_injection=True (TL has no input injection between loops)")
    if cfg.n_layers * cfg.n_loops < 1:
        problems.append("n_layers=0 (TL's start_at_layer needs at least one block)")
    return problems


def depth(cfg: ModelConfig) -> int:
    """Blocks TL runs: the n_layers blocks, n_loops times (a looped model is unrolled)."""
    return cfg.n_layers * cfg.n_loops


def hook_summary(cfg: ModelConfig) -> str:
    """What the hooks of :func:`install_hooks` do for ``cfg``, in words ("" when there are none)."""
    parts = [f"blocks {hooked_layers(cfg)} recompute their attention pattern"] if hooked_layers(cfg) else []
    parts += ["every MLP is the identity"] if cfg.mlp == "identity" else []
    parts += ["the final norm is skipped"] if _skips_final_norm(cfg) else []
    return " and ".join(parts)


def _skips_final_norm(cfg: ModelConfig) -> bool:
    """TL's final norm is the block norm, always applied: a hook undoes it where ours has none."""
    return cfg.norm != "none" and not cfg.final_norm


def hooked_layers(cfg: ModelConfig) -> list[int]:
    """TL blocks whose attention pattern a hook recomputes: every kind but softmax, and every layer
    under the exclude_query mask (TL masks causally or not at all)."""
    return [d for d in range(depth(cfg))
            if cfg.attention_kind(d % cfg.n_layers) != "softmax" or cfg.mask == "exclude_query"]


def _attn_scale(cfg: ModelConfig) -> float | None:
    """TL's attn_scale for softmax layers (it divides q.k by it), or None where TL refuses 1/beta
    (TL raises for attn_scale 1 with d_head > 1, and ignores scales <= 0): then beta is folded."""
    if cfg.beta is None:
        return -1.0  # TL's sentinel for sqrt(d_head)
    if cfg.beta <= 0 or (cfg.d_head > 1 and math.isclose(1.0 / cfg.beta, 1.0, abs_tol=1e-9)):
        return None
    return 1.0 / cfg.beta


def tl_config_dict(cfg: ModelConfig, *, n_ctx: int | None = None) -> dict:
    """The ``TransformerBridgeConfig`` fields (JSON types) of a TL model equal to ``cfg``, plus
    ``ttb_config`` (our config, which TL ignores) for the hooks; ValueError naming what TL lacks.
    An identity MLP is TL's act_fn relu, replaced by a hook."""
    problems = tl_incompatibilities(cfg)
    if problems:
        raise ValueError("model is not exportable to TransformerLens: " + "; ".join(problems))
    n_ctx = (cfg.n_positions or DEFAULT_N_CTX) if n_ctx is None else n_ctx
    if not isinstance(n_ctx, int) or n_ctx < max(cfg.n_positions, 1):
        raise ValueError(f"n_ctx must be an int >= n_positions={max(cfg.n_positions, 1)}, got {n_ctx!r}")
    scale = _attn_scale(cfg)
    return dict(
        d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads, n_layers=depth(cfg), n_ctx=n_ctx,
        d_vocab=cfg.d_in, d_vocab_out=cfg.d_out, d_mlp=cfg.d_mlp if cfg.mlp != "none" else None,
        attn_only=cfg.mlp == "none", act_fn=ACT_FN.get(cfg.mlp, "relu"),
        normalization_type=NORMALIZATION[cfg.norm], eps=float(cfg.norm_eps),
        attention_dir="causal" if cfg.mask == "causal" else "bidirectional",
        attn_scale=-1.0 if scale is None else scale, positional_embedding_type="standard",
        architecture="TransformerLensNative", init_weights=False, ttb_config=cfg.to_dict(),
    )


# ----------------------------------------------------------------------------------------------
# Weights


def _or_zeros(t: Tensor | None, k: int, shape, like: Tensor) -> Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device) if t is None else t[k]


def _norm(sd: dict, prefix: str, p, k: int) -> None:
    if p is not None:
        sd[prefix + "w"] = p.w[k]
        if p.b is not None:
            sd[prefix + "b"] = p.b[k]


def tl_state_dict(cfg: ModelConfig, w: Weights, index: int = 0, *, n_ctx: int | None = None
                  ) -> dict[str, Tensor]:
    """Model ``index``'s weights in HookedTransformer's property format (``blocks.0.attn.W_Q``
    [n_heads, d_model, d_head], ...): absent biases are zeros, positions are padded with zeros to
    n_ctx rows, a looped model's blocks repeat, and beta is folded into W_Q, b_Q of the unhooked
    softmax layers where TL cannot scale by it."""
    check_weights(cfg, w)
    if not 0 <= index < w.K:
        raise IndexError(f"model index {index} out of range: the weights hold K={w.K} models")
    k, D, like = index, cfg.d_model, w.W_E
    W_pos = torch.zeros(tl_config_dict(cfg, n_ctx=n_ctx)["n_ctx"], D, dtype=like.dtype, device=like.device)
    if w.W_pos is not None:
        W_pos[: cfg.n_positions] = w.W_pos[k]
    sd = {"embed.W_E": w.W_E[k], "pos_embed.W_pos": W_pos, "unembed.W_U": w.W_U[k],
          "unembed.b_U": _or_zeros(w.b_U, k, (cfg.d_out,), like)}
    _norm(sd, "ln_final.", w.ln_f, k)
    if _skips_final_norm(cfg):  # TL's final norm is there (and undone by a hook): unit gain, no bias
        sd["ln_final.w"] = torch.ones(D, dtype=like.dtype, device=like.device)
        if cfg.norm == "layernorm":
            sd["ln_final.b"] = torch.zeros(D, dtype=like.dtype, device=like.device)
    fold = 1.0 if _attn_scale(cfg) is not None else cfg.softmax_beta * math.sqrt(cfg.d_head)
    hooked = set(hooked_layers(cfg))
    for d in range(depth(cfg)):
        b, p = w.blocks[d % cfg.n_layers], f"blocks.{d}."
        c = 1.0 if d in hooked else fold
        a, head = b.attn, (cfg.n_heads, cfg.d_head)
        sd |= {p + "attn.W_Q": a.W_Q[k] * c, p + "attn.b_Q": _or_zeros(a.b_Q, k, head, like) * c,
               p + "attn.W_K": a.W_K[k], p + "attn.b_K": _or_zeros(a.b_K, k, head, like),
               p + "attn.W_V": a.W_V[k], p + "attn.b_V": _or_zeros(a.b_V, k, head, like),
               p + "attn.W_O": a.W_O[k], p + "attn.b_O": _or_zeros(a.b_O, k, (D,), like)}
        _norm(sd, p + "ln1.", b.ln1, k)
        if cfg.mlp != "none":
            m = b.mlp
            sd |= {p + "mlp.W_in": m.W_in[k], p + "mlp.b_in": _or_zeros(m.b_in, k, (cfg.d_mlp,), like),
                   p + "mlp.W_out": m.W_out[k], p + "mlp.b_out": _or_zeros(m.b_out, k, (D,), like)}
            _norm(sd, p + "ln2.", b.ln2, k)
    return {key: t.detach().clone() for key, t in sd.items()}


# ----------------------------------------------------------------------------------------------
# The TransformerLens model


def _pattern_hooks(cfg: ModelConfig, kind: str):
    """(keep q, keep k, pattern) hook functions for one block: the pattern hook replaces TL's
    softmax pattern (B, H, T, T) by ours, from the q, k (B, T, H, Dh) the block just computed."""
    seen: dict[str, Tensor] = {}

    def keep(name):
        def hook(t, hook):
            seen[name] = t
        return hook

    def pattern(softmax_pattern, hook):
        q, k = seen.pop("q").transpose(1, 2), seen.pop("k").transpose(1, 2)  # (B, H, T, Dh)
        visible = key_mask(cfg.mask, q.shape[-2], q.device)
        return ATTENTION_WEIGHTS[kind](cfg, q @ k.transpose(-1, -2), visible).to(softmax_pattern.dtype)

    return keep("q"), keep("k"), pattern


def _pass_through_hooks():
    """(keep an input, replace an output by it): an identity MLP activation, a skipped final norm."""
    seen: dict[str, Tensor] = {}

    def keep(given, hook):
        seen["in"] = given

    def replace(computed, hook):
        return seen.pop("in")

    return keep, replace


def install_hooks(model, cfg: ModelConfig) -> None:
    """The permanent hooks (they survive ``reset_hooks``) that make TL compute what ``cfg`` says:
    the pattern of every block of :func:`hooked_layers`, an identity MLP's activation, and a final
    norm that ours does not have."""
    for d in hooked_layers(cfg):
        keep_q, keep_k, pattern = _pattern_hooks(cfg, cfg.attention_kind(d % cfg.n_layers))
        at = f"blocks.{d}.attn."
        model.add_hook(at + "q.hook_out", keep_q, is_permanent=True)
        model.add_hook(at + "k.hook_out", keep_k, is_permanent=True)
        model.add_hook(at + "hook_pattern", pattern, is_permanent=True)
    passes = [(f"blocks.{d}.mlp.in.hook_out", f"blocks.{d}.mlp.out.hook_in") for d in range(depth(cfg))
              if cfg.mlp == "identity"]
    passes += [("ln_final.hook_in", "ln_final.hook_out")] if _skips_final_norm(cfg) else []
    for given, computed in passes:
        keep, replace = _pass_through_hooks()
        model.add_hook(given, keep, is_permanent=True)
        model.add_hook(computed, replace, is_permanent=True)


def _bridge_config(config: dict):
    """TL's TransformerBridgeConfig of a :func:`tl_config_dict` dict (without our ttb_config)."""
    return require_transformer_lens()[1].from_dict({key: v for key, v in config.items() if key != "ttb_config"})


def bridge_from_config(config: dict, *, dtype=torch.float32, device=None):
    """An (untrained) TL model for a :func:`tl_config_dict` dict, with its hooks (:func:`install_hooks`)."""
    model = require_transformer_lens()[0].boot_native(_bridge_config(config), dtype=dtype, device=device)
    if config.get("ttb_config") is not None:
        install_hooks(model, ModelConfig.from_dict(config["ttb_config"]))
    return model.eval()


def to_hooked_transformer(cfg: ModelConfig, weights: Weights, index: int = 0, *, dtype=None,
                          n_ctx: int | None = None):
    """Model ``index`` of ``weights`` as a TransformerLens ``TransformerBridge`` (eval mode; dtype
    defaults to the weights'). ``n_ctx``: the longest prompt TL accepts (default n_positions, else
    :data:`DEFAULT_N_CTX`). ValueError naming every field TL cannot express."""
    config = tl_config_dict(cfg, n_ctx=n_ctx)  # first: rejects what TL lacks
    *_, convert_tl_checkpoint = require_transformer_lens()
    dtype = weights.W_E.dtype if dtype is None else dtype
    sd = {key: t.to(dtype) for key, t in tl_state_dict(cfg, weights, index, n_ctx=n_ctx).items()}
    model = bridge_from_config(config, dtype=dtype, device=weights.W_E.device)
    model.load_state_dict(convert_tl_checkpoint(sd, _bridge_config(config)), strict=True)
    return model


def tl_predictions(model, cfg: ModelConfig, weights: Weights, tokens: Tensor, index: int = 0) -> Tensor:
    """TL's predictions (B, T, Dout) on our tokens (B, T, Din): our embedding of model ``index``
    (positions included), in the TL model's dtype, is the residual TL starts from (``start_at_layer=0``)."""
    resid = embed(cfg, weights.select(index), tokens)[0]  # (B, T, D)
    return model(resid.to(next(model.parameters()).dtype), start_at_layer=0)
