"""Reference algorithms for the sequence tasks against naive Python loops and hand-computed anchors."""

import itertools
import statistics

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from synthetic import sequences as S

OPS = {"sum": sum, "min": min, "max": max}


def _values(seed: int, shape, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)


def _naive_max_subarray(row: list[float]) -> float:
    """Every non-empty contiguous run, summed left to right: O(n^2), obviously right."""
    return max(sum(row[a: b + 1]) for a in range(len(row)) for b in range(a, len(row)))


# ----------------------------------------------------------------------------------------------
# Scans


@pytest.mark.parametrize("op", S.SCAN_OPS)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_prefix_scan_matches_a_python_loop(op, n, seed):
    x = _values(seed, (3, n))
    got = S.prefix_scan(x, op)
    want = torch.tensor([[OPS[op](row[: i + 1]) for i in range(n)] for row in x.tolist()], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)  # sums of <= 40 values of size ~10: ~1e-14


@pytest.mark.parametrize("op", S.SCAN_OPS)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_hillis_steele_iterate_l_combines_the_last_two_to_the_l_values(op, n, seed):
    """Not vacuous: every iterate (not only the last) is compared with its window, and windows of
    different lengths differ for random values."""
    x = _values(seed, (2, n))
    states = S.hillis_steele(x, op)
    assert len(states) == S.scan_depth(n) + 1
    for l, s in enumerate(states):
        want = [[OPS[op](row[max(0, i - 2**l + 1): i + 1]) for i in range(n)] for row in x.tolist()]
        assert torch.allclose(s, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.allclose(states[-1], S.prefix_scan(x, op), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n, depth", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (32, 5), (33, 6)])
def test_scan_depth_is_ceil_log2_n(n, depth):
    assert S.scan_depth(n) == depth


@pytest.mark.parametrize("n", range(2, 34))
def test_hillis_steele_with_one_step_fewer_misses_the_first_value(n):
    x = torch.zeros(1, n, dtype=torch.float64)
    x[0, 0] = 1.0  # the last prefix sum is 1, but the last entry's window no longer reaches x_0
    short = S.hillis_steele(x, "sum", S.scan_depth(n) - 1)[-1]
    assert short[0, -1].item() == 0.0 and S.prefix_sum(x)[0, -1].item() == 1.0


def test_scans_keep_leading_axes_and_dtype():
    x = _values(0, (2, 3, 5)).to(torch.float32)
    for op in S.SCAN_OPS:
        s = S.hillis_steele(x, op)[-1]
        assert s.shape == x.shape and s.dtype == torch.float32
        assert torch.allclose(s, S.prefix_scan(x, op), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Sorting


@pytest.mark.parametrize("p", range(0, 6))
def test_bitonic_schedule_has_p_p_plus_1_over_2_perfect_matchings(p):
    m = 2**p
    stages = S.bitonic_schedule(m)
    assert len(stages) == p * (p + 1) // 2
    for partner, takes_min in stages:
        assert torch.equal(partner[partner], torch.arange(m))  # an involution ...
        assert bool((partner != torch.arange(m)).all())  # ... without fixed points
        assert torch.equal(takes_min[partner], ~takes_min)  # one of each pair keeps the minimum


@pytest.mark.parametrize("m", [1, 2, 4, 8, pytest.param(16, marks=pytest.mark.slow)])
def test_bitonic_network_sorts_every_zero_one_input(m):
    """The 0-1 principle (Knuth, TAOCP 5.3.4): a comparator network that sorts all 2^m inputs of
    zeros and ones sorts every input. So this exhausts the claim for these m."""
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=m)), dtype=torch.float64)
    assert torch.equal(S.bitonic_sort(bits)[-1], bits.sort(dim=-1).values)


@given(p=st.integers(0, 6), seed=st.integers(0, 2**31 - 1))
def test_bitonic_sort_sorts_random_values_with_ties(p, seed):
    x = torch.round(_values(seed, (3, 2**p)))  # rounding makes ties common
    states = S.bitonic_sort(x)
    assert torch.equal(states[-1], S.sort(x))
    for s in states:  # every stage permutes the values
        assert torch.equal(s.sort(-1).values, S.sort(x))


@pytest.mark.parametrize("m", [3, 5, 6, 12])
def test_bitonic_network_refuses_a_length_that_is_not_a_power_of_two(m):
    with pytest.raises(ValueError, match=f"power-of-two length, got {m}; pad"):
        S.bitonic_schedule(m)


# ----------------------------------------------------------------------------------------------
# Median


def test_median_by_hand():
    x = torch.tensor([[3.0, 1.0, 2.0, 10.0], [4.0, 1.0, 3.0, 2.0]], dtype=torch.float64)
    assert S.median(x).tolist() == [2.5, 2.5]
    assert S.median(x[:, :3]).tolist() == [2.0, 3.0]
    assert S.cumulative_median(x)[0].tolist() == [3.0, 2.0, 2.0, 2.5]


@given(n=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_cumulative_median_matches_statistics_median_of_every_prefix(n, seed):
    x = _values(seed, (2, n))
    want = [[statistics.median(row[: i + 1]) for i in range(n)] for row in x.tolist()]
    assert torch.allclose(S.cumulative_median(x), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)
    assert torch.allclose(S.median(x), torch.tensor(want, dtype=torch.float64)[:, -1], rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# Maximum subarray


def test_max_subarray_by_hand():
    x = torch.tensor([[-2.0, 1.0, -3.0, 4.0, -1.0, 2.0, 1.0, -5.0, 4.0]], dtype=torch.float64)
    assert S.max_subarray(x).item() == 6.0  # 4 - 1 + 2 + 1
    assert S.max_subarray(x, cumulative=True)[0].tolist() == [-2, 1, 1, 4, 4, 5, 6, 6, 6]
    negative = torch.tensor([[-3.0, -1.0, -2.0]], dtype=torch.float64)
    assert S.max_subarray(negative).item() == -1.0  # non-empty: the largest single value
    assert S.max_subarray_kadane(negative).item() == -1.0


@given(n=st.integers(1, 25), seed=st.integers(0, 2**31 - 1))
def test_max_subarray_vectorised_and_kadane_match_the_naive_loop(n, seed):
    """Both paths against all O(n^2) runs. Tolerance: the three sum the same <= 25 values (|x| ~ 3)
    in different orders, so they differ by a few ulps of ~75: 1e-12 is generous."""
    x = _values(seed, (3, n))
    want = [[_naive_max_subarray(row[: b + 1]) for b in range(n)] for row in x.tolist()]
    want = torch.tensor(want, dtype=torch.float64)
    for path in (S.max_subarray, S.max_subarray_kadane):
        assert torch.allclose(path(x, cumulative=True), want, rtol=0, atol=1e-12)
        assert torch.allclose(path(x), want[:, -1], rtol=0, atol=1e-12)


def test_kadane_keeps_leading_axes_dtype_and_device():
    x = _values(1, (2, 3, 7)).to(torch.float32)
    got = S.max_subarray_kadane(x, cumulative=True)
    assert got.shape == x.shape and got.dtype == torch.float32 and got.device == x.device
    assert torch.allclose(got, S.max_subarray(x, cumulative=True), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("call, match", [
    (lambda: S.prefix_scan(torch.zeros(2, 0), "sum"), r"shape \(\.\.\., n\) with n >= 1"),
    (lambda: S.prefix_scan(torch.zeros(3), "product"), "op must be one of"),
    (lambda: S.hillis_steele(torch.zeros(3), "sum", -1), "n_steps must be an int >= 0"),
    (lambda: S.median(torch.tensor(1.0)), r"shape \(\.\.\., n\)"),
    (lambda: S.scan_depth(0), "n must be an int >= 1"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
