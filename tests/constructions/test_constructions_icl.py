"""Closed-form ridge by Sherman-Morrison, GD in ReLU attention, GD approximated in softmax attention:
each against its algorithm (property tests), hand-computed anchors, mutation, and bad input; and the
layer-by-layer comparison and regression domains the ICL constructions share."""

import pytest
import torch
from hypothesis import given, settings

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Case
from constructions.check.run import mutate, run_check
from constructions.check.strategies import cases
from constructions.icl import gd, gd_relu, gd_softmax, layerwise
from constructions.icl import ridge_sherman_morrison as rsm
from constructions.reference import algorithms, baselines
from constructions.tokens import example_tokens, query_prediction

EXACT = [rsm.CONSTRUCTION, gd_relu.CONSTRUCTION]
ALL = EXACT + [gd_softmax.CONSTRUCTION]
IDS = [c.name for c in ALL]


@pytest.mark.parametrize("c", ALL, ids=IDS)
def test_construction_matches_its_algorithm_at_every_layer(c):
    """Property over d in 1..8, N in 1..12 (1..32 in the slow test), depth in 1..6, random lam /
    eta / seeds. Not vacuous: errors() compares the readout and every claimed slot of every token
    after every layer, and the same comparison fails on perturbed weights (below)."""

    @settings(max_examples=15)
    @given(cases(c, max_n=12))
    def prop(case):
        errs = c.errors(c.build(case), case)
        assert len(errs) >= 2
        worst = max(errs, key=errs.get)
        assert errs[worst] <= c.bound, f"{worst}: {errs[worst]:.3e} > {c.bound:.0e}"

    prop()


@pytest.mark.slow
@pytest.mark.parametrize("c", ALL, ids=IDS)
def test_construction_matches_its_algorithm_on_the_full_domain(c):
    @given(cases(c))
    def prop(case):
        errs = c.errors(c.build(case), case)
        assert max(errs.values()) <= c.bound

    prop()


@pytest.mark.parametrize("c", ALL, ids=IDS)
@pytest.mark.parametrize("seed", range(4))
def test_construction_check_fails_on_perturbed_weights(c, seed):
    """A perturbation of 1e-3 relative size must show up 1e3 times above the bound."""
    gen = torch.Generator().manual_seed(seed)
    case = c.sample(gen, n=domains.draw_int(gen, 1, 10))
    broken, key = mutate(c.build(case), gen)
    errs = c.errors(broken, case)
    assert max(errs.values()) > c.bound * 1e3, f"perturbing {key} went unnoticed: {errs}"


@pytest.mark.parametrize("c", ALL, ids=IDS)
def test_run_check_passes_and_catches_mutation(c):
    ok = run_check(c, seed=3, n_cases=3)
    assert ok.passed and ok.error <= ok.bound
    bad = run_check(c, seed=3, n_cases=3, mutated=True)
    assert bad.caught is True and not bad.passed


# ---------------------------------------------------------------------------------------------
# Sherman-Morrison ridge


def _readouts(built, x, y, xq):
    run = M.forward(built.cfg, built.weights, example_tokens(x, y, xq), residuals=True)
    return [M.readout(built.cfg, built.weights, h)[0, 0, -1, 0].item() for h in run.residuals]


def test_sherman_morrison_folds_two_examples_computed_by_hand():
    """d = 1, lam = 1, examples (1, 2), (2, 1), query 1. One example: w = 1*2 / (1 + 1) = 1.
    Two: w = (1*2 + 2*1) / (1 + 1 + 4) = 2/3. Three layers per fold, readout after each layer."""
    built = rsm.build(d=1, n_examples=2, lam=1.0)
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    y = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    xq = torch.tensor([[1.0]], dtype=torch.float64)
    assert _readouts(built, x, y, xq) == pytest.approx([0, 0, 0, 1, 1, 1, 2 / 3], abs=1e-15)


def test_every_fold_equals_algorithms_ridge_with_per_example_lambda():
    """The sum convention lam equals algorithms.ridge's per-example lam / n on the first n examples."""
    gen = torch.Generator().manual_seed(0)
    case = rsm.sample(gen, d=3, n=6)
    built = rsm.build(**case.params)
    run = M.forward(built.cfg, built.weights, example_tokens(case.x, case.y, case.x_query), residuals=True)
    for n in range(1, 7):
        pred = query_prediction(M.readout(built.cfg, built.weights, run.residuals[3 * n])[0])
        w = algorithms.ridge(case.x[:, :n], case.y[:, :n], lam=case.params["lam"] / n)
        assert torch.allclose(pred, algorithms.predict(w, case.x_query), atol=1e-12, rtol=0)


def test_fold_config_differs_from_plain_linear_attention_only_in_its_normalised_layers():
    """With layer_attention removed every layer is "linear"; the outputs must then differ (the
    normalised layers matter), while the first layer (linear in both) agrees exactly."""
    import dataclasses

    fc = rsm.config(d=2, n_examples=3)
    w = M.init(fc, [torch.Generator().manual_seed(1)], std=0.3, dtype=torch.float64)
    tokens = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    linear = dataclasses.replace(fc, layer_attention=None)
    a = M.forward(fc, w, tokens, residuals=True).residuals
    b = M.forward(linear, w, tokens, residuals=True).residuals
    assert torch.allclose(a[1], b[1], atol=1e-14) and not torch.allclose(a[2], b[2])


def test_normalized_layer_divides_exactly():
    """The middle layer of a fold writes (u, r_c) / s, s = 1 + x_c.u: s takes values well away from 1
    here (lam = 0.1 makes u = 10 x), so a missing division would show."""
    gen = torch.Generator().manual_seed(3)
    case = rsm.sample(gen, d=2, n=3)
    case.params["lam"] = 0.1
    built = rsm.build(**case.params)
    run = M.forward(built.cfg, built.weights, example_tokens(case.x, case.y, case.x_query), residuals=True)
    u_c = case.x[:, 0] / 0.1
    s = 1 + (case.x[:, 0] * u_c).sum(-1)
    assert (s > 1.5).all()
    g = run.residuals[2][0][..., built.cfg.layout["g"]]
    assert torch.allclose(g, (u_c / s[:, None]).unsqueeze(1).expand_as(g), atol=1e-14)


def test_layer_attention_rejects_unknown_kinds_and_wrong_lengths():
    import dataclasses

    with pytest.raises(ValueError, match="layer_attention"):
        dataclasses.replace(rsm.config(1, 1), layer_attention=("linear", "cosine", "linear"))
    with pytest.raises(ValueError, match="n_layers=3"):
        dataclasses.replace(rsm.config(1, 1), layer_attention=("linear",))


def test_sherman_morrison_refuses_a_prompt_of_another_length():
    case = rsm.sample(torch.Generator().manual_seed(4), d=2, n=3)
    short = Case(case.params, case.x[:, :2], case.y[:, :2], case.x_query)
    with pytest.raises(ValueError, match="built for n_examples=3"):
        rsm.errors(rsm.build(**case.params), short)


# ---------------------------------------------------------------------------------------------
# GD in ReLU and softmax attention


def test_relu_construction_equals_the_linear_one_and_uses_both_heads():
    """Not vacuous: the prompt has scores of both signs, so each ReLU head alone is not linear."""
    gen = torch.Generator().manual_seed(5)
    case = gd.sample(gen, d=3, n=8, depth=3)
    toks = example_tokens(case.x, case.y, case.x_query)
    relu, linear = gd_relu.build(**case.params), gd.build(**case.params)
    run = M.forward(relu.cfg, relu.weights, toks, attention_patterns=True)
    assert torch.allclose(run.out, M.forward(linear.cfg, linear.weights, toks).out, atol=1e-13)
    first = run.attention[0][0]  # (B, H, T, T)
    assert (first[:, 0] > 0).any() and (first[:, 1] > 0).any()


def test_softmax_gd_error_is_the_predicted_eps_squared_term():
    """One layer, query prediction: model - GD = eta eps^2 (E[a^3 v]/6 - E[a v] E[a^2]/2) + O(eps^4)
    with a_j = x_q.x_j, v_j = y_j over the 2N mirrored keys (gd_softmax docstring). At eps = 1e-3 the
    O(eps^4) part is ~ (eps a)^2 ~ 1e-6 relative; round-off ~ 1e-16 / eps = 1e-13 absolute."""
    gen = torch.Generator().manual_seed(6)
    case = gd_softmax.sample(gen, d=2, n=5, depth=1)
    eta, eps = case.params["eta"], 1e-3
    built = gd_softmax.build(2, 1, eta, eps)
    out = M.forward(built.cfg, built.weights, gd_softmax.tokens(case.x, case.y, case.x_query)).out
    gd_pred = algorithms.predict(algorithms.gd(case.x, case.y, eta=eta, n_steps=1)[-1], case.x_query)
    keys, vals = torch.cat([case.x, -case.x], 1), torch.cat([case.y, -case.y], 1)
    a = (keys * case.x_query[:, None]).sum(-1)
    c3 = (a**3 * vals).mean(-1) / 6 - (a * vals).mean(-1) * (a**2).mean(-1) / 2
    assert torch.allclose((query_prediction(out[0]) - gd_pred) / eps**2, eta * c3, rtol=1e-4, atol=1e-6)


def _fitted_slope(tokens_fn, case):
    errs = []
    for eps in gd_softmax.SWEEP.values:
        built = gd_softmax.build(**{**case.params, "eps": eps})
        out = M.forward(built.cfg, built.weights, tokens_fn(case.x, case.y, case.x_query)).out
        want = algorithms.predict(algorithms.gd(case.x, case.y, eta=case.params["eta"],
                                                n_steps=case.params["n_steps"])[-1], case.x_query)
        errs.append((query_prediction(out[0]) - want).abs().max().item())
    return gd_softmax.SWEEP.fit(errs)


def test_softmax_gd_needs_the_mirrored_examples():
    """Without the mirrored tokens the centring term E[a] E[v] stays: the error does not shrink with
    eps (slope ~ 0); with them it falls as eps^2."""
    case = gd_softmax.sample(torch.Generator().manual_seed(7), d=2, n=6, depth=2)
    plain = lambda x, y, xq: example_tokens(x, y, xq)  # noqa: E731
    assert abs(_fitted_slope(plain, case)) < 0.1
    assert abs(_fitted_slope(gd_softmax.tokens, case) - 2.0) < gd_softmax.SWEEP.tolerance


# ---------------------------------------------------------------------------------------------
# The layer-by-layer comparison and the regression domains


def test_a_claim_without_a_width_axis_reads_a_one_wide_slot_and_a_wider_slot_fails_on_the_shapes():
    """One GD layer, d = 2: the examples' y slots hold y (layer 0), the x slots hold x (B, N, 2)."""
    case = gd.sample(torch.Generator().manual_seed(8), d=2, n=3, depth=1)
    built, toks = gd.build(**case.params), example_tokens(case.x, case.y, case.x_query)
    h = M.forward(built.cfg, built.weights, toks, residuals=True).residuals[0]
    assert layerwise.claim_error(built, h, layerwise.Claim("y", layerwise.EXAMPLES, case.y)) == 0.0
    assert layerwise.claim_error(built, h, layerwise.Claim("x", layerwise.EXAMPLES, case.x)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        layerwise.claim_error(built, h, layerwise.Claim("x", layerwise.EXAMPLES, case.x[..., 0]))


def test_layer_errors_refuses_claims_for_another_number_of_layers():
    case = gd.sample(torch.Generator().manual_seed(9), d=2, n=3, depth=2)
    built, toks = gd.build(**case.params), example_tokens(case.x, case.y, case.x_query)
    with pytest.raises(ValueError, match="2 layers of claims for 3 residual streams"):
        layerwise.layer_errors(built, toks, [[layerwise.Claim("x", layerwise.EXAMPLES, case.x)]] * 2)


def test_ball_prompts_lie_in_the_drawn_ball_and_draw_lam_only_when_asked():
    """Same seed, same prompts; the lam draw comes before the prompts, so asking for it moves them."""
    draw = lambda seed, **kw: domains.ball_prompts(torch.Generator().manual_seed(seed), 3, 5, 2,  # noqa: E731
                                                   radius=(0.5, 1.5), **kw)
    plain, ridge = draw(0), draw(0, log10_lam=(-1.0, 1.0))
    assert plain.lam is None and 0.1 <= ridge.lam <= 10.0
    assert torch.equal(plain.x, draw(0).x) and not torch.equal(plain.x, ridge.x)
    for p in (plain, ridge):
        assert 0.5 <= p.radius < 1.5 and (p.x.norm(dim=-1) <= p.radius).all()
        assert p.x.shape == (domains.BATCH, 5, 3) and p.y.shape == (domains.BATCH, 5)


@pytest.mark.parametrize("value, expected", [(None, None), (0, 2), (4, 4), (9, 6)])
def test_clamped_keeps_a_given_size_in_its_range_and_draws_a_missing_one_there(value, expected):
    got = domains.clamped(torch.Generator().manual_seed(1), value, 2, 6)
    assert 2 <= got <= 6 and (expected is None or got == expected)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("call, match", [
    (lambda: rsm.build(d=2, n_examples=3, lam=0.0), "lam must be a finite number > 0"),
    (lambda: rsm.build(d=0, n_examples=3, lam=1.0), "d must be >= 1"),
    (lambda: rsm.build(d=2, n_examples=0, lam=1.0), "n_examples must be >= 1"),
    (lambda: gd_relu.build(d=2, n_steps=1, eta=-1.0), "eta must be a finite number > 0"),
    (lambda: gd_softmax.build(d=2, n_steps=1, eta=0.1, eps=0.0), "eps must be a finite number > 0"),
    (lambda: baselines.ridge_sum(torch.ones(1, 2, 1), torch.ones(1, 2), lam=-1.0), "lam must be"),
])
def test_impossible_construction_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_gd_relu_config_is_relu_attention_with_two_heads():
    cfg = gd_relu.build(2, 1, 0.1).cfg
    assert (cfg.attention, cfg.n_heads) == ("relu", 2)
