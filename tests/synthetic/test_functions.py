"""Nonlinear function classes and task mixtures: shapes, seeding (model k alone = model k in a
batch), agreement with per-prompt loop implementations, mixture frequencies, bad fields.

The loop references redraw the parameters from a fresh generator with the same seed in the
documented draw order, then evaluate every prompt point by point in plain Python / numpy; they
share no code with synthetic.functions beyond torch's random number generator."""

import math

import numpy as np
import pytest
import torch

from synthetic.functions import (
    ClassificationTask,
    DecisionTreeTask,
    FunctionBatch,
    MixtureTask,
    QuadraticTask,
    ReluNetworkTask,
    sample,
)
from synthetic.regression import RegressionTask, make_generators
from synthetic.tasks import SparseRegressionTask

F64 = torch.float64
TASKS = [
    DecisionTreeTask(d=4, n_points=5, depth=3, noise_std=0.1),
    ReluNetworkTask(d=4, n_points=5, width=7, scale=2.0, noise_std=0.1),
    QuadraticTask(d=4, n_points=5, form="squares", noise_std=0.1),
    QuadraticTask(d=4, n_points=5, form="inner", w_std=0.5),
    ClassificationTask(d=4, n_points=5, labels="sign"),
    ClassificationTask(d=4, n_points=5, labels="bernoulli", scale=3.0),
    MixtureTask(d=4, n_points=5, components=(RegressionTask(d=4, n_points=5, noise_std=0.1),
                                             SparseRegressionTask(d=4, n_points=5, k=2),
                                             DecisionTreeTask(d=4, n_points=5, depth=2),
                                             ClassificationTask(d=4, n_points=5)), probs=(0.4, 0.2, 0.2, 0.2)),
]
IDS = ["tree", "relu2nn", "squares", "inner", "sign", "bernoulli", "mixture"]
# float64 in both the sampler and the references: only summation order differs (round-off ~1e-15)
TOL = dict(rtol=1e-12, atol=1e-12)


def _fields(batch: FunctionBatch) -> dict[str, torch.Tensor]:
    return {name: t for name, t in vars(batch).items() if t is not None}


def _draw(seed: int, task, B: int):
    """A fresh generator with ``seed`` and the inputs x (B, N, d), drawn first as documented."""
    g = torch.Generator().manual_seed(seed)
    return g, torch.randn(B, task.n_points, task.d, generator=g, dtype=F64)


# ----------------------------------------------------------------------------------------------
# Contract shared with synthetic.regression.sample


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_batches_have_the_regression_batch_shapes(task):
    batch = sample(task, make_generators([0, 1]), 3)
    assert batch.x.shape == (2, 3, 5, 4) and batch.y.shape == (2, 3, 5) and batch.w.shape == (2, 3, 4)
    assert batch.x.dtype == torch.float32
    assert (batch.family is None) == (not isinstance(task, MixtureTask))


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_model_k_of_a_batch_sees_exactly_what_it_sees_alone(task):
    together = _fields(sample(task, make_generators([11, 12, 13]), 4, dtype=F64))
    alone = _fields(sample(task, make_generators([12]), 4, dtype=F64))
    assert together.keys() == alone.keys()
    for name, tensor in together.items():
        assert torch.equal(tensor[1:2].nan_to_num(7.0), alone[name].nan_to_num(7.0)), name


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_float32_batch_is_the_float64_batch_rounded_and_to_keeps_the_family(task):
    b64 = sample(task, make_generators([5]), 6, dtype=F64)
    b32 = sample(task, make_generators([5]), 6)
    for name, t in _fields(b64).items():
        expected = t.to(torch.float32) if t.is_floating_point() else t
        assert torch.equal(_fields(b32)[name].nan_to_num(7.0), expected.nan_to_num(7.0)), name
    moved = b64.to(dtype=torch.float32)
    assert torch.equal(moved.y, b32.y) and (moved.family is None) == (b64.family is None)


@pytest.mark.parametrize("task", TASKS[:3], ids=IDS[:3])
def test_noise_std_changes_y_only(task):
    import dataclasses

    clean = sample(dataclasses.replace(task, noise_std=0.0), make_generators([3]), 4, dtype=F64)
    noisy = sample(task, make_generators([3]), 4, dtype=F64)
    assert torch.equal(clean.x, noisy.x) and not torch.allclose(clean.y, noisy.y)


def test_curriculum_zeroes_the_inactive_coordinates_of_x():
    task = ReluNetworkTask(d=5, n_points=4, n_dims_active=2)
    x = sample(task, make_generators([0]), 8).x
    assert torch.all(x[..., 2:] == 0) and torch.all(x[..., :2] != 0)


# ----------------------------------------------------------------------------------------------
# Agreement with per-prompt loop implementations


def test_decision_tree_matches_walking_each_tree_in_python():
    task, B = TASKS[0], 6
    g, x = _draw(4, task, B)
    features = torch.randint(task.d, (B, 2**task.depth - 1), generator=g)
    leaves = torch.randn(B, 2**task.depth, generator=g, dtype=F64)
    eps = torch.randn(B, task.n_points, generator=g, dtype=F64)
    batch = sample(task, make_generators([4]), B, dtype=F64)
    for b in range(B):
        for n in range(task.n_points):
            node = 0
            for _ in range(task.depth):  # x[feature] > 0 goes right (child 2i + 2), else left (2i + 1)
                node = 2 * node + 2 if x[b, n, features[b, node]] > 0 else 2 * node + 1
            expected = float(leaves[b, node - (2**task.depth - 1)]) + task.noise_std * float(eps[b, n])
            assert math.isclose(float(batch.y[0, b, n]), expected, rel_tol=1e-12, abs_tol=1e-12)
    assert torch.isnan(batch.w).all()  # no linear weight


def test_a_stump_sends_points_both_ways():
    """Not vacuous: a walk that always went one way would give every point of a prompt one leaf."""
    batch = sample(DecisionTreeTask(d=2, n_points=200, depth=1), make_generators([0]), 5, dtype=F64)
    assert all(len(torch.unique(y)) == 2 for y in batch.y[0])


def test_relu_network_matches_a_numpy_forward_pass_per_prompt():
    task, B = TASKS[1], 4
    g, x = _draw(9, task, B)
    W1 = torch.randn(B, task.d, task.width, generator=g, dtype=F64).numpy()
    W2 = torch.randn(B, task.width, generator=g, dtype=F64).numpy()
    eps = torch.randn(B, task.n_points, generator=g, dtype=F64).numpy()
    y = sample(task, make_generators([9]), B, dtype=F64).y[0].numpy()
    for b in range(B):
        expected = task.scale * math.sqrt(2 / task.width) * np.maximum(x[b].numpy() @ W1[b], 0) @ W2[b]
        np.testing.assert_allclose(y[b], expected + task.noise_std * eps[b], **TOL)


@pytest.mark.parametrize("task", TASKS[2:4], ids=IDS[2:4])
def test_quadratic_matches_its_formula_point_by_point(task):
    B = 3
    g, x = _draw(2, task, B)
    w = torch.randn(B, task.d, generator=g, dtype=F64) * task.w_std
    eps = torch.randn(B, task.n_points, generator=g, dtype=F64)
    y = sample(task, make_generators([2]), B, dtype=F64).y[0]
    for b in range(B):
        for n in range(task.n_points):
            xs, ws = x[b, n].tolist(), w[b].tolist()
            if task.form == "squares":
                f = sum(xi * xi * wi for xi, wi in zip(xs, ws)) / math.sqrt(3)
            else:
                f = sum(xi * wi for xi, wi in zip(xs, ws)) ** 2 / math.sqrt(2 * task.d)
            assert math.isclose(float(y[b, n]), f + task.noise_std * float(eps[b, n]), rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize("task", TASKS[4:6], ids=IDS[4:6])
def test_classification_labels_follow_the_sign_or_the_sigmoid(task):
    B = 5
    g, x = _draw(6, task, B)
    w = torch.randn(B, task.d, generator=g, dtype=F64)
    u = torch.rand(B, task.n_points, generator=g, dtype=F64)
    batch = sample(task, make_generators([6]), B, dtype=F64)
    assert torch.equal(batch.w[0], w)  # the classifier's weight is a linear weight
    for b in range(B):
        for n in range(task.n_points):
            margin = sum(xi * wi for xi, wi in zip(x[b, n].tolist(), w[b].tolist()))
            if task.labels == "sign":
                expected = 1.0 if margin >= 0 else -1.0
            else:
                expected = 1.0 if float(u[b, n]) < 1 / (1 + math.exp(-task.scale * margin)) else -1.0
            assert float(batch.y[0, b, n]) == expected


def test_bernoulli_labels_agree_with_the_sign_less_often_at_a_small_scale():
    """P(y = sign(w.x)) grows with the scale; at scale 0.1 labels are nearly coin flips."""
    agree = []
    for scale in (0.1, 10.0):
        b = sample(ClassificationTask(d=4, n_points=50, labels="bernoulli", scale=scale), make_generators([1]), 200)
        agree.append(float((b.y == torch.where((b.x * b.w[..., None, :]).sum(-1) >= 0, 1.0, -1.0)).float().mean()))
    assert agree[0] < 0.65 < 0.9 < agree[1]


def test_mixture_prompts_come_from_the_component_named_by_family():
    task, B = TASKS[6], 40
    g, x = _draw(8, task, B)
    u = torch.rand(B, generator=g, dtype=F64)
    batch = sample(task, make_generators([8]), B, dtype=F64)
    cdf = np.cumsum(task.probs)
    for b in range(B):
        assert int(batch.family[0, b]) == int(np.searchsorted(cdf, float(u[b]), side="right"))
    fam, y, w = batch.family[0], batch.y[0], batch.w[0]
    linear = fam == 0  # y = w.x + 0.1 eps: the residual is the noise only
    assert 0 < float(((y - (x * w[:, None]).sum(-1))[linear]).abs().max()) < 0.6
    sparse = fam == 1  # noiseless, k = 2 nonzero weights
    torch.testing.assert_close(y[sparse], (x * w[:, None]).sum(-1)[sparse], **TOL)
    assert torch.all((w[sparse] != 0).sum(-1) <= 2)
    assert torch.isnan(w[fam == 2]).all() and set(y[fam == 3].unique().tolist()) == {-1.0, 1.0}


def test_mixture_frequencies_match_the_probabilities():
    probs, B = (0.5, 0.3, 0.2), 6000
    comps = tuple(QuadraticTask(d=2, n_points=1) for _ in probs)
    family = sample(MixtureTask(d=2, n_points=1, components=comps, probs=probs), make_generators([0, 1]), B).family
    for m, p in enumerate(probs):
        for k in range(2):
            freq = float((family[k] == m).double().mean())
            # 5 binomial standard deviations: a false failure has probability < 1e-6 per check
            assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / B), (m, k, freq)


def test_mixture_with_no_probs_is_uniform():
    comps = (DecisionTreeTask(d=2, n_points=1), ReluNetworkTask(d=2, n_points=1))
    family = sample(MixtureTask(d=2, n_points=1, components=comps), make_generators([3]), 4000).family
    assert abs(float(family.double().mean()) - 0.5) < 5 * math.sqrt(0.25 / 4000)


# ----------------------------------------------------------------------------------------------
# Bad fields


@pytest.mark.parametrize("make, field", [
    (lambda: DecisionTreeTask(d=3, n_points=4, depth=0), "DecisionTreeTask.depth"),
    (lambda: ReluNetworkTask(d=3, n_points=4, width=0), "ReluNetworkTask.width"),
    (lambda: ReluNetworkTask(d=3, n_points=4, scale=0.0), "ReluNetworkTask.scale"),
    (lambda: QuadraticTask(d=3, n_points=4, form="cubes"), "QuadraticTask.form"),
    (lambda: ClassificationTask(d=3, n_points=4, labels="probit"), "ClassificationTask.labels"),
    (lambda: ClassificationTask(d=3, n_points=4, n_dims_active=4), "ClassificationTask.n_dims_active"),
    (lambda: DecisionTreeTask(d=3, n_points=4, noise_std=-1.0), "DecisionTreeTask.noise_std"),
    (lambda: MixtureTask(d=3, n_points=4), "MixtureTask.components"),
    (lambda: MixtureTask(d=3, n_points=4, components=(QuadraticTask(d=2, n_points=4),)), "MixtureTask.components[0]"),
    (lambda: MixtureTask(d=3, n_points=4, components=(RegressionTask(d=3, n_points=4, kind="anisotropic",
                                                                     condition_number=2.0),)), "components[0]"),
    (lambda: MixtureTask(d=3, n_points=4, components=(QuadraticTask(d=3, n_points=4),) * 2, probs=(0.5, 0.6)),
     "MixtureTask.probs"),
])
def test_bad_fields_raise_one_line_errors_naming_the_field(make, field):
    with pytest.raises(ValueError) as err:
        make()
    assert field in str(err.value) and "\n" not in str(err.value)


def test_a_component_of_an_unknown_class_is_a_type_error():
    with pytest.raises(TypeError, match=r"MixtureTask.components\[0\]"):
        MixtureTask(d=3, n_points=4, components=("tree",))


def test_sample_refuses_a_linear_task():
    with pytest.raises(TypeError, match="sample: task"):
        sample(RegressionTask(d=3, n_points=4), make_generators([0]), 2)
