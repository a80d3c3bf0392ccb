"""Positional-attention constructions (prefix sum / min / max, bitonic sort) against their reference
algorithms: every layer within the hardmax-limit bound, the bound's e^{-beta} rate, patterns that
do not depend on the input, one layer too few, mutation, and bad input."""

import math

import pytest
import torch
from hypothesis import given

from constructions import model as M
from constructions.check.contract import Case
from constructions.check.run import mutate, run_check
from constructions.check.strategies import cases
from constructions.positional import pointer as P
from constructions.positional import scan
from constructions.positional import sort as bsort
from synthetic import sequences as S

ALL = {c.name: c for c in (*scan.CONSTRUCTIONS, bsort.CONSTRUCTION)}
TOKENS = {  # name -> (x (B, n), radius) -> the construction's tokens
    **{f"positional_prefix_{op}": (lambda x, r, op=op: scan.tokens(x, op, r)) for op in S.SCAN_OPS},
    bsort.CONSTRUCTION.name: bsort.tokens,
}


def _case(c, n, seed=0, **params):
    case = c.sample(torch.Generator().manual_seed(seed), n=n)
    case.params.update(params)
    return case


def _scan_output(op, built, x, radius):
    """The model's prefix op of x: the readout at positions 1 .. n (0 is the scratch token)."""
    return M.forward(built.cfg, built.weights, scan.tokens(x, op, radius)).out[0, :, 1:, 0]


# ----------------------------------------------------------------------------------------------
# Agreement with the algorithm, layer by layer


@pytest.mark.parametrize("name", list(ALL))
def test_construction_matches_its_algorithm_at_every_layer_within_the_bound(name):
    """Property over n in 1..32, radius in [0.5, 4] and the sampler's beta (leakage ~1e-9 R).

    Not vacuous: "layer l" compares the readout after l layers with iterate l of the algorithm (the
    iterates differ from layer to layer), "read l" the value each token fetched, "pattern l" the
    attention pattern with its closed form; the same errors fail on perturbed weights (below)."""
    c = ALL[name]

    @given(cases(c))
    def prop(case):
        errs = c.errors(c.build(case), case)
        L = c.build(case).cfg.n_layers
        assert len(errs) == 3 * L + 1
        worst = max(errs, key=errs.get)
        assert errs[worst] <= c.bound_for(case), f"{worst}: {errs[worst]:.3e} > {c.bound_for(case):.3e}"

    prop()


@pytest.mark.parametrize("op, x, want", [
    ("sum", [1.0, 2.0, 3.0, -4.0, 0.5], [1.0, 3.0, 6.0, 2.0, 2.5]),
    ("min", [1.0, 2.0, -3.0, 4.0, 0.5], [1.0, 1.0, -3.0, -3.0, -3.0]),
    ("max", [1.0, 2.0, -3.0, 4.0, 0.5], [1.0, 2.0, 2.0, 4.0, 4.0]),
])
def test_prefix_construction_by_hand_on_five_values_in_three_layers(op, x, want):
    """n = 5 is not a power of two and needs ceil(log2 5) = 3 layers. beta = 40: the leakage bound
    (2 L R or L 2^L R) * 5 e^-40 is below 1e-13, so 1e-12 is a safe tolerance."""
    built = scan.build(op, n=5, beta=40.0, radius=4.0)
    assert built.cfg.n_layers == 3
    got = _scan_output(op, built, torch.tensor([x], dtype=torch.float64), 4.0)
    assert got[0].tolist() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 13, 16, 31])
def test_bitonic_construction_sorts_after_padding_to_a_power_of_two(n):
    """beta = 45: the bound 2 L R (m - 1) e^-45 < 1e-15 * L m; tolerance 1e-12."""
    x = 3 * (2 * torch.rand(4, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) - 1)
    built = bsort.build(n=n, beta=45.0, radius=3.0)
    p = int(math.log2(bsort.padded_length(n)))
    assert built.cfg.n_layers == p * (p + 1) // 2
    assert torch.allclose(bsort.sorted_values(built, x, 3.0), S.sort(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n, depth", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4), (17, 5), (32, 5)])
def test_prefix_construction_has_ceil_log2_n_layers(n, depth):
    assert scan.build("sum", n=n, beta=10.0, radius=1.0).cfg.n_layers == depth


# ----------------------------------------------------------------------------------------------
# One layer fewer fails


def _counterexample(op: str, n: int, radius: float) -> torch.Tensor:
    """x_1 carries what the last prefix needs (1 for sum, -R for min, +R for max); the rest are
    neutral. With L - 1 layers token n sees only the last 2^{L-1} < n values, never x_1."""
    rest = {"sum": 0.0, "min": radius, "max": -radius}[op]
    x = torch.full((1, n), rest, dtype=torch.float64)
    x[0, 0] = {"sum": 1.0, "min": -radius, "max": radius}[op]
    return x


@pytest.mark.parametrize("op", S.SCAN_OPS)
@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9, 17, 32, 33])
def test_one_layer_fewer_fails_on_some_input(op, n):
    radius, beta = 2.0, 40.0
    x = _counterexample(op, n, radius)
    want = S.prefix_scan(x, op)[0, -1].item()
    full = scan.build(op, n=n, beta=beta, radius=radius)
    short = scan.build(op, n=n, beta=beta, radius=radius, n_layers=scan.n_layers_for(n) - 1)
    assert _scan_output(op, full, x, radius)[0, -1].item() == pytest.approx(want, abs=1e-12)
    assert abs(_scan_output(op, short, x, radius)[0, -1].item() - want) > 0.5  # off by ~x_1 (1, or 2R)


# ----------------------------------------------------------------------------------------------
# The attention pattern depends on positions only


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("n", [1, 6, 16])
def test_attention_pattern_is_identical_for_every_input(name, n):
    """Two unrelated inputs, one of them a thousand times larger: patterns equal bit for bit (the
    scores never see the values). Not vacuous: the patterns are far from uniform (next test)."""
    c = ALL[name]
    case = _case(c, n, seed=n)
    built = c.build(case)
    radius = case.params["radius"]
    other = -case.data["x"].flip(-1) * 1000
    tok = TOKENS[name]
    first, second = P.patterns(built, tok(case.data["x"], radius)), P.patterns(built, tok(other, 1000 * radius))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_pattern_weights_by_hand():
    """n = 2, beta = ln 2, layer 0: token 2 sees keys 0, 1, 2 with scores 0, 1, 0, so its weights are
    1/4, 2/4, 1/4; token 1 sees keys 0, 1 with scores 1, 0: weights 2/3, 1/3."""
    built = scan.build("sum", n=2, beta=math.log(2.0), radius=1.0)
    A = P.patterns(built, scan.tokens(torch.zeros(1, 2, dtype=torch.float64), "sum", 1.0))[0][0]
    assert A[2].tolist() == pytest.approx([0.25, 0.5, 0.25], abs=1e-15)
    assert A[1, :2].tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-15)
    assert A[0, 0].item() == 1.0


# ----------------------------------------------------------------------------------------------
# The hardmax limit: error versus inverse temperature


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("n", [2, 7, 32])
def test_error_falls_like_exp_minus_beta_and_stays_below_the_bound(name, n):
    """Over beta = 6 .. 22 the leakage omega = (V-1)/(e^beta + V-1) is <= 0.08 and the error is
    linear in omega to first order, so the slope of log error against beta is -1 within O(omega):
    0.1 allows for beta = 6 at n = 32. At every beta the error is below the stated bound."""
    c = ALL[name]
    case = _case(c, n, seed=3)
    betas = [6.0, 10.0, 14.0, 18.0, 22.0]
    errs = []
    for beta in betas:
        swept = Case({**case.params, "beta": beta}, data=case.data)
        errs.append(max(c.errors(c.build(swept), swept).values()))
        assert errs[-1] <= c.bound_for(swept)
    b = torch.tensor(betas, dtype=torch.float64)
    y = torch.tensor(errs, dtype=torch.float64).log()
    slope = float(((b - b.mean()) * (y - y.mean())).sum() / ((b - b.mean()) ** 2).sum())
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_leakage_is_the_off_target_weight_and_below_its_simple_bound():
    assert P.leakage(1, 3.0) == 0.0
    assert P.leakage(3, math.log(2.0)) == pytest.approx(0.5)  # 2 / (2 + 2), as in the hand test
    for V, beta in [(2, 1.0), (33, 10.0), (32, 800.0)]:
        assert P.leakage(V, beta) <= (V - 1) * math.exp(-beta)


# ----------------------------------------------------------------------------------------------
# Checks, mutation, shapes


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("seed", range(4))
def test_check_fails_on_perturbed_weights(name, seed):
    c = ALL[name]
    gen = torch.Generator().manual_seed(seed)
    case = c.sample(gen)
    broken, key = mutate(c.build(case), gen)
    errs = c.errors(broken, case)
    assert max(errs.values()) > 1e3 * c.bound_for(case), f"perturbing {key} went unnoticed: {errs}"


@pytest.mark.parametrize("name", list(ALL))
def test_run_check_passes_and_catches_mutation(name):
    c = ALL[name]
    ok = run_check(c, seed=5, n_cases=4)
    assert ok.passed and ok.error <= ok.bound and len(ok.slopes) == 4
    bad = run_check(c, seed=5, n_cases=4, mutated=True)
    assert bad.caught is True and not bad.passed


@pytest.mark.parametrize("name", list(ALL))
def test_weights_have_the_shapes_their_config_implies(name):
    c = ALL[name]
    built = c.build(_case(c, 11))
    M.check_weights(built.cfg, built.weights)
    assert built.cfg.qk_source == "positions" and built.cfg.mlp_input == "concat"


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("call, match", [
    (lambda: scan.build("min", n=4, beta=10.0, radius=math.inf), "radius must be a finite number > 0"),
    (lambda: scan.scratch_identity("min", math.inf), "infinite identity .* inf - inf = nan"),
    (lambda: scan.scratch_identity("max", 1e308), r"overflows torch.float64: .* 2 \* radius"),
    (lambda: scan.scratch_identity("sum", 1e307, n=32), r"overflows torch.float64: .* n \* radius"),
    (lambda: scan.scratch_identity("min", 2e38, dtype=torch.float32), "overflows torch.float32"),
    (lambda: scan.build("product", n=4, beta=10.0, radius=1.0), "op must be one of"),
    (lambda: scan.build("sum", n=0, beta=10.0, radius=1.0), "n must be >= 1"),
    (lambda: scan.build("sum", n=4, beta=-1.0, radius=1.0), "beta must be a finite number > 0"),
    (lambda: scan.tokens(torch.tensor([[0.5, 3.0]], dtype=torch.float64), "min", 2.0),
     r"values must lie in \[-radius, radius\]"),
    (lambda: bsort.tokens(torch.tensor([[0.5, -3.0]], dtype=torch.float64), 2.0), "padding"),
    (lambda: bsort.build(n=4, beta=10.0, radius=1e308), "overflows float64"),
])
def test_bad_construction_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sort_bound_is_infinite_where_the_gate_margin_is_not_guaranteed():
    """omega > 1 / (2L): the leakage error could reach R and push |a - h| past the gate B = 4R."""
    assert bsort.bound(n=32, beta=1.0, radius=1.0) == math.inf
    assert bsort.bound(n=32, beta=12.0, radius=1.0) < 1e-2
