"""Depth use (experiments.analysis.depth): contributions, skipped blocks and layer-to-layer linear maps,
anchored to models whose answers follow by hand."""

from __future__ import annotations

import pytest
import torch

from constructions import model as M
from constructions.icl import gd
from experiments.analysis import core as an
from experiments.analysis import depth, prompts


def learner(built, name="model") -> an.Learner:
    return an.Learner(built.cfg, built.weights, "example", model=name)


def scaling_model(c: float, n_layers: int = 1) -> an.Learner:
    """Blocks whose attention writes nothing (W_O = 0) and whose identity MLP writes c * h: each
    block maps the stream h to (1 + c) h."""
    cfg = M.ModelConfig(d_model=4, n_layers=n_layers, n_heads=1, d_head=2, d_in=4, d_mlp=4, attention="linear",
                        mask="exclude_query", mlp="identity", bias=False)
    sd = M.to_state_dict(M.init(cfg, [torch.Generator().manual_seed(0)], std=0.5, dtype=torch.float64))
    for key in sd:
        if key.endswith("W_O"):
            sd[key].zero_()
        if key.endswith("W_in"):
            sd[key].copy_(torch.eye(4))
        if key.endswith("W_out"):
            sd[key].copy_(c * torch.eye(4))
    return an.Learner(cfg, M.from_state_dict(sd), "example", model=f"scale {c}")


def random_model(**fields) -> an.Learner:
    cfg = M.ModelConfig(**{"d_model": 6, "n_layers": 2, "n_heads": 2, "d_head": 3, "d_in": 4, "d_mlp": 8,
                           "attention": "softmax", "mlp": "gelu", "norm": "layernorm", "final_norm": True,
                           "mask": "exclude_query", **fields})
    return an.Learner(cfg, M.init(cfg, [torch.Generator().manual_seed(1)], std=0.5, dtype=torch.float64))


@pytest.fixture(scope="module")
def p():
    return prompts.sample_prompts(3, 8, 32, seed=0)


def test_block_update_is_its_attention_output_plus_its_mlp_output(p):
    u = depth.block_updates(random_model(), p)
    assert u["resid_pre"].shape == (2, 32, 9, 6)
    assert float(u["mlp_out"].abs().max()) > 0.01  # the MLP writes something: the sum is not vacuous
    # float64 round-off of two additions: ~1e-16 relative to activations of size ~1
    torch.testing.assert_close(u["resid_post"] - u["resid_pre"], u["attn_out"] + u["mlp_out"], atol=1e-12, rtol=0)


def test_block_updates_of_a_looped_model_count_every_applied_block(p):
    u = depth.block_updates(random_model(n_layers=1, n_loops=3), p)
    assert u["resid_pre"].shape[0] == 3
    torch.testing.assert_close(u["resid_pre"][1:], u["resid_post"][:-1], atol=0, rtol=0)


def test_an_mlp_writing_minus_half_the_stream_has_norm_ratio_half_and_cosine_minus_one(p):
    rows = depth.contributions(scaling_model(-0.5), p)
    value = {(r.metric, r.positions): r.value for r in rows.itertuples()}
    for where in ("all", "query"):
        # (1 + c) h with c = -0.5: |c h| / |h| = 0.5 and cos(c h, h) = -1, up to float64 round-off
        assert value[("mlp_norm_ratio", where)] == pytest.approx(0.5, abs=1e-12)
        assert value[("block_norm_ratio", where)] == pytest.approx(0.5, abs=1e-12)
        assert value[("mlp_cosine", where)] == pytest.approx(-1.0, abs=1e-12)
        assert value[("attn_norm_ratio", where)] == 0.0 and value[("attn_cosine", where)] == 0.0


def test_skipping_the_only_layer_of_one_step_gd_predicts_zero(p):
    """Zero GD steps from w_0 = 0 predict 0: the embedding's query y slot is 0."""
    one_step = learner(gd.build(3, 1, 0.2))
    skipped = depth.skip_predictions(one_step, p)
    assert skipped.shape == (1, 32)
    assert float(depth.predictions(one_step, p).abs().min()) > 0  # the unskipped model predicts something
    assert torch.equal(skipped, torch.zeros_like(skipped))
    rows = depth.skip_effects(one_step, p)
    change = rows[rows.metric == "skip_delta_nmse"].value.iloc[0]
    full = float((depth.predictions(one_step, p) - p.y_query).pow(2).mean() / 3)
    assert change == pytest.approx(float(p.y_query.pow(2).mean() / 3) - full, rel=1e-12)


def test_skipping_either_layer_of_two_gd_steps_leaves_one_gd_step(p):
    """Every GD layer is the same map, so dropping either one leaves the one-step construction."""
    two, one = learner(gd.build(3, 2, 0.2)), learner(gd.build(3, 1, 0.2))
    skipped = depth.skip_predictions(two, p)
    want = depth.predictions(one, p)
    for row in skipped:
        torch.testing.assert_close(row, want, atol=1e-12, rtol=0)


def test_a_block_that_writes_nothing_has_zero_contribution_and_zero_skip_effect(p):
    built = gd.build(3, 2, 0.2)
    sd = M.to_state_dict(built.weights)
    sd["blocks.1.attn.W_O"].zero_()
    silent = an.Learner(built.cfg, M.from_state_dict(sd), "example", model="silent")
    rows = depth.contributions(silent, p)
    ratio = rows[(rows.metric == "block_norm_ratio") & (rows.positions == "all")].set_index("layer").value
    assert ratio[1] == 0.0 and ratio[0] > 0.01
    skips = depth.skip_effects(silent, p)
    change = skips[skips.metric == "skip_prediction_change"].set_index("layer").value
    assert change[1] == 0.0 and change[0] > 0.0


def test_a_block_linear_in_the_stream_has_a_linear_map_with_r2_one(p):
    maps = depth.linear_maps(scaling_model(-0.5, n_layers=2), p)
    r2 = maps[maps.metric == "linear_map_r2"]
    assert len(r2) == 3 and set(zip(r2.layer, r2.to_layer)) == {(0, 1), (0, 2), (1, 2)}
    # lstsq in float64 on a well-conditioned design: residuals ~1e-15
    assert r2.value.min() > 1 - 1e-10


def test_a_gd_layer_is_not_one_linear_map_across_prompts(p):
    """The GD update -eta/N (sum_j y_j x_j) . x_i depends on the prompt, so no single linear map
    fits it: R^2 stays visibly below 1 (which shows the R^2 = 1 above is not automatic)."""
    maps = depth.linear_maps(learner(gd.build(3, 1, 0.5)), prompts.sample_prompts(3, 8, 128, seed=1))
    assert maps[maps.metric == "linear_map_r2"].value.iloc[0] < 0.999


def test_depth_use_puts_models_side_by_side_in_one_frame_per_view(p):
    frames = depth.depth_use([learner(gd.build(3, 2, 0.2), "a"), random_model()], p, max_gap=1)
    assert set(frames) == {"contributions", "skips", "maps"}
    for f in frames.values():
        assert set(f.model) == {"a", "model"}
    assert set(frames["maps"].to_layer - frames["maps"].layer) == {1}


def test_construction_builds_gd_with_the_asked_depth(p):
    built = depth.construction("gd", 3, 2, p)
    assert built.n_layers == 2 and built.model == "gd construction (2 layers)"
    with pytest.raises(ValueError, match="construction must be one of gd"):
        depth.construction("nope", 3, 2, p)


def test_depth_use_refuses_a_model_without_a_residual_stream(p):
    with pytest.raises(ValueError, match="residual=False"):
        depth.contributions(random_model(residual=False), p)
