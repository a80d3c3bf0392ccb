"""Garg et al. 2022's in-context regression GPT-2 ("What Can Transformers Learn In-Context?") as a
model of the one forward pass (:mod:`constructions.model`).

Their model is a read-in, a HuggingFace GPT-2 backbone fed ``inputs_embeds``, and a read-out:

    zs  = x_1, y_1, x_2, y_2, ...      x token: x (d wide); y token: (y, 0, ..., 0), y in coordinate 0
    h   = GPT2Model(zs @ A^T + a)      A = _read_in.weight (D, d), a = _read_in.bias (D,)
    out = h @ c^T + c0                 c = _read_out.weight (1, D), c0 = _read_out.bias (1,)
    prediction i = out[2 i, 0]         read at the x tokens

Ours reads the interleaved tokens of :mod:`constructions.tokens`, x token (x, 0) and y token
(0, ..., 0, y) with d_in = d + 1, so the same function is

    W_E[0:d] = A^T          an x token gives sum_j x_j A[:, j] + 0 * W_E[d]: their x @ A^T
    W_E[d]   = A[:, 0]      a y token gives y A[:, 0] + 0 * W_E[0:d]: their (y, 0, ..., 0) @ A^T
    b_E      = a
    blocks, W_pos, ln_f     from :func:`constructions.hf.from_gpt2` on their backbone (exact: GPT-2
                            is a configuration of our model, see that module)
    W_U = c^T (D, 1), b_U = c0, and :func:`constructions.tokens.interleaved_predictions` reads
    out[..., 0::2, 0], their ``prediction[:, ::2, 0]``.

Why it is exact: every step computes the same products and sums of the same numbers; the embedding
only adds terms that are exactly zero (the empty slot of each token times a weight), so the two
models differ by floating-point summation order alone (round-off, not approximation). n_positions
is their 2 * n_positions (one position per token); the MLP is GPT-2's tanh GELU (``gelu_new``).

The backbone's token table ``wte`` is never read (they feed ``inputs_embeds``): it is neither
checked for shape nor kept. Older HuggingFace versions saved the causal-mask buffers
(``attn.bias``, ``attn.masked_bias``) in the state dict; they are not weights and are skipped.
The state dict's shapes fix n_dims, n_embd, n_layer and n_positions (a mismatch is an error naming
the size), but not n_head: the heads split c_attn's columns without changing its shape, so a wrong
n_head converts without complaint into a different model. It must come from their config.yaml.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from constructions import hf
from constructions.model import ModelConfig, Weights, check_weights

BACKBONE = "_backbone."
SKIPPED = ("wte.weight",)  # backbone entries the forward pass never reads
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers
SIZE_NAMES = ("n_dims", "n_embd", "n_head", "n_layer", "n_positions")
# Sizes a state dict shows in its shapes: size -> (key, axis, multiple). n_head shows in none (the
# heads split c_attn's columns without changing its shape), so it must come from config.yaml.
SIZE_EVIDENCE = {"n_dims": ("_read_in.weight", 1, 1), "n_embd": ("_read_in.weight", 0, 1),
                 "n_positions": (BACKBONE + "wpe.weight", 0, 2)}


def garg_gpt2_config(n_dims: int, n_embd: int, n_head: int, n_layer: int, n_positions: int):
    """Their backbone's ``GPT2Config`` (2 * n_positions positions, dropout off), with a one-row
    token table since the token table is never read."""
    _check_sizes(n_dims=n_dims, n_embd=n_embd, n_head=n_head, n_layer=n_layer, n_positions=n_positions)
    return hf._transformers().GPT2Config(
        n_positions=2 * n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
        vocab_size=1, bos_token_id=None, eos_token_id=None,
    )


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Garg model size {name} must be a positive integer, got {value!r}")
    if sizes["n_embd"] % sizes["n_head"]:
        raise ValueError(f"Garg model sizes: n_embd={sizes['n_embd']} is not divisible by n_head={sizes['n_head']}")


def _io_shapes(n_dims: int, n_embd: int) -> dict[str, tuple[int, ...]]:
    return {"_read_in.weight": (n_embd, n_dims), "_read_in.bias": (n_embd,),
            "_read_out.weight": (1, n_embd), "_read_out.bias": (1,)}


def _checkpoint_layers(keys) -> int:
    """How many blocks the state dict holds (for the error messages)."""
    layers = {k[len(BACKBONE):].split(".")[1] for k in keys if k.startswith(BACKBONE + "h.")}
    return len(layers)


def _check_keys(state_dict: dict, expected: dict[str, tuple[int, ...]], given: dict[str, int]) -> None:
    """ValueError naming the first problem: a value that is not a tensor, a missing or unexpected
    key, a shape that disagrees (with the size that explains it where one does)."""
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"Garg state dict entry {key!r} is a {type(value).__name__}, not a tensor")
    present = {k for k in state_dict if not k.endswith(BUFFER_SUFFIXES) and k[len(BACKBONE):] not in SKIPPED}
    missing, unexpected = sorted(set(expected) - present), sorted(present - set(expected))
    found = _checkpoint_layers(state_dict)
    hint = f" (the checkpoint has {found} layers, n_layer={given['n_layer']} was given)" if found != given["n_layer"] else ""
    if missing:
        raise ValueError(f"Garg state dict lacks {len(missing)} key(s), first {missing[:3]}{hint}")
    if unexpected:
        raise ValueError(f"Garg state dict has unexpected key(s) {unexpected[:3]}{hint}")
    for name, (key, axis, scale) in SIZE_EVIDENCE.items():
        shape = tuple(state_dict[key].shape)
        if len(shape) == 2 and shape[axis] != scale * given[name]:
            raise ValueError(f"Garg state dict: {key} has shape {shape}, so the model has {name}="
                             f"{shape[axis] // scale}, but {name}={given[name]} was given")
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(f"Garg state dict: {key} has shape {tuple(state_dict[key].shape)}, "
                             f"the given sizes imply {shape}")


def _backbone_keys(state_dict: dict) -> dict[str, Tensor]:
    """The backbone's weights, named as in ``GPT2Model.state_dict()``."""
    return {k[len(BACKBONE):]: v for k, v in state_dict.items()
            if k.startswith(BACKBONE) and not k.endswith(BUFFER_SUFFIXES) and k[len(BACKBONE):] not in SKIPPED}


def _embedding_and_readout(state_dict: dict, dtype: torch.dtype) -> dict[str, Tensor]:
    """W_E (1, d + 1, D) with their y column (coordinate 0) in our y slot (row d), b_E, W_U, b_U."""
    A = state_dict["_read_in.weight"].to(dtype)  # (D, d)
    W_E = torch.cat([A.T, A[:, :1].T], dim=0)  # (d + 1, D)
    return {"W_E": W_E[None].contiguous(), "b_E": state_dict["_read_in.bias"].to(dtype)[None].clone(),
            "W_U": state_dict["_read_out.weight"].to(dtype).T[None].contiguous(),
            "b_U": state_dict["_read_out.bias"].to(dtype)[None].clone()}


def from_garg_state_dict(state_dict: dict, n_dims: int, n_embd: int, n_head: int, n_layer: int,
                         n_positions: int) -> tuple[ModelConfig, Weights]:
    """Config and weights (K = 1, the checkpoint's dtype) of Garg et al.'s ``TransformerModel``
    from its state dict (keys ``_read_in.*``, ``_backbone.*``, ``_read_out.*``); the sizes are those
    of their ``config.yaml`` (``model:`` section). ValueError naming the key or size that is wrong.
    See the module docstring for the mapping."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"Garg state dict must be a dict of tensors, got {type(state_dict).__name__}")
    config = garg_gpt2_config(n_dims, n_embd, n_head, n_layer, n_positions)
    backbone = hf._transformers().GPT2Model(config).eval()
    expected = {BACKBONE + k: tuple(v.shape) for k, v in backbone.state_dict().items()
                if not k.endswith(BUFFER_SUFFIXES) and k not in SKIPPED}
    expected |= _io_shapes(n_dims, n_embd)
    _check_keys(state_dict, expected, dict(n_dims=n_dims, n_embd=n_embd, n_positions=n_positions, n_layer=n_layer))
    dtype = state_dict["_read_in.weight"].dtype
    result = backbone.to(dtype).load_state_dict(_backbone_keys(state_dict), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert {k for k in result.missing_keys if not k.endswith(BUFFER_SUFFIXES)} <= set(SKIPPED), result.missing_keys
    cfg, w = hf.from_gpt2(backbone)
    w.extra.pop("wte", None)  # never read: not part of their model's function
    for name, value in _embedding_and_readout(state_dict, dtype).items():
        setattr(w, name, value)
    cfg = dataclasses.replace(cfg, d_in=n_dims + 1, d_out=1)
    check_weights(cfg, w)
    return cfg, w
