"""In-context linear regression, sampled for K models at once.

The task (Garg et al. 2022, with the anisotropic and noisy variants of Akyurek et al. 2022). A
prompt is N points (x_i, y_i) sharing one weight vector w:

    x_i ~ N(0, Sigma)                       Sigma = I_d (isotropic) or V diag(lam) V^T (anisotropic)
    or x_i = A u_i, u_i ~ U(-r, r)^d        ``x_dist="uniform"`` with half-width r = ``x_range`` (von
                                            Oswald et al. 2023), A the same mixing as above
    w   ~ N(0, w_std^2 I_d)                 one w per prompt
    y_i = w . x_i + noise_std * eps_i       eps_i ~ N(0, 1)

Every point is also the query for its prefix: a causal model predicts y_i from (x_1, y_1, ...,
x_{i-1}, y_{i-1}, x_i). Models that read a whole prompt take the last point as the query
(``RegressionBatch.query_x``) and the first N - 1 points as the context.

Anisotropic inputs: lam is geometric from 1 down to 1/kappa (kappa = ``condition_number``), rescaled
to mean 1 so that tr Sigma = d as in the isotropic case; V is a fixed random rotation made from
``basis_seed`` alone, so it is part of the task and the same for every model and every call.
Curriculum (``n_dims_active = k``): x is drawn as above and its last d - k coordinates are set to
zero; w keeps all d coordinates (the trailing ones do not affect y).

Glossary of shapes
    K   models in a batch (one torch.Generator each)
    B   prompts per model (``batch_size``)
    N   points per prompt (``n_points``)
    d   input dimension

Draw-order guarantee. For each model k, ``generators[k]`` alone draws, in float64 and in this order:
z (B, N, d) for x (standard normal, or uniform on [-r, r] for ``x_dist="uniform"``), then w (B, d),
then eps (B, N). eps is drawn even when noise_std == 0. Hence:
    - model k of a K-model batch sees exactly the data it would see sampled alone;
    - the same seeds give the same numbers;
    - changing noise_std changes y only: x, w and the generator's state afterwards are unchanged, so
      whole streams of batches keep their x and w;
    - a float32 batch is the float64 batch from the same seeds, rounded.
Nothing here touches torch's global random state.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

TASK_KINDS = ("isotropic", "anisotropic")
X_DISTS = ("gaussian", "uniform")
_MAX_SEED = 2**64 - 1  # the range torch.Generator.manual_seed accepts (non-negative part)


# ----------------------------------------------------------------------------------------------
# Validation helpers: every message names the field


def _check_int(name: str, value, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < lo or (hi is not None and value > hi):
        allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {allowed}, got {value}")


def _check_real(name: str, value, lo: float, *, strict: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite real >= lo (> lo if strict)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < lo or (strict and value == lo):
        allowed = f"> {lo}" if strict else f">= {lo}"
        raise ValueError(f"{name} must be finite and {allowed}, got {value}")
    return value


# ----------------------------------------------------------------------------------------------
# Task config


@dataclass(frozen=True)
class RegressionTask:
    """One in-context linear regression task (see the module docstring for the distribution).

    Fields: ``d`` input dimension (>= 1); ``n_points`` points per prompt (>= 1); ``noise_std`` (>= 0);
    ``kind`` one of TASK_KINDS; ``condition_number`` kappa = cond(Sigma) (>= 1; must be 1 for
    isotropic); ``basis_seed`` seed of the anisotropic eigenbasis (0 <= seed < 2**64); ``w_std``
    (> 0); ``n_dims_active`` curriculum width k, 1 <= k <= d, or None for d; ``x_dist`` one of
    X_DISTS and ``x_range`` (> 0) the half-width of the uniform inputs (1.0 and unused for gaussian).
    """

    d: int
    n_points: int
    noise_std: float = 0.0
    kind: str = "isotropic"
    condition_number: float = 1.0
    basis_seed: int = 0
    w_std: float = 1.0
    n_dims_active: int | None = None
    x_dist: str = "gaussian"
    x_range: float = 1.0

    def __post_init__(self):
        _check_int("RegressionTask.d", self.d, lo=1)
        _check_int("RegressionTask.n_points", self.n_points, lo=1)
        self._set_real("noise_std", lo=0.0)
        self._check_kind()
        self._set_real("condition_number", lo=1.0)
        if self.kind == "isotropic" and self.condition_number != 1.0:
            raise ValueError(
                "RegressionTask.condition_number must be 1.0 when kind='isotropic', got "
                f"{self.condition_number}; use kind='anisotropic' for a stated condition number"
            )
        _check_int("RegressionTask.basis_seed", self.basis_seed, lo=0, hi=_MAX_SEED)
        self._set_real("w_std", lo=0.0, strict=True)
        if self.n_dims_active is not None:
            _check_int("RegressionTask.n_dims_active", self.n_dims_active, lo=1, hi=self.d)
        if self.x_dist not in X_DISTS:
            raise ValueError(f"RegressionTask.x_dist must be one of {X_DISTS}, got {self.x_dist!r}")
        self._set_real("x_range", lo=0.0, strict=True)
        if self.x_dist == "gaussian" and self.x_range != 1.0:
            raise ValueError(f"RegressionTask.x_range applies to x_dist='uniform' only, got {self.x_range}")

    def _set_real(self, name: str, lo: float, strict: bool = False) -> None:
        value = _check_real(f"RegressionTask.{name}", getattr(self, name), lo, strict=strict)
        object.__setattr__(self, name, value)  # store a plain float (frozen dataclass)

    def _check_kind(self) -> None:
        if not isinstance(self.kind, str):
            raise TypeError(f"RegressionTask.kind must be a str, got {self.kind!r}")
        if self.kind not in TASK_KINDS:
            raise ValueError(f"RegressionTask.kind must be one of {TASK_KINDS}, got {self.kind!r}")

    @property
    def active_dims(self) -> int:
        """The number k of leading coordinates of x that are drawn (the rest are zero)."""
        return self.d if self.n_dims_active is None else self.n_dims_active

    def eigenvalues(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Eigenvalues of Sigma before the curriculum mask, largest first: (d,), mean 1."""
        kappa = self.condition_number if self.kind == "anisotropic" else 1.0
        return _eigenvalues(self.d, kappa).to(device=device, dtype=dtype)

    def covariance(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """Cov(x) of the inputs as drawn, (d, d): Sigma with rows/columns beyond active_dims zeroed
        (U(-r, r) has variance r^2 / 3 per coordinate)."""
        mixing = _mixing_matrix(self)
        cov = torch.eye(self.d, dtype=torch.float64) if mixing is None else mixing @ mixing.T
        if self.x_dist == "uniform":
            cov = cov * self.x_range**2 / 3
        cov[self.active_dims :, :] = 0.0
        cov[:, self.active_dims :] = 0.0
        return cov.to(device=device, dtype=dtype)


def _eigenvalues(d: int, kappa: float) -> Tensor:
    """Geometric from 1 down to 1/kappa, rescaled to mean 1: (d,) float64. For d = 1, [1.0]."""
    lam = kappa ** -torch.linspace(0.0, 1.0, d, dtype=torch.float64)
    return lam / lam.mean()


def _rotation(d: int, seed: int) -> Tensor:
    """A random orthogonal (d, d) float64 matrix, a pure function of (d, seed).

    Q from the QR of a Gaussian matrix; multiplying column j by sign(R_jj) makes the factorisation
    unique (R with positive diagonal), so Q does not depend on the LAPACK sign convention.
    """
    gaussian = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    signs = torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(torch.float64)
    return q * signs


def _mixing_matrix(task: RegressionTask) -> Tensor | None:
    """A = V diag(sqrt lam), so x = z A^T has Cov(x) = A A^T = V diag(lam) V^T; None if isotropic."""
    if task.kind == "isotropic":
        return None
    return _cached_mixing(task.d, task.condition_number, task.basis_seed).clone()


@functools.lru_cache(maxsize=32)
def _cached_mixing(d: int, kappa: float, basis_seed: int) -> Tensor:
    return _rotation(d, basis_seed) * _eigenvalues(d, kappa).sqrt()  # scales column j by sqrt lam_j


# ----------------------------------------------------------------------------------------------
# Batch of prompts


@dataclass
class RegressionBatch:
    """Prompts for K models: ``x`` (K, B, N, d), ``y`` (K, B, N), ``w`` (K, B, d)."""

    x: Tensor  # (K, B, N, d)
    y: Tensor  # (K, B, N)
    w: Tensor  # (K, B, d)

    def __post_init__(self):
        if self.x.ndim != 4:
            raise ValueError(f"RegressionBatch.x must be (K, B, N, d), got shape {tuple(self.x.shape)}")
        K, B, N, d = self.x.shape
        if tuple(self.y.shape) != (K, B, N):
            raise ValueError(f"RegressionBatch.y must be {(K, B, N)}, got {tuple(self.y.shape)}")
        if tuple(self.w.shape) != (K, B, d):
            raise ValueError(f"RegressionBatch.w must be {(K, B, d)}, got {tuple(self.w.shape)}")

    @property
    def context_x(self) -> Tensor:  # (K, B, N-1, d)
        return self.x[:, :, :-1]

    @property
    def context_y(self) -> Tensor:  # (K, B, N-1)
        return self.y[:, :, :-1]

    @property
    def query_x(self) -> Tensor:  # (K, B, d)
        return self.x[:, :, -1]

    @property
    def query_y(self) -> Tensor:  # (K, B)
        return self.y[:, :, -1]

    def to(self, device=None, dtype: torch.dtype | None = None) -> RegressionBatch:
        """A copy on ``device`` and/or in ``dtype`` (None keeps the current one)."""
        return RegressionBatch(*(t.to(device=device, dtype=dtype) for t in (self.x, self.y, self.w)))


# ----------------------------------------------------------------------------------------------
# Sampling


def make_generators(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per model, on ``device``."""
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def sample(
    task: RegressionTask,
    generators: Sequence[torch.Generator],
    batch_size: int,
    *,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> RegressionBatch:
    """Draw ``batch_size`` prompts for each of K = len(generators) models.

    Model k's prompts come from ``generators[k]`` alone, drawn on that generator's device in float64
    (order: x, w, noise), then cast to ``dtype`` and moved to ``device`` (default: the generators'
    device, which must then be shared by all of them). Advances each generator; nothing else.
    """
    _check_sample_args(task, generators, batch_size, dtype)
    target = _target_device(generators, device)
    drawn = [_draw_one(task, g, batch_size) for g in generators]  # K is small; per model, not per sample
    x, y, w = (torch.stack([part[i].to(device=target, dtype=dtype) for part in drawn]) for i in range(3))
    return RegressionBatch(x=x, y=y, w=w)


def _draw_one(task: RegressionTask, g: torch.Generator, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """x (B, N, d), y (B, N), w (B, d) in float64 on g's device, in the documented draw order."""
    B, N, d, f64 = batch_size, task.n_points, task.d, torch.float64
    if task.x_dist == "uniform":
        z = (2 * torch.rand(B, N, d, generator=g, device=g.device, dtype=f64) - 1) * task.x_range
    else:
        z = torch.randn(B, N, d, generator=g, device=g.device, dtype=f64)
    w = torch.randn(B, d, generator=g, device=g.device, dtype=f64) * task.w_std
    eps = torch.randn(B, N, generator=g, device=g.device, dtype=f64)  # drawn even if noise_std == 0
    mixing = _mixing_matrix(task)
    x = z if mixing is None else z @ mixing.to(g.device).T  # Cov(x) = A A^T
    x[..., task.active_dims :] = 0.0  # curriculum: only the first k coordinates are live
    y = (x * w[:, None, :]).sum(-1) + task.noise_std * eps
    return x, y, w


def _check_sample_args(task, generators, batch_size, dtype) -> None:
    if not isinstance(task, RegressionTask):
        raise TypeError(f"sample: task must be a RegressionTask, got {type(task).__name__}")
    if isinstance(generators, torch.Generator) or not isinstance(generators, Sequence):
        raise TypeError(
            "sample: generators must be a list of torch.Generator (one per model), "
            f"got {type(generators).__name__}"
        )
    if len(generators) == 0:
        raise ValueError("sample: generators must hold at least one torch.Generator (one per model), got []")
    check_sample_arguments(generators, batch_size, dtype)


def _target_device(generators: Sequence[torch.Generator], device) -> torch.device:
    if device is not None:
        return torch.device(device)
    devices = sorted({str(g.device) for g in generators})
    if len(devices) > 1:
        raise ValueError(
            f"sample: generators are on several devices {devices}; pass device= to say where the batch goes"
        )
    return torch.device(devices[0])


def check_sample_arguments(generators, batch_size: int, dtype) -> None:
    """The checks every task's ``sample`` shares: one torch.Generator per model, batch size, dtype."""
    for k, g in enumerate(generators):
        if not isinstance(g, torch.Generator):
            raise TypeError(f"sample: generators[{k}] must be a torch.Generator, got {type(g).__name__}")
    _check_int("sample: batch_size", batch_size, lo=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"sample: dtype must be a floating-point torch.dtype, got {dtype!r}")
