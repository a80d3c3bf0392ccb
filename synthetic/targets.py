"""Sequence-to-sequence targets on a compact set, for the approximation constructions.

Inputs are sequences X in [-1, 1]^(n x d) (n tokens of d features); a target maps X to one number
per token. Every target here is a sum of ridge functions of the whole sequence:

    f(X)_i = a0 + sum_r a_r g(t_ri),     t_ri = U_r . vec(X) + C_ri          (vec: row-major)

with a profile g that fixes the smoothness class:

    cosine   g(t) = cos(t)      smooth (C^inf; |g''| <= 1): a sum of cosines
    relu     g(t) = max(t, 0)   a one-hidden-layer ReLU network of vec(X) and the token's position
    abs      g(t) = |t|         Lipschitz but not differentiable (a kink inside the range)

The offset C_ri depends on the token i, so the map is a genuine sequence-to-sequence one (token i's
output depends on i and on every token). Because every coordinate of X lies in [-1, 1], t_ri lies in
[lo_r, hi_r] = [min_i C_ri - |U_r|_1, max_i C_ri + |U_r|_1] (:meth:`RidgeTarget.ranges`), the
interval a construction must cover.

Everything is drawn from an explicit ``torch.Generator``; float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PROFILES = ("cosine", "relu", "abs")
LIPSCHITZ = {"cosine": 1.0, "relu": 1.0, "abs": 1.0}  # sup |g'|


def profile(kind: str, t: Tensor) -> Tensor:
    """g(t) for the named profile."""
    if kind == "cosine":
        return torch.cos(t)
    if kind == "relu":
        return torch.relu(t)
    if kind == "abs":
        return t.abs()
    raise ValueError(f"profile kind must be one of {PROFILES}, got {kind!r}")


@dataclass(frozen=True)
class RidgeTarget:
    """f(X)_i = a0 + sum_r a_r g(U_r . vec(X) + C_ri) (see the module docstring)."""

    kind: str
    U: Tensor  # (R, n d)
    C: Tensor  # (R, n)
    a: Tensor  # (R,)
    a0: float = 0.0

    def __post_init__(self):
        if self.kind not in PROFILES:
            raise ValueError(f"RidgeTarget.kind must be one of {PROFILES}, got {self.kind!r}")
        R = self.a.shape[0]
        if self.U.dim() != 2 or self.U.shape[0] != R or self.C.dim() != 2 or self.C.shape[0] != R:
            raise ValueError(f"RidgeTarget: U (R, n d), C (R, n), a (R,) disagree: "
                             f"{tuple(self.U.shape)}, {tuple(self.C.shape)}, {tuple(self.a.shape)}")
        if self.U.shape[1] % self.C.shape[1]:
            raise ValueError(f"RidgeTarget: U has {self.U.shape[1]} columns, not a multiple of n={self.C.shape[1]}")

    @property
    def n(self) -> int:
        return self.C.shape[1]

    @property
    def d(self) -> int:
        return self.U.shape[1] // self.n

    @property
    def n_ridges(self) -> int:
        return self.a.shape[0]

    def ranges(self) -> tuple[Tensor, Tensor]:
        """(lo, hi), each (R,): t_ri stays in [lo_r, hi_r] for every X in [-1, 1]^(n x d)."""
        spread = self.U.abs().sum(-1)
        return self.C.min(-1).values - spread, self.C.max(-1).values + spread

    def lipschitz(self) -> float:
        """sup over tokens of |f(X)_i - f(X')_i| / max|X - X'| (entrywise): sum_r |a_r| Lip(g) |U_r|_1."""
        return float((self.a.abs() * self.U.abs().sum(-1)).sum()) * LIPSCHITZ[self.kind]

    def __call__(self, X: Tensor) -> Tensor:
        """X (..., n, d) -> f(X) (..., n)."""
        if X.shape[-2:] != (self.n, self.d):
            raise ValueError(f"RidgeTarget: X must end in (n={self.n}, d={self.d}), got {tuple(X.shape)}")
        t = torch.einsum("...k,rk->...r", X.flatten(-2), self.U)[..., None, :] + self.C.T  # (..., n, R)
        return self.a0 + (profile(self.kind, t) * self.a).sum(-1)


def sample_target(gen: torch.Generator, kind: str, n: int, d: int, n_ridges: int = 2,
                  frequency: float = 1.0) -> RidgeTarget:
    """A random target: U_r a Gaussian direction scaled to |U_r|_1 = frequency (so t_ri ranges over
    an interval of width 2 frequency + 2 whatever n and d), C ~ U(-1, 1) per token,
    a_r ~ U(-1, 1) / R, a0 ~ U(-1/2, 1/2)."""
    if kind not in PROFILES:
        raise ValueError(f"kind must be one of {PROFILES}, got {kind!r}")
    for name, value in (("n", n), ("d", d), ("n_ridges", n_ridges)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    f64 = torch.float64
    U = torch.randn(n_ridges, n * d, generator=gen, dtype=f64)
    U = frequency * U / U.abs().sum(-1, keepdim=True)
    C = 2 * torch.rand(n_ridges, n, generator=gen, dtype=f64) - 1
    a = (2 * torch.rand(n_ridges, generator=gen, dtype=f64) - 1) / n_ridges
    a0 = float(torch.rand((), generator=gen, dtype=f64)) - 0.5
    return RidgeTarget(kind, U, C, a, a0)


def sample_inputs(gen: torch.Generator, n: int, d: int, batch: int) -> Tensor:
    """X uniform in [-1, 1]^(n x d): (batch, n, d) float64 (the compact set of every target)."""
    return 2 * torch.rand(batch, n, d, generator=gen, dtype=torch.float64) - 1


def kink_probes(target: RidgeTarget) -> Tensor:
    """One sequence per ridge whose token 0 sits exactly on that ridge's kink (t_r0 = 0): (R, n, d).

    Random inputs reach the interval around a kink with probability ~ h / range, so a sampled sup
    error of a non-smooth target would miss the kink as the width grows. X = delta sign(U_r) (as a
    sequence) gives t_r0 = delta |U_r|_1 + C_r0 = 0 for delta = -C_r0 / |U_r|_1, inside the cube
    when |U_r|_1 >= 1 (sample_target's frequency)."""
    l1 = target.U.abs().sum(-1, keepdim=True)
    if bool((target.C[:, :1].abs() > l1).any()):
        raise ValueError("kink_probes: needs |C_r0| <= |U_r|_1 (frequency >= 1) to stay in [-1, 1]")
    X = -target.C[:, :1] / l1 * torch.sign(target.U)
    return X.reshape(target.n_ridges, target.n, target.d)
