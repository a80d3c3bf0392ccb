"""TransformerLens as an oracle for the export (constructions/tl.py): the exported model, fed our
embedding as its residual (``start_at_layer=0``), predicts what our forward pass predicts, and
``run_with_cache``'s attention patterns are ours.

Not vacuous: our GPT-2 init (std 0.02, zero biases, unit gains) makes attention nearly uniform and
hides every bias, so a converter that swapped Q and K or dropped b_Q would still pass. The weights
here are drawn with std 0.5 (attention scores of order 1) and then every bias and norm gain is
perturbed by N(0, 0.3); model 1 of a batch of two is exported, so reading model 0 fails.
:func:`test_tl_reading_the_other_model_of_the_batch_disagrees` and
:func:`test_removing_the_permanent_hooks_changes_the_predictions` check that power.

Tolerances. float32 has unit round-off 6e-8; outputs are of order 1-5 and come out of sums of at
most M = 16 products per matmul, two blocks and LayerNorms (which divide by a standard deviation of
order 1). TL sums in a different order (q, k, v by separate matmuls; an unfused softmax where ours
is fused), so the two passes differ by a few eps * |out| * sqrt(16) per layer: ~1e-6 observed,
and 1e-5 leaves a margin of ten. float64 by the same argument gives ~1e-15 (observed 1e-15); 1e-10
leaves room for the larger outputs of unnormalised (linear_sum, normalized) attention, whose
differences are compared relative to max(1, |out|) for that reason.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformer_lens")

from constructions import model as M  # noqa: E402
from constructions import registry, tl  # noqa: E402
from constructions.tokens import example_tokens, query_prediction  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
GPT2 = dict(d_model=8, n_layers=2, n_heads=2, d_head=4, d_in=3, d_out=2, d_mlp=16, mlp="gelu_tanh",
            norm="layernorm", final_norm=True, n_positions=8)


def random_weights(cfg: M.ModelConfig, dtype=torch.float64, seed: int = 0) -> M.Weights:
    """Two models with order-one scores and every bias and gain perturbed away from 0 and 1."""
    gens = [torch.Generator().manual_seed(seed + k) for k in range(2)]
    sd = M.to_state_dict(M.init(cfg, gens, std=0.5, dtype=dtype))
    noise = torch.Generator().manual_seed(seed + 100)
    for key, t in sd.items():
        if key.split(".")[-1].startswith("b") or key.endswith(".w"):
            sd[key] = t + 0.3 * torch.randn(t.shape, generator=noise, dtype=dtype)
    return M.from_state_dict(sd)


def tokens(cfg: M.ModelConfig, dtype=torch.float64, T: int = 7) -> torch.Tensor:
    return torch.randn(3, T, cfg.d_in, generator=torch.Generator().manual_seed(7), dtype=dtype)


def difference(cfg: M.ModelConfig, w: M.Weights, x: torch.Tensor, index: int = 1) -> float:
    """max |TL - ours| / max(1, max |ours|) for model ``index`` (exported afresh). Ours runs
    unfused (``attention_patterns=True``): the fused softmax gives NaN for beta < 0."""
    model = tl.to_hooked_transformer(cfg, w, index)
    ours = M.forward(cfg, w, x, attention_patterns=True).out[index]
    return ((tl.tl_predictions(model, cfg, w, x, index) - ours).abs().max() / ours.abs().max().clamp(min=1)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mlp", ["gelu", "gelu_tanh", "relu"])
def test_gpt2_style_softmax_models_predict_the_same_in_tl(mlp, dtype):
    cfg = M.ModelConfig(**{**GPT2, "mlp": mlp})
    w, x = random_weights(cfg, dtype), tokens(cfg, dtype)
    model = tl.to_hooked_transformer(cfg, w, 1)
    got, want = tl.tl_predictions(model, cfg, w, x, 1), M.forward(cfg, w, x).out[1]
    assert got.dtype == dtype and got.shape == want.shape == (3, 7, cfg.d_out)
    assert (got - want).abs().max().item() <= TOL[dtype]


def test_tl_reading_the_other_model_of_the_batch_disagrees():
    """The comparison has power: model 0's predictions are far from model 1's export."""
    cfg = M.ModelConfig(**GPT2)
    w, x = random_weights(cfg), tokens(cfg)
    model = tl.to_hooked_transformer(cfg, w, 1)
    assert (tl.tl_predictions(model, cfg, w, x, 1) - M.forward(cfg, w, x).out[0]).abs().max() > 0.1


def test_tl_run_with_cache_shows_our_attention_patterns():
    cfg = M.ModelConfig(**GPT2)
    w, x = random_weights(cfg), tokens(cfg)
    model = tl.to_hooked_transformer(cfg, w, 1)
    _, cache = model.run_with_cache(M.embed(cfg, w.select(1), x)[0], start_at_layer=0)
    ours = M.forward(cfg, w, x, attention_patterns=True).attention
    for layer in range(cfg.n_layers):
        theirs = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert theirs.shape == ours[layer][1].shape == (3, cfg.n_heads, 7, 7)
        assert (theirs - ours[layer][1]).abs().max().item() <= TOL[torch.float64]
        assert ours[layer][1].std(-1).max() > 0.05  # far from uniform: the comparison can tell heads apart


@pytest.mark.parametrize("overrides", [
    dict(attention="linear", mask="exclude_query"),
    dict(attention="linear_sum", mask="full"),
    dict(attention="relu", mask="causal", bias=False),
    dict(attention="normalized", mask="exclude_query", mlp="none", norm="none"),
    dict(attention="softmax", mask="exclude_query", beta=0.7),
    dict(layer_attention=("linear", "softmax"), mask="causal", mlp="identity", final_norm=False),
], ids=["linear", "linear_sum-full", "relu-no-bias", "normalized-attn-only", "softmax-exclude-query",
        "mixed-identity-mlp-no-final-norm"])
def test_attention_kinds_and_masks_tl_lacks_export_through_hooks(overrides):
    cfg = M.ModelConfig(**{**GPT2, **overrides})
    w, x = random_weights(cfg), tokens(cfg)
    assert difference(cfg, w, x) <= TOL[torch.float64]
    model = tl.to_hooked_transformer(cfg, w, 1)
    _, cache = model.run_with_cache(M.embed(cfg, w.select(1), x)[0], start_at_layer=0)
    ours = M.forward(cfg, w, x, attention_patterns=True).attention
    for layer in range(cfg.n_layers):
        assert (cache[f"blocks.{layer}.attn.hook_pattern"] - ours[layer][1]).abs().max() <= TOL[torch.float64]


def test_removing_the_permanent_hooks_changes_the_predictions():
    """The hooks carry the linear attention: reset_hooks() keeps them, dropping them breaks the model."""
    cfg = M.ModelConfig(**{**GPT2, "attention": "linear", "mask": "exclude_query"})
    w, x = random_weights(cfg), tokens(cfg)
    model, want = tl.to_hooked_transformer(cfg, w, 1), M.forward(cfg, w, x).out[1]
    model.reset_hooks()
    assert (tl.tl_predictions(model, cfg, w, x, 1) - want).abs().max() <= TOL[torch.float64]
    model.reset_hooks(including_permanent=True)
    assert (tl.tl_predictions(model, cfg, w, x, 1) - want).abs().max() > 0.01


@pytest.mark.parametrize("beta", [1.0, 0.3, -0.5])
def test_softmax_inverse_temperature_is_tl_attn_scale_or_folded_into_queries(beta):
    """beta = 0.3 is attn_scale = 1/0.3; TL refuses attn_scale 1 (d_head > 1) and ignores scales <= 0,
    so beta = 1 and beta = -0.5 are folded into W_Q and b_Q."""
    cfg = M.ModelConfig(**{**GPT2, "beta": beta})
    w, x = random_weights(cfg), tokens(cfg)
    assert difference(cfg, w, x) <= TOL[torch.float64]


def test_looped_model_is_unrolled_into_repeated_blocks():
    cfg = M.ModelConfig(**{**GPT2, "n_loops": 2, "attention": "relu"})
    w, x = random_weights(cfg), tokens(cfg)
    assert tl.tl_config_dict(cfg)["n_layers"] == 4
    assert difference(cfg, w, x) <= TOL[torch.float64]


def test_rmsnorm_models_agree_to_float32_roundoff_even_in_float64():
    """TL's RMSNorm normalises in float32 whatever the dtype: 1e-5 is float32's tolerance above."""
    cfg = M.ModelConfig(**{**GPT2, "norm": "rmsnorm"})
    w, x = random_weights(cfg), tokens(cfg)
    assert difference(cfg, w, x) <= TOL[torch.float32]


@pytest.mark.parametrize("name", ["gd", "newton"])
def test_linear_self_attention_constructions_predict_the_same_in_tl(name):
    """gd (von Oswald et al.: linear attention, exclude_query mask, no MLP) and newton (identity MLP)."""
    c = registry.get(name)
    case = c.sample(torch.Generator().manual_seed(3), d=3, n=6, depth=2)
    built = c.build(case)
    x = example_tokens(case.x, case.y, case.x_query)
    model = tl.to_hooked_transformer(built.cfg, built.weights)
    got = query_prediction(tl.tl_predictions(model, built.cfg, built.weights, x)[None])
    want = query_prediction(M.forward(built.cfg, built.weights, x).out)
    assert want.abs().max() > 0.05  # a real prediction, not zeros on both sides
    assert (got - want).abs().max().item() <= TOL[torch.float64]


@pytest.mark.parametrize("overrides, field", [
    (dict(qk_source="positions", n_qk_positions=8), "qk_source"),
    (dict(norm="crmsnorm"), "norm='crmsnorm'"),
    (dict(residual=False), "residual"),
    (dict(mlp_input="concat"), "mlp_input"),
    (dict(n_loops=2, input_injection=True), "input_injection"),
    (dict(n_layers=0), "n_layers"),
])
def test_what_tl_cannot_express_fails_with_one_line_naming_the_field(overrides, field):
    cfg = M.ModelConfig(**{**GPT2, **overrides})
    with pytest.raises(ValueError, match=field) as err:
        tl.to_hooked_transformer(cfg, M.init(cfg, [torch.Generator().manual_seed(0)]))
    assert "\n" not in str(err.value)


def test_model_index_out_of_range_is_an_index_error():
    cfg = M.ModelConfig(**GPT2)
    with pytest.raises(IndexError, match="K=2"):
        tl.to_hooked_transformer(cfg, random_weights(cfg), 2)
