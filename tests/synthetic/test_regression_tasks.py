"""In-context linear regression data: shapes, exact targets, seeding, covariance, errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic import strategies as sts
from synthetic.regression import RegressionBatch, RegressionTask, make_generators, sample

sts.register_profiles()
PROPERTY = settings(deadline=None, max_examples=40)
DTYPES = st.sampled_from([torch.float32, torch.float64])


def w_dot_x(batch: RegressionBatch) -> torch.Tensor:
    """w . x_i for every point, computed the way the sampler does: (K, B, N)."""
    return (batch.x * batch.w[:, :, None, :]).sum(-1)


# ----------------------------------------------------------------------------------------------
# Shapes, dtypes, devices


@PROPERTY
@given(task=sts.regression_tasks(), k=st.integers(1, 3), b=st.integers(1, 4), dtype=DTYPES)
def test_sample_returns_the_documented_shapes_dtype_and_device(task, k, b, dtype):
    batch = sample(task, make_generators(range(k)), b, dtype=dtype)
    n, d = task.n_points, task.d
    expected = {
        "x": (k, b, n, d), "y": (k, b, n), "w": (k, b, d),
        "context_x": (k, b, n - 1, d), "context_y": (k, b, n - 1), "query_x": (k, b, d), "query_y": (k, b),
    }  # fmt: skip
    for name, shape in expected.items():
        tensor = getattr(batch, name)
        assert tuple(tensor.shape) == shape, name
        assert tensor.dtype == dtype and tensor.device == torch.device("cpu"), name


def test_query_is_the_last_point_and_context_the_rest():
    batch = sample(RegressionTask(d=2, n_points=3), make_generators([0]), 2)
    assert torch.equal(batch.query_x, batch.x[:, :, 2]) and torch.equal(batch.query_y, batch.y[:, :, 2])
    assert torch.equal(batch.context_x, batch.x[:, :, :2]) and torch.equal(batch.context_y, batch.y[:, :, :2])


def test_batch_to_changes_dtype_and_keeps_values():
    batch = sample(RegressionTask(d=3, n_points=4), make_generators([1, 2]), 2, dtype=torch.float64)
    moved = batch.to(device="cpu", dtype=torch.float32)
    assert moved.x.dtype == moved.y.dtype == moved.w.dtype == torch.float32
    assert torch.equal(moved.x, batch.x.float()) and torch.equal(moved.w, batch.w.float())


def test_batch_rejects_inconsistent_shapes_naming_the_field():
    with pytest.raises(ValueError, match=r"RegressionBatch\.y"):
        RegressionBatch(x=torch.zeros(1, 2, 3, 4), y=torch.zeros(1, 2, 4), w=torch.zeros(1, 2, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generators_draw_on_the_gpu_and_device_moves_the_batch():
    task = RegressionTask(d=3, n_points=5, kind="anisotropic", condition_number=4.0, noise_std=0.1)
    on_gpu = sample(task, make_generators([0, 1], device="cuda"), 2)
    on_cpu = sample(task, make_generators([0, 1], device="cuda"), 2, device="cpu")
    assert on_gpu.x.is_cuda and on_cpu.x.device == torch.device("cpu")
    assert torch.equal(on_gpu.x.cpu(), on_cpu.x) and torch.equal(on_gpu.y.cpu(), on_cpu.y)


# ----------------------------------------------------------------------------------------------
# Targets


@PROPERTY
@given(task=sts.regression_tasks(noisy=False, curriculum=True), seed=sts.seeds())
def test_noiseless_targets_are_exactly_w_dot_x(task, seed):
    """Not vacuous: x and w are Gaussian draws, so w . x is almost surely nonzero (checked)."""
    batch = sample(task, make_generators([seed]), 3, dtype=torch.float64)
    assert torch.equal(batch.y, w_dot_x(batch))
    assert batch.y.abs().max() > 0


def test_noisy_targets_differ_from_w_dot_x_by_noise_std_times_a_standard_normal():
    task = RegressionTask(d=2, n_points=50, noise_std=0.3)
    batch = sample(task, make_generators([3]), 200, dtype=torch.float64)
    eps = (batch.y - w_dot_x(batch)) / task.noise_std  # 10_000 draws of N(0, 1)
    # Sample mean and std of n = 10^4 standard normals have standard errors 1/sqrt(n) = 0.01 and
    # 1/sqrt(2n) ~ 0.007; 5 standard errors are 0.05 and 0.035. The seed is fixed, so no flakiness.
    assert abs(eps.mean().item()) < 0.05
    assert abs(eps.std().item() - 1.0) < 0.035


# ----------------------------------------------------------------------------------------------
# Seeding and draw order


@PROPERTY
@given(
    task=sts.regression_tasks(curriculum=True),
    seeds=st.lists(sts.seeds(), min_size=1, max_size=3, unique=True),
)
def test_model_k_of_a_batch_sees_exactly_the_data_it_would_see_alone(task, seeds):
    """Not vacuous: models with different seeds get different data (checked), so equality with the
    lone run is not a coincidence of every model seeing the same numbers."""
    together = sample(task, make_generators(seeds), 2, dtype=torch.float64)
    for k, seed in enumerate(seeds):
        alone = sample(task, make_generators([seed]), 2, dtype=torch.float64)
        for name in ("x", "y", "w"):
            assert torch.equal(getattr(together, name)[k], getattr(alone, name)[0]), name
    if len(seeds) > 1:
        assert not torch.equal(together.w[0], together.w[1])


@PROPERTY
@given(task=sts.regression_tasks(), seed=sts.seeds())
def test_same_seed_gives_the_same_numbers_and_another_seed_does_not(task, seed):
    first = sample(task, make_generators([seed]), 2)
    again = sample(task, make_generators([seed]), 2)
    other = sample(task, make_generators([seed + 1]), 2)
    assert all(torch.equal(getattr(first, f), getattr(again, f)) for f in ("x", "y", "w"))
    assert not torch.equal(first.w, other.w)


@PROPERTY
@given(task=sts.regression_tasks(noisy=False), seed=sts.seeds(), noise_std=sts.positive_floats(0.01, 1.0))
def test_adding_noise_keeps_x_and_w_over_a_stream_of_batches(task, seed, noise_std):
    """Not vacuous: y does change (checked), so the noise really is drawn; the second batch of each
    stream checks that the generators advanced by the same amount."""
    noisy_task = dataclasses.replace(task, noise_std=noise_std)
    clean_gen, noisy_gen = make_generators([seed, seed])
    for _ in range(2):
        clean = sample(task, [clean_gen], 2, dtype=torch.float64)
        noisy = sample(noisy_task, [noisy_gen], 2, dtype=torch.float64)
        assert torch.equal(clean.x, noisy.x) and torch.equal(clean.w, noisy.w)
        assert not torch.equal(clean.y, noisy.y)


@PROPERTY
@given(task=sts.regression_tasks(curriculum=True), seeds=st.lists(sts.seeds(), min_size=1, max_size=3))
def test_float32_batch_is_the_float64_batch_rounded(task, seeds):
    """Not vacuous: float64 values are generic reals, so rounding is a real change, yet both dtypes
    come from one float64 draw and agree exactly after rounding."""
    wide = sample(task, make_generators(seeds), 2, dtype=torch.float64)
    narrow = sample(task, make_generators(seeds), 2, dtype=torch.float32)
    for name in ("x", "y", "w"):
        assert torch.equal(getattr(narrow, name), getattr(wide, name).to(torch.float32)), name


def test_sampling_leaves_the_global_torch_rng_alone():
    state = torch.get_rng_state()
    sample(RegressionTask(d=3, n_points=4, kind="anisotropic", basis_seed=5), make_generators([0]), 2)
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------------------------
# Covariance and curriculum


def test_covariance_for_d2_kappa4_has_eigenvalues_0_4_and_1_6():
    # Geometric in [1/4, 1] is (1, 1/4); its mean is 5/8, so rescaled to mean 1: (8/5, 2/5).
    task = RegressionTask(d=2, n_points=1, kind="anisotropic", condition_number=4.0)
    eigs = torch.linalg.eigvalsh(task.covariance())
    torch.testing.assert_close(eigs, torch.tensor([0.4, 1.6], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_isotropic_covariance_is_the_identity():
    assert torch.equal(RegressionTask(d=3, n_points=2).covariance(), torch.eye(3, dtype=torch.float64))


@PROPERTY
@given(d=st.integers(2, 8), kappa=sts.positive_floats(1.0, 100.0), basis_seed=sts.seeds())
def test_covariance_has_the_requested_condition_number_and_mean_eigenvalue_one(d, kappa, basis_seed):
    """Not vacuous: the eigenvalues are read back from the (d, d) matrix V diag(lam) V^T, not from
    lam, so a wrong rotation, a missing square root or a bad rescaling would all show."""
    task = RegressionTask(d=d, n_points=1, kind="anisotropic", condition_number=kappa, basis_seed=basis_seed)
    cov = task.covariance()
    eigs = torch.linalg.eigvalsh(cov)
    # float64 eigensolver on a well-scaled symmetric matrix: relative error ~ 1e-15 * kappa.
    assert math.isclose(eigs.max() / eigs.min(), kappa, rel_tol=1e-10)
    assert math.isclose(eigs.mean().item(), 1.0, rel_tol=1e-12)
    torch.testing.assert_close(cov, cov.T, rtol=0, atol=1e-15)


def test_the_eigenbasis_is_fixed_by_basis_seed():
    def cov(seed):
        task = RegressionTask(d=4, n_points=1, kind="anisotropic", condition_number=9.0, basis_seed=seed)
        return task.covariance()

    assert torch.equal(cov(11), cov(11))
    assert not torch.allclose(cov(11), cov(12))


def test_empirical_covariance_of_anisotropic_inputs_approaches_the_task_covariance():
    task = RegressionTask(d=3, n_points=50, kind="anisotropic", condition_number=10.0, basis_seed=7)
    x = sample(task, make_generators([0]), 400, dtype=torch.float64).x.reshape(-1, task.d)  # n = 20_000
    n, sigma = x.shape[0], task.covariance()
    empirical = x.T @ x / n  # the mean is known to be zero
    # For Gaussian x, Var(x_i x_j) = S_ii S_jj + S_ij^2, so entry (i, j) of the mean of n i.i.d.
    # products has standard error sqrt((S_ii S_jj + S_ij^2) / n). We allow 5 standard errors per
    # entry (two-sided tail ~ 6e-7 each); the seed is fixed, so the outcome is deterministic.
    diag = torch.diagonal(sigma)
    std_err = ((diag[:, None] * diag[None, :] + sigma**2) / n).sqrt()
    assert ((empirical - sigma).abs() <= 5 * std_err).all()
    assert (sigma - torch.eye(3, dtype=torch.float64)).abs().max() > 10 * std_err.max()  # not isotropic


@PROPERTY
@given(task=sts.regression_tasks(curriculum=True), seed=sts.seeds())
def test_n_dims_active_zeroes_the_trailing_coordinates(task, seed):
    """Not vacuous: the leading coordinates are Gaussian draws, so they are nonzero (checked)."""
    batch = sample(task, make_generators([seed]), 2, dtype=torch.float64)
    k = task.active_dims
    assert (batch.x[..., k:] == 0).all()
    assert (batch.x[..., :k] != 0).all()
    assert (task.covariance()[k:] == 0).all() and (task.covariance()[:, k:] == 0).all()


# ----------------------------------------------------------------------------------------------
# Errors name what is wrong

GOOD = dict(d=3, n_points=4, kind="anisotropic", condition_number=2.0)
BAD_FIELDS = [
    ({"d": 0}, "d", ValueError),
    ({"d": 2.0}, "d", TypeError),
    ({"d": True}, "d", TypeError),
    ({"n_points": 0}, "n_points", ValueError),
    ({"n_points": "4"}, "n_points", TypeError),
    ({"noise_std": -0.1}, "noise_std", ValueError),
    ({"noise_std": math.nan}, "noise_std", ValueError),
    ({"noise_std": False}, "noise_std", TypeError),
    ({"kind": "sparse"}, "kind", ValueError),
    ({"kind": 1}, "kind", TypeError),
    ({"condition_number": 0.5}, "condition_number", ValueError),
    ({"condition_number": math.inf}, "condition_number", ValueError),
    ({"kind": "isotropic", "condition_number": 2.0}, "condition_number", ValueError),
    ({"basis_seed": -1}, "basis_seed", ValueError),
    ({"basis_seed": 1.5}, "basis_seed", TypeError),
    ({"w_std": 0.0}, "w_std", ValueError),
    ({"w_std": None}, "w_std", TypeError),
    ({"n_dims_active": 0}, "n_dims_active", ValueError),
    ({"n_dims_active": 4}, "n_dims_active", ValueError),
    ({"n_dims_active": 1.0}, "n_dims_active", TypeError),
]


@pytest.mark.parametrize("overrides, field, error", BAD_FIELDS)
def test_every_bad_task_field_fails_with_an_error_naming_it(overrides, field, error):
    with pytest.raises(error, match=rf"RegressionTask\.{field}\b"):
        RegressionTask(**{**GOOD, **overrides})


TASK = RegressionTask(d=2, n_points=3)
BAD_SAMPLE_CALLS = [
    (dict(task="not a task"), "task", TypeError),
    (dict(generators=[]), "generators", ValueError),
    (dict(generators=torch.Generator()), "generators", TypeError),
    (dict(generators=[torch.Generator(), 3]), r"generators\[1\]", TypeError),
    (dict(batch_size=0), "batch_size", ValueError),
    (dict(batch_size=2.0), "batch_size", TypeError),
    (dict(dtype=torch.int64), "dtype", TypeError),
]


@pytest.mark.parametrize("overrides, name, error", BAD_SAMPLE_CALLS)
def test_every_bad_sample_argument_fails_with_an_error_naming_it(overrides, name, error):
    args = {"task": TASK, "generators": [torch.Generator()], "batch_size": 2, "dtype": torch.float32}
    args.update(overrides)
    with pytest.raises(error, match=rf"sample: {name}"):
        sample(args.pop("task"), args.pop("generators"), args.pop("batch_size"), **args)


# ----------------------------------------------------------------------------------------------
# The strategies themselves


@PROPERTY
@given(step=sts.step_sizes(), value=sts.positive_floats(0.0, 3.0))
def test_step_sizes_lie_in_the_half_open_unit_interval(step, value):
    assert 0.0 < step <= 1.0 and math.isfinite(step)
    assert 0.0 < value <= 3.0


@PROPERTY
@given(batch=sts.regression_batches(max_d=3, max_n=4, max_k=2, max_b=2))
def test_regression_batches_are_consistent_float64_batches(batch):
    assert batch.x.dtype == torch.float64 and batch.x.shape[0] <= 2 and batch.x.shape[-1] <= 3
    assert tuple(batch.y.shape) == tuple(batch.x.shape[:3])


def test_strategy_arguments_are_checked_and_profiles_are_registered():
    with pytest.raises(ValueError, match="max_d"):
        sts.regression_tasks(max_d=0)
    with pytest.raises(ValueError, match="kinds"):
        sts.regression_tasks(kinds=("sparse",))
    with pytest.raises(ValueError, match="positive_floats"):
        sts.positive_floats(2.0, 1.0)
    assert settings.get_profile("ci").max_examples == 25 and settings.get_profile("ci").derandomize
    assert settings.get_profile("dev").max_examples == 300


def test_uniform_inputs_lie_in_the_stated_cube_with_variance_r_squared_over_three():
    """x ~ U(-r, r)^d (von Oswald et al.): every coordinate inside [-r, r], empirical variance
    r^2 / 3 within 5 standard errors (the variance of x^2 is 4 r^4 / 45 for a uniform x)."""
    r, n = 0.5, 20000
    task = RegressionTask(d=3, n_points=10, x_dist="uniform", x_range=r)
    x = sample(task, make_generators([0]), n // 10, dtype=torch.float64).x.reshape(-1, 3)
    assert float(x.abs().max()) <= r
    se = (4 * r**4 / 45 / len(x)) ** 0.5
    assert torch.allclose(x.pow(2).mean(0), torch.full((3,), r**2 / 3, dtype=torch.float64), atol=5 * se)
    torch.testing.assert_close(task.covariance(), torch.eye(3, dtype=torch.float64) * r**2 / 3)
    with pytest.raises(ValueError, match="x_range applies to x_dist='uniform' only"):
        RegressionTask(d=3, n_points=10, x_range=2.0)
