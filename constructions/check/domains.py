"""Samplers for construction domains: small integers and floats, and regression prompts in a ball.

Every sampler takes an explicit ``torch.Generator``; nothing here touches the global RNG. The same
samplers back ``ttb check`` and the hypothesis property tests (which fix d, n and depth and draw the
rest from a seed). The draw order of each sampler is part of its contract: the same seed gives the
same case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from constructions.check.contract import Case

# The ranges the property tests cover: d in 1..8, N in 1..32, depth in 1..6.
D_RANGE, N_RANGE, DEPTH_RANGE = (1, 8), (1, 32), (1, 6)
# The sequence and graph constructions clamp to d in 1..3 and n in 2..6 so their checks stay fast.
SMALL_D, SMALL_N = (1, 3), (2, 6)
BATCH = 4  # prompts per case


def draw_int(gen: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def draw_float(gen: torch.Generator, lo: float, hi: float) -> float:
    """Uniform float in [lo, hi)."""
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def draw_sizes(gen: torch.Generator, d: int | None, n: int | None, depth: int | None) -> tuple[int, int, int]:
    """Fill in whichever of (d, n, depth) is None from the default ranges."""
    d = draw_int(gen, *D_RANGE) if d is None else d
    n = draw_int(gen, *N_RANGE) if n is None else n
    depth = draw_int(gen, *DEPTH_RANGE) if depth is None else depth
    return d, n, depth


def clamped(gen: torch.Generator, value: int | None, lo: int, hi: int) -> int:
    """``value`` clamped to [lo, hi], or a uniform integer there when it is None."""
    return draw_int(gen, lo, hi) if value is None else max(lo, min(value, hi))


def small_sizes(gen: torch.Generator, d: int | None, n: int | None) -> tuple[int, int]:
    """(d, n) for the sequence and graph constructions: clamped to SMALL_D, SMALL_N, or drawn there."""
    return clamped(gen, d, *SMALL_D), clamped(gen, n, *SMALL_N)


def ball(gen: torch.Generator, shape: tuple[int, ...], d: int, radius: float) -> Tensor:
    """Points uniform in the d-ball of the given radius, shape (*shape, d), float64."""
    g = torch.randn(*shape, d, generator=gen, dtype=torch.float64)
    direction = g / g.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    r = radius * torch.rand(*shape, 1, generator=gen, dtype=torch.float64) ** (1.0 / d)
    return direction * r


def regression_prompts(gen: torch.Generator, d: int, n: int, radius: float = 1.0,
                       batch: int = BATCH) -> tuple[Tensor, Tensor, Tensor]:
    """x (B, n, d) and x_query (B, d) in the radius-ball; y (B, n) ~ N(0, 1) (any y is allowed)."""
    x = ball(gen, (batch, n), d, radius)
    x_query = ball(gen, (batch,), d, radius)
    y = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    return x, y, x_query


def spectral_norm_max(x: Tensor) -> float:
    """max over prompts of |X^T X / N|_2 for x (B, N, d)."""
    S = x.transpose(-1, -2) @ x / x.shape[-2]
    return float(torch.linalg.eigvalsh(S)[..., -1].max())


@dataclass(frozen=True)
class Prompts:
    """One draw of an in-context regression domain: the sizes, the radius of the input ball, the
    regulariser lam where the domain has one, and B prompts in that ball."""

    d: int
    n: int
    depth: int
    radius: float
    x: Tensor  # (B, n, d)
    y: Tensor  # (B, n)
    x_query: Tensor  # (B, d)
    lam: float | None = None

    def case(self, **params) -> Case:
        """A construction's case: its build() arguments ``params`` and these prompts."""
        return Case(params, self.x, self.y, self.x_query)


def ball_prompts(gen: torch.Generator, d: int | None, n: int | None, depth: int | None, *,
                 radius: tuple[float, float], log10_lam: tuple[float, float] | None = None) -> Prompts:
    """Drawn in this order: the sizes (:func:`draw_sizes`), a radius uniform in ``radius``, for ridge
    domains lam = 10^u with u uniform in ``log10_lam``, then the prompts in that ball."""
    d, n, depth = draw_sizes(gen, d, n, depth)
    r = draw_float(gen, *radius)
    lam = None if log10_lam is None else 10 ** draw_float(gen, *log10_lam)
    x, y, x_query = regression_prompts(gen, d, n, r)
    return Prompts(d, n, depth, r, x, y, x_query, lam)


def stable_step(gen: torch.Generator, radius: float) -> float:
    """A GD step eta uniform in [0.05, 1.9] / radius^2: below 2 / radius^2, so GD on inputs in the
    radius-ball is stable (every eigenvalue of I - eta S lies in (-1, 1])."""
    return draw_float(gen, 0.05, 1.9) / radius**2
