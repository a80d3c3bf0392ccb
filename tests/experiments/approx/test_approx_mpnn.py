"""Trained MPNN + VN models against the constructions on one attention layer (experiments.approx.mpnn)."""

import math

import pytest
import torch

from constructions import mpnn
from constructions.approx import mpnn_attention as A
from constructions.approx import mpnn_selection as S
from experiments.approx import mpnn as X

F64 = torch.float64
TINY = dict(steps=2, batch_size=4, eval_graphs=8, seeds=(0, 1), widths=(4,), depths=(), relu_widths=(4,),
            taylor_orders=(2,), taus=(2.0,))


def study(**kw) -> X.MPNNStudy:
    return X.MPNNStudy(**{**TINY, **kw})


# ----------------------------------------------------------------------------------------------
# The study, the reference, the measurement


@pytest.mark.parametrize("field, value", [
    ("attention", "relu"), ("n", 1), ("d", 0), ("heads", 0), ("widths", (4, 0)), ("depths", [1, "2"]),
    ("seeds", ()), ("seeds", (1, 1)), ("steps", 0), ("lr", 0.0), ("lr", math.nan), ("init_std", -1.0),
    ("edge_prob", 1.5), ("taus", (2.0, -1.0)), ("taylor_orders", (0,)), ("eval_graphs", 2.5),
    ("warmup", -1), ("depth_at", True), ("hyper", (("lr", 0.1),)), ("hyper", (("beta1", -0.5),)), ("hyper", 3),
])
def test_a_bad_study_field_raises_a_value_error_naming_it(field, value):
    with pytest.raises(ValueError, match=f"mpnn.{field}"):
        X.MPNNStudy(**{field: value})


def test_softmax_with_several_heads_is_rejected_not_changed():
    """Documented choice: the power-sum and selection constructions imitate one head."""
    with pytest.raises(ValueError, match="mpnn.heads"):
        X.MPNNStudy(attention="softmax", heads=2)
    assert X.MPNNStudy(attention="linear", heads=2).heads == 2


def test_study_from_plain_values_routes_optimiser_settings_to_fields_and_hyper():
    """As a TOML section arrives: lists, and optimiser settings split off as (name, value) pairs."""
    s = X.study_from({"attention": "softmax", "widths": [4, 8], "taus": [2, 4]},
                     {"lr": 0.01, "warmup": 50.0, "beta2": 0.99})
    assert (s.widths, s.taus, s.lr, s.warmup, s.hyper) == ((4, 8), (2, 4), 0.01, 50.0, (("beta2", 0.99),))
    assert s.hypers() == {"lr": 0.01, "weight_decay": 0.0, "warmup": 50.0, "clip": 1.0, "min_lr_ratio": 0.1,
                          "beta2": 0.99}
    assert set(X.MPNNStudy.field_names()) >= {"attention", "widths", "hyper", "lr"}


def test_stated_slopes_name_the_construction_curves_of_each_target():
    """ReLU products fall like m^-2; the power sums like 1/(T+1)! (slope of its log over T); the
    selection leak like e^-tau. Trained models and the exact layer state none."""
    lin, soft = X.MPNNStudy(), X.MPNNStudy(attention="softmax", taylor_orders=(2, 4, 6, 8))
    assert X.stated_slopes(lin) == {("linear attention", X.RELU_PRODUCTS): -2.0}
    got = X.stated_slopes(soft)
    assert got[("softmax attention", X.SELECTION)] == -1.0
    by_hand = [math.log(1 / math.factorial(t + 1)) for t in (2, 4, 6, 8)]  # slope of a least-squares line
    xs = [2, 4, 6, 8]
    slope = sum((x - 5) * (y - sum(by_hand) / 4) for x, y in zip(xs, by_hand)) / sum((x - 5) ** 2 for x in xs)
    assert got[("softmax attention", X.POWER_SUMS)] == pytest.approx(slope, rel=1e-12)


def test_a_shape_in_both_sweeps_is_trained_once_and_listed_under_both():
    s = X.MPNNStudy(widths=(4, 32), depth_at=2, depths=(1, 2), width_at=32)
    assert s.shapes() == {(4, 2): [("width", 4)], (32, 2): [("width", 32), ("depth", 2)], (32, 1): [("depth", 1)]}


def test_reference_and_evaluation_graphs_depend_on_reference_seed_only():
    """Trained models and constructions are scored on the same graphs: changing the training seeds,
    widths or steps leaves them unchanged; another reference_seed changes them."""
    a, b = X.reference(study()), X.reference(study(seeds=(5, 6, 7), widths=(16,), steps=9))
    assert torch.equal(a.features, b.features) and torch.equal(a.target, b.target)
    assert not torch.equal(a.features, X.reference(study(reference_seed=1)).features)


def test_softmax_beta_puts_the_largest_evaluation_score_at_one():
    ref = X.reference(study(attention="softmax", eval_graphs=32))
    assert A.max_score(ref.case()) == pytest.approx(1.0, rel=1e-12)


def test_reference_output_is_model_attention_on_the_evaluation_graphs():
    """Anchored to model.py: the linear layer's output is sum_h W_O^T sum_j (q_i.k_j / n) v_j."""
    ref = X.reference(study(heads=2, eval_graphs=4))
    want = torch.zeros_like(ref.target)
    for p in ref.heads():
        q, k, v = (ref.features @ torch.from_numpy(p[W]) for W in ("W_Q", "W_K", "W_V"))
        want += (q @ k.transpose(-1, -2) / ref.features.shape[1]) @ v @ torch.from_numpy(p["W_O"])
    torch.testing.assert_close(ref.target, want, rtol=0, atol=1e-15)


def test_all_zero_weights_score_the_size_of_the_target():
    """Zero weights output 0, so error = max |target| and rmse = the target's root mean square."""
    ref = X.reference(study(eval_graphs=16))
    cfg = X.mpnn_config(study(), 4, 2)
    got = X.errors(cfg, mpnn.zeros(cfg, 3), ref.features, ref.adjacency, ref.target)
    assert got["error"].tolist() == [float(ref.target.abs().max())] * 3
    torch.testing.assert_close(got["rmse"], ref.target.pow(2).mean().sqrt().expand(3), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------------
# Training


def test_a_model_trained_in_a_batch_equals_the_same_seed_trained_alone():
    """float64, 6 steps, K = 3 against K = 1 for seed 11. Every model's data, init and optimiser
    state are its own, so the only difference is the summation order inside batched matmuls:
    ~1e-16 relative per step. AdamW divides by sqrt(v) + 1e-8, so a relative perturbation delta of
    the gradient moves an update by at most ~ lr * delta * |g| / (sqrt(v) + eps) <= lr * delta per
    coordinate and step; 6 steps at lr 3e-3 stay far below 1e-12. We allow 1e-10."""
    s = study(seeds=(3, 11, 5), steps=6)
    _, batched = X.train_shape(s, 4, 2, dtype=F64)
    _, alone = X.train_shape(s, 4, 2, seeds=(11,), dtype=F64)
    torch.testing.assert_close(batched.theta[1:2], alone.theta, rtol=0, atol=1e-10)
    assert batched.metrics[1][-1]["loss"] == pytest.approx(alone.metrics[0][-1]["loss"], rel=1e-10)
    assert not torch.allclose(batched.theta[0], batched.theta[1])  # the seeds do differ


def test_short_training_cuts_the_evaluation_error_well_below_the_untrained_models():
    """float32, 400 steps, width 16, depth 1, linear attention, 2 seeds. The untrained model (init
    std 0.05) outputs ~0, so its rmse is about the target's (0.036 and 0.049 for these seeds);
    400 steps brought it to 0.0084 and 0.0069 when this test was written (factors 4.3 and 7).
    Asserting a factor 3 on every seed leaves a margin of ~1.5x or more, and still needs the
    virtual node: the least-squares cubic in x_i alone (a model that ignores the other nodes) has
    rmse 0.023 on these graphs, above both thresholds (0.012, 0.016)."""
    s = study(steps=400, batch_size=32, eval_graphs=64, seeds=(0, 1))
    ref = X.reference(s)
    cfg = X.mpnn_config(s, 16, 1)
    spec = X.FlatSpec.of_shapes(mpnn.weight_shapes(cfg, 1))
    untrained = X.MPNNProblem([X.MPNNRun(s, 16, 1, seed) for seed in s.seeds]).init_theta()
    before = X.errors(cfg, spec.views(untrained), ref.features, ref.adjacency, ref.target)
    trainer, trained = X.train_shape(s, 16, 1)
    after = X.errors(cfg, spec.views(trained.theta), ref.features, ref.adjacency, ref.target)
    assert bool(trained.alive.all())
    assert (after["rmse"] < before["rmse"] / 3).all(), (before, after)
    assert (after["error"] < before["error"]).all(), (before, after)


def test_trained_frame_has_one_row_per_shape_seed_and_sweep():
    """Shapes (4, 2), (8, 2), (8, 1); (8, 2) is in both sweeps: 4 memberships x 2 seeds = 8 rows,
    and its two rows per seed are the same model (same error)."""
    s = study(widths=(4, 8), depth_at=2, depths=(1, 2), width_at=8)
    df = X.trained_frame(s)
    assert tuple(df.columns) == X.COLUMNS and len(df) == 8
    assert set(df["model"]) == {"trained"} and set(df["target"]) == {"linear attention"}
    both = df[(df["width"] == 8) & (df["depth"] == 2)]
    assert sorted(both["parameter"]) == ["depth", "depth", "width", "width"]
    assert both.groupby("seed")["error"].nunique().eq(1).all()
    cfg = X.mpnn_config(s, 4, 2)
    assert (df[df["width"] == 4]["n_params"] == mpnn.n_parameters(cfg)).all()


# ----------------------------------------------------------------------------------------------
# Constructions on the same layer and graphs


def test_construction_frame_rows_and_columns():
    lin = X.construction_frame(study(relu_widths=(4, 8, 16), eval_graphs=4))
    soft = X.construction_frame(study(attention="softmax", taylor_orders=(2, 4), taus=(2.0, 4.0, 6.0), eval_graphs=4))
    assert tuple(lin.columns) == X.COLUMNS == tuple(soft.columns)
    assert list(lin["model"]) == [X.EXACT_UNITS] + [X.RELU_PRODUCTS] * 3
    assert list(soft["model"]) == [X.POWER_SUMS] * 2 + [X.SELECTION] * 3
    assert lin["seed"].isna().all() and lin["final_loss"].isna().all() and lin["alive"].all()


def test_relu_products_rows_equal_the_registered_measurement_and_stay_under_its_bound():
    """The same built weights measured by mpnn_attention.measured on a Case holding the study's
    layer and graphs give the same absolute sup error; it falls like m^-2 and stays under relu_bound."""
    s = study(relu_widths=(8, 32), eval_graphs=32, heads=2)
    ref, df = X.reference(s), X.construction_frame(s)
    relu = df[df["model"] == X.RELU_PRODUCTS]
    for m, error, bound in zip(relu["value"], relu["error"], relu["bound"]):
        case = ref.case(m=int(m))
        built = A.build_linear_relu(ref.heads(), s.n, int(m))
        assert error == A.measured(built, case)["output"]
        assert error <= bound == A.relu_bound(case)
    assert relu["error"].iloc[1] < relu["error"].iloc[0] / 4  # m x4 -> error /16 at the rate; /4 is safe
    assert df[df["model"] == X.EXACT_UNITS]["error"].iloc[0] < 1e-12  # exact: float64 round-off


def test_power_sum_and_selection_rows_fall_as_order_and_temperature_grow():
    """Each row equals the registered measurement on the same Case and stays under its bound; the
    Taylor remainder at rho = 1 falls by (T+1)(T+2) ~ 20x per +2 in T, the selection leak by e^-2
    per +2 in tau, so strict decrease is safe."""
    s = study(attention="softmax", taylor_orders=(2, 4, 6), taus=(2.0, 4.0, 6.0), eval_graphs=32)
    ref, df = X.reference(s), X.construction_frame(s)
    for model, bound_fn in ((X.POWER_SUMS, A.taylor_bound), (X.SELECTION, S.selection_bound)):
        rows = df[df["model"] == model]
        assert rows["error"].is_monotonic_decreasing and rows["error"].nunique() == len(rows)
        assert (rows["error"] <= rows["bound"]).all()
        for p, v, b in zip(rows["parameter"], rows["value"], rows["bound"]):
            assert b == bound_fn(ref.case(**{p: v}))
    sel = df[df["model"] == X.SELECTION].iloc[0]
    built = S.build_selection(ref.heads()[0], ref.cfg.softmax_beta, s.n, 2.0)
    assert sel["error"] == A.measured(built, ref.case(tau=2.0), with_ids=True)["output"]
    assert sel["depth"] == s.n + 3


def test_comparison_frame_is_the_trained_rows_then_the_construction_rows():
    s = study()
    df = X.comparison_frame(s)
    assert list(df["model"]) == ["trained"] * 2 + [X.EXACT_UNITS, X.RELU_PRODUCTS]


# ----------------------------------------------------------------------------------------------
# Longer runs


@pytest.mark.slow
def test_trained_error_falls_with_width():
    """2000 steps, widths 4 and 64 at depth 2, 3 seeds (~45 s on one CPU thread): the median error
    of the widest model beats the narrowest. Measured when written: sup error 0.072 -> 0.0063,
    rmse 0.0080 -> 0.00078 (a factor ~10, so the strict comparison has a wide margin)."""
    s = X.MPNNStudy(widths=(4, 64), depths=(), steps=2000, seeds=(0, 1, 2))
    df = X.trained_frame(s)
    med = df.groupby("width")[["error", "rmse"]].median()
    print(med)
    assert med.loc[64, "rmse"] < med.loc[4, "rmse"], med
    assert med.loc[64, "error"] < med.loc[4, "error"], med


@pytest.mark.gpu
def test_training_on_cuda_equals_training_on_the_cpu():
    """The graphs are drawn on the CPU generators and moved, so both devices see the same numbers;
    float64 kernels on the GPU reduce in another order (~1e-16 relative), which 6 AdamW steps keep
    far below 1e-9 (see the batched-equals-alone test for the per-step bound)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    s = study(seeds=(0, 1, 2), steps=6)
    ref = X.reference(s)
    trainer, cpu = X.train_shape(s, 8, 2, dtype=F64)
    _, gpu = X.train_shape(s, 8, 2, dtype=F64, device="cuda")
    torch.testing.assert_close(gpu.theta.cpu(), cpu.theta, atol=1e-9, rtol=0)
    cfg, spec = trainer.problem.cfg, trainer.spec
    got = X.errors(cfg, spec.views(gpu.theta), ref.features, ref.adjacency, ref.target)
    want = X.errors(cfg, spec.views(cpu.theta), ref.features, ref.adjacency, ref.target)
    torch.testing.assert_close(got["error"], want["error"], atol=1e-9, rtol=0)
