"""Reference algorithms for the algorithmic sequence tasks: scans, sorting, median, maximum subarray.

Every function takes values ``x`` of shape (..., n) (any leading axes: models, prompts), works
along the last axis, keeps the dtype and device, and has no Python loop over samples. The parallel
algorithms the positional constructions run (Hillis-Steele scans, the bitonic network) return
their iterates, one per parallel step, so a construction can be compared layer by layer.

    prefix_scan(x, op)          op in SCAN_OPS: cumulative sum / min / max
    hillis_steele(x, op, L)     the L + 1 iterates of the log-depth scan (iterate 0 is x)
    bitonic_schedule(m)         the (partner, takes_min) pair of every compare-exchange stage
    bitonic_sort(x)             the iterates of the bitonic network (last one is sorted)
    median, cumulative_median   mean of the two middle values when the count is even
    max_subarray(x, cumulative) best sum of a non-empty contiguous run (of every prefix)
    max_subarray_kadane(x, ...) the same by Kadane's scan, compiled with numba (CPU)

Maximum subarray is sequential as Kadane wrote it; the vectorised path uses the prefix-sum form
best(b) = P_b - min_{j < b} P_j (P_0 = 0), which is two scans. The two paths agree up to the
round-off of summing in a different order.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

SCAN_OPS = ("sum", "min", "max")


def _check_values(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] < 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (..., n) with n >= 1, got {shape}")


def _check_op(op: str) -> None:
    if op not in SCAN_OPS:
        raise ValueError(f"op must be one of {SCAN_OPS}, got {op!r}")


def combine(op: str, a: Tensor, b: Tensor) -> Tensor:
    """The scan's binary operation: a + b, min(a, b) or max(a, b)."""
    _check_op(op)
    if op == "sum":
        return a + b
    return torch.minimum(a, b) if op == "min" else torch.maximum(a, b)


# ----------------------------------------------------------------------------------------------
# Scans


def prefix_scan(x: Tensor, op: str) -> Tensor:
    """Entry i is op(x_0, ..., x_i): (..., n)."""
    _check_values(x)
    _check_op(op)
    if op == "sum":
        return x.cumsum(-1)
    return x.cummin(-1).values if op == "min" else x.cummax(-1).values


def prefix_sum(x: Tensor) -> Tensor:
    return prefix_scan(x, "sum")


def prefix_min(x: Tensor) -> Tensor:
    return prefix_scan(x, "min")


def prefix_max(x: Tensor) -> Tensor:
    return prefix_scan(x, "max")


def scan_depth(n: int) -> int:
    """ceil(log2 n): the parallel steps Hillis-Steele needs for n values (0 for n = 1)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return (n - 1).bit_length()


def hillis_steele(x: Tensor, op: str, n_steps: int | None = None) -> list[Tensor]:
    """Iterates s_0 = x, s_{l+1}[i] = op(s_l[i], s_l[i - 2^l]) (s_l[i] alone when i < 2^l).

    s_l[i] = op(x[max(0, i - 2^l + 1)], ..., x[i]), so after ceil(log2 n) steps every entry is its
    prefix. ``n_steps`` defaults to that depth; more steps change nothing.
    """
    _check_values(x)
    _check_op(op)
    n_steps = scan_depth(x.shape[-1]) if n_steps is None else n_steps
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    states = [x]
    for step in range(n_steps):
        s, shift = states[-1], 2**step
        new = s.clone()
        if shift < s.shape[-1]:
            new[..., shift:] = combine(op, s[..., shift:], s[..., :-shift])
        states.append(new)
    return states


# ----------------------------------------------------------------------------------------------
# Sorting


def is_power_of_two(m: int) -> bool:
    return isinstance(m, int) and m >= 1 and m & (m - 1) == 0


def bitonic_schedule(m: int) -> list[tuple[Tensor, Tensor]]:
    """The stages of the bitonic network on m = 2^p positions, in order.

    Stage (k, j) for k = 2, 4, ..., m and j = k/2, ..., 1: position i compares with its partner
    i XOR j and keeps the minimum iff "i is the lower of the pair" equals "i lies in an ascending
    block" ((i & j) == 0 == ((i & k) == 0)). p(p + 1)/2 stages; returns (partner (m,) long,
    takes_min (m,) bool) per stage (fresh tensors: the callers may keep or change them).
    """
    if not is_power_of_two(m):
        raise ValueError(f"the bitonic network needs a power-of-two length, got {m}; pad the sequence "
                         "(e.g. with values >= its maximum, which sort to the end)")
    partner, takes_min = _schedule(m)
    return [(p.clone(), t.clone()) for p, t in zip(partner, takes_min)]


@functools.lru_cache(maxsize=16)
def _schedule(m: int) -> tuple[Tensor, Tensor]:
    """(stages, m) partner and takes_min tables (cached: the checks build the same m many times)."""
    i = torch.arange(m)
    partner, takes_min, k = [], [], 2
    while k <= m:
        j = k // 2
        while j >= 1:
            partner.append(i ^ j)
            takes_min.append(((i & j) == 0) == ((i & k) == 0))
            j //= 2
        k *= 2
    if not partner:  # m = 1: no stages
        return torch.zeros(0, m, dtype=torch.long), torch.zeros(0, m, dtype=torch.bool)
    return torch.stack(partner), torch.stack(takes_min)


def bitonic_sort(x: Tensor) -> list[Tensor]:
    """Iterates of the bitonic network on x (..., m), m a power of two: iterate 0 is x, the last
    is x sorted ascending. One iterate per compare-exchange stage."""
    _check_values(x)
    states = [x]
    for partner, takes_min in bitonic_schedule(x.shape[-1]):
        s = states[-1]
        other = s[..., partner.to(x.device)]
        states.append(torch.where(takes_min.to(x.device), torch.minimum(s, other), torch.maximum(s, other)))
    return states


def sort(x: Tensor) -> Tensor:
    """x sorted ascending along the last axis."""
    _check_values(x)
    return x.sort(dim=-1).values


# ----------------------------------------------------------------------------------------------
# Median


def median(x: Tensor) -> Tensor:
    """Median of the n values (...,): the middle one, or the mean of the two middle ones."""
    _check_values(x)
    s, n = sort(x), x.shape[-1]
    return (s[..., (n - 1) // 2] + s[..., n // 2]) / 2


def cumulative_median(x: Tensor) -> Tensor:
    """Entry i is the median of x_0 .. x_i: (..., n). Builds the (..., n, n) prefix matrix (masked
    with +inf), so memory is n^2 per sequence: meant for the short sequences of the tasks."""
    _check_values(x)
    n = x.shape[-1]
    i = torch.arange(n, device=x.device)
    inside = i[None, :] <= i[:, None]  # (n, n): row k holds x_0 .. x_k
    prefixes = torch.where(inside, x.unsqueeze(-2), torch.full_like(x, math.inf).unsqueeze(-2))
    s = prefixes.sort(dim=-1).values
    lower = s.gather(-1, (i // 2).expand(*s.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    upper = s.gather(-1, ((i + 1) // 2).expand(*s.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return (lower + upper) / 2


# ----------------------------------------------------------------------------------------------
# Maximum subarray


def max_subarray(x: Tensor, *, cumulative: bool = False) -> Tensor:
    """max over 0 <= a <= b < n of x_a + ... + x_b: (...,), or (..., n) with entry b the best of
    the prefix x_0 .. x_b when ``cumulative``. Vectorised: best ending at b is P_{b+1} - min_{j<=b} P_j
    with P_0 = 0, P_{j+1} = x_0 + ... + x_j."""
    _check_values(x)
    P = torch.cat([torch.zeros_like(x[..., :1]), x.cumsum(-1)], dim=-1)  # (..., n + 1)
    ending_at = P[..., 1:] - P[..., :-1].cummin(-1).values
    return ending_at.cummax(-1).values if cumulative else ending_at.max(-1).values


@functools.lru_cache(maxsize=1)
def _kadane_kernel():
    """Compile Kadane's scan on first use (numba is imported here, not at module import)."""
    import numba

    @numba.njit(cache=False)
    def kadane(x):  # (B, n) float64 -> (B, n): best of each prefix
        out = np.empty_like(x)
        for b in range(x.shape[0]):
            current = best = x[b, 0]
            out[b, 0] = best
            for i in range(1, x.shape[1]):
                current = max(x[b, i], current + x[b, i])
                best = max(best, current)
                out[b, i] = best
        return out

    return kadane


def max_subarray_kadane(x: Tensor, *, cumulative: bool = False) -> Tensor:
    """:func:`max_subarray` by Kadane's O(n) scan, compiled with numba, on the CPU in float64;
    the result comes back in x's dtype and device."""
    _check_values(x)
    flat = x.detach().to("cpu", torch.float64).reshape(-1, x.shape[-1]).contiguous().numpy()
    best = torch.from_numpy(_kadane_kernel()(flat)).reshape(x.shape).to(device=x.device, dtype=x.dtype)
    return best if cumulative else best[..., -1]
