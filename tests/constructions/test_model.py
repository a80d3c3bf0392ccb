"""The one forward pass (constructions/model.py), checked on numbers computable by hand.

Everything runs in float64 with tolerances near machine precision: every expected value below is a
closed form (a softmax of two scores, a mean and a standard deviation, a 2 x 2 matrix product).
"""

from __future__ import annotations

import math

import pytest
import torch

from constructions import tokens as tk
from constructions.model import (
    ATTENTION_KINDS,
    ATTENTION_WEIGHTS,
    Layout,
    ModelConfig,
    attention_pattern,
    block,
    embed,
    forward,
    from_state_dict,
    init,
    load_weights,
    mlp,
    norm,
    readout,
    save_weights,
    to_state_dict,
    weight_shapes,
    zeros,
)

E = math.e
F64 = torch.float64


def config(**overrides) -> ModelConfig:
    """One attention-only layer on a 2-wide stream: W_E = W_U = identity is easy to set by hand."""
    base = dict(d_model=2, n_layers=1, n_heads=1, d_head=2, d_in=2, d_out=2, mlp="none", bias=False)
    return ModelConfig(**{**base, **overrides})


def identity_model(cfg: ModelConfig):
    """Zero weights with identity W_E, W_Q, W_K, W_V, W_O, W_U (so attention scores are x_i . x_j)."""
    w = zeros(cfg)
    eye = torch.eye(cfg.d_model, dtype=F64)
    w.W_E[0], w.W_U[0] = eye[: cfg.d_in], eye[:, : cfg.d_out]
    for b in w.blocks:
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            getattr(b.attn, name)[0, 0] = eye
    return w


def pattern(cfg, w, x):
    """The first layer's attention (T, T) for tokens x (T, Din) of a one-head model."""
    return forward(cfg, w, x[None], attention_patterns=True).attention[0][0, 0, 0]


# ----------------------------------------------------------------------------------------------
# Attention, by hand


def two_keys_with_scores_zero_and_one(**overrides):
    """q = 1 for both tokens; k_0 = 0, k_1 = 1: the scores q.k are 0 and 1 (before the factor beta)."""
    cfg = config(d_head=1, **overrides)
    w = zeros(cfg)
    w.blocks[0].attn.W_Q[0, 0] = torch.tensor([[1.0], [1.0]], dtype=F64)
    w.blocks[0].attn.W_K[0, 0] = torch.tensor([[0.0], [1.0]], dtype=F64)
    w.W_E[0] = torch.eye(2, dtype=F64)
    return cfg, w, torch.eye(2, dtype=F64)  # token 0 = (1, 0), token 1 = (0, 1)


def test_softmax_weights_two_keys_whose_scores_differ_by_one_as_one_over_one_plus_e():
    cfg, w, x = two_keys_with_scores_zero_and_one(attention="softmax", beta=1.0, mask="full")
    expected = torch.tensor([1 / (1 + E), E / (1 + E)], dtype=F64)
    torch.testing.assert_close(pattern(cfg, w, x), expected.expand(2, 2), atol=1e-15, rtol=0)


def test_softmax_inverse_temperature_multiplies_the_score_gap():
    cfg, w, x = two_keys_with_scores_zero_and_one(attention="softmax", beta=2.0, mask="full")
    torch.testing.assert_close(pattern(cfg, w, x)[0, 0], torch.tensor(1 / (1 + E**2), dtype=F64))


def test_softmax_beta_none_is_one_over_sqrt_d_head():
    cfg = config(d_head=4, mask="full")
    assert cfg.softmax_beta == 0.5
    w = zeros(cfg)
    w.blocks[0].attn.W_Q[0, 0, :, 0] = torch.tensor([1.0, 1.0], dtype=F64)
    w.blocks[0].attn.W_K[0, 0, 1, 0] = 2.0  # score 2, scaled by 1/sqrt(4) to 1
    w.W_E[0] = torch.eye(2, dtype=F64)
    torch.testing.assert_close(pattern(cfg, w, torch.eye(2, dtype=F64))[0, 1], torch.tensor(E / (1 + E), dtype=F64))


def test_causal_softmax_lets_the_first_token_see_only_itself():
    cfg, w, x = two_keys_with_scores_zero_and_one(attention="softmax", beta=1.0, mask="causal")
    expected = torch.tensor([[1.0, 0.0], [1 / (1 + E), E / (1 + E)]], dtype=F64)
    torch.testing.assert_close(pattern(cfg, w, x), expected, atol=1e-15, rtol=0)


X2 = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=F64)  # x0.x0 = 5, x0.x1 = 1, x1.x1 = 10


@pytest.mark.parametrize("mask, expected_pattern", [
    ("causal", [[5.0, 0.0], [1 / 2, 10 / 2]]),
    ("full", [[5 / 2, 1 / 2], [1 / 2, 10 / 2]]),
    ("exclude_query", [[5.0, 0.0], [1.0, 0.0]]),  # only token 0 is a key, so N = 1
])
def test_linear_attention_divides_the_scores_by_the_number_of_visible_keys(mask, expected_pattern):
    cfg = config(attention="linear", mask=mask, residual=False)
    w = identity_model(cfg)
    A = torch.tensor(expected_pattern, dtype=F64)
    torch.testing.assert_close(pattern(cfg, w, X2), A)
    torch.testing.assert_close(forward(cfg, w, X2[None]).out[0, 0], A @ X2)  # W_V = W_O = W_U = I


@pytest.mark.parametrize("mask, expected_pattern", [
    ("causal", [[5.0, 0.0], [1.0, 10.0]]), ("full", [[5.0, 1.0], [1.0, 10.0]]), ("exclude_query", [[5.0, 0.0], [1.0, 0.0]]),
])
def test_linear_sum_attention_keeps_the_scores_without_dividing_by_the_number_of_keys(mask, expected_pattern):
    cfg = config(attention="linear_sum", mask=mask, residual=False)
    A = torch.tensor(expected_pattern, dtype=F64)
    torch.testing.assert_close(pattern(cfg, identity_model(cfg), X2), A)
    torch.testing.assert_close(forward(cfg, identity_model(cfg), X2[None]).out[0, 0], A @ X2)


def test_linear_attention_output_on_two_tokens_by_hand():
    cfg = config(attention="linear", mask="causal", residual=False)
    out = forward(cfg, identity_model(cfg), X2[None]).out[0, 0]
    # token 0: 5 x0 = (5, 10); token 1: (1 x0 + 10 x1) / 2 = (15.5, -4)
    torch.testing.assert_close(out, torch.tensor([[5.0, 10.0], [15.5, -4.0]], dtype=F64))


def test_relu_attention_zeroes_negative_scores():
    cfg = config(attention="relu", mask="full")
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)  # scores [[1, -1], [-1, 1]]
    torch.testing.assert_close(pattern(cfg, identity_model(cfg), x), torch.eye(2, dtype=F64) / 2)


def test_exclude_query_never_uses_the_last_token_as_a_key():
    cfg = config(attention="linear", mask="exclude_query")
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]], dtype=F64)
    A = pattern(cfg, identity_model(cfg), x)
    assert torch.all(A[:, -1] == 0)
    torch.testing.assert_close(A[2], torch.tensor([7 / 2, 7 / 2, 0.0], dtype=F64))  # N = 2 keys


# ----------------------------------------------------------------------------------------------
# MLP and norms, by hand

MLP_INPUT = torch.tensor([-1.0, 0.0, 2.0], dtype=F64)


def gelu_tanh(v: float) -> float:
    return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


@pytest.mark.parametrize("kind, expected", [
    ("relu", [0.0, 0.0, 2.0]),
    ("identity", [-1.0, 0.0, 2.0]),
    ("gelu", [-1 * 0.15865525393145707, 0.0, 2 * 0.9772498680518208]),  # x * Phi(x)
    ("gelu_tanh", [gelu_tanh(-1.0), 0.0, gelu_tanh(2.0)]),
])
def test_mlp_with_identity_matrices_applies_its_activation_elementwise(kind, expected):
    cfg = ModelConfig(d_model=3, n_layers=1, n_heads=1, d_head=1, d_in=3, d_mlp=3, mlp=kind, bias=False)
    p = zeros(cfg).blocks[0].mlp
    p.W_in[0], p.W_out[0] = torch.eye(3, dtype=F64), torch.eye(3, dtype=F64)
    out = mlp(cfg, p, MLP_INPUT.view(1, 1, 1, 3)).flatten()
    torch.testing.assert_close(out, torch.tensor(expected, dtype=F64), atol=1e-15, rtol=1e-15)


def test_mlp_none_has_no_mlp_weights_and_the_block_is_attention_only():
    cfg = config(mlp="none", d_mlp=0)
    assert not any(".mlp." in key or ".ln2." in key for key in weight_shapes(cfg, 1))
    assert zeros(cfg).blocks[0].mlp is None


V8 = torch.tensor([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], dtype=F64)  # mean 5, std 2, rms sqrt(29)


@pytest.mark.parametrize("kind, expected", [
    ("layernorm", (V8 - 5) / 2),
    ("rmsnorm", V8 / math.sqrt(29)),
    ("none", V8),
])
def test_norm_on_a_vector_with_known_mean_and_rms(kind, expected):
    cfg = ModelConfig(d_model=8, n_layers=1, n_heads=1, d_head=1, d_in=8, mlp="none", norm=kind, norm_eps=0.0)
    w = zeros(cfg)
    p = w.blocks[0].ln1
    if p is not None:
        p.w[0] = 2.0
        if p.b is not None:
            p.b[0] = 1.0
        expected = 2 * expected + (1.0 if p.b is not None else 0.0)
    torch.testing.assert_close(norm(cfg, p, V8.view(1, 1, 1, 8)).flatten(), expected, atol=1e-15, rtol=0)


def test_turning_the_residual_off_keeps_only_the_block_output():
    x = X2[None]
    for residual, expected in ((True, X2), (False, torch.zeros(2, 2, dtype=F64))):
        cfg = config(residual=residual)
        w = identity_model(cfg)
        w.blocks[0].attn.W_O.zero_()  # the attention writes nothing
        torch.testing.assert_close(forward(cfg, w, x).out[0, 0], expected)


def test_learned_positions_are_added_to_the_embedding():
    cfg = config(n_positions=3, bias=True)
    w = identity_model(cfg)
    w.W_pos[0] = torch.arange(6, dtype=F64).view(3, 2)
    w.b_E[0] = torch.tensor([10.0, 20.0], dtype=F64)
    first = forward(cfg, w, X2[None], residuals=True).residuals[0][0, 0]
    torch.testing.assert_close(first, X2 + torch.tensor([[10.0, 21.0], [12.0, 23.0]], dtype=F64))


def test_layout_names_slices_and_labels_every_coordinate():
    layout = Layout.of(x=3, y=1, one=1)
    assert (layout["x"], layout["y"], layout.index("one"), layout.width) == (slice(0, 3), slice(3, 4), 4, 5)
    assert layout.labels() == ["x[0]", "x[1]", "x[2]", "y", "one"]
    with pytest.raises(KeyError, match="'z'"):
        layout["z"]
    with pytest.raises(ValueError, match="unique"):
        Layout((("x", 1), ("x", 2)))
    with pytest.raises(ValueError, match="width 5 but d_model is 6"):
        config(d_model=6, layout=layout)
    cfg = config(d_model=5, d_in=5, d_out=5, d_head=5, layout=layout)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# ----------------------------------------------------------------------------------------------
# Batching over models, per-layer residuals, serialisation

BIG = ModelConfig(d_model=8, n_layers=2, n_heads=2, d_head=4, d_in=3, d_out=2, d_mlp=16, mlp="gelu",
                  norm="layernorm", final_norm=True, n_positions=6)


def generators(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_k_models_in_one_call_equal_k_single_model_calls():
    w = init(BIG, generators(0, 1, 2), std=0.5, dtype=F64)
    shared = torch.randn(4, 6, 3, dtype=F64)
    per_model = torch.randn(3, 4, 6, 3, dtype=F64)
    for tokens in (shared, per_model):
        out = forward(BIG, w, tokens).out
        for k in range(3):
            single = forward(BIG, w.select(k), tokens if tokens.dim() == 3 else tokens[k]).out[0]
            torch.testing.assert_close(out[k], single, atol=1e-13, rtol=0)


def test_model_k_is_initialised_the_same_alone_or_in_a_batch():
    alone, batch = init(BIG, generators(7)), init(BIG, generators(3, 7))
    for key, value in to_state_dict(alone).items():
        assert torch.equal(value[0], to_state_dict(batch)[key][1]), key


def test_forward_returns_the_residual_after_every_layer_starting_with_the_embedding():
    w = init(BIG, generators(0, 1), std=0.5, dtype=F64)
    tokens = torch.randn(3, 5, 3, dtype=F64)
    result = forward(BIG, w, tokens, residuals=True, attention_patterns=True)
    assert len(result.residuals) == BIG.n_layers + 1 and len(result.attention) == BIG.n_layers
    torch.testing.assert_close(result.residuals[0], embed(BIG, w, tokens))
    for layer, p in enumerate(w.blocks):
        torch.testing.assert_close(result.residuals[layer + 1], block(BIG, p, result.residuals[layer]))
    torch.testing.assert_close(result.out, readout(BIG, w, result.residuals[-1]))
    assert result.attention[0].shape == (2, 3, 2, 5, 5)
    assert forward(BIG, w, tokens).residuals is None


def test_state_dict_round_trip_is_lossless():
    w = init(BIG, generators(0, 1), std=0.5)
    sd = to_state_dict(w)
    assert set(sd) == set(weight_shapes(BIG, 2))
    back = to_state_dict(from_state_dict(sd))
    assert all(torch.equal(sd[k], back[k]) for k in sd)
    with pytest.raises(KeyError, match="blocks.0.attn.W_X"):
        from_state_dict({**sd, "blocks.0.attn.W_X": sd["W_E"]})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safetensors_round_trip_is_lossless(tmp_path, dtype):
    cfg = ModelConfig.from_dict({**BIG.to_dict(), "layout": [["x", 5], ["y", 3]]})
    w = init(cfg, generators(0, 1), std=0.5, dtype=dtype)
    save_weights(tmp_path / "w.safetensors", cfg, w)
    cfg2, w2 = load_weights(tmp_path / "w.safetensors")
    assert cfg2 == cfg
    sd, sd2 = to_state_dict(w), to_state_dict(w2)
    assert sd.keys() == sd2.keys() and all(sd2[k].dtype == dtype and torch.equal(sd[k], sd2[k]) for k in sd)


def test_save_weights_replaces_a_file_whole_and_leaves_no_temporary_behind(tmp_path):
    """Saving over an existing file gives the new weights and nothing else in the folder (the bytes
    went to a temporary file renamed over the old one)."""
    path = tmp_path / "w.safetensors"
    save_weights(path, BIG, init(BIG, generators(0)))
    new = init(BIG, generators(1))
    save_weights(path, BIG, new)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    assert torch.equal(to_state_dict(load_weights(path)[1])["W_E"], to_state_dict(new)["W_E"])


def test_load_weights_rejects_shapes_that_do_not_match_the_config(tmp_path):
    w = init(BIG, generators(0))
    save_weights(tmp_path / "w.safetensors", ModelConfig.from_dict({**BIG.to_dict(), "d_mlp": 32}), w)
    with pytest.raises(ValueError, match=r"mlp.W_in has shape \(1, 8, 16\), config implies \(1, 8, 32\)"):
        load_weights(tmp_path / "w.safetensors")


# ----------------------------------------------------------------------------------------------
# Bad input fails early, with names in the message


@pytest.mark.parametrize("field, value", [("d_model", "8"), ("n_layers", 2.0), ("bias", 1), ("beta", "1")])
def test_a_wrong_typed_config_field_raises_type_error_naming_it(field, value):
    with pytest.raises(TypeError, match=f"ModelConfig.{field}"):
        config(**{field: value})


@pytest.mark.parametrize("field, value, allowed", [
    ("attention", "cosine", "softmax"), ("mask", "sliding", "exclude_query"),
    ("mlp", "swiglu", "gelu_tanh"), ("norm", "crms", "rmsnorm"),
])
def test_an_unknown_variant_raises_value_error_listing_the_allowed_ones(field, value, allowed):
    with pytest.raises(ValueError, match=f"ModelConfig.{field} must be one of .*{allowed}.*{value}"):
        config(**{field: value})


def test_attention_pattern_rejects_an_unknown_kind_naming_it_and_the_allowed_ones():
    """A kind passed to attention_pattern directly skips the config's validation; it must not be
    computed as linear attention."""
    cfg = config(attention="linear")
    h = torch.ones(1, 1, 2, 2, dtype=F64)
    allowed = ", ".join(repr(kind) for kind in ATTENTION_KINDS)
    with pytest.raises(ValueError, match=f"attention kind must be one of \\({allowed}\\), got 'cosine'"):
        attention_pattern(cfg, identity_model(cfg).blocks[0].attn, h, kind="cosine")


def test_every_attention_kind_has_its_weights_and_no_other_kind_does():
    assert set(ATTENTION_WEIGHTS) == set(ATTENTION_KINDS)


def test_an_mlp_without_width_is_rejected():
    with pytest.raises(ValueError, match="d_mlp"):
        config(mlp="relu", d_mlp=0)


def test_tokens_of_the_wrong_shape_or_dtype_are_rejected_with_the_shapes():
    w = init(BIG, generators(0, 1), dtype=F64)
    with pytest.raises(ValueError, match=r"d_in=3\).*got \(.*4, 5, 2\)"):
        forward(BIG, w, torch.zeros(4, 5, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"K=2.*got \(3, 4, 5, 3\)"):
        forward(BIG, w, torch.zeros(3, 4, 5, 3, dtype=F64))
    with pytest.raises(TypeError, match="float32.*float64"):
        forward(BIG, w, torch.zeros(4, 5, 3))


def test_exclude_query_with_a_single_token_is_rejected():
    cfg = config(mask="exclude_query")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        forward(cfg, identity_model(cfg), torch.zeros(1, 1, 2, dtype=F64))


def test_a_prompt_longer_than_n_positions_is_rejected():
    with pytest.raises(ValueError, match="7 tokens.*n_positions=6"):
        forward(BIG, init(BIG, generators(0)), torch.zeros(1, 7, 3))


# ----------------------------------------------------------------------------------------------
# Token formats


def test_example_tokens_put_each_pair_in_one_token_and_a_zero_label_on_the_query():
    x, y, xq = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([5.0, 6.0]), torch.tensor([7.0, 8.0])
    z = tk.example_tokens(x, y, xq)
    assert torch.equal(z, torch.tensor([[1.0, 2.0, 5.0], [3.0, 4.0, 6.0], [7.0, 8.0, 0.0]]))
    out = torch.arange(6.0).view(3, 2)  # (T, Dout)
    assert tk.query_prediction(out) == 4.0  # last token, first output
    with pytest.raises(ValueError, match="x_query"):
        tk.example_tokens(x, y, torch.zeros(3))
    with pytest.raises(ValueError, match="disagree"):
        tk.example_tokens(x, torch.zeros(3), xq)


def test_interleaved_tokens_alternate_x_and_y_and_predict_at_every_x():
    x, y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([5.0, 6.0])
    z = tk.interleaved_tokens(x[None], y[None])[0]  # leading batch axes pass through
    expected = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 5.0], [3.0, 4.0, 0.0], [0.0, 0.0, 6.0]])
    assert torch.equal(z, expected)
    out = torch.tensor([[10.0, -1.0], [11.0, -1.0], [12.0, -1.0], [13.0, -1.0]])
    assert torch.equal(tk.interleaved_predictions(out), torch.tensor([10.0, 12.0]))
    with pytest.raises(ValueError, match="disagree"):
        tk.interleaved_tokens(x, torch.zeros(3))


def test_garg_layout_tokens_are_d_wide_with_y_in_the_first_coordinate():
    x, y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([5.0, 6.0])
    z = tk.interleaved_y0_tokens(x[None], y[None])[0]
    assert torch.equal(z, torch.tensor([[1.0, 2.0], [5.0, 0.0], [3.0, 4.0], [6.0, 0.0]]))
    with pytest.raises(ValueError, match="disagree"):
        tk.interleaved_y0_tokens(x, torch.zeros(3))
