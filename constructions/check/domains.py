"""Samplers for construction domains: small integers and floats, and regression prompts in a ball.

Every sampler takes an explicit ``torch.Generator``; nothing here touches the global RNG. The same
samplers back ``ttb check`` and the hypothesis property tests (which fix d, n and depth and draw the
rest from a seed).
"""

from __future__ import annotations

import torch
from torch import Tensor

# The ranges the issue asks property tests to cover: d in 1..8, N in 1..32, depth in 1..6.
D_RANGE, N_RANGE, DEPTH_RANGE = (1, 8), (1, 32), (1, 6)
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


def gd_prompts(gen: torch.Generator, d: int | None, n: int | None, depth: int | None,
               radius_range: tuple[float, float] = (0.5, 2.0)):
    """The GD family's domain, drawn in this order: sizes, a radius, prompts in that ball, and a
    stable step eta in [0.05, 1.9] / radius^2. Returns (d, depth, radius, eta, x, y, x_query)."""
    d, n, depth = draw_sizes(gen, d, n, depth)
    radius = draw_float(gen, *radius_range)
    x, y, x_query = regression_prompts(gen, d, n, radius)
    eta = draw_float(gen, 0.05, 1.9) / radius**2
    return d, depth, radius, eta, x, y, x_query
