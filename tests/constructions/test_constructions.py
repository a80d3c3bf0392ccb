"""Every registered construction against its reference algorithm: property tests, hand-computed
anchors, mutation, and bad input."""

import math

import pytest
import torch
from hypothesis import given

from constructions import model as M
from constructions.check.contract import Case
from constructions.check.run import mutate, run_check
from constructions.check.strategies import cases
from constructions.icl import gd, gd_plus_plus, newton, preconditioned_gd, ridge_newton
from constructions.reference import algorithms
from constructions.registry import CONSTRUCTIONS, get
from constructions.tokens import example_tokens, query_prediction


def _errors(c, case):
    return c.errors(c.build(case), case)


@pytest.mark.parametrize("name", list(CONSTRUCTIONS))
def test_construction_matches_its_algorithm_at_every_layer(name):
    """Property over d in 1..8, N in 1..32, depth in 1..6 and random step sizes / lam / alpha / seeds.

    Not vacuous: errors() compares every layer's slots with the reference's iterate of the same
    index, and the same comparison fails on perturbed weights (test below)."""
    c = get(name)

    @given(cases(c))
    def prop(case):
        errs = _errors(c, case)
        assert len(errs) >= 2, "every construction reports at least the input and one layer"
        worst = max(errs, key=errs.get)
        assert errs[worst] <= c.bound_for(case), f"{worst}: {errs[worst]:.3e} > {c.bound_for(case):.0e}"

    prop()


@pytest.mark.parametrize("name", list(CONSTRUCTIONS))
@pytest.mark.parametrize("seed", range(6))
def test_construction_check_fails_on_perturbed_weights(name, seed):
    c = get(name)
    if c.sweep is not None:  # a rate check fails on the slope over the sweep, not at one value
        assert run_check(c, seed=seed, n_cases=1, mutated=True).caught, c.name
        return
    gen = torch.Generator().manual_seed(seed)
    case = c.sample(gen)
    broken, key = mutate(c.build(case), gen)
    errs = c.errors(broken, case)
    assert max(errs.values()) > c.bound_for(case) * 1e3, f"perturbing {key} went unnoticed: {errs}"


@pytest.mark.parametrize("name", list(CONSTRUCTIONS))
def test_run_check_reports_pass_and_catches_mutation(name):
    c = get(name)
    ok = run_check(c, seed=3, n_cases=4)
    assert ok.passed and ok.error <= ok.bound and ok.cases == 4
    bad = run_check(c, seed=3, n_cases=4, mutated=True)
    assert bad.caught is True and not bad.passed


def test_gd_layer_subtracts_one_gradient_step_computed_by_hand():
    """d = 1, examples (x, y) = (1, 1), (2, 1), eta = 1/2, query x_q = 1.
    grad at w = 0 is -(1/2)(1*1 + 2*1) = -3/2, so w_1 = 3/4 and the prediction is 3/4.
    Step 2: grad = (1/2)((3/4 - 1) * 1 + (3/2 - 1) * 2) = 3/8, w_2 = 3/4 - 3/16 = 9/16."""
    built = gd.build(d=1, n_steps=2, eta=0.5)
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    xq = torch.tensor([[1.0]], dtype=torch.float64)
    run = M.forward(built.cfg, built.weights, example_tokens(x, y, xq), residuals=True)
    preds = [M.readout(built.cfg, built.weights, h)[0, 0, -1, 0].item() for h in run.residuals]
    assert preds == pytest.approx([0.0, 0.75, 9 / 16], abs=1e-15)
    assert query_prediction(run.out[0, 0]).item() == pytest.approx(9 / 16, abs=1e-15)


def test_newton_construction_predicts_least_squares_after_enough_iterations():
    """15 iterations: enough to converge from alpha = 0.9 * 2 / radius^4 on this prompt, few enough
    that the construction's 2^k round-off growth (newton docstring, Numerics) stays ~1e-12."""
    gen = torch.Generator().manual_seed(0)
    case = newton.sample(gen, d=3, n=20, depth=1)
    alpha = 0.9 * newton.alpha_bound(case.params["radius"])
    case.params.update(n_iter=15, alpha=alpha)
    built = newton.build(**case.params)
    out = M.forward(built.cfg, built.weights, example_tokens(case.x, case.y, case.x_query)).out
    want = algorithms.predict(algorithms.least_squares(case.x, case.y), case.x_query)
    assert torch.allclose(query_prediction(out[0]), want, atol=1e-8)


def test_ridge_newton_construction_predicts_ridge_after_enough_iterations():
    gen = torch.Generator().manual_seed(1)
    case = ridge_newton.sample(gen, d=4, n=3, depth=1)
    case.params.update(n_iter=15)
    built = ridge_newton.build(**case.params)
    toks = ridge_newton.tokens(case.x, case.y, case.x_query, case.params["lam"])
    out = M.forward(built.cfg, built.weights, toks).out
    want = algorithms.predict(algorithms.ridge(case.x, case.y, lam=case.params["lam"]), case.x_query)
    assert torch.allclose(query_prediction(out[0]), want, atol=1e-8)


def test_gd_plus_plus_with_gamma_zero_is_gd():
    gen = torch.Generator().manual_seed(2)
    case = gd.sample(gen, d=3, n=7, depth=3)
    pp = gd_plus_plus.build(d=3, n_steps=3, eta=case.params["eta"], gamma=0.0)
    plain = gd.build(**case.params)
    toks = example_tokens(case.x, case.y, case.x_query)
    a = M.forward(pp.cfg, pp.weights, toks).out
    b = M.forward(plain.cfg, plain.weights, toks).out
    assert torch.allclose(a, b, atol=1e-14)


def test_preconditioned_gd_accepts_one_preconditioner_per_step():
    gen = torch.Generator().manual_seed(3)
    case = preconditioned_gd.sample(gen, d=2, n=5, depth=2)
    Ps = torch.stack([case.params["P"], 0.5 * case.params["P"]])
    case.params["P"] = Ps
    errs = preconditioned_gd.gd_errors(preconditioned_gd.build(**case.params), case, Ps, 2)
    assert max(errs.values()) < 1e-12


# ---------------------------------------------------------------------------------------------
# Bad input: every error names the argument and, where there is one, the bound


@pytest.mark.parametrize("call, match", [
    (lambda: gd.build(d=0, n_steps=1, eta=0.1), "d must be >= 1"),
    (lambda: gd.build(d=2, n_steps=0, eta=0.1), "n_steps must be >= 1"),
    (lambda: gd.build(d=2, n_steps=1, eta=-0.1), "eta must be a finite number > 0"),
    (lambda: gd.build(d=2, n_steps=1, eta=math.nan), "eta must be a finite number > 0"),
    (lambda: gd_plus_plus.build(d=2, n_steps=1, eta=0.1, gamma=-1.0), "gamma must be a number >= 0"),
    (lambda: preconditioned_gd.build(d=2, n_steps=1, P=torch.eye(3)), r"P must have shape \(2, 2\)"),
    (lambda: newton.build(d=2, n_iter=1, alpha=3.0, radius=1.0), r"alpha=3 violates 0 < alpha < 2 / \(radius\^2"),
    (lambda: newton.build(d=2, n_iter=1, alpha=0.0), "alpha must be a finite number > 0"),
    (lambda: ridge_newton.build(d=2, n_examples=4, n_iter=1, lam=0.0, alpha=0.1), "lam must be"),
    (lambda: ridge_newton.build(d=2, n_examples=4, n_iter=1, lam=1.0, alpha=0.6), "alpha=0.6 violates"),
])
def test_impossible_construction_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrongly_typed_construction_argument_is_named():
    with pytest.raises(TypeError, match="d must be an int"):
        gd.build(d="3", n_steps=1, eta=0.1)


def test_newton_refuses_inputs_outside_its_alpha_domain():
    gen = torch.Generator().manual_seed(4)
    case = newton.sample(gen, d=2, n=4, depth=1)
    big = Case(case.params, case.x * 10, case.y, case.x_query)
    with pytest.raises(ValueError, match="leave the domain"):
        newton.CONSTRUCTION.errors(newton.CONSTRUCTION.build(big), big)


def test_ridge_newton_refuses_a_prompt_of_another_length():
    gen = torch.Generator().manual_seed(5)
    case = ridge_newton.sample(gen, d=2, n=4, depth=1)
    built = ridge_newton.CONSTRUCTION.build(case)
    longer = ridge_newton.sample(gen, d=2, n=5, depth=1)
    longer.params = case.params
    with pytest.raises(ValueError, match="built for n_examples=4"):
        ridge_newton.CONSTRUCTION.errors(built, longer)


def test_unknown_construction_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: .*gd"):
        get("gradient_ascent")
