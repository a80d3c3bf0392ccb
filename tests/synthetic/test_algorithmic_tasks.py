"""Algorithmic tasks: shapes, seeding and batching, targets, and the out-of-distribution protocol."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from synthetic import algorithmic
from synthetic import sequences as S
from synthetic.algorithmic import (
    TASK_KINDS,
    AlgorithmicBatch,
    AlgorithmicTask,
    OODProtocol,
    SubIntervals,
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


# ----------------------------------------------------------------------------------------------
# Sub-intervals (de Luca et al. 2024): every sequence on its own random interval


def _feed(monkeypatch, *draws):
    """Make the module's uniform draws return ``draws`` (float64 lists) in order: bounds by hand."""
    queue = [torch.tensor(d, dtype=torch.float64) for d in draws]
    monkeypatch.setattr(algorithmic, "_uniform", lambda generator, *shape: queue.pop(0).reshape(shape))


def test_a_sub_interval_is_the_sorted_pair_of_two_draws_and_its_values_fill_it(monkeypatch):
    """c = 2: draws 0.75 and 0.25 are the ends 2 (2u - 1) = 1 and -1, sorted to [-1, 1]; then u = 0, 0.5,
    0.75 give -1, 0, 0.5 (x = a + (b - a) u)."""
    _feed(monkeypatch, [[0.75, 0.25]], [[0.0, 0.5, 0.75]])
    x = SubIntervals(2.0).draw(torch.Generator(), 1, 3)
    assert x.tolist() == [[-1.0, 0.0, 0.5]]


def test_a_test_interval_inside_the_training_range_is_drawn_again(monkeypatch):
    """c = 4, avoid = 2: the first pair gives [0, 0.8], inside [-2, 2], so it is drawn again; the
    second gives [-3.2, 3.2]; the values then come from u = 0.5, 1 -> 0, 3.2."""
    _feed(monkeypatch, [[0.5, 0.6]], [[0.1, 0.9]], [[0.5, 1.0]])
    x = SubIntervals(4.0, avoid=2.0).draw(torch.Generator(), 1, 2)
    assert x[0].tolist() == pytest.approx([0.0, 3.2], abs=1e-12)


def test_no_test_interval_lies_inside_the_training_range():
    """Not vacuous: without ``avoid`` about (2 / 3)^2 = 44% of the intervals of [-3, 3] lie inside
    [-2, 2] (binomial sd 0.8% over 4096)."""
    g = make_generators([0])[0]
    ends = SubIntervals(3.0, avoid=2.0).intervals(g, 4096)
    assert not bool(((ends[:, 0] >= -2) & (ends[:, 1] <= 2)).any()) and bool((ends[:, 0] <= ends[:, 1]).all())
    free = SubIntervals(3.0).intervals(g, 4096)
    assert abs(float(((free[:, 0] >= -2) & (free[:, 1] <= 2)).double().mean()) - 4 / 9) < 0.04


def test_interval_ends_are_the_minimum_and_maximum_of_two_uniform_draws():
    """On [-c, c] the smaller of two uniform draws has mean -c / 3 and the larger c / 3; 8192
    intervals with c = 3: each mean has sd sqrt(2 / 9) * 3 / sqrt(8192) ~ 0.016, so 0.07 is 4 sd."""
    ends = SubIntervals(3.0).intervals(make_generators([1])[0], 8192)
    assert ends[:, 0].mean() == pytest.approx(-1.0, abs=0.07) and ends[:, 1].mean() == pytest.approx(1.0, abs=0.07)


def test_sub_interval_sequences_of_model_k_are_the_same_alone_or_in_a_batch():
    task = AlgorithmicTask("cumsum", n=5, sub_intervals=True)
    together = sample(task, make_generators([4, 9]), 6, values=SubIntervals(10.0, avoid=2.0), dtype=torch.float64)
    alone = sample(task, make_generators([9]), 6, values=SubIntervals(10.0, avoid=2.0), dtype=torch.float64)
    assert torch.equal(together.x[1], alone.x[0]) and torch.equal(together.y[1], alone.y[0])
    assert not torch.equal(together.x[0], together.x[1])


def test_the_sub_interval_protocol_trains_on_sub_intervals_and_tests_outside_the_training_range():
    task = AlgorithmicTask("sort", n=4, c_train=2.0, sub_intervals=True)
    assert task.train_range == SubIntervals(2.0)
    protocol = task.ood([4.0, 20.0])
    assert protocol.test_ranges() == [SubIntervals(4.0, avoid=2.0), SubIntervals(20.0, avoid=2.0)]
    assert str(protocol.test_ranges()[0]) == "sub-intervals of [-4, 4] not inside [-2, 2]"
    assert AlgorithmicTask("sort", n=4).ood([4.0]).test_ranges() == [ValueRange(4.0)]  # the default is as before


@pytest.mark.parametrize("call, error, match", [
    (lambda: SubIntervals(2.0, avoid=2.0), ValueError, "avoid must be < c"),
    (lambda: SubIntervals(2.0, avoid=-1.0), ValueError, "SubIntervals.avoid must be finite and > 0"),
    (lambda: OODProtocol(2.0, (4.0,), shells=True, sub_intervals=True), ValueError, "exclude each other"),
    (lambda: AlgorithmicTask("sort", 4, sub_intervals=1), TypeError, "sub_intervals must be a bool"),
])
def test_bad_sub_interval_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
