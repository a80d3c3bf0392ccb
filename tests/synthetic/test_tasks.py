"""Noise-mixture, sparse, task-pool, representation and softmax-regression tasks: shapes, exact
targets, seeding (model k alone = model k in a batch), distributions, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import strategies as sts
from synthetic.regression import make_generators
from synthetic.tasks import (
    NoiseMixtureTask,
    NoisyRegressionBatch,
    PoolBatch,
    RepresentationBatch,
    RepresentationTask,
    SoftmaxBatch,
    SoftmaxRegressionTask,
    SparseRegressionTask,
    TaskPoolTask,
    sample,
)

F64 = torch.float64
TASKS = [
    NoiseMixtureTask(d=3, n_points=5, noise_levels=(0.0, 0.5, 2.0), noise_probs=(0.2, 0.3, 0.5)),
    SparseRegressionTask(d=6, n_points=5, k=2, noise_std=0.1),
    TaskPoolTask(d=3, n_points=5, pool_size=4, pool_seed=7, noise_std=0.1),
    RepresentationTask(d=3, n_points=5, depth=2, width=6, phi_seed=3, noise_std=0.1),
    SoftmaxRegressionTask(d=3, n_points=5, n_classes=4),
]
IDS = [type(t).__name__ for t in TASKS]


def _tensors(batch) -> dict[str, torch.Tensor]:
    return dict(vars(batch))


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_model_k_of_a_batch_sees_exactly_what_it_sees_alone(task):
    together = _tensors(sample(task, make_generators([11, 12, 13]), 4, dtype=F64))
    alone = _tensors(sample(task, make_generators([12]), 4, dtype=F64))
    for name, tensor in together.items():
        assert torch.equal(tensor[1:2], alone[name]), name


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_same_seeds_same_numbers_and_float32_is_the_rounded_float64(task):
    a = _tensors(sample(task, make_generators([5, 6]), 3, dtype=F64))
    b = _tensors(sample(task, make_generators([5, 6]), 3, dtype=F64))
    low = _tensors(sample(task, make_generators([5, 6]), 3, dtype=torch.float32))
    for name in a:
        assert torch.equal(a[name], b[name]), name
        want = a[name].float() if a[name].is_floating_point() else a[name]
        assert torch.equal(low[name], want), name


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_batches_have_the_documented_shapes(task):
    K, B, N, d = 2, 3, task.n_points, task.d
    batch = sample(task, make_generators([0, 1]), B)
    assert batch.x.shape == (K, B, N, d) and batch.x.dtype == torch.float32
    if isinstance(batch, SoftmaxBatch):
        C = task.n_classes
        assert batch.W.shape == (K, B, C, d) and batch.probs.shape == (K, B, N, C)
        assert batch.labels.shape == (K, B, N) and batch.labels.dtype == torch.int64
    elif isinstance(batch, RepresentationBatch):
        assert batch.features.shape == (K, B, N, task.width) and batch.w.shape == (K, B, task.width)
    else:
        assert batch.y.shape == (K, B, N) and batch.w.shape == (K, B, d)


# ---------------------------------------------------------------------------------------------
# Targets and distributions


def test_noise_mixture_uses_the_listed_levels_with_their_probabilities():
    """20000 prompts: each level's frequency within 4 binomial standard errors of its probability,
    and the residual y - w.x has exactly zero spread at level 0."""
    task = TASKS[0]
    batch = sample(task, make_generators([0]), 20000, dtype=F64)
    assert isinstance(batch, NoisyRegressionBatch)
    sigma = batch.noise_std[0]
    for level, p in zip(task.noise_levels, task.noise_probs):
        freq = (sigma == level).double().mean().item()
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / 20000)
    resid = batch.y[0] - (batch.x[0] * batch.w[0, :, None]).sum(-1)
    assert torch.equal(resid[sigma == 0.0], torch.zeros_like(resid[sigma == 0.0]))
    big = resid[sigma == 2.0]
    assert abs(big.std().item() - 2.0) < 0.05  # ~10^4 * 5 draws: SE of the std ~ 2 / sqrt(2 * 5e4)


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 8), data=st.data(), seed=sts.seeds())
def test_sparse_weights_have_exactly_k_nonzero_coordinates(d, data, seed):
    """Not vacuous: the nonzero values are Gaussian, so they are almost surely nonzero, and the
    supports differ between prompts (checked on a larger draw below)."""
    k = data.draw(st.integers(1, d))
    batch = sample(SparseRegressionTask(d=d, n_points=3, k=k), make_generators([seed]), 8, dtype=F64)
    assert ((batch.w != 0).sum(-1) == k).all()
    assert torch.allclose(batch.y, (batch.x * batch.w[:, :, None]).sum(-1))


def test_sparse_supports_cover_every_coordinate():
    batch = sample(SparseRegressionTask(d=6, n_points=1, k=2), make_generators([1]), 500, dtype=F64)
    assert ((batch.w[0] != 0).sum(0) > 0).all()


def test_task_pool_draws_every_prompt_from_one_fixed_pool():
    task = TaskPoolTask(d=3, n_points=4, pool_size=5, pool_seed=2)
    batch = sample(task, make_generators([0, 1]), 200, dtype=F64)
    assert isinstance(batch, PoolBatch)
    assert torch.equal(batch.w, task.pool()[batch.task_index])
    assert set(batch.task_index.flatten().tolist()) == set(range(5))
    assert torch.equal(task.pool(), TaskPoolTask(d=3, n_points=9, pool_size=5, pool_seed=2).pool())
    assert not torch.equal(task.pool(), TaskPoolTask(d=3, n_points=4, pool_size=5, pool_seed=3).pool())


def test_representation_targets_are_w_dot_phi_of_x_and_phi_is_fixed_by_its_seed():
    task = RepresentationTask(d=4, n_points=6, depth=3, width=10, phi_seed=1)
    batch = sample(task, make_generators([0]), 5, dtype=F64)
    assert torch.equal(batch.features, task.phi(batch.x))
    assert torch.allclose(batch.y, (batch.features * batch.w[:, :, None]).sum(-1))
    again = RepresentationTask(d=4, n_points=2, depth=3, width=10, phi_seed=1)
    other = RepresentationTask(d=4, n_points=6, depth=3, width=10, phi_seed=2)
    assert torch.equal(again.phi(batch.x), batch.features)
    assert not torch.allclose(other.phi(batch.x), batch.features)


def test_representation_features_are_nonlinear_with_unit_mean_square():
    """He scaling keeps E|Phi(x)|^2 ~ E|x|^2 / d = 1 (within 20% at width 64, 4000 points);
    Phi(-x) != -Phi(x) shows the ReLUs are active."""
    task = RepresentationTask(d=5, n_points=1, depth=2, width=64)
    x = torch.randn(4000, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert abs(task.phi(x).pow(2).sum(-1).mean().item() - 1.0) < 0.2
    assert not torch.allclose(task.phi(-x), -task.phi(x))


def test_softmax_regression_probabilities_and_label_frequencies():
    task = SoftmaxRegressionTask(d=2, n_points=2000, n_classes=3)
    batch = sample(task, make_generators([4]), 2, dtype=F64)
    logits = torch.einsum("kbcd,kbnd->kbnc", batch.W, batch.x)
    assert torch.allclose(batch.probs, torch.softmax(logits, -1))
    assert batch.labels.min() >= 0 and batch.labels.max() <= 2
    # Sum over points of (1[label = c] - p_c) has variance sum p_c (1 - p_c) <= N / 4: 4 SE bound.
    excess = (batch.one_hot() - batch.probs).sum(-2)
    assert (excess.abs() < 4 * math.sqrt(2000 / 4)).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_cuda_generators_sample_on_the_gpu(task):
    batch = sample(task, make_generators([0, 1], device="cuda"), 2)
    assert batch.x.is_cuda
    moved = sample(task, make_generators([0, 1], device="cuda"), 2, device="cpu")
    assert torch.equal(batch.x.cpu(), moved.x)


# ---------------------------------------------------------------------------------------------
# Bad input: errors name the field


@pytest.mark.parametrize("make, match", [
    (lambda: SparseRegressionTask(d=3, n_points=2, k=4), r"SparseRegressionTask\.k must be in \[1, 3\]"),
    (lambda: SparseRegressionTask(d=3, n_points=2, k=1, noise_std=-0.1), r"SparseRegressionTask\.noise_std"),
    (lambda: TaskPoolTask(d=3, n_points=2, pool_size=0), r"TaskPoolTask\.pool_size must be >= 1"),
    (lambda: TaskPoolTask(d=3, n_points=2, pool_size=2, noise_std=-1.0), r"TaskPoolTask\.noise_std"),
    (lambda: RepresentationTask(d=3, n_points=2, width=0), r"RepresentationTask\.width must be >= 1"),
    (lambda: RepresentationTask(d=3, n_points=2, depth=0), r"RepresentationTask\.depth must be >= 1"),
    (lambda: RepresentationTask(d=3, n_points=2, noise_std=-1e-3), r"RepresentationTask\.noise_std"),
    (lambda: NoiseMixtureTask(d=3, n_points=2, noise_levels=(0.5, -0.1)), r"NoiseMixtureTask\.noise_levels\[1\]"),
    (lambda: NoiseMixtureTask(d=3, n_points=2, noise_levels=()), r"NoiseMixtureTask\.noise_levels"),
    (lambda: NoiseMixtureTask(d=3, n_points=2, noise_levels=(0.1, 1.0), noise_probs=(0.5, 0.6)),
     r"NoiseMixtureTask\.noise_probs"),
    (lambda: SoftmaxRegressionTask(d=3, n_points=2, n_classes=1), r"SoftmaxRegressionTask\.n_classes"),
])
def test_impossible_task_fields_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sample_rejects_a_single_generator_and_other_task_types():
    with pytest.raises(TypeError, match="generators"):
        sample(TASKS[1], torch.Generator(), 2)
    with pytest.raises(TypeError, match="task must be one of"):
        sample("sparse", make_generators([0]), 2)
