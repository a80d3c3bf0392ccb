"""The MPNN + virtual-node forward pass (constructions.mpnn), random graphs (synthetic.graphs) and
the constructions approximating attention (constructions.approx.mpnn_attention)."""

import math

import pytest
import torch
from hypothesis import given, settings

from constructions import model as M
from constructions import mpnn
from constructions.approx import mpnn_attention as A
from constructions.approx import mpnn_selection as S
from constructions.check.contract import Built, Case
from constructions.check.run import mutate, run_check
from constructions.check.strategies import cases
from synthetic import graphs

F64 = torch.float64
ALL = [A.LINEAR_EXACT, A.LINEAR_RELU, A.SOFTMAX_TAYLOR, S.SELECTION]


# ----------------------------------------------------------------------------------------------
# The forward pass


def test_virtual_node_sums_messages_and_broadcasts_them_back():
    """ReLU units, D = Dv = 1: messages relu(h_j) = h_j (features >= 0), the VN holds sum_j h_j, and
    the node update adds relu(g) = sum: features (1, 2, 3) -> every node h_i + 6."""
    cfg = mpnn.MPNNConfig(d_in=1, d_node=1, d_vn=1, n_layers=1, width=1, update="relu")
    w = mpnn.zeros(cfg)
    w["W_E"][:] = 1
    w["W_U"][:] = 1
    w["layers.0.msg.W_a"][:] = 1
    w["layers.0.msg.W_o"][:] = 1
    w["layers.0.upd.W_a"][0, 2, 0] = 1  # input [h, nbr, g]: read g
    w["layers.0.upd.W_o"][:] = 1
    x = torch.tensor([[[1.0], [2.0], [3.0]]], dtype=F64)
    res = mpnn.forward(cfg, w, x, states=True)
    assert res.vn[0].flatten().tolist() == [6.0]
    assert res.out.flatten().tolist() == [7.0, 8.0, 9.0]


def test_node_update_reads_the_sum_over_graph_neighbours():
    """Exact unit a * b / (1 + c) with a = the neighbour sum, b = 1, c = 0 on a path 0 - 1 - 2."""
    cfg = mpnn.MPNNConfig(d_in=1, d_node=1, d_vn=1, n_layers=1, width=1)
    w = mpnn.zeros(cfg)
    w["W_E"][:] = 1
    w["W_U"][:] = 1
    w["layers.0.upd.W_a"][0, 1, 0] = 1
    w["layers.0.upd.b_b"][:] = 1
    w["layers.0.upd.W_o"][:] = 1
    x = torch.tensor([[[1.0], [10.0], [100.0]]], dtype=F64)
    path = torch.tensor([[[0, 1, 0], [1, 0, 1], [0, 1, 0]]], dtype=F64)
    assert mpnn.forward(cfg, w, x, path).out.flatten().tolist() == [11.0, 111.0, 110.0]


def test_zero_weights_leave_the_embedding_unchanged():
    cfg = mpnn.MPNNConfig(d_in=2, d_node=2, d_vn=3, n_layers=3, width=4, d_out=2)
    w = mpnn.zeros(cfg)
    w["W_E"][0] = torch.eye(2, dtype=F64)
    w["W_U"][0] = torch.eye(2, dtype=F64)
    x = torch.randn(2, 5, 2, dtype=F64)
    assert torch.equal(mpnn.forward(cfg, w, x).out[0], x)


@pytest.mark.parametrize("update", mpnn.UPDATES)
def test_batched_models_equal_separate_runs(update):
    """K = 3 models from their own generators, on their own graphs: model k alone gives the same."""
    cfg = mpnn.MPNNConfig(d_in=3, d_node=5, d_vn=4, n_layers=2, width=6, d_out=2, update=update)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    w = mpnn.init(cfg, gens, std=0.5, dtype=F64)
    batch = graphs.sample(graphs.GraphTask(6, 3), [torch.Generator().manual_seed(10 + s) for s in range(3)], 4)
    out = mpnn.forward(cfg, w, batch.features, batch.adjacency).out
    for k in range(3):
        alone = mpnn.forward(cfg, {key: t[k:k + 1] for key, t in w.items()}, batch.features[k], batch.adjacency[k]).out
        assert torch.allclose(out[k:k + 1], alone, atol=1e-13)


@pytest.mark.parametrize("field, value, match", [
    ("update", "gelu", "MPNNConfig.update must be one of"),
    ("width", 0, "MPNNConfig.width must be >= 1"),
    ("d_vn", 2.0, "MPNNConfig.d_vn must be an int"),
    ("layout", M.Layout.of(x=3), "MPNNConfig.layout must be a Layout of width 2"),
])
def test_bad_config_fields_are_named(field, value, match):
    kwargs = {"d_in": 1, "d_node": 2, "d_vn": 1, "n_layers": 1, "width": 1, field: value}
    with pytest.raises((ValueError, TypeError), match=match):
        mpnn.MPNNConfig(**kwargs)


def test_weights_of_the_wrong_shape_are_named():
    cfg = mpnn.MPNNConfig(d_in=1, d_node=2, d_vn=1, n_layers=1, width=1)
    w = mpnn.zeros(cfg)
    w["layers.0.upd.W_a"] = torch.zeros(1, 4, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"layers.0.upd.W_a has shape \(1, 4, 1\), config implies \(1, 5, 1\)"):
        mpnn.forward(cfg, w, torch.zeros(1, 3, 1, dtype=F64))


def test_random_graphs_are_symmetric_loopless_with_distinct_ids_and_per_model_streams():
    task = graphs.GraphTask(7, 2, edge_prob=0.5)
    both = graphs.sample(task, [torch.Generator().manual_seed(s) for s in (1, 2)], 3)
    alone = graphs.sample(task, [torch.Generator().manual_seed(2)], 3)
    assert torch.equal(both.adjacency, both.adjacency.transpose(-1, -2))
    assert torch.diagonal(both.adjacency, dim1=-2, dim2=-1).abs().max() == 0
    assert torch.equal(both.ids.sort(-1).values[0, 0], torch.arange(1, 8, dtype=F64))
    assert torch.equal(both.features[1], alone.features[0]) and torch.equal(both.adjacency[1], alone.adjacency[0])
    assert both.features.norm(dim=-1).max() <= 1.0
    with pytest.raises(ValueError, match="edge_prob must be in"):
        graphs.GraphTask(3, 2, edge_prob=1.5)


# ----------------------------------------------------------------------------------------------
# The constructions


def test_linear_attention_construction_is_exact_for_every_graph_size_with_the_same_weights():
    """Width H Dh^2 + 1 does not depend on n: one build, graphs of 2 and 40 nodes, float64 exact."""
    gen = torch.Generator().manual_seed(0)
    case = A.LINEAR_EXACT.sample(gen, d=3, n=2)
    built = A.LINEAR_EXACT.build(case)
    for n in (2, 40):
        data = {**A._graphs(gen, 3, n), "reference": case.data["reference"]}
        big = Case(case.params, data=data)
        assert A.LINEAR_EXACT.errors(built, big)["output"] < 1e-13


@pytest.mark.parametrize("c", ALL, ids=lambda c: c.name)
def test_mpnn_construction_is_within_its_bound_on_random_graphs_and_layers(c):
    """Property over d, n, heads, head width, graphs and attention weights. Not vacuous: the bound
    of the rate constructions is within ~10x of the error (see the curves), and every check
    fails on perturbed weights (below)."""

    @settings(max_examples=8)
    @given(cases(c, max_d=3, max_n=6))
    def prop(case):
        errs = c.errors(c.build(case), case)
        assert max(errs.values()) <= c.bound_for(case), errs

    prop()


@pytest.mark.parametrize("c", ALL, ids=lambda c: c.name)
def test_run_check_passes_and_catches_every_mutation(c):
    ok = run_check(c, seed=7, n_cases=3)
    assert ok.passed, ok
    bad = run_check(c, seed=7, n_cases=3, mutated=True)
    assert bad.caught is True


def test_taylor_construction_holds_power_sums_in_the_virtual_node_exactly():
    gen = torch.Generator().manual_seed(2)
    case = A.SOFTMAX_TAYLOR.sample(gen, d=2, n=5)
    errs = A.taylor_errors(A.SOFTMAX_TAYLOR.build(case), case)
    assert max(errs["monomials"], errs["power sums"], errs["num, den"]) < 1e-12
    assert A.monomials(2, 3) == [(0,), (1,), (0, 0), (0, 1), (1, 1), (0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1)]
    assert A.taylor_coefficient((0, 0, 1), 2.0) == 8.0 / 2  # beta^3 / (2! 1!)


def test_taylor_error_falls_like_the_remainder_and_depth_grows_like_log_t():
    gen = torch.Generator().manual_seed(3)
    case = A.SOFTMAX_TAYLOR.sample(gen, d=2, n=4)
    errs, depths = [], []
    for T in (2, 4, 8):
        built = A.build_softmax_taylor(A._heads(case)[0], A._beta(case), T)
        errs.append(A.taylor_errors(built, Case({"T": T}, data=case.data))["output"])
        depths.append(built.cfg.n_layers)
    assert depths == [3, 4, 5]  # ceil(log2 T) + 2
    # the remainder rho^(T+1) / (T+1)! at rho = 1 (the sampler's beta): ratios 3!/5! and 5!/9!,
    # up to a factor 5 for the values and weights around the largest score
    for (lo, hi), ratio in zip(((2, 4), (4, 8)), (errs[1] / errs[0], errs[2] / errs[1])):
        predicted = math.factorial(lo + 1) / math.factorial(hi + 1)
        assert predicted / 5 < ratio < predicted * 5


def test_selection_error_falls_like_e_to_minus_tau():
    gen = torch.Generator().manual_seed(4)
    case = S.SELECTION.sample(gen, d=2, n=5)
    err = lambda tau: S.SELECTION.errors(S.SELECTION.build(Case({**case.params, "tau": tau}, data=case.data)), case)["output"]
    assert err(12.0) / err(8.0) == pytest.approx(math.exp(-4), rel=0.1)
    assert S.SELECTION.build(case).cfg.n_layers == 5 + 3


def test_relu_products_halve_the_error_when_knots_double_twice():
    """Products by m-piece squares: error ~ (2L/m)^2 / 8, so 4x the knots gives ~1/16."""
    gen = torch.Generator().manual_seed(5)
    case = A.LINEAR_RELU.sample(gen, d=2, n=4)
    err = lambda m: A.LINEAR_RELU.errors(A.LINEAR_RELU.build(Case({**case.params, "m": m}, data=case.data)), case)["output"]
    assert 1 / 40 < err(512) / err(128) < 1 / 6


def test_perturbed_construction_weights_exceed_the_bound_at_the_sharpest_value():
    gen = torch.Generator().manual_seed(6)
    sharp = {A.LINEAR_EXACT: {}, A.LINEAR_RELU: {"m": 2048}, A.SOFTMAX_TAYLOR: {"T": 8}, S.SELECTION: {"tau": 12.0}}
    for c, params in sharp.items():
        for _ in range(4):
            case = c.sample(gen)
            case = Case({**case.params, **params}, data=case.data)
            broken, key = mutate(c.build(case), gen)
            errs = c.errors(broken, case)
            output = errs.pop("output")
            errs.pop("input")
            # Taylor: the top-degree terms weigh ~1/9! in the output, so a perturbation of the weights
            # that build them shows in the intermediates (exact to round-off when intact)
            seen = output > c.bound_for(case) or max(errs.values(), default=0.0) > 1e-9
            assert seen, f"{c.name}: perturbing {key} went unnoticed"


def test_selection_needs_a_positive_temperature_and_taylor_a_positive_order():
    head = A._heads(S.SELECTION.sample(torch.Generator().manual_seed(0), d=2, n=3))[0]
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        S.build_selection(head, 1.0, 3, 0.0)
    with pytest.raises(ValueError, match="T must be >= 1"):
        A.build_softmax_taylor(head, 1.0, 0)
    assert isinstance(A.build_softmax_taylor(head, 1.0, 1), Built)


def test_mpnn_curves_report_error_depth_and_width_per_value():
    from experiments.approx.curves import mpnn_curves

    df = mpnn_curves(n_cases=1, widths=(16, 64, 256), orders=(2, 4, 6), taus=(4.0, 8.0, 12.0))
    by = df.groupby("construction")
    assert by["depth"].max()["mpnn_softmax_taylor"] == 5 and by["width"].max()["mpnn_linear_attention_relu"] > 0
    slopes = by["slope"].first()
    assert slopes["mpnn_softmax_selection"] == pytest.approx(-1.0, abs=0.15)
    assert slopes["mpnn_linear_attention_relu"] == pytest.approx(-2.0, abs=0.35)
    assert (df["error"] <= df["bound"]).all()
