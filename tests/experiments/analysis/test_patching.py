"""Activation patching (experiments.analysis.patching), anchored to GD constructions whose patched
predictions follow by hand: two constructions that differ only in eta share their embedding and readout."""

from __future__ import annotations

import math

import pytest
import torch

from constructions import model as M
from constructions.icl import gd
from experiments.analysis import core as an
from experiments.analysis import depth, patching, prompts


def learner(built, name) -> an.Learner:
    return an.Learner(built.cfg, built.weights, "example", model=name)


@pytest.fixture(scope="module")
def p():
    return prompts.sample_prompts(3, 8, 32, seed=0)


@pytest.fixture(scope="module")
def pair(p):
    """(source gd eta 0.2, target gd eta 0.5, 2 steps each) and their patching frame."""
    source, target = learner(gd.build(3, 2, 0.2), "small step"), learner(gd.build(3, 2, 0.5), "large step")
    return source, target, patching.patching(source, target, p)


def value(frame, metric, site, layer, positions, head=None):
    rows = frame[(frame.metric == metric) & (frame.site == site) & (frame.layer == layer)
                 & (frame.positions == positions)]
    rows = rows[rows["head"].isna()] if head is None else rows[rows["head"] == head]
    assert len(rows) == 1
    return float(rows.value.iloc[0])


def test_gap_closed_is_the_least_squares_fraction_of_the_gap():
    target, source = torch.tensor([0.0, 0.0]), torch.tensor([2.0, 2.0])
    assert patching.gap_closed(source, target, source) == 1.0
    assert patching.gap_closed(target, target, source) == 0.0
    assert patching.gap_closed(torch.tensor([1.0, 2.0]), target, source) == 0.75  # (2 + 4) / 8
    assert math.isnan(patching.gap_closed(source, source, source))


def test_patching_a_model_with_itself_changes_nothing(p):
    model = learner(gd.build(3, 2, 0.3), "gd")
    frame = patching.patching(model, model, p)
    assert len(frame) == 3 * 3 * 2 * 4  # metrics x positions x layers x (resid_pre, attn_out, resid_post, z[0])
    changes = frame[frame.metric.isin(["prediction_change", "delta_nmse"])].value
    assert (changes == 0.0).all()
    assert frame[frame.metric == "gap_closed"].value.isna().all()  # no gap to close


def test_patching_the_last_resid_post_makes_the_target_predict_what_the_source_does(pair):
    """Both read the query's y slot out the same way, so the patched target's prediction is the
    source's, bit for bit: the gap is closed exactly."""
    _, _, frame = pair
    for where in ("all", "query"):
        assert value(frame, "gap_closed", "resid_post", 1, where) == pytest.approx(1.0, abs=1e-12)


def test_patching_only_the_examples_after_the_last_layer_changes_nothing(pair):
    """No layer reads the examples after the last one: the readout sees the query token only."""
    _, _, frame = pair
    assert value(frame, "prediction_change", "resid_post", 1, "examples") == 0.0
    assert value(frame, "prediction_change", "resid_post", 0, "examples") > 0.0  # the next layer reads them


def test_patching_the_shared_embedding_changes_nothing(pair):
    _, _, frame = pair
    for where in patching.POSITIONS:
        assert value(frame, "prediction_change", "resid_pre", 0, where) == 0.0


def test_the_one_head_patch_of_a_one_head_model_is_the_attention_output_patch(pair):
    _, _, frame = pair
    for layer in (0, 1):
        for where in patching.POSITIONS:
            # z -> W_O -> attn_out is linear and exact in float64 up to round-off
            assert value(frame, "gap_closed", "z", layer, where, head=0) == pytest.approx(
                value(frame, "gap_closed", "attn_out", layer, where), abs=1e-9)


def test_patching_the_attention_output_of_one_gd_step_gives_the_source_prediction(p):
    source, target = learner(gd.build(3, 1, 0.2), "a"), learner(gd.build(3, 1, 0.5), "b")
    frame = patching.patching(source, target, p, heads=False)
    assert value(frame, "gap_closed", "attn_out", 0, "all") == pytest.approx(1.0, abs=1e-12)
    assert "z" not in set(frame.site)


def test_patching_runs_one_forward_per_patch_with_every_prompt(p, monkeypatch):
    source, target = learner(gd.build(3, 2, 0.2), "a"), learner(gd.build(3, 2, 0.5), "b")
    calls, forward = [], M.forward

    def counting(cfg, w, tokens, **kw):
        calls.append(tokens.shape[0])
        return forward(cfg, w, tokens, **kw)

    monkeypatch.setattr(M, "forward", counting)
    frame = patching.patching(source, target, p, positions=("query", "all"))
    n_patches = len(frame) // 3
    assert len(calls) == 2 + n_patches  # the source's cached run, the target's plain run, one per patch
    assert set(calls) == {p.B}


def test_patching_refuses_models_of_different_shapes(p):
    with pytest.raises(ValueError, match="d_model"):
        patching.patching(learner(gd.build(3, 1, 0.2), "a"), learner(gd.build(4, 1, 0.2), "b"), p)
    with pytest.raises(ValueError, match="n_layers"):
        patching.patching(learner(gd.build(3, 1, 0.2), "a"), learner(gd.build(3, 2, 0.2), "b"), p)


def test_an_aligned_construction_predicts_what_the_construction_does(p):
    """Padding the GD construction into a wider linear-attention config (zero extra coordinates)
    changes nothing it computes, so it can be patched into a trained model of that shape."""
    cfg = M.ModelConfig(d_model=8, n_layers=2, n_heads=1, d_head=6, d_in=4, attention="linear",
                        mask="exclude_query", mlp="none", bias=False)
    trained = an.Learner(cfg, M.init(cfg, [torch.Generator().manual_seed(0)], dtype=torch.float64), model="trained")
    aligned = patching.aligned_construction("gd", trained, 3, p)
    plain = depth.construction("gd", 3, 2, p)
    assert aligned.cfg == cfg
    torch.testing.assert_close(depth.predictions(aligned, p), depth.predictions(plain, p), atol=1e-12, rtol=0)
    frame = patching.patching(aligned, trained, p, positions=("all",), heads=False)
    assert set(frame.site) == {"resid_pre", "attn_out", "resid_post"} and set(frame.source) == {aligned.model}
