"""Algorithmic tasks: shapes, seeding and batching, targets, and the out-of-distribution protocol."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from synthetic import sequences as S
from synthetic.algorithmic import (
    TASK_KINDS,
    AlgorithmicBatch,
    AlgorithmicTask,
    OODProtocol,
    ValueRange,
    make_generators,
    sample,
)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_batch_has_one_row_of_sequences_per_model_and_the_task_target(kind):
    task = AlgorithmicTask(kind, n=6)
    batch = sample(task, make_generators([0, 1, 2]), 5, dtype=torch.float64)
    assert batch.x.shape == (3, 5, 6) and batch.y.shape == (3, 5, task.n_out)
    assert torch.equal(batch.y, task.targets(batch.x))


def test_targets_by_hand():
    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]], dtype=torch.float64)
    want = {
        "cumsum": [1.0, -1.0, 2.0, 2.5], "cummin": [1.0, -2.0, -2.0, -2.0], "cummax": [1.0, 1.0, 3.0, 3.0],
        "sort": [-2.0, 0.5, 1.0, 3.0], "median": [0.75], "cummedian": [1.0, -0.5, 1.0, 0.75],
        "max_subarray": [3.5], "cum_max_subarray": [1.0, 1.0, 3.0, 3.5],
    }
    assert set(want) == set(TASK_KINDS)
    for kind, values in want.items():
        assert AlgorithmicTask(kind, n=4).targets(x)[0].tolist() == values, kind


@pytest.mark.parametrize("kind", ["cumsum", "sort", "max_subarray"])
@given(seeds=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4), n=st.integers(1, 10))
def test_model_k_of_a_batch_sees_what_it_would_see_alone(kind, seeds, n):
    """Not vacuous: different seeds give different sequences (checked), so a mix-up would show."""
    task = AlgorithmicTask(kind, n=n)
    together = sample(task, make_generators(seeds), 3, dtype=torch.float64)
    for k, seed in enumerate(seeds):
        alone = sample(task, make_generators([seed]), 3, dtype=torch.float64)
        assert torch.equal(together.x[k], alone.x[0]) and torch.equal(together.y[k], alone.y[0])
    if len(set(seeds)) > 1:
        assert not torch.equal(together.x[0], together.x[seeds.index(next(s for s in seeds if s != seeds[0]))])


def test_same_seeds_give_the_same_numbers_and_the_global_rng_is_untouched():
    task = AlgorithmicTask("cummin", n=5)
    state = torch.random.get_rng_state()
    a = sample(task, make_generators([7]), 4)
    b = sample(task, make_generators([7]), 4)
    assert torch.equal(a.x, b.x) and torch.equal(torch.random.get_rng_state(), state)


def test_test_sequences_are_the_training_sequences_rescaled():
    """Same generator state, range [-c, c]: x = c (2u - 1), so c = 10 gives 5 times the c = 2 values
    (exactly, up to the float64 rounding of the product)."""
    task = AlgorithmicTask("sort", n=8, c_train=2.0)
    train = sample(task, make_generators([3]), 16, dtype=torch.float64)
    test = sample(task, make_generators([3]), 16, values=ValueRange(10.0), dtype=torch.float64)
    assert torch.allclose(test.x, 5 * train.x, rtol=1e-15, atol=0)
    assert torch.allclose(test.y, 5 * train.y, rtol=1e-15, atol=0)  # sort commutes with positive scaling


@given(c=st.floats(0.1, 100.0), inner_frac=st.floats(0.0, 0.99), seed=st.integers(0, 2**31 - 1))
def test_values_lie_in_their_range(c, inner_frac, seed):
    r = ValueRange(c, inner_frac * c)
    x = sample(AlgorithmicTask("cumsum", n=50), make_generators([seed]), 8, values=r, dtype=torch.float64).x
    assert bool((x.abs() <= c).all()) and bool((x.abs() >= r.inner).all())


def test_values_fill_the_range_on_both_sides():
    """4000 uniform draws on [-3, -1] U [1, 3]: each half holds about half of them (binomial sd ~ 32)
    and the extremes come within 0.01 of the ends (P(miss) ~ (1 - 0.0025)^2000, negligible)."""
    x = sample(AlgorithmicTask("cumsum", n=40), make_generators([0]), 100, values=ValueRange(3.0, 1.0),
               dtype=torch.float64).x
    assert abs(int((x > 0).sum()) - 2000) < 200
    assert x.max() > 2.99 and x.min() < -2.99 and x.abs().min() < 1.01


def test_float32_batch_is_the_float64_batch_rounded():
    task = AlgorithmicTask("cummedian", n=7)
    lo = sample(task, make_generators([5]), 3, dtype=torch.float32)
    hi = sample(task, make_generators([5]), 3, dtype=torch.float64)
    assert lo.x.dtype == torch.float32 and torch.equal(lo.x, hi.x.float()) and torch.equal(lo.y, hi.y.float())


# ----------------------------------------------------------------------------------------------
# The out-of-distribution protocol


def test_protocol_test_ranges_do_not_fit_inside_the_training_range():
    protocol = AlgorithmicTask("cumsum", n=8, c_train=2.0).ood([3.0, 5.0, 20.0])
    assert [r.c for r in protocol.test_ranges()] == [3.0, 5.0, 20.0]
    assert not any(r.fits_inside(protocol.c_train) for r in protocol.test_ranges())
    assert protocol.train_range.fits_inside(protocol.c_train)


def test_shells_exclude_every_training_value():
    protocol = OODProtocol(2.0, (3.0, 5.0, 20.0), shells=True)
    assert [(r.inner, r.c) for r in protocol.test_ranges()] == [(2.0, 3.0), (3.0, 5.0), (5.0, 20.0)]
    task = AlgorithmicTask("sort", n=16, c_train=2.0)
    for r in protocol.test_ranges():
        x = sample(task, make_generators([1]), 32, values=r, dtype=torch.float64).x
        assert bool((x.abs() >= 2.0).all())


@pytest.mark.parametrize("cs", [(1.0,), (3.0, 2.0), (0.5, 4.0)])
def test_a_test_range_inside_the_training_range_is_an_error(cs):
    with pytest.raises(ValueError, match=r"lies inside the training range \[-2, 2\].*must be > c_train"):
        OODProtocol(2.0, cs)


@pytest.mark.parametrize("call, error, match", [
    (lambda: AlgorithmicTask("cumprod", n=4), ValueError, "AlgorithmicTask.kind must be one of"),
    (lambda: AlgorithmicTask("sort", n=0), ValueError, "AlgorithmicTask.n must be >= 1"),
    (lambda: AlgorithmicTask("sort", n=2.5), TypeError, "AlgorithmicTask.n must be an int"),
    (lambda: AlgorithmicTask("sort", n=4, c_train=float("inf")), ValueError, "c_train must be finite"),
    (lambda: ValueRange(2.0, 2.0), ValueError, "inner must satisfy 0 <= inner < c"),
    (lambda: ValueRange(-1.0), ValueError, "ValueRange.c must be finite and > 0"),
    (lambda: OODProtocol(2.0, ()), ValueError, "at least one c"),
    (lambda: OODProtocol(2.0, (5.0, 3.0), shells=True), ValueError, "increase strictly"),
    (lambda: sample(AlgorithmicTask("sort", 4), torch.Generator(), 2), TypeError, "one per model"),
    (lambda: sample(AlgorithmicTask("sort", 4), make_generators([0]), 0), ValueError, "batch_size must be >= 1"),
    (lambda: sample(AlgorithmicTask("sort", 4), make_generators([0]), 2, values=(0, 1)), TypeError,
     "values must be a ValueRange"),
    (lambda: sample(AlgorithmicTask("sort", 4), make_generators([0]), 2, dtype=torch.int64), TypeError,
     "floating-point"),
    (lambda: AlgorithmicBatch(torch.zeros(2, 3), torch.zeros(2, 3)), ValueError, r"x must be \(K, B, n\)"),
])
def test_bad_task_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_targets_agree_with_the_reference_module():
    x = sample(AlgorithmicTask("cumsum", n=9), make_generators([2]), 4, dtype=torch.float64).x
    assert torch.equal(AlgorithmicTask("cum_max_subarray", 9).targets(x), S.max_subarray(x, cumulative=True))
    assert torch.equal(AlgorithmicTask("median", 9).targets(x)[..., 0], S.median(x))
