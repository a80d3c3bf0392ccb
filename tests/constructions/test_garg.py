"""Garg et al. 2022's in-context regression GPT-2, converted by :mod:`constructions.garg`, predicts
what their model predicts.

The oracle is a re-implementation of their ``TransformerModel`` written here from the paper's
description (read-in, HuggingFace GPT-2 backbone on ``inputs_embeds``, read-out, x and y tokens
interleaved with y in coordinate 0 of its token, predictions at the x tokens), not imported from
the code under test. Every parameter is redrawn at order-one scale (LayerNorm gains around 1 and
biases around 0 included), so that attention is far from uniform and no weight is trivially zero
or one: a converter that put their y column anywhere but our y slot, or left a bias out, changes
the predictions by order one (:func:`test_a_converter_that_leaves_the_y_slot_empty_fails`).

Tolerances. fp32 has eps ~ 1.2e-7. A prediction is of order 1-10 and comes out of L = 3 blocks of
sums of D = 32 or M = 128 products, LayerNorms that divide by standard deviations of order one,
and the read-in and read-out sums; the two models compute the same products in different orders
(our einsums against HuggingFace's addmm and its attention kernel), so they differ by summation
round-off, eps * sqrt(n) * |value| per sum, a few 1e-6 in all. atol = rtol = 1e-5 leaves a margin
of a few. In float64 the same argument gives ~1e-14; we use 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from constructions.garg import from_garg_state_dict  # noqa: E402
from constructions.model import forward  # noqa: E402
from constructions.tokens import interleaved_predictions, interleaved_tokens  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
SIZES = dict(n_dims=5, n_embd=32, n_head=4, n_layer=3, n_positions=8)


class TheirModel(nn.Module):
    """Garg et al.'s ``TransformerModel``: read-in, GPT-2 on ``inputs_embeds``, read-out at the x tokens."""

    def __init__(self, n_dims, n_positions, n_embd, n_layer, n_head, attn_implementation=None):
        super().__init__()
        config = transformers.GPT2Config(
            n_positions=2 * n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, attn_implementation=attn_implementation,
        )
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = transformers.GPT2Model(config)
        self._read_out = nn.Linear(n_embd, 1)

    @staticmethod
    def _combine(xs, ys):
        """(B, N, d), (B, N) -> (B, 2 N, d): x_1, (y_1, 0, ..., 0), x_2, ..."""
        y_tokens = torch.zeros_like(xs)
        y_tokens[..., 0] = ys
        return torch.stack([xs, y_tokens], dim=2).reshape(xs.shape[0], 2 * xs.shape[1], xs.shape[2])

    def forward(self, xs, ys):
        hidden = self._backbone(inputs_embeds=self._read_in(self._combine(xs, ys))).last_hidden_state
        return self._read_out(hidden)[:, ::2, 0]


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter redrawn: matrices with std 1 / sqrt(fan-in) (GPT-2's Conv1D stores (in, out),
    nn.Linear (out, in); positions std 0.5), gains N(1, 0.5^2), biases N(0, 0.5^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("pe.weight"):
                std, mean = 0.5, 0.0
            elif p.dim() == 2:
                std, mean = 1.0 / math.sqrt(p.shape[1] if name.startswith("_read") else p.shape[0]), 0.0
            else:
                std, mean = 0.5, 1.0 if ".ln_" in name and name.endswith("weight") else 0.0
            p.copy_(mean + std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def their_model(dtype=torch.float32, seed: int = 0, attn_implementation=None) -> TheirModel:
    return randomised(TheirModel(**SIZES, attn_implementation=attn_implementation), seed).to(dtype)


def prompts(dtype, n_points: int = SIZES["n_positions"], seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(6, n_points, SIZES["n_dims"], generator=g, dtype=dtype)
    w = torch.randn(6, SIZES["n_dims"], generator=g, dtype=dtype)
    return xs, torch.einsum("bnd,bd->bn", xs, w)


def ours(cfg, w, xs, ys):
    return interleaved_predictions(forward(cfg, w, interleaved_tokens(xs, ys)).out[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_the_converted_model_predicts_what_their_model_predicts(dtype, attn_implementation):
    model = their_model(dtype, attn_implementation=attn_implementation)
    cfg, w = from_garg_state_dict(model.state_dict(), **SIZES)
    xs, ys = prompts(dtype)
    with torch.no_grad():
        theirs = model(xs, ys)
    assert theirs.abs().max() > 1.0  # order-one predictions: the tolerance is not absolute by accident
    torch.testing.assert_close(ours(cfg, w, xs, ys), theirs, atol=TOL[dtype], rtol=TOL[dtype])


def test_shorter_prompts_use_the_first_positions_as_theirs_do():
    model = their_model(torch.float64, seed=3)
    cfg, w = from_garg_state_dict(model.state_dict(), **SIZES)
    xs, ys = prompts(torch.float64, n_points=3)
    with torch.no_grad():
        torch.testing.assert_close(ours(cfg, w, xs, ys), model(xs, ys), atol=1e-12, rtol=1e-12)


def test_a_converter_that_leaves_the_y_slot_empty_fails():
    """The comparison has power: zeroing W_E's y row (their y column) moves predictions by order one."""
    model = their_model(torch.float64)
    cfg, w = from_garg_state_dict(model.state_dict(), **SIZES)
    w.W_E[:, -1] = 0.0
    xs, ys = prompts(torch.float64)
    with torch.no_grad():
        assert (ours(cfg, w, xs, ys) - model(xs, ys)).abs().max() > 1e-1


def test_the_config_reads_interleaved_tokens_with_one_output():
    cfg, w = from_garg_state_dict(their_model().state_dict(), **SIZES)
    assert (cfg.d_in, cfg.d_out, cfg.n_positions) == (SIZES["n_dims"] + 1, 1, 2 * SIZES["n_positions"])
    assert (cfg.mlp, cfg.norm, cfg.final_norm, cfg.mask, cfg.attention) == (
        "gelu_tanh", "layernorm", True, "causal", "softmax")
    assert "wte" not in w.extra and w.W_E.dtype == torch.float32


def test_old_mask_buffers_and_a_missing_token_table_are_accepted():
    """Older transformers saved attn.bias / attn.masked_bias; the token table is never read."""
    model = their_model(torch.float64)
    sd = dict(model.state_dict())
    sd.pop("_backbone.wte.weight")
    T = 2 * SIZES["n_positions"]
    for i in range(SIZES["n_layer"]):
        sd[f"_backbone.h.{i}.attn.bias"] = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
        sd[f"_backbone.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    cfg, w = from_garg_state_dict(sd, **SIZES)
    xs, ys = prompts(torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(cfg, w, xs, ys), model(xs, ys), atol=1e-12, rtol=1e-12)


def _state_dict():
    return dict(their_model().state_dict())


@pytest.mark.parametrize("change, sizes, message", [
    (lambda sd: sd.pop("_read_out.bias"), {}, "lacks 1 key(s), first ['_read_out.bias']"),
    (lambda sd: None, {"n_dims": 4}, "_read_in.weight has shape (32, 5), so the model has n_dims=5, but n_dims=4"),
    (lambda sd: None, {"n_layer": 4}, "the checkpoint has 3 layers, n_layer=4 was given"),
    (lambda sd: None, {"n_layer": 2}, "unexpected key(s)"),
    (lambda sd: None, {"n_embd": 64}, "so the model has n_embd=32, but n_embd=64 was given"),
    (lambda sd: None, {"n_positions": 10}, "wpe.weight has shape (16, 32), so the model has n_positions=8, but"),
    (lambda sd: sd.update({"_read_out.weight": torch.zeros(2, 32)}), {}, "_read_out.weight has shape (2, 32), the given"),
    (lambda sd: sd.update(extra=torch.zeros(1)), {}, "unexpected key(s) ['extra']"),
    (lambda sd: sd.update({"_read_in.bias": [0.0]}), {}, "'_read_in.bias' is a list, not a tensor"),
    (lambda sd: None, {"n_embd": 30}, "n_embd=30 is not divisible by n_head=4"),
    (lambda sd: None, {"n_positions": 0}, "n_positions must be a positive integer"),
])
def test_a_state_dict_that_does_not_fit_the_sizes_is_one_error_naming_it(change, sizes, message):
    sd = _state_dict()
    change(sd)
    with pytest.raises(ValueError) as err:
        from_garg_state_dict(sd, **(SIZES | sizes))
    assert message in str(err.value)
