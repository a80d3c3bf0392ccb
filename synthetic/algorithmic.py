"""Algorithmic sequence tasks with an out-of-distribution value protocol, for K models at once.

A sequence is n values x_1 .. x_n; the target is computed from them by a reference algorithm
(:mod:`synthetic.sequences`, float64):

    cumsum / cummin / cummax    y_i = x_1 + ... + x_i / min / max           (n outputs)
    sort                        x sorted ascending                          (n outputs)
    median                      the median of x_1 .. x_n (mean of the two middle values if n is even)
    cummedian                   y_i = median of x_1 .. x_i                  (n outputs)
    max_subarray                the largest sum of a non-empty contiguous run (1 output)
    cum_max_subarray            y_i = the same within x_1 .. x_i           (n outputs)

Out-of-distribution protocol (value generalization). Training values are uniform in
[-c_train, c_train]; test values are uniform in [-c, c] for a grid of c, every one larger than
c_train, so that no test range fits inside the training range (asking for one is an error: it
would test nothing out of distribution). With ``shells=True`` test range i keeps only the values
c_{i-1} < |x| <= c_i (c_0 = c_train): sub-ranges wholly outside the training range.

Glossary of shapes
    K   models in a batch (one torch.Generator each)
    B   sequences per model (``batch_size``)
    n   values per sequence;  n_out  targets per sequence (n, or 1 for median / max_subarray)

Draw-order guarantee. For each model k, ``generators[k]`` alone draws u ~ U[0, 1)^(B, n) in float64,
and x is a fixed affine map of u given the value range: for [-c, c], x = c (2u - 1). Hence model k
of a batch sees what it would see alone, the same seeds give the same numbers, and sequences drawn
from the same generator state at two values of c are the same sequences rescaled, so error versus c
compares like with like. Nothing here touches torch's global random state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from synthetic import sequences as S
from synthetic.regression import check_sample_arguments, make_generators

TASK_KINDS = ("cumsum", "cummin", "cummax", "sort", "median", "cummedian", "max_subarray",
              "cum_max_subarray")
SCALAR_KINDS = ("median", "max_subarray")

__all__ = ["TASK_KINDS", "AlgorithmicTask", "ValueRange", "OODProtocol", "AlgorithmicBatch",
           "targets", "sample", "make_generators"]


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def targets(kind: str, x: Tensor) -> Tensor:
    """The target of task ``kind`` for values x (..., n): (..., n_out)."""
    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
    scans = {"cumsum": "sum", "cummin": "min", "cummax": "max"}
    if kind in scans:
        return S.prefix_scan(x, scans[kind])
    if kind == "sort":
        return S.sort(x)
    if kind == "median":
        return S.median(x).unsqueeze(-1)
    if kind == "cummedian":
        return S.cumulative_median(x)
    return S.max_subarray(x, cumulative=kind == "cum_max_subarray").reshape(*x.shape[:-1], -1)


# ----------------------------------------------------------------------------------------------
# Task, value ranges, protocol


@dataclass(frozen=True)
class AlgorithmicTask:
    """``kind`` one of TASK_KINDS; ``n`` values per sequence (>= 1); training values uniform in
    [-c_train, c_train] (c_train > 0)."""

    kind: str
    n: int
    c_train: float = 2.0

    def __post_init__(self):
        if not isinstance(self.kind, str) or self.kind not in TASK_KINDS:
            raise ValueError(f"AlgorithmicTask.kind must be one of {TASK_KINDS}, got {self.kind!r}")
        _check_int("AlgorithmicTask.n", self.n, lo=1)
        object.__setattr__(self, "c_train", _check_positive("AlgorithmicTask.c_train", self.c_train))

    @property
    def n_out(self) -> int:
        return 1 if self.kind in SCALAR_KINDS else self.n

    @property
    def train_range(self) -> ValueRange:
        return ValueRange(self.c_train)

    def targets(self, x: Tensor) -> Tensor:
        return targets(self.kind, x)

    def ood(self, test_cs: Sequence[float], shells: bool = False) -> OODProtocol:
        """The protocol with this task's training range and test ranges [-c, c] for c in test_cs."""
        return OODProtocol(self.c_train, tuple(test_cs), shells)


@dataclass(frozen=True)
class ValueRange:
    """Values uniform on [-c, -inner] U [inner, c] (0 <= inner < c; inner = 0: all of [-c, c])."""

    c: float
    inner: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "c", _check_positive("ValueRange.c", self.c))
        if isinstance(self.inner, bool) or not isinstance(self.inner, numbers.Real):
            raise TypeError(f"ValueRange.inner must be a real number, got {self.inner!r}")
        inner = float(self.inner)
        if not (0.0 <= inner < self.c):
            raise ValueError(f"ValueRange.inner must satisfy 0 <= inner < c = {self.c:g}, got {inner}")
        object.__setattr__(self, "inner", inner)

    def fits_inside(self, c_train: float) -> bool:
        """Whether every value of this range lies in [-c_train, c_train]."""
        return self.c <= c_train

    def values(self, u: Tensor) -> Tensor:
        """Map u in [0, 1) onto the range (a uniform u gives uniform values)."""
        v = (2 * u - 1) * (self.c - self.inner)
        return torch.where(v >= 0, v + self.inner, v - self.inner)

    def __str__(self) -> str:
        if self.inner == 0:
            return f"[-{self.c:g}, {self.c:g}]"
        return f"[-{self.c:g}, -{self.inner:g}] U [{self.inner:g}, {self.c:g}]"


@dataclass(frozen=True)
class OODProtocol:
    """Training range [-c_train, c_train] and test ranges for every c in ``test_cs`` (each c >
    c_train; increasing when ``shells``)."""

    c_train: float
    test_cs: tuple[float, ...]
    shells: bool = False

    def __post_init__(self):
        object.__setattr__(self, "c_train", _check_positive("OODProtocol.c_train", self.c_train))
        cs = tuple(_check_positive("OODProtocol.test_cs", c) for c in self.test_cs)
        if not cs:
            raise ValueError("OODProtocol.test_cs must hold at least one c")
        for c in cs:
            if c <= self.c_train:
                raise ValueError(
                    f"OODProtocol.test_cs: the test range [-{c:g}, {c:g}] lies inside the training range "
                    f"[-{self.c_train:g}, {self.c_train:g}], so it tests nothing out of distribution; "
                    f"every test c must be > c_train"
                )
        if self.shells and any(b <= a for a, b in zip(cs, cs[1:])):
            raise ValueError(f"OODProtocol.test_cs must increase strictly when shells=True, got {cs}")
        object.__setattr__(self, "test_cs", cs)

    @property
    def train_range(self) -> ValueRange:
        return ValueRange(self.c_train)

    def test_ranges(self) -> list[ValueRange]:
        if not self.shells:
            return [ValueRange(c) for c in self.test_cs]
        inners = (self.c_train, *self.test_cs[:-1])
        return [ValueRange(c, inner) for c, inner in zip(self.test_cs, inners)]


# ----------------------------------------------------------------------------------------------
# Batch and sampling


@dataclass
class AlgorithmicBatch:
    """Sequences for K models: ``x`` (K, B, n) and targets ``y`` (K, B, n_out)."""

    x: Tensor
    y: Tensor

    def __post_init__(self):
        if self.x.ndim != 3:
            raise ValueError(f"AlgorithmicBatch.x must be (K, B, n), got shape {tuple(self.x.shape)}")
        if self.y.ndim != 3 or self.y.shape[:2] != self.x.shape[:2]:
            raise ValueError(f"AlgorithmicBatch.y must be (K, B, n_out) matching x {tuple(self.x.shape)}, "
                             f"got {tuple(self.y.shape)}")

    def to(self, device=None, dtype: torch.dtype | None = None) -> AlgorithmicBatch:
        return AlgorithmicBatch(self.x.to(device=device, dtype=dtype), self.y.to(device=device, dtype=dtype))


def sample(task: AlgorithmicTask, generators: Sequence[torch.Generator], batch_size: int, *,
           values: ValueRange | None = None, device=None, dtype: torch.dtype = torch.float32) -> AlgorithmicBatch:
    """Draw ``batch_size`` sequences for each of K = len(generators) models, values in ``values``
    (default: the training range). Targets are computed in float64, then everything is cast to
    ``dtype`` and moved to ``device`` (default: the generators' shared device)."""
    if not isinstance(task, AlgorithmicTask):
        raise TypeError(f"sample: task must be an AlgorithmicTask, got {type(task).__name__}")
    values = task.train_range if values is None else values
    if not isinstance(values, ValueRange):
        raise TypeError(f"sample: values must be a ValueRange, got {type(values).__name__}")
    target = _check_generators(generators, batch_size, dtype, device)
    xs = [values.values(torch.rand(batch_size, task.n, generator=g, device=g.device, dtype=torch.float64))
          for g in generators]  # per model, not per sample
    x = torch.stack([t.to(target) for t in xs])
    return AlgorithmicBatch(x=x.to(dtype), y=task.targets(x).to(dtype))


def _check_generators(generators, batch_size, dtype, device) -> torch.device:
    """Validate the sampling arguments (each message names the argument); the target device."""
    if isinstance(generators, torch.Generator) or not isinstance(generators, Sequence) or not generators:
        raise TypeError("sample: generators must be a non-empty list of torch.Generator (one per model), "
                        f"got {generators!r}")
    check_sample_arguments(generators, batch_size, dtype)
    if device is not None:
        return torch.device(device)
    devices = sorted({str(g.device) for g in generators})
    if len(devices) > 1:
        raise ValueError(f"sample: generators are on several devices {devices}; pass device= to say where "
                         "the batch goes")
    return torch.device(devices[0])
