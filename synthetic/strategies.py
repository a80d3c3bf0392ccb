"""Hypothesis strategies for the synthetic tasks, shared by the tests of every package.

Strategies draw small integers (dimensions, counts, seeds) and floats, and build tensors from seeds
with ``synthetic.regression.sample``, so a shrunk failing example reads as a handful of numbers
(``regression_batches`` also records its task and seeds with ``hypothesis.note``).

    seeds()                  ints in [0, 2**31 - 1]
    positive_floats(lo, hi)  finite floats in [lo, hi], strictly positive
    step_sizes()             floats in (0, 1]
    regression_tasks(...)    RegressionTask
    regression_batches(...)  RegressionBatch

Settings profiles: ``register_profiles()`` registers "ci" (25 examples, derandomized) and "dev"
(300 examples); load one with ``hypothesis.settings.load_profile(name)``, e.g. in a conftest.
"""

from __future__ import annotations

import math
import sys

import torch
from hypothesis import note, settings
from hypothesis import strategies as st

from synthetic.regression import TASK_KINDS, RegressionBatch, RegressionTask, make_generators, sample

MAX_SEED = 2**31 - 1


def register_profiles() -> None:
    """Register the "ci" and "dev" hypothesis profiles (does not load either)."""
    settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
    settings.register_profile("dev", max_examples=300, deadline=None)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator.manual_seed``: ints in [0, 2**31 - 1], shrinking towards 0."""
    return st.integers(min_value=0, max_value=MAX_SEED)


def positive_floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Finite floats in [lo, hi] that are strictly positive: lo = 0 is excluded.

    No nan, no inf and no subnormals, so 1 / value and value**2 stay finite and meaningful.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi and hi > 0.0):
        raise ValueError(f"positive_floats: need finite 0 <= lo <= hi with hi > 0, got lo={lo}, hi={hi}")
    lo = max(lo, sys.float_info.min)  # the smallest normal float when lo == 0
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def step_sizes() -> st.SearchStrategy[float]:
    """Step sizes (learning rates) in (0, 1]."""
    return positive_floats(0.0, 1.0)


def _check_bound(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def regression_tasks(
    max_d: int = 8,
    max_n: int = 32,
    kinds: tuple[str, ...] = TASK_KINDS,
    noisy: bool = True,
    *,
    curriculum: bool = False,
) -> st.SearchStrategy[RegressionTask]:
    """RegressionTask with d in [1, max_d], n_points in [1, max_n] and kind in ``kinds``.

    noise_std is 0 or (if ``noisy``) a float in [0, 1]; anisotropic tasks draw a condition number in
    [1, 100] and a basis seed; with ``curriculum`` n_dims_active is None or in [1, d], else None.
    """
    _check_bound("regression_tasks: max_d", max_d)
    _check_bound("regression_tasks: max_n", max_n)
    kinds = tuple(kinds)
    if not kinds or any(kind not in TASK_KINDS for kind in kinds):
        raise ValueError(f"regression_tasks: kinds must be a non-empty subset of {TASK_KINDS}, got {kinds}")
    return _regression_tasks(max_d, max_n, kinds, noisy, curriculum)


@st.composite
def _regression_tasks(draw, max_d, max_n, kinds, noisy, curriculum) -> RegressionTask:
    kind = draw(st.sampled_from(kinds))
    d = draw(st.integers(1, max_d))
    n_points = draw(st.integers(1, max_n))
    noise_std = draw(st.just(0.0) | st.floats(0.0, 1.0)) if noisy else 0.0
    anisotropic = kind == "anisotropic"
    kappa = draw(positive_floats(1.0, 100.0)) if anisotropic else 1.0
    basis_seed = draw(seeds()) if anisotropic else 0
    n_dims_active = draw(st.none() | st.integers(1, d)) if curriculum else None
    return RegressionTask(
        d=d,
        n_points=n_points,
        noise_std=noise_std,
        kind=kind,
        condition_number=kappa,
        basis_seed=basis_seed,
        n_dims_active=n_dims_active,
    )


def regression_batches(
    max_d: int = 8,
    max_n: int = 32,
    max_k: int = 3,
    max_b: int = 4,
    dtype: torch.dtype = torch.float64,
) -> st.SearchStrategy[RegressionBatch]:
    """RegressionBatch for K in [1, max_k] models and B in [1, max_b] prompts, sampled on the CPU
    from a drawn task (``regression_tasks(max_d, max_n)``) and K drawn seeds."""
    for name, value in (("max_d", max_d), ("max_n", max_n), ("max_k", max_k), ("max_b", max_b)):
        _check_bound(f"regression_batches: {name}", value)
    return _regression_batches(regression_tasks(max_d, max_n), max_k, max_b, dtype)


@st.composite
def _regression_batches(draw, tasks, max_k, max_b, dtype) -> RegressionBatch:
    task = draw(tasks)
    k = draw(st.integers(1, max_k))
    batch_size = draw(st.integers(1, max_b))
    model_seeds = draw(st.lists(seeds(), min_size=k, max_size=k))
    note(f"regression_batches: {task!r}, seeds={model_seeds}, batch_size={batch_size}")
    return sample(task, make_generators(model_seeds), batch_size, dtype=dtype)
