"""Forward-pass variants: positional attention, CRMSNorm, the concat MLP input."""

import pytest
import torch

from constructions import model as M


def _cfg(**kw):
    base = dict(d_model=4, n_layers=1, n_heads=1, d_head=2, d_in=4, d_mlp=3, mlp="relu")
    return M.ModelConfig(**{**base, **kw})


def test_positional_attention_pattern_is_the_same_for_every_input():
    cfg = _cfg(attention="softmax", qk_source="positions", n_qk_positions=6, mask="causal")
    w = M.init(cfg, [torch.Generator().manual_seed(0)], std=1.0, dtype=torch.float64)
    a = torch.randn(3, 5, 4, dtype=torch.float64)
    b = 100 * torch.randn(3, 5, 4, dtype=torch.float64)
    pa = M.forward(cfg, w, a, attention_patterns=True).attention[0]
    pb = M.forward(cfg, w, b, attention_patterns=True).attention[0]
    assert torch.equal(pa, pb) and pa.shape == (1, 3, 1, 5, 5)
    assert w.blocks[0].attn.W_Q.shape == (1, 1, 6, 2)


def test_positional_attention_reads_row_t_as_position_t():
    """Query at position 1 and keys at positions 0, 1 with scores 0 and 1: weights 1/(1+e), e/(1+e)."""
    cfg = _cfg(attention="softmax", beta=1.0, qk_source="positions", n_qk_positions=2, mlp="none", d_mlp=0)
    w = M.zeros(cfg)
    w.blocks[0].attn.W_Q[0, 0, 1, 0] = 1.0
    w.blocks[0].attn.W_K[0, 0, 1, 0] = 1.0
    p = M.forward(cfg, w, torch.zeros(1, 2, 4, dtype=torch.float64), attention_patterns=True).attention[0]
    e = torch.e
    assert p[0, 0, 0, 1].tolist() == pytest.approx([1 / (1 + e), e / (1 + e)])


def test_positional_attention_refuses_a_longer_prompt():
    cfg = _cfg(qk_source="positions", n_qk_positions=3)
    w = M.zeros(cfg)
    with pytest.raises(ValueError, match="n_qk_positions=3"):
        M.forward(cfg, w, torch.zeros(1, 4, 4, dtype=torch.float64))


def test_crmsnorm_equals_rmsnorm_of_the_zero_mean_completion():
    """h = (1, 2) stands for z = (1, 2, -3): rms(z) = sqrt(14/3), so the output is h / sqrt(14/3)."""
    cfg = _cfg(d_model=2, d_in=2, norm="crmsnorm", norm_eps=0.0, mlp="none", d_mlp=0)
    g = M.Norm(w=torch.ones(1, 2, dtype=torch.float64))
    h = torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 1, 1, 2)
    assert M.norm(cfg, g, h).flatten().tolist() == pytest.approx([1 / (14 / 3) ** 0.5, 2 / (14 / 3) ** 0.5])


def test_concat_mlp_reads_stream_and_attention_and_replaces_the_stream():
    cfg = _cfg(mlp="identity", d_mlp=1, mlp_input="concat", attention="linear", mask="full")
    w = M.zeros(cfg)
    w.W_E[0] = torch.eye(4, dtype=torch.float64)
    assert w.blocks[0].mlp.W_in.shape == (1, 8, 1)
    w.blocks[0].mlp.W_in[0, 0, 0] = 1.0  # reads stream coordinate 0 only
    w.blocks[0].mlp.W_out[0, 0, 1] = 1.0  # writes it to coordinate 1
    h = torch.tensor([[[3.0, 5.0, 7.0, 9.0]]], dtype=torch.float64)
    run = M.forward(cfg, w, h, residuals=True)
    assert run.residuals[1].flatten().tolist() == [0.0, 3.0, 0.0, 0.0]


@pytest.mark.parametrize("field, value, match", [
    ("qk_source", "keys", "qk_source must be one of"),
    ("mlp_input", "sum", "mlp_input must be one of"),
    ("norm", "batchnorm", "norm must be one of"),
])
def test_bad_variant_choices_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**{field: value})


def test_positional_attention_needs_positions():
    with pytest.raises(ValueError, match="n_qk_positions must be >= 1"):
        _cfg(qk_source="positions")
