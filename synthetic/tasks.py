"""More in-context tasks, sampled for K models at once: noise mixtures, sparse regression, a finite
task pool, representation tasks and softmax regression.

Same contract as :mod:`synthetic.regression`: a frozen task config that validates itself (every
message names the field), and ``sample(task, generators, batch_size, device=, dtype=)`` drawing
model k's prompts from ``generators[k]`` alone, in float64 on that generator's device, in a fixed
documented order, then casting (integer outputs stay int64). So model k of a K-model batch sees
exactly what it would see alone, and the same seeds give the same numbers. x ~ N(0, I_d) always.

Tasks and their draw order (per model; B prompts, N points, d dimensions)
    NoiseMixtureTask      z (B,N,d), w (B,d), u (B,) picks sigma_m by the prior, eps (B,N);
                          y = w.x + sigma_m eps                                 (Bai et al. 2023)
    SparseRegressionTask  z, w (B,d), keys (B,d) uniform: the k largest keys are the support, eps;
                          w is zero off the support                            (Bai et al. 2023)
    TaskPoolTask          z, index (B,) uniform in the pool, eps; w = pool[index]; the pool
                          (P, d) ~ N(0, w_std^2 I) is fixed by pool_seed alone (Raventos et al. 2023)
    RepresentationTask    z, w (B,width), eps; y = w.Phi(x) + noise, Phi a fixed random ReLU network
                          of the given depth and width, fixed by phi_seed      (Guo et al. 2023)
    SoftmaxRegressionTask z, W (B,C,d), u (B,N); p = softmax(W x), label = inverse-CDF(p, u)
                          (multinomial logistic regression, C classes)

Phi (representation): h_0 = x, h_l = ReLU(A_l h_{l-1}) with A_l ~ N(0, 2 / fan_in) (He scaling),
Phi(x) = h_depth / sqrt(width), so E|Phi(x)|^2 ~ E|x|^2 / d = 1 and y has variance ~ w_std^2.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from synthetic.regression import RegressionBatch, _check_int, _check_real, _target_device, check_sample_arguments

F64 = torch.float64


def _set_real(obj, name: str, lo: float = 0.0, strict: bool = False) -> None:
    value = _check_real(f"{type(obj).__name__}.{name}", getattr(obj, name), lo, strict=strict)
    object.__setattr__(obj, name, value)


def _check_sizes(obj) -> None:
    _check_int(f"{type(obj).__name__}.d", obj.d, lo=1)
    _check_int(f"{type(obj).__name__}.n_points", obj.n_points, lo=1)


_SEED_RANGE = (0, 2**64 - 1)  # the non-negative seeds torch.Generator.manual_seed accepts


def _validate(task, **int_ranges: tuple[int, int | None]) -> None:
    """Check d, n_points >= 1 and every named integer field within its (lo, hi) range (hi None: no
    upper bound), then store the scales as floats: noise_std >= 0 where the task has it, w_std > 0."""
    _check_sizes(task)
    for name, (lo, hi) in int_ranges.items():
        _check_int(f"{type(task).__name__}.{name}", getattr(task, name), lo=lo, hi=hi)
    if hasattr(task, "noise_std"):
        _set_real(task, "noise_std")
    _set_real(task, "w_std", strict=True)


def _inputs(g: torch.Generator, B: int, N: int, d: int) -> Tensor:
    return torch.randn(B, N, d, generator=g, device=g.device, dtype=F64)


def _noise(g: torch.Generator, B: int, N: int) -> Tensor:
    return torch.randn(B, N, generator=g, device=g.device, dtype=F64)


def _dot(x: Tensor, w: Tensor) -> Tensor:
    """w (B, d) . x (B, N, d) -> (B, N)."""
    return (x * w[:, None, :]).sum(-1)


# ----------------------------------------------------------------------------------------------
# Task configs


@dataclass(frozen=True)
class NoiseMixtureTask:
    """Linear regression whose noise level is drawn per prompt from ``noise_levels`` (each >= 0)
    with prior ``noise_probs`` (positive, summing to 1; None for uniform)."""

    d: int
    n_points: int
    noise_levels: tuple[float, ...] = (0.0, 1.0)
    noise_probs: tuple[float, ...] | None = None
    w_std: float = 1.0

    def __post_init__(self):
        _check_sizes(self)
        levels = tuple(self.noise_levels)
        if not levels:
            raise ValueError("NoiseMixtureTask.noise_levels must hold at least one noise level, got ()")
        levels = tuple(_check_real(f"NoiseMixtureTask.noise_levels[{m}]", s, 0.0) for m, s in enumerate(levels))
        object.__setattr__(self, "noise_levels", levels)
        if self.noise_probs is not None:
            probs = tuple(_check_real(f"NoiseMixtureTask.noise_probs[{m}]", p, 0.0, strict=True)
                          for m, p in enumerate(self.noise_probs))
            if len(probs) != len(levels) or abs(sum(probs) - 1.0) > 1e-9:
                raise ValueError(f"NoiseMixtureTask.noise_probs must be {len(levels)} positive numbers summing "
                                 f"to 1, got {self.noise_probs!r}")
            object.__setattr__(self, "noise_probs", probs)
        _set_real(self, "w_std", strict=True)

    @property
    def probs(self) -> tuple[float, ...]:
        return self.noise_probs or tuple(1.0 / len(self.noise_levels) for _ in self.noise_levels)

    def draw(self, g: torch.Generator, B: int) -> dict[str, Tensor]:
        x = _inputs(g, B, self.n_points, self.d)
        w = torch.randn(B, self.d, generator=g, device=g.device, dtype=F64) * self.w_std
        u = torch.rand(B, generator=g, device=g.device, dtype=F64)
        cdf = torch.tensor(self.probs, dtype=F64, device=g.device).cumsum(0)
        level = torch.searchsorted(cdf, u, right=True).clamp(max=len(self.noise_levels) - 1)
        sigma = torch.tensor(self.noise_levels, dtype=F64, device=g.device)[level]
        y = _dot(x, w) + sigma[:, None] * _noise(g, B, self.n_points)
        return {"x": x, "y": y, "w": w, "noise_std": sigma}


@dataclass(frozen=True)
class SparseRegressionTask:
    """Linear regression with w supported on k of the d coordinates (a uniformly random subset per
    prompt), N(0, w_std^2) on the support."""

    d: int
    n_points: int
    k: int
    noise_std: float = 0.0
    w_std: float = 1.0

    def __post_init__(self):
        _validate(self, k=(1, self.d))

    def draw(self, g: torch.Generator, B: int) -> dict[str, Tensor]:
        x = _inputs(g, B, self.n_points, self.d)
        w = torch.randn(B, self.d, generator=g, device=g.device, dtype=F64) * self.w_std
        keys = torch.rand(B, self.d, generator=g, device=g.device, dtype=F64)
        support = torch.zeros_like(w).scatter_(-1, keys.topk(self.k, dim=-1).indices, 1.0)
        w = w * support
        y = _dot(x, w) + self.noise_std * _noise(g, B, self.n_points)
        return {"x": x, "y": y, "w": w}


@functools.lru_cache(maxsize=32)
def _pool(d: int, size: int, seed: int) -> Tensor:
    return torch.randn(size, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@dataclass(frozen=True)
class TaskPoolTask:
    """Linear regression with w drawn uniformly from a fixed pool of ``pool_size`` vectors (the
    task-diversity setting); the pool is N(0, w_std^2 I) drawn from ``pool_seed`` alone."""

    d: int
    n_points: int
    pool_size: int
    pool_seed: int = 0
    noise_std: float = 0.0
    w_std: float = 1.0

    def __post_init__(self):
        _validate(self, pool_size=(1, None), pool_seed=_SEED_RANGE)

    def pool(self, dtype: torch.dtype = F64, device=None) -> Tensor:
        """The pool (pool_size, d): the same for every model and every call."""
        return (_pool(self.d, self.pool_size, self.pool_seed) * self.w_std).to(device=device, dtype=dtype)

    def draw(self, g: torch.Generator, B: int) -> dict[str, Tensor]:
        x = _inputs(g, B, self.n_points, self.d)
        index = torch.randint(self.pool_size, (B,), generator=g, device=g.device)
        w = self.pool(device=g.device)[index]
        y = _dot(x, w) + self.noise_std * _noise(g, B, self.n_points)
        return {"x": x, "y": y, "w": w, "task_index": index}


@functools.lru_cache(maxsize=32)
def _phi_layers(d: int, depth: int, width: int, seed: int) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    fan_ins = [d] + [width] * (depth - 1)
    return tuple(torch.randn(fan_in, width, generator=gen, dtype=F64) * math.sqrt(2.0 / fan_in) for fan_in in fan_ins)


@dataclass(frozen=True)
class RepresentationTask:
    """y = w.Phi(x) + noise_std eps with Phi a fixed random ReLU network (module docstring) of
    ``depth`` >= 1 layers of ``width`` >= 1 units, fixed by ``phi_seed``; w ~ N(0, w_std^2 I_width)."""

    d: int
    n_points: int
    depth: int = 1
    width: int = 16
    phi_seed: int = 0
    noise_std: float = 0.0
    w_std: float = 1.0

    def __post_init__(self):
        _validate(self, depth=(1, None), width=(1, None), phi_seed=_SEED_RANGE)

    def layers(self, dtype: torch.dtype = F64, device=None) -> list[Tensor]:
        """The weight matrices A_l^T of Phi: (d, width), then (width, width) ... (depth of them)."""
        return [a.to(device=device, dtype=dtype) for a in _phi_layers(self.d, self.depth, self.width, self.phi_seed)]

    def phi(self, x: Tensor) -> Tensor:
        """Phi(x) for x (..., d) -> (..., width), on x's device and in its dtype."""
        if x.shape[-1] != self.d:
            raise ValueError(f"RepresentationTask.phi: x must end in d={self.d}, got shape {tuple(x.shape)}")
        h = x
        for a in self.layers(x.dtype, x.device):
            h = torch.relu(h @ a)
        return h / math.sqrt(self.width)

    def draw(self, g: torch.Generator, B: int) -> dict[str, Tensor]:
        x = _inputs(g, B, self.n_points, self.d)
        w = torch.randn(B, self.width, generator=g, device=g.device, dtype=F64) * self.w_std
        features = self.phi(x)
        y = _dot(features, w) + self.noise_std * _noise(g, B, self.n_points)
        return {"x": x, "features": features, "y": y, "w": w}


@dataclass(frozen=True)
class SoftmaxRegressionTask:
    """Multinomial logistic (softmax) regression: per prompt W ~ N(0, w_std^2) of shape
    (n_classes, d); point i has class probabilities softmax(W x_i) and a label drawn from them."""

    d: int
    n_points: int
    n_classes: int = 2
    w_std: float = 1.0

    def __post_init__(self):
        _validate(self, n_classes=(2, None))

    def draw(self, g: torch.Generator, B: int) -> dict[str, Tensor]:
        x = _inputs(g, B, self.n_points, self.d)
        W = torch.randn(B, self.n_classes, self.d, generator=g, device=g.device, dtype=F64) * self.w_std
        u = torch.rand(B, self.n_points, generator=g, device=g.device, dtype=F64)
        probs = torch.softmax(torch.einsum("bcd,bnd->bnc", W, x), dim=-1)
        labels = (probs.cumsum(-1) <= u.unsqueeze(-1)).sum(-1).clamp(max=self.n_classes - 1)
        return {"x": x, "W": W, "probs": probs, "labels": labels}


TASKS = (NoiseMixtureTask, SparseRegressionTask, TaskPoolTask, RepresentationTask, SoftmaxRegressionTask)


# ----------------------------------------------------------------------------------------------
# Batches


def _moved(batch, device, dtype):
    """A copy of a batch dataclass on ``device``; floating tensors also cast to ``dtype``."""
    def move(t: Tensor) -> Tensor:
        return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

    return dataclasses.replace(batch, **{f.name: move(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


@dataclass
class NoisyRegressionBatch(RegressionBatch):
    """A RegressionBatch and the noise level of every prompt, ``noise_std`` (K, B)."""

    noise_std: Tensor = None

    def to(self, device=None, dtype: torch.dtype | None = None) -> NoisyRegressionBatch:
        return _moved(self, device, dtype)


@dataclass
class PoolBatch(RegressionBatch):
    """A RegressionBatch and which pool member each prompt uses, ``task_index`` (K, B) int64."""

    task_index: Tensor = None

    def to(self, device=None, dtype: torch.dtype | None = None) -> PoolBatch:
        return _moved(self, device, dtype)


@dataclass
class RepresentationBatch:
    x: Tensor  # (K, B, N, d)
    features: Tensor  # (K, B, N, width)  Phi(x)
    y: Tensor  # (K, B, N)
    w: Tensor  # (K, B, width)


@dataclass
class SoftmaxBatch:
    x: Tensor  # (K, B, N, d)
    W: Tensor  # (K, B, C, d)
    probs: Tensor  # (K, B, N, C)
    labels: Tensor  # (K, B, N) int64

    def one_hot(self) -> Tensor:
        """Labels as one-hot vectors (K, B, N, C) in probs' dtype."""
        return torch.nn.functional.one_hot(self.labels, self.probs.shape[-1]).to(self.probs.dtype)


_BATCHES = {NoiseMixtureTask: NoisyRegressionBatch, SparseRegressionTask: RegressionBatch,
            TaskPoolTask: PoolBatch, RepresentationTask: RepresentationBatch, SoftmaxRegressionTask: SoftmaxBatch}


# ----------------------------------------------------------------------------------------------
# Sampling


def sample(task, generators: Sequence[torch.Generator], batch_size: int, *, device=None,
           dtype: torch.dtype = torch.float32):
    """Draw ``batch_size`` prompts for each of K = len(generators) models (see the module docstring).

    Model k's prompts come from ``generators[k]`` alone; floating outputs are cast to ``dtype``,
    everything moves to ``device`` (default: the generators' common device)."""
    _check_args(task, generators, batch_size, dtype)
    target = _target_device(generators, device)
    drawn = [task.draw(g, batch_size) for g in generators]  # per model, not per sample

    def stack(name: str) -> Tensor:
        parts = [part[name].to(target) for part in drawn]
        return torch.stack([p.to(dtype) if p.is_floating_point() else p for p in parts])

    return _BATCHES[type(task)](**{name: stack(name) for name in drawn[0]})


def _check_args(task, generators, batch_size, dtype) -> None:
    if not isinstance(task, TASKS):
        raise TypeError(f"sample: task must be one of {[t.__name__ for t in TASKS]}, got {type(task).__name__}")
    if isinstance(generators, torch.Generator) or not isinstance(generators, Sequence) or not generators:
        raise TypeError("sample: generators must be a non-empty list of torch.Generator (one per model)")
    check_sample_arguments(generators, batch_size, dtype)
