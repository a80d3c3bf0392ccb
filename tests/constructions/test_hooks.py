"""Hook points and looped models of the one forward pass (constructions/model.py).

Every expected value is computed apart from the code under test: by hand (a readout of a shifted
embedding), by the model's own algebra (the residual adds up), by a different construction (one GD step
of c * eta), or by unrolling the loop into an ordinary deeper model. Float64 throughout; the tolerances
are round-off of a few matrix products of size <= 16 (~1e-15 relative), with a wide margin.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from constructions import model as M
from constructions.icl import gd
from constructions.reference import algorithms
from constructions.tokens import example_tokens, query_prediction

F64 = torch.float64

# Every kind of model the hooks must cover: softmax with every norm hook and learned positions,
# linear attention without an MLP, positional attention with the concat MLP, a looped model.
CONFIGS = {
    "softmax_layernorm": dict(mlp="gelu", norm="layernorm", final_norm=True, n_positions=12),
    "linear_no_mlp": dict(attention="linear", mlp="none", mask="exclude_query"),
    "positional_concat": dict(qk_source="positions", n_qk_positions=12, mlp_input="concat"),
    "looped_injection": dict(attention="relu", norm="rmsnorm", n_loops=3, input_injection=True),
}


def make(name: str, K: int = 2):
    cfg = M.ModelConfig(d_model=8, n_layers=2, n_heads=2, d_head=4, d_in=3, d_mlp=16, **CONFIGS[name])
    w = M.init(cfg, [torch.Generator().manual_seed(k) for k in range(K)], std=0.4, dtype=F64)
    for b in w.blocks:  # nonzero biases, so a hook that drops one would show
        for part in (b.attn, b.mlp) if b.mlp is not None else (b.attn,):
            for field in dataclasses.fields(part):
                if field.name.startswith("b_") and getattr(part, field.name) is not None:
                    getattr(part, field.name).normal_(0, 0.3, generator=torch.Generator().manual_seed(7))
    return cfg, w


def tokens(B: int = 5, T: int = 7, seed: int = 0):
    return torch.randn(B, T, 3, dtype=F64, generator=torch.Generator().manual_seed(seed))


def expected_shape(cfg, name: str, K: int, B: int, T: int) -> tuple[int, ...]:
    """The documented shape of a hook, from its name alone (constructions.model.hook_names)."""
    if name.endswith(("hook_q", "hook_k", "hook_v", "hook_z")):
        return (K, B, T, cfg.n_heads, cfg.d_head)
    if name.endswith(("hook_attn_scores", "hook_pattern")):
        return (K, B, cfg.n_heads, T, T)
    if name.endswith(("mlp.hook_pre", "mlp.hook_post")):
        return (K, B, T, cfg.d_mlp)
    return (K, B, T, cfg.d_model)


@pytest.mark.parametrize("name", CONFIGS)
def test_cache_returns_every_named_hook_with_its_documented_shape(name):
    cfg, w = make(name)
    run = M.forward(cfg, w, tokens(), cache=True)
    assert list(run.cache) == M.hook_names(cfg)
    for hook, value in run.cache.items():
        assert tuple(value.shape) == expected_shape(cfg, hook, 2, 5, 7), hook


def test_hook_names_follow_transformer_lens_for_a_gpt2_style_model():
    cfg, _ = make("softmax_layernorm")
    names = M.hook_names(cfg)
    assert names[:3] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
    assert names[-1] == "ln_final.hook_normalized"
    assert {f"blocks.1.{n}" for n in ("attn.hook_q", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
                                      "hook_attn_out", "hook_resid_mid", "mlp.hook_pre", "mlp.hook_post",
                                      "hook_mlp_out", "hook_resid_post")} <= set(names)


@pytest.mark.parametrize("name", CONFIGS)
def test_caching_does_not_change_the_prediction(name):
    """The cached pass runs attention unfused (softmax included): the same numbers to round-off."""
    cfg, w = make(name)
    plain = M.forward(cfg, w, tokens(), residuals=True, attention_patterns=True)
    cached = M.forward(cfg, w, tokens(), residuals=True, attention_patterns=True, cache=["blocks.0.attn.hook_z"])
    assert torch.allclose(plain.out, cached.out, atol=1e-12, rtol=0)
    for a, b in zip(plain.residuals + plain.attention, cached.residuals + cached.attention, strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    assert list(cached.cache) == ["blocks.0.attn.hook_z"]  # the patterns asked for are not added to it


def test_cached_activations_add_up_to_the_residual_stream():
    cfg, w = make("softmax_layernorm")
    run = M.forward(cfg, w, tokens(), residuals=True, cache=True)
    c = run.cache
    for layer, p in enumerate(w.blocks):
        at = f"blocks.{layer}."
        assert torch.allclose(c[at + "hook_resid_mid"], c[at + "hook_resid_pre"] + c[at + "hook_attn_out"], atol=1e-12)
        assert torch.allclose(c[at + "hook_resid_post"], c[at + "hook_resid_mid"] + c[at + "hook_mlp_out"], atol=1e-12)
        assert torch.allclose(c[at + "hook_resid_post"], run.residuals[layer + 1], atol=1e-12)
        # attn_out = sum over heads of z_h W_O[h] + b_O; the pattern rows of softmax sum to 1
        z = c[at + "attn.hook_z"]  # (K, B, T, H, Dh)
        out = torch.einsum("kbthe,khed->kbtd", z, p.attn.W_O) + p.attn.b_O[:, None, None, :]
        assert torch.allclose(c[at + "hook_attn_out"], out, atol=1e-12)
        assert torch.allclose(c[at + "attn.hook_pattern"].sum(-1), torch.ones(()).to(F64), atol=1e-12)
        assert torch.allclose(c[at + "mlp.hook_post"], torch.nn.functional.gelu(c[at + "mlp.hook_pre"]), atol=1e-12)
    assert torch.allclose(c["blocks.0.hook_resid_pre"], c["hook_embed"] + c["hook_pos_embed"], atol=1e-12)


def test_a_hook_on_the_embedding_moves_a_zero_layer_model_by_delta_times_W_U():
    """No blocks: out = embed @ W_U + b_U, so adding delta to the embedding adds delta @ W_U, exactly."""
    cfg = M.ModelConfig(d_model=4, n_layers=0, n_heads=1, d_head=4, d_in=3, d_out=2, mlp="none")
    w = M.init(cfg, [torch.Generator().manual_seed(0)], std=1.0, dtype=F64)
    delta = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    plain = M.forward(cfg, w, tokens()).out
    moved = M.forward(cfg, w, tokens(), hooks={"hook_embed": lambda h: h + delta}).out
    assert torch.allclose(moved - plain, (delta @ w.W_U[0]).expand_as(plain), atol=1e-12, rtol=0)


def gd_prediction(built, x, y, xq, **kw):
    return query_prediction(M.forward(built.cfg, built.weights, example_tokens(x, y, xq), **kw).out[0])


def gd_prompts(d: int = 3, n: int = 6, B: int = 4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, n, d, dtype=F64, generator=g) / d**0.5
    y = torch.einsum("bnd,bd->bn", x, torch.randn(B, d, dtype=F64, generator=g))
    return x, y, torch.randn(B, d, dtype=F64, generator=g) / d**0.5


@pytest.mark.parametrize("c", [0.0, 0.5, 3.0])
def test_scaling_one_gd_layers_pattern_by_c_takes_a_gd_step_of_c_eta(c):
    """Linear attention's output is linear in its pattern, and the GD layer's step is eta times that
    output: scaling the pattern by c is exactly the layer of step c * eta (c = 0: no step, prediction 0)."""
    x, y, xq = gd_prompts()
    eta = 0.4
    hooked = gd_prediction(gd.build(3, 1, eta), x, y, xq, hooks={"blocks.0.attn.hook_pattern": lambda a: c * a})
    w = algorithms.gd(x, y, eta=c * eta, n_steps=1)[-1]  # the iterates w_0, w_1: the last one
    assert torch.allclose(hooked, algorithms.predict(w, xq), atol=1e-12, rtol=0)
    if c:
        assert torch.allclose(hooked, gd_prediction(gd.build(3, 1, c * eta), x, y, xq), atol=1e-12, rtol=0)


def test_patching_the_residual_between_two_gd_constructions_swaps_their_predictions():
    """Two GD constructions of one shape, steps eta and 2 eta: replacing the 1-step model's final residual
    by the other's gives the other's prediction exactly (the readouts are equal)."""
    x, y, xq = gd_prompts()
    small, big = gd.build(3, 1, 0.2), gd.build(3, 1, 0.4)
    source = M.forward(big.cfg, big.weights, example_tokens(x, y, xq), cache=["blocks.0.hook_resid_post"])
    patched = gd_prediction(small, x, y, xq,
                            hooks={"blocks.0.hook_resid_post": lambda h: source.cache["blocks.0.hook_resid_post"]})
    assert torch.allclose(patched, gd_prediction(big, x, y, xq), atol=1e-13, rtol=0)
    assert not torch.allclose(patched, gd_prediction(small, x, y, xq), atol=1e-3)


def test_hooked_attention_patterns_are_the_ones_returned():
    cfg, w = make("linear_no_mlp")
    run = M.forward(cfg, w, tokens(), attention_patterns=True,
                    hooks={"blocks.1.attn.hook_pattern": lambda a: torch.zeros_like(a)})
    assert run.attention[1].abs().max() == 0 and run.attention[0].abs().max() > 0


def test_an_unknown_hook_name_fails_naming_it():
    cfg, w = make("linear_no_mlp")
    with pytest.raises(ValueError, match="blocks.5.hook_resid_post"):
        M.forward(cfg, w, tokens(), cache=["blocks.5.hook_resid_post"])
    with pytest.raises(ValueError, match="blocks.0.mlp.hook_pre"):  # this model has no MLP
        M.forward(cfg, w, tokens(), hooks={"blocks.0.mlp.hook_pre": lambda a: a})


def test_a_hook_returning_the_wrong_shape_fails_naming_the_hook():
    cfg, w = make("linear_no_mlp")
    with pytest.raises(ValueError, match="hook 'blocks.0.hook_attn_out' returned shape"):
        M.forward(cfg, w, tokens(), hooks={"blocks.0.hook_attn_out": lambda a: a[..., :2]})


# ---------------------------------------------------------------------------------------------
# Looped models


def unrolled(cfg, w, loops: int):
    """The ordinary model with the looped group's blocks copied `loops` times."""
    flat = dataclasses.replace(cfg, n_layers=cfg.n_layers * loops, n_loops=1, input_injection=False,
                               layer_attention=None if cfg.layer_attention is None else cfg.layer_attention * loops)
    return flat, dataclasses.replace(w, blocks=list(w.blocks) * loops)


@pytest.mark.parametrize("loops", [1, 2, 5])
def test_a_looped_model_equals_its_unrolled_copy(loops):
    cfg, w = make("softmax_layernorm")
    looped = dataclasses.replace(cfg, n_loops=loops)
    flat_cfg, flat_w = unrolled(looped, w, loops)
    a = M.forward(looped, w, tokens(), residuals=True)
    b = M.forward(flat_cfg, flat_w, tokens(), residuals=True)
    assert len(a.residuals) == 2 * loops + 1
    assert torch.allclose(a.out, b.out, atol=1e-12, rtol=0)


def test_input_injection_adds_the_embedding_before_every_loop_after_the_first():
    cfg, w = make("looped_injection")
    run = M.forward(cfg, w, tokens(), residuals=True)
    e = M.embed(cfg, w, tokens())
    h = e
    for loop in range(3):
        h = h + e if loop else h
        for layer, p in enumerate(w.blocks):
            h = M.block(cfg, p, h, layer=layer)
    assert torch.allclose(run.residuals[-1], h, atol=1e-12, rtol=0)
    no_injection = M.forward(dataclasses.replace(cfg, input_injection=False), w, tokens())
    assert not torch.allclose(run.out, no_injection.out, atol=1e-3)


def test_loops_runs_a_looped_model_for_any_count_and_hooks_count_applied_blocks():
    cfg, w = make("looped_injection")
    run = M.forward(cfg, w, tokens(), loops=5, cache=["blocks.9.hook_resid_post"], residuals=True)
    assert len(run.residuals) == 2 * 5 + 1
    assert torch.equal(run.cache["blocks.9.hook_resid_post"], run.residuals[-1])
    assert len(M.hook_names(cfg, loops=5)) == len(M.hook_names(dataclasses.replace(cfg, n_loops=5)))
    with pytest.raises(ValueError, match="loops must be an int >= 1"):
        M.forward(cfg, w, tokens(), loops=0)


def test_an_unlooped_configs_dict_is_unchanged_and_a_looped_one_round_trips():
    cfg, _ = make("softmax_layernorm")
    assert "n_loops" not in cfg.to_dict() and "input_injection" not in cfg.to_dict()
    looped, _ = make("looped_injection")
    assert M.ModelConfig.from_dict(looped.to_dict()) == looped
    with pytest.raises(ValueError, match="n_loops must be >= 1"):
        dataclasses.replace(looped, n_loops=0)


@pytest.mark.parametrize("beta", [-0.5, 0.7])
def test_fused_softmax_equals_the_unfused_pattern_for_any_sign_of_beta(beta):
    """The fused kernel's causal path once returned NaN for a negative inverse temperature."""
    cfg = M.ModelConfig(d_model=8, n_layers=1, n_heads=2, d_head=4, d_in=3, mlp="none", beta=beta)
    w = M.init(cfg, [torch.Generator().manual_seed(0)], std=0.5, dtype=F64)
    fused = M.forward(cfg, w, tokens()).out
    unfused = M.forward(cfg, w, tokens(), attention_patterns=True).out
    assert torch.isfinite(fused).all()
    assert torch.allclose(fused, unfused, atol=1e-12, rtol=0)
