"""HuggingFace GPT-2 as an oracle for the one forward pass (constructions/model.py).

A small random GPT-2 is converted with :func:`constructions.hf.from_gpt2` and both models run on the
same ``inputs_embeds``; every hidden state must agree. The comparison is not vacuous: HuggingFace
initialises LayerNorm gains to 1 and every bias to 0, and its matrices with std 0.02, which makes
attention nearly uniform (a converter that swapped Q and K, or misread the head order, would still
pass). So every parameter is redrawn first: gains around 1, biases of order 1, matrices with std
1/sqrt(fan_in) so attention scores are of order 1 and patterns far from uniform;
:func:`test_a_converter_that_swaps_queries_and_keys_fails_the_comparison` checks that this power is real.

Tolerances. fp32 has unit roundoff 2^-24 ~ 6e-8 (eps ~ 1.2e-7). Each hidden entry is of order 1-10
and comes out of a few sums of D = 32 or M = 128 products per layer; summation error grows like
eps * sqrt(n) * |entry|, a few 1e-6 at worst over 3 layers, and LayerNorm divides by a standard
deviation of order 1, so it does not amplify much. Observed differences are ~1e-6; atol = rtol = 1e-5
leaves a margin of about 10. In float64 the same argument gives ~1e-14; we use 1e-12.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from constructions import hf  # noqa: E402
from constructions.model import (  # noqa: E402
    ModelConfig,
    forward,
    from_state_dict,
    load_weights,
    save_weights,
    to_state_dict,
)

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
N_LAYER, N_EMBD, N_HEAD, N_POSITIONS = 3, 32, 4, 16


def random_gpt2(seed: int = 0, dtype=torch.float32, attn_implementation: str = "eager", **overrides):
    """A small GPT-2 (eval mode, dropout off) with every parameter redrawn at order-one scale."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, n_positions=N_POSITIONS, vocab_size=11,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        attn_implementation=attn_implementation, **overrides,
    )
    model = transformers.GPT2Model(config).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[0]))
            else:
                p.normal_(1.0 if "ln" in name and name.endswith("weight") else 0.0, 0.5)
    return model


def compare(gpt2, cfg, w, x):
    """Both lists of hidden states; HF applies ln_f to its last one, so ours ends with ``out``."""
    theirs = hf.gpt2_hidden_states(gpt2, x)
    ours = forward(cfg, w, x, residuals=True)
    assert len(theirs) == len(ours.residuals) == cfg.n_layers + 1
    return theirs, list(ours.residuals[:-1]) + [ours.out]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_every_hidden_state_of_gpt2_matches_the_forward_pass(dtype, attn_implementation):
    gpt2 = random_gpt2(dtype=dtype, attn_implementation=attn_implementation)
    cfg, w = hf.from_gpt2(gpt2)
    x = torch.randn(4, N_POSITIONS, N_EMBD, dtype=dtype)
    theirs, ours = compare(gpt2, cfg, w, x)
    for layer, (a, b) in enumerate(zip(theirs, ours)):
        torch.testing.assert_close(b[0], a, atol=TOL[dtype], rtol=TOL[dtype], msg=f"hidden state {layer}")


def test_the_converted_attention_is_far_from_uniform():
    gpt2 = random_gpt2()
    cfg, w = hf.from_gpt2(gpt2)
    patterns = forward(cfg, w, torch.randn(2, N_POSITIONS, N_EMBD), attention_patterns=True).attention
    assert all(p[..., -1, :].max() > 0.3 for p in patterns)  # uniform over 16 keys would be 1/16


def test_a_converter_that_swaps_queries_and_keys_fails_the_comparison():
    gpt2 = random_gpt2()
    cfg, w = hf.from_gpt2(gpt2)
    for b in w.blocks:
        b.attn.W_Q, b.attn.W_K = b.attn.W_K, b.attn.W_Q
        b.attn.b_Q, b.attn.b_K = b.attn.b_K, b.attn.b_Q
    theirs, ours = compare(gpt2, cfg, w, torch.randn(2, N_POSITIONS, N_EMBD))
    assert (theirs[-1] - ours[-1][0]).abs().max() > 1000 * TOL[torch.float32]


def test_a_prompt_shorter_than_n_positions_uses_the_first_positions():
    gpt2 = random_gpt2(seed=1)
    cfg, w = hf.from_gpt2(gpt2)
    x = torch.randn(3, 5, N_EMBD)
    theirs, ours = compare(gpt2, cfg, w, x)
    torch.testing.assert_close(ours[-1][0], theirs[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpt2_to_weights_and_back_is_the_identity(dtype):
    gpt2 = random_gpt2(seed=2, dtype=dtype)
    back = hf.to_gpt2(*hf.from_gpt2(gpt2), attn_implementation="eager")
    original, restored = gpt2.state_dict(), back.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert original[key].dtype == restored[key].dtype, key
        assert torch.equal(original[key], restored[key]), key
    x = torch.randn(2, 7, N_EMBD, dtype=dtype)
    for a, b in zip(hf.gpt2_hidden_states(gpt2, x), hf.gpt2_hidden_states(back, x)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_converted_weights_survive_safetensors_and_still_match_gpt2(tmp_path):
    gpt2 = random_gpt2(seed=5)
    save_weights(tmp_path / "gpt2.safetensors", *hf.from_gpt2(gpt2))
    cfg, w = load_weights(tmp_path / "gpt2.safetensors")
    x = torch.randn(2, 9, N_EMBD)
    theirs, ours = compare(gpt2, cfg, w, x)
    torch.testing.assert_close(ours[-1][0], theirs[-1], atol=1e-5, rtol=1e-5)


def test_to_gpt2_picks_model_k_of_a_batch():
    cfg, w0 = hf.from_gpt2(random_gpt2(seed=3))
    _, w1 = hf.from_gpt2(random_gpt2(seed=4))
    sd0, sd1 = to_state_dict(w0), to_state_dict(w1)
    batch = from_state_dict({key: torch.cat([sd0[key], sd1[key]]) for key in sd0})
    x = torch.randn(2, 6, N_EMBD)
    theirs = hf.gpt2_hidden_states(hf.to_gpt2(cfg, batch, k=1), x)[-1]
    torch.testing.assert_close(forward(cfg, w1, x).out[0], theirs, atol=1e-5, rtol=1e-5)


def test_the_converted_config_is_gpt2():
    cfg = hf.config_from_gpt2(random_gpt2().config)
    assert (cfg.norm, cfg.final_norm, cfg.mlp, cfg.attention, cfg.mask) == (
        "layernorm", True, "gelu_tanh", "softmax", "causal")
    assert (cfg.d_in, cfg.d_out, cfg.d_mlp, cfg.d_head, cfg.beta) == (32, 32, 128, 8, None)
    assert hf.config_from_gpt2(transformers.GPT2Config(scale_attn_weights=False)).beta == 1.0


@pytest.mark.parametrize("field, value", [
    ("activation_function", "silu"), ("scale_attn_by_inverse_layer_idx", True),
    ("reorder_and_upcast_attn", True), ("add_cross_attention", True),
])
def test_an_unsupported_gpt2_config_is_rejected_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        hf.config_from_gpt2(transformers.GPT2Config(**{field: value}))


@pytest.mark.parametrize("field, value", [
    ("norm", "rmsnorm"), ("mask", "full"), ("attention", "linear"), ("mlp", "identity"), ("d_out", 1),
    ("bias", False), ("beta", 0.3),
])
def test_a_config_gpt2_cannot_express_is_rejected_by_name(field, value):
    cfg, w = hf.from_gpt2(random_gpt2())
    bad = ModelConfig.from_dict({**cfg.to_dict(), field: value})
    with pytest.raises(ValueError, match=field):
        hf.to_gpt2(bad, w)


def test_to_gpt2_rejects_an_embedding_that_is_not_the_identity():
    cfg, w = hf.from_gpt2(random_gpt2())
    w.W_E = 2 * w.W_E
    with pytest.raises(ValueError, match="W_E"):
        hf.to_gpt2(cfg, w)


def test_a_missing_transformers_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install theory-testbed\[hf\]"):
        hf.to_gpt2(*hf.from_gpt2(random_gpt2()))
