"""Single-layer universal approximation (constructions.approx.universal) and its targets
(synthetic.targets): hand anchors, the stated bound as a property, the two rates, the plateau,
mutation, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings

from constructions import model as M
from constructions.approx import universal as U
from constructions.check.contract import Case
from constructions.check.run import mutate, run_check
from constructions.check.strategies import cases
from synthetic.targets import RidgeTarget, kink_probes, sample_inputs, sample_target

F64 = torch.float64
CONSTRUCTIONS = [U.LAMBDA_SWEEP, U.WIDTH_SWEEP]


def _case(kind, n=3, d=2, R=2, lam=8.0, m=64, seed=0, batch=16):
    gen = torch.Generator().manual_seed(seed)
    target = sample_target(gen, kind, n, d, n_ridges=R, frequency=2.0)
    return Case({"target": target, "lam": lam, "m": m}, data={"X": sample_inputs(gen, n, d, batch)})


def test_each_head_puts_three_quarters_on_its_position_when_e_lam_is_three():
    """n = 2, lam = log 3: head h's weights are e^lam / (e^lam + 1) = 3/4 on key h and 1/4 on the
    other, so copy_h = 3/4 x_h + 1/4 x_other (computed by hand)."""
    target = RidgeTarget("relu", torch.ones(1, 2, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.ones(1, dtype=F64))
    built = U.build(target, math.log(3.0), 1)
    X = torch.tensor([[[1.0], [-1.0]]], dtype=F64)
    run = M.forward(built.cfg, built.weights, U.tokens(X), residuals=True)
    h = run.residuals[1][0, 0]
    lay = built.cfg.layout
    assert h[:, lay["copy0"]].flatten().tolist() == pytest.approx([0.5, 0.5], abs=1e-15)  # 3/4 - 1/4
    assert h[:, lay["copy1"]].flatten().tolist() == pytest.approx([-0.5, -0.5], abs=1e-15)


def test_a_relu_network_target_is_copied_exactly_when_the_attention_is_sharp():
    """lam = 60: the leak e^-60 ~ 1e-26 is below round-off, and the MLP is the target's own network."""
    case = _case("relu", lam=60.0, m=2)
    assert U.errors(U._build(case), case)["output"] < 1e-14


def test_interpolant_of_cosine_is_within_h_squared_over_8():
    lo, hi = torch.tensor([-3.0], dtype=F64), torch.tensor([2.0], dtype=F64)
    knots, changes = U.interpolant(torch.cos, lo, hi, 20)
    t = torch.linspace(-3, 2, 2001, dtype=F64)
    approx = math.cos(-3.0) + (torch.relu(t[:, None] - knots) * changes).sum(-1)
    h = 5 / 20
    assert (approx - torch.cos(t)).abs().max() <= h**2 / 8
    assert (approx - torch.cos(t)).abs().max() > h**2 / 8 * 0.5  # the bound is nearly attained


@pytest.mark.parametrize("c", CONSTRUCTIONS, ids=lambda c: c.name)
def test_error_is_within_the_stated_bound_on_random_targets_and_inputs(c):
    """Property over d, n, the target's ridges and the inputs. Not vacuous: the bound is attained
    to round-off for n = 2 (see universal_approx.bound) and perturbed weights exceed it (below)."""

    @settings(max_examples=10)
    @given(cases(c, max_d=3, max_n=6))
    def prop(case):
        errs = c.errors(c.build(case), case)
        assert max(errs.values()) <= c.bound_for(case)
        assert errs["pattern"] < 1e-12

    prop()


@pytest.mark.parametrize("c", CONSTRUCTIONS, ids=lambda c: c.name)
def test_run_check_fits_the_stated_slope_and_catches_every_mutation(c):
    ok = run_check(c, seed=5, n_cases=4)
    assert ok.passed, ok
    assert all(abs(s - c.sweep.slope) <= c.sweep.tolerance for s in ok.slopes)
    bad = run_check(c, seed=5, n_cases=4, mutated=True)
    assert bad.caught is True


def test_a_perturbed_key_matrix_is_seen_in_the_attention_pattern_not_in_the_output_alone():
    """Noise 1e-3 * lam on W_K shifts scores by ~1e-2: the leak changes by ~1%, invisible next to
    the rate, but every attention weight moves by ~1e-2 relative."""
    case = _case("relu", lam=12.0, m=2)
    built = U._build(case)
    sd = M.to_state_dict(built.weights)
    sd["blocks.0.attn.W_K"] = sd["blocks.0.attn.W_K"] + 1e-2 * torch.randn_like(sd["blocks.0.attn.W_K"])
    errs = U.errors(type(built)(built.cfg, M.from_state_dict(sd)), case)
    assert errs["pattern"] > 1e-4


def test_error_falls_like_e_to_minus_lam_with_the_relu_target():
    case = _case("relu", n=4, R=1, m=1)
    errs = [U.errors(U._build(Case({**case.params, "lam": lam}, data=case.data)), case)["output"] for lam in (8, 12)]
    assert errs[1] / errs[0] == pytest.approx(math.exp(-4), rel=0.05)


def test_width_error_plateaus_at_the_attention_term():
    """At lam = 6 the attention term (~1e-3) stops the m^-2 fall; at lam = 40 it does not."""
    case = _case("cosine", n=3, R=1, seed=3)
    err = lambda lam, m: U.errors(U._build(Case({**case.params, "lam": lam, "m": m}, data=case.data)), case)["output"]
    assert err(6.0, 4096) / err(6.0, 1024) > 0.8
    assert err(40.0, 4096) / err(40.0, 1024) < 1 / 8
    diam = U.diameter(case.data["X"])  # the predicted plateau (from the bounds): before 1024 at lam = 6
    assert U.plateau_width(case.params["target"], 6.0, diam) < 1024
    assert U.plateau_width(case.params["target"], 40.0, diam) > 4096


def test_perturbed_weights_exceed_the_bound_at_the_sharpest_value():
    gen = torch.Generator().manual_seed(0)
    for seed in range(6):
        case = Case({**_case("relu", seed=seed).params, "lam": 14.0, "m": 2}, data=_case("relu", seed=seed).data)
        broken, key = mutate(U._build(case), gen)
        assert max(U.errors(broken, case).values()) > U.bound(case), key


def test_ridge_ranges_contain_every_input_and_kink_probes_sit_on_the_kink():
    gen = torch.Generator().manual_seed(1)
    target = sample_target(gen, "abs", 4, 3, n_ridges=3, frequency=2.0)
    X = torch.cat([sample_inputs(gen, 4, 3, 200), kink_probes(target)])
    assert X.abs().max() <= 1
    t = torch.einsum("bk,rk->br", X.flatten(-2), target.U)[..., None] + target.C  # (B, R, n)
    lo, hi = target.ranges()
    assert bool(((t >= lo[:, None]) & (t <= hi[:, None])).all())
    probes = t[-3:]
    assert torch.diagonal(probes[:, :, 0]).abs().max() < 1e-15


@pytest.mark.parametrize("call, match", [
    (lambda t: U.build(t, 0.0, 4), "lam must be a finite number > 0"),
    (lambda t: U.build(t, 5.0, 1), "m=1 must be >= the number of ridges R=2"),
    (lambda t: U.build(t, 5.0, 2.5), "m must be an int"),
    (lambda t: RidgeTarget("sin", t.U, t.C, t.a), "kind must be one of"),
])
def test_impossible_arguments_are_named(call, match):
    target = _case("cosine").params["target"]
    with pytest.raises((ValueError, TypeError), match=match):
        call(target)


def test_curves_are_tidy_with_fitted_slopes_near_the_stated_ones():
    from experiments.approx.curves import universal_approx_curves

    df = universal_approx_curves(n_cases=1, widths=(64, 256, 1024), width_lams=(40.0,))
    assert {"construction", "parameter", "value", "error", "bound", "slope", "stated_slope", "m_star"} <= set(df.columns)
    lam_rows = df[df.parameter == "lam"]
    assert lam_rows["slope"].iloc[0] == pytest.approx(-1.0, abs=0.1)
    cosine = df[(df.parameter == "m") & (df.target == "cosine")]
    assert cosine["slope"].iloc[0] == pytest.approx(-2.0, abs=0.3)
    assert (df["error"] <= df["bound"]).all()
