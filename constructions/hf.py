"""Conversion between HuggingFace GPT-2 and the one forward pass (:mod:`constructions.model`).

GPT-2 is exactly a configuration of our model: pre-LayerNorm blocks, causal softmax attention with
inverse temperature 1/sqrt(Dh), a tanh-GELU MLP, learned positions and a final LayerNorm. We feed it
``inputs_embeds`` rather than token ids, so the converted model has

    d_in  = d_model, W_E = identity, b_E = 0   (the token features are the embeddings)
    d_out = d_model, W_U = identity, b_U = 0   (the readout is the final hidden state, after ln_f)

and ``forward(cfg, w, inputs_embeds[None]).out[0]`` equals GPT-2's ``last_hidden_state``. The token
embedding table ``wte`` is not used by the forward pass; :func:`from_gpt2` keeps it in
``w.extra["wte"]`` so that :func:`to_gpt2` gives back the same module.

GPT-2 stores its linear maps as ``Conv1D`` with weight (in, out), i.e. ``y = x @ W + b``, the same
orientation as ours. ``c_attn`` (D, 3 D) is [Q | K | V] along the output axis, and inside each of the
three the heads are contiguous chunks of Dh columns; ``attn.c_proj`` (D, D) reads the concatenated
heads, so its rows split into H chunks of Dh.

transformers is an optional dependency (``pip install theory-testbed[hf]``); it is imported only
inside the functions that need it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from constructions.model import MLP, Attention, Block, ModelConfig, Norm, Weights, check_weights

# HuggingFace activation name -> our ``mlp`` kind (same function, up to rounding), and back.
_FROM_HF_ACTIVATION = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
_TO_HF_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}

# State-dict entries GPT-2 may carry that are not weights (causal-mask buffers of older versions).
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "constructions.hf needs the optional dependency transformers: pip install theory-testbed[hf]"
        ) from err
    return transformers


# ----------------------------------------------------------------------------------------------
# Config


def config_from_gpt2(hf_config) -> ModelConfig:
    """Our config for a ``GPT2Config``; ValueError naming the field if GPT-2 uses a variant we lack."""
    unsupported = {
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
    }
    for name, supported in unsupported.items():
        if getattr(hf_config, name, supported) != supported:
            raise ValueError(f"GPT2Config.{name}={getattr(hf_config, name)!r} is not supported (need {supported})")
    activation = getattr(hf_config, "activation_function", "gelu_new")
    if activation not in _FROM_HF_ACTIVATION:
        raise ValueError(
            f"GPT2Config.activation_function={activation!r} is not supported; "
            f"supported are {sorted(_FROM_HF_ACTIVATION)}"
        )
    D, H = int(hf_config.n_embd), int(hf_config.n_head)
    if D % H:
        raise ValueError(f"GPT2Config.n_embd={D} is not divisible by n_head={H}")
    return ModelConfig(
        d_model=D, n_layers=int(hf_config.n_layer), n_heads=H, d_head=D // H, d_in=D, d_out=D,
        d_mlp=int(hf_config.n_inner or 4 * D), attention="softmax",
        beta=None if getattr(hf_config, "scale_attn_weights", True) else 1.0,
        mask="causal", mlp=_FROM_HF_ACTIVATION[activation], norm="layernorm", final_norm=True,
        residual=True, bias=True, n_positions=int(hf_config.n_positions),
        norm_eps=float(hf_config.layer_norm_epsilon),
    )


def gpt2_incompatibilities(cfg: ModelConfig) -> list[str]:
    """The fields of ``cfg`` that no GPT-2 can express (empty when :func:`to_gpt2` can convert it)."""
    wanted = dict(attention="softmax", mask="causal", norm="layernorm", final_norm=True, residual=True, bias=True)
    problems = [f"{k}={getattr(cfg, k)!r} (GPT-2 has {v!r})" for k, v in wanted.items() if getattr(cfg, k) != v]
    if cfg.mlp not in _TO_HF_ACTIVATION:
        problems.append(f"mlp={cfg.mlp!r} (GPT-2 supports {sorted(_TO_HF_ACTIVATION)})")
    if not cfg.d_in == cfg.d_out == cfg.d_model:
        problems.append(f"d_in={cfg.d_in}, d_out={cfg.d_out} (GPT-2 needs both equal to d_model={cfg.d_model})")
    if cfg.n_heads * cfg.d_head != cfg.d_model:
        problems.append(f"n_heads*d_head={cfg.n_heads * cfg.d_head} (GPT-2 needs d_model={cfg.d_model})")
    if cfg.n_positions < 1:
        problems.append("n_positions=0 (GPT-2 has learned positions)")
    if cfg.beta is not None and not any(math.isclose(cfg.beta, b) for b in (1.0, cfg.d_head**-0.5)):
        problems.append(f"beta={cfg.beta!r} (GPT-2 has 1/sqrt(d_head) or 1)")
    return problems


def gpt2_config(cfg: ModelConfig, vocab_size: int = 1, attn_implementation: str | None = None):
    """A ``GPT2Config`` (dropout off) with the same shape and variant as ``cfg``."""
    problems = gpt2_incompatibilities(cfg)
    if problems:
        raise ValueError("config is not GPT-2-compatible: " + "; ".join(problems))
    special = {} if vocab_size > 50256 else dict(bos_token_id=None, eos_token_id=None)
    return _transformers().GPT2Config(
        vocab_size=vocab_size, n_positions=cfg.n_positions, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function=_TO_HF_ACTIVATION[cfg.mlp],
        layer_norm_epsilon=cfg.norm_eps, scale_attn_weights=cfg.beta is None or not math.isclose(cfg.beta, 1.0),
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation=attn_implementation, **special,
    )


# ----------------------------------------------------------------------------------------------
# Weights


def _taker(sd: dict[str, Tensor]):
    """``take(key, shape)``: pop ``sd[key]`` after asserting its shape; a fresh contiguous copy."""

    def take(key: str, shape: tuple[int, ...]) -> Tensor:
        t = sd.pop(key)
        assert tuple(t.shape) == shape, f"{key}: GPT-2 has shape {tuple(t.shape)}, expected {shape}"
        return t.detach().clone(memory_format=torch.contiguous_format)

    return take


def from_gpt2(gpt2_model) -> tuple[ModelConfig, Weights]:
    """Config and weights (K = 1) of a HuggingFace ``GPT2Model`` (or the base of ``GPT2LMHeadModel``)."""
    model = getattr(gpt2_model, "base_model", gpt2_model)
    cfg = config_from_gpt2(model.config)
    D, H, Dh, M = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith(_IGNORED_SUFFIXES)}
    take = _taker(sd)
    dtype, device = model.wpe.weight.dtype, model.wpe.weight.device
    blocks = []
    for i in range(cfg.n_layers):
        p = f"h.{i}."
        qkv = take(p + "attn.c_attn.weight", (D, 3 * D)).view(D, 3, H, Dh).permute(1, 2, 0, 3)  # (3, H, D, Dh)
        b_qkv = take(p + "attn.c_attn.bias", (3 * D,)).view(3, H, Dh)
        attn = Attention(
            W_Q=qkv[0][None].contiguous(), W_K=qkv[1][None].contiguous(), W_V=qkv[2][None].contiguous(),
            W_O=take(p + "attn.c_proj.weight", (D, D)).view(1, H, Dh, D),
            b_Q=b_qkv[0][None].clone(), b_K=b_qkv[1][None].clone(), b_V=b_qkv[2][None].clone(),
            b_O=take(p + "attn.c_proj.bias", (D,))[None],
        )
        mlp = MLP(
            W_in=take(p + "mlp.c_fc.weight", (D, M))[None], b_in=take(p + "mlp.c_fc.bias", (M,))[None],
            W_out=take(p + "mlp.c_proj.weight", (M, D))[None], b_out=take(p + "mlp.c_proj.bias", (D,))[None],
        )
        ln1 = Norm(w=take(p + "ln_1.weight", (D,))[None], b=take(p + "ln_1.bias", (D,))[None])
        ln2 = Norm(w=take(p + "ln_2.weight", (D,))[None], b=take(p + "ln_2.bias", (D,))[None])
        blocks.append(Block(attn=attn, mlp=mlp, ln1=ln1, ln2=ln2))
    eye = torch.eye(D, dtype=dtype, device=device)[None]
    w = Weights(
        W_E=eye.clone(), b_E=torch.zeros(1, D, dtype=dtype, device=device), blocks=blocks,
        W_pos=take("wpe.weight", (cfg.n_positions, D))[None],
        ln_f=Norm(w=take("ln_f.weight", (D,))[None], b=take("ln_f.bias", (D,))[None]),
        W_U=eye.clone(), b_U=torch.zeros(1, D, dtype=dtype, device=device),
    )
    if "wte.weight" in sd:
        w.extra["wte"] = take("wte.weight", tuple(sd["wte.weight"].shape))
    if sd:
        raise ValueError(f"from_gpt2: GPT-2 weights not converted: {sorted(sd)}")
    check_weights(cfg, w)
    return cfg, w


def _check_identity_io(w: Weights, k: int) -> None:
    D = w.W_E.shape[-1]
    eye = torch.eye(D, dtype=w.W_E.dtype, device=w.W_E.device)
    for name, value, want in (("W_E", w.W_E[k], eye), ("W_U", w.W_U[k], eye),
                              ("b_E", w.b_E[k], eye[0] * 0), ("b_U", w.b_U[k], eye[0] * 0)):
        if not torch.equal(value, want):
            raise ValueError(f"to_gpt2: GPT-2 reads inputs_embeds and returns hidden states, so {name} "
                             f"must be {'the identity' if name.startswith('W') else 'zero'}")


def to_gpt2(cfg: ModelConfig, w: Weights, k: int = 0, attn_implementation: str | None = None):
    """Model ``k`` of the batch as a HuggingFace ``GPT2Model`` (eval mode, dropout off); inverse of
    :func:`from_gpt2`. The token table is ``w.extra["wte"]`` when present, else one zero row.
    ``attn_implementation`` ("eager", "sdpa", ...) is passed to HuggingFace (None: its default)."""
    D, H, Dh = cfg.d_model, cfg.n_heads, cfg.d_head
    wte = w.extra.get("wte")
    if wte is None:
        wte = torch.zeros(1, D, dtype=w.W_E.dtype, device=w.W_E.device)
    config = gpt2_config(cfg, wte.shape[0], attn_implementation)  # first: rejects what GPT-2 lacks
    check_weights(cfg, w)
    if not 0 <= k < w.K:
        raise IndexError(f"to_gpt2: model index k={k} out of range for K={w.K}")
    _check_identity_io(w, k)
    sd = {"wte.weight": wte, "wpe.weight": w.W_pos[k], "ln_f.weight": w.ln_f.w[k], "ln_f.bias": w.ln_f.b[k]}
    for i, b in enumerate(w.blocks):
        p, a = f"h.{i}.", b.attn
        qkv = torch.stack([a.W_Q[k], a.W_K[k], a.W_V[k]])  # (3, H, D, Dh)
        sd |= {
            p + "ln_1.weight": b.ln1.w[k], p + "ln_1.bias": b.ln1.b[k],
            p + "attn.c_attn.weight": qkv.permute(2, 0, 1, 3).reshape(D, 3 * D),
            p + "attn.c_attn.bias": torch.stack([a.b_Q[k], a.b_K[k], a.b_V[k]]).reshape(3 * D),
            p + "attn.c_proj.weight": a.W_O[k].reshape(H * Dh, D), p + "attn.c_proj.bias": a.b_O[k],
            p + "ln_2.weight": b.ln2.w[k], p + "ln_2.bias": b.ln2.b[k],
            p + "mlp.c_fc.weight": b.mlp.W_in[k], p + "mlp.c_fc.bias": b.mlp.b_in[k],
            p + "mlp.c_proj.weight": b.mlp.W_out[k], p + "mlp.c_proj.bias": b.mlp.b_out[k],
        }
    model = _transformers().GPT2Model(config)
    model = model.to(dtype=w.W_E.dtype, device=w.W_E.device)
    target = {key: v for key, v in model.state_dict().items() if not key.endswith(_IGNORED_SUFFIXES)}
    assert set(target) == set(sd), f"to_gpt2: key mismatch {sorted(set(target) ^ set(sd))}"
    for key, t in sd.items():
        assert target[key].shape == t.shape, f"{key}: GPT-2 expects {tuple(target[key].shape)}, got {tuple(t.shape)}"
    model.load_state_dict(sd, strict=False)
    return model.eval()


def gpt2_hidden_states(gpt2_model, inputs_embeds: Tensor) -> list[Tensor]:
    """GPT-2's hidden states (L + 1 tensors (B, T, D)) on ``inputs_embeds`` (B, T, D), in eval mode.

    Entry 0 is the embedding (inputs plus positions) and entry i < L the residual after block i, as
    in ``forward(..., residuals=True).residuals``; HuggingFace applies ln_f to the last entry, so it
    equals our readout ``out`` rather than ``residuals[L]``.
    """
    was_training = gpt2_model.training
    gpt2_model.eval()
    try:
        with torch.no_grad():
            result = gpt2_model(inputs_embeds=inputs_embeds, output_hidden_states=True)
    finally:
        gpt2_model.train(was_training)
    return list(result.hidden_states)
