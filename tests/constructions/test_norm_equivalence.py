"""Pre-LN -> Pre-RMSNorm -> Pre-CRMSNorm (constructions.approx.norm_equivalence): identical outputs and
streams for random and GPT-2-initialised models, K at once, float64 and float32; preconditions."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings

from constructions import model as M
from constructions.approx import norm_equivalence as N
from constructions.check.contract import Built
from constructions.check.run import run_check
from constructions.check.strategies import cases

F64 = torch.float64


def _outputs(cfg, w, tokens):
    return M.forward(cfg, w, tokens, residuals=True)


@pytest.mark.parametrize("target", N.TARGETS)
def test_k_models_transform_at_once_with_identical_outputs_in_float64(target):
    gen = torch.Generator().manual_seed(0)
    cfg, w = N.random_pre_ln(gen, d_model=6, n_layers=3, T=5, K=3)
    tokens = torch.randn(4, 5, 3, generator=gen, dtype=F64)
    new_cfg, new_w = N.transform(cfg, w, target)
    ref, new = _outputs(cfg, w, tokens), _outputs(new_cfg, new_w, tokens)
    assert (new.out - ref.out).abs().max() < 1e-13
    for h_new, h_ref in zip(new.residuals, ref.residuals):  # the stream is (LN stream) P, first D(-1)
        centred = h_ref - h_ref.mean(-1, keepdim=True)
        assert (h_new - centred[..., :h_new.shape[-1]]).abs().max() < 1e-13
    assert new_cfg.norm == target and new_cfg.d_model == 6 - (target == "crmsnorm")


def test_crmsnorm_model_is_one_coordinate_narrower_and_needs_no_norm_biases():
    cfg, w = N.random_pre_ln(torch.Generator().manual_seed(1), 5, 2, 4)
    _, new_w = N.to_crmsnorm(cfg, w)
    sd = M.to_state_dict(new_w)
    assert new_w.W_E.shape[-1] == 4 and not any(k.endswith(("ln1.b", "ln_f.b")) for k in sd)
    assert all(torch.equal(t, torch.ones_like(t)) for k, t in sd.items() if k.endswith(".w"))


@pytest.mark.parametrize("target", N.TARGETS)
def test_float32_models_agree_within_the_documented_tolerance(target):
    """float32 weights transformed in float32: round-off ~ L * D * 6e-8 on O(1) activations, inside
    FLOAT32_TOLERANCE = 1e-5 (measured max over these seeds ~7e-7)."""
    worst = 0.0
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        cfg, w = N.random_pre_ln(gen, 8, 3, 6, K=2, dtype=torch.float32)
        tokens = torch.randn(4, 6, 3, generator=gen)
        ref = M.forward(cfg, w, tokens).out
        got = M.forward(*N.transform(cfg, w, target), tokens).out
        worst = max(worst, float((got - ref).abs().max() / ref.abs().max().clamp(min=1)))
    assert worst < N.FLOAT32_TOLERANCE


def test_gpt2_initialised_models_transform_too():
    """model.init: gains 1, zero biases, small weights (the trained-from-scratch starting point)."""
    cfg = M.ModelConfig(d_model=8, n_layers=2, n_heads=2, d_head=4, d_in=3, d_mlp=16, norm="layernorm",
                        final_norm=True, n_positions=6)
    w = M.init(cfg, [torch.Generator().manual_seed(s) for s in range(2)], std=0.3, dtype=F64)
    tokens = torch.randn(3, 6, 3, generator=torch.Generator().manual_seed(9), dtype=F64)
    ref = M.forward(cfg, w, tokens).out
    for target in N.TARGETS:
        assert (M.forward(*N.transform(cfg, w, target), tokens).out - ref).abs().max() < 1e-14


@pytest.mark.parametrize("attention, qk_source, residual", [("linear", "residual", True), ("relu", "residual", False),
                                                            ("softmax", "positions", True)])
def test_other_attention_kinds_positions_and_no_residual_transform_exactly(attention, qk_source, residual):
    gen = torch.Generator().manual_seed(2)
    cfg, _ = N.random_pre_ln(gen, 5, 2, 4)
    cfg = dataclasses.replace(cfg, attention=attention, qk_source=qk_source, n_qk_positions=4 * (qk_source == "positions"),
                              residual=residual)
    sd = {k: torch.randn(s, generator=gen, dtype=F64) / 2 for k, s in M.weight_shapes(cfg, 1).items()}
    w = M.from_state_dict(sd)
    tokens = torch.randn(2, 4, 3, generator=gen, dtype=F64)
    ref = M.forward(cfg, w, tokens).out
    for target in N.TARGETS:
        assert (M.forward(*N.transform(cfg, w, target), tokens).out - ref).abs().max() < 1e-12


@pytest.mark.parametrize("c", [N.RMS, N.CRMS], ids=lambda c: c.name)
def test_every_layer_matches_on_random_models_and_the_check_catches_mutations(c):
    """Property over d_model, prompt length and depth. Not vacuous: errors() compares every layer's
    stream and the output, and perturbed weights fail (run_check with mutated=True)."""

    @settings(max_examples=10)
    @given(cases(c))
    def prop(case):
        assert max(c.errors(c.build(case), case).values()) <= c.bound

    prop()
    assert run_check(c, seed=2, n_cases=3).passed
    assert run_check(c, seed=2, n_cases=3, mutated=True).caught is True


def test_softmax_key_bias_is_dropped_because_softmax_ignores_it():
    cfg, w = N.random_pre_ln(torch.Generator().manual_seed(3), 4, 1, 3)
    _, new = N.to_rmsnorm(cfg, w)
    assert new.blocks[0].attn.b_K.abs().max() == 0 and w.blocks[0].attn.b_K.abs().max() > 0


@pytest.mark.parametrize("change, match", [
    ({"norm": "rmsnorm"}, "needs a Pre-LN model"),
    ({"final_norm": False}, "needs final_norm=True"),
    ({"mlp_input": "concat"}, "needs mlp_input='residual'"),
])
def test_models_outside_the_theorem_are_refused_with_the_field_named(change, match):
    cfg, w = N.random_pre_ln(torch.Generator().manual_seed(4), 4, 1, 3)
    cfg = dataclasses.replace(cfg, **change)
    if change.get("norm") == "rmsnorm" or change.get("final_norm") is False or "mlp_input" in change:
        sd = {k: torch.ones(s, dtype=F64) for k, s in M.weight_shapes(cfg, 1).items()}
        w = M.from_state_dict(sd)
    with pytest.raises(ValueError, match=match):
        N.transform(cfg, w, "rmsnorm")


def test_a_model_without_biases_needs_zero_layernorm_biases():
    cfg, w = N.random_pre_ln(torch.Generator().manual_seed(5), 4, 1, 3)
    cfg = dataclasses.replace(cfg, bias=False)
    sd = {k: v for k, v in M.to_state_dict(w).items() if k in M.weight_shapes(cfg, 1)}
    with pytest.raises(ValueError, match=r"bias=False but LayerNorm bias \S+\.b is nonzero"):
        N.transform(cfg, M.from_state_dict(sd), "crmsnorm")
    sd = {k: (torch.zeros_like(v) if k.endswith(".b") else v) for k, v in sd.items()}
    assert isinstance(Built(*N.transform(cfg, M.from_state_dict(sd), "crmsnorm")), Built)


@pytest.mark.parametrize("target", N.TARGETS)
def test_a_trained_pre_ln_model_transforms_with_identical_outputs(target):
    """Train a GPT-2-initialised Pre-LN model (K = 2, float64) for 40 AdamW steps on a random
    regression of its outputs with the batched trainer, then transform it. Not vacuous: training
    moves the LayerNorm gains and biases off their init (1 and 0), so the folding is exercised on
    the weights a trained model has; the outputs still agree to float64 round-off."""
    from experiments.training.fit import fit
    from experiments.training.optim import FlatSpec

    gen = torch.Generator().manual_seed(3)
    cfg, _ = N.random_pre_ln(gen, d_model=6, n_layers=2, T=5)
    spec = FlatSpec.of(cfg)
    theta = spec.flatten(M.init(cfg, [torch.Generator().manual_seed(s) for s in (0, 1)], dtype=F64))
    tokens = torch.randn(16, 5, cfg.d_in, generator=gen, dtype=F64)
    y = torch.randn(16, 5, cfg.d_out, generator=gen, dtype=F64)
    loss = lambda th, x, t: (M.forward(cfg, spec.unflatten(th), x).out - t).pow(2).flatten(1).mean(1)
    res = fit(loss, theta, [{"lr": 1e-2}] * 2, steps=40, batches=lambda _s: (tokens, y), decay=spec.decay_mask(F64))
    w = spec.unflatten(res.theta)
    assert (w.blocks[0].ln1.w - 1).abs().max() > 1e-2 and w.blocks[0].ln1.b.abs().max() > 1e-2
    new_cfg, new_w = N.transform(cfg, w, target)
    ref, got = M.forward(cfg, w, tokens).out, M.forward(new_cfg, new_w, tokens).out
    assert (got - ref).abs().max() < 1e-13
