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

With ``sub_intervals=True`` (de Luca et al. 2024's protocol, :class:`SubIntervals`) every sequence
has its own random sub-interval of the range, and its values are uniform on that: training
sequences on sub-intervals of [-c_train, c_train], test sequences on sub-intervals of [-c, c] that
do not lie inside the training range (redrawn until they do not).

Glossary of shapes
    K   models in a batch (one torch.Generator each)
    B   sequences per model (``batch_size``)
    n   values per sequence;  n_out  targets per sequence (n, or 1 for median / max_subarray)

Draw-order guarantee. For each model k, ``generators[k]`` alone draws u ~ U[0, 1)^(B, n) in float64,
and x is a fixed affine map of u given the value range: for [-c, c], x = c (2u - 1). Hence model k
of a batch sees what it would see alone, the same seeds give the same numbers, and sequences drawn
from the same generator state at two values of c are the same sequences rescaled, so error versus c
compares like with like (sub-intervals: the two ends of each interval are drawn first, (B, 2),
then u; rescaled too, except where test intervals are redrawn). Nothing here touches torch's
global random state.
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

__all__ = ["TASK_KINDS", "AlgorithmicTask", "ValueRange", "SubIntervals", "OODProtocol", "AlgorithmicBatch",
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
    [-c_train, c_train] (c_train > 0), or, with ``sub_intervals``, uniform on each sequence's own
    random sub-interval of it (:class:`SubIntervals`)."""

    kind: str
    n: int
    c_train: float = 2.0
    sub_intervals: bool = False

    def __post_init__(self):
        if not isinstance(self.kind, str) or self.kind not in TASK_KINDS:
            raise ValueError(f"AlgorithmicTask.kind must be one of {TASK_KINDS}, got {self.kind!r}")
        _check_int("AlgorithmicTask.n", self.n, lo=1)
        object.__setattr__(self, "c_train", _check_positive("AlgorithmicTask.c_train", self.c_train))
        if not isinstance(self.sub_intervals, bool):
            raise TypeError(f"AlgorithmicTask.sub_intervals must be a bool, got {self.sub_intervals!r}")

    @property
    def n_out(self) -> int:
        return 1 if self.kind in SCALAR_KINDS else self.n

    @property
    def train_range(self) -> ValueRange | SubIntervals:
        return SubIntervals(self.c_train) if self.sub_intervals else ValueRange(self.c_train)

    def targets(self, x: Tensor) -> Tensor:
        return targets(self.kind, x)

    def ood(self, test_cs: Sequence[float], shells: bool = False) -> OODProtocol:
        """The protocol with this task's training range and test ranges [-c, c] for c in test_cs."""
        return OODProtocol(self.c_train, tuple(test_cs), shells, self.sub_intervals)


def _uniform(generator: torch.Generator, *shape: int) -> Tensor:
    """u ~ U[0, 1)^shape in float64 from ``generator`` alone, on its device."""
    return torch.rand(*shape, generator=generator, device=generator.device, dtype=torch.float64)


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

    def draw(self, generator: torch.Generator, batch_size: int, n: int) -> Tensor:
        """(B, n) float64 values from ``generator`` alone: one draw of u (B, n), mapped by :meth:`values`."""
        return self.values(_uniform(generator, batch_size, n))

    def __str__(self) -> str:
        if self.inner == 0:
            return f"[-{self.c:g}, {self.c:g}]"
        return f"[-{self.c:g}, -{self.inner:g}] U [{self.inner:g}, {self.c:g}]"


@dataclass(frozen=True)
class SubIntervals:
    """Every sequence on its own random sub-interval [a, b] of [-c, c], its n values uniform on it.

    As de Luca et al. 2024 draw them (``generate_data_basic`` in ``data.py`` of
    opallab/positional_attention): a and b are the smaller and the larger of two uniform draws on
    [-c, c], so a sequence may be nearly constant (a close to b) or span the whole range. With
    ``avoid`` (0 < avoid < c) an interval lying inside [-avoid, avoid] is drawn again until it does
    not (their ``reject_low`` / ``reject_high``): with avoid = c_train these are their test sequences
    "outside the training range". Each such interval reaches beyond the training range, though some
    of its values may still fall inside it; an interval of [-c, c] is accepted with probability
    1 - (avoid / c)^2 (both ends must not fall in [-avoid, avoid] together)."""

    c: float
    avoid: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "c", _check_positive("SubIntervals.c", self.c))
        if self.avoid is not None:
            avoid = _check_positive("SubIntervals.avoid", self.avoid)
            if avoid >= self.c:
                raise ValueError(f"SubIntervals.avoid must be < c = {self.c:g} (else no interval is accepted), "
                                 f"got {avoid:g}")
            object.__setattr__(self, "avoid", avoid)

    def fits_inside(self, c_train: float) -> bool:
        """Whether every value of this range lies in [-c_train, c_train]."""
        return self.c <= c_train

    def intervals(self, generator: torch.Generator, batch_size: int) -> Tensor:
        """(B, 2) float64 ends [a, b], a <= b. Rows inside [-avoid, avoid] get fresh draws (in row
        order, from the same generator) until none is left: one host sync per round, and this is
        only used to build test sets."""
        ends = self._ends(generator, batch_size)
        if self.avoid is None:
            return ends
        inside = (ends[:, 0] >= -self.avoid) & (ends[:, 1] <= self.avoid)
        while bool(inside.any()):
            rows = inside.nonzero().squeeze(1)
            ends[rows] = self._ends(generator, len(rows))
            inside[rows] = (ends[rows, 0] >= -self.avoid) & (ends[rows, 1] <= self.avoid)
        return ends

    def _ends(self, generator: torch.Generator, m: int) -> Tensor:
        return (self.c * (2 * _uniform(generator, m, 2) - 1)).sort(dim=1).values

    def draw(self, generator: torch.Generator, batch_size: int, n: int) -> Tensor:
        """(B, n) float64 values: the intervals first, then u (B, n); x = a + (b - a) u."""
        ends = self.intervals(generator, batch_size)
        u = _uniform(generator, batch_size, n)
        return ends[:, :1] + (ends[:, 1:] - ends[:, :1]) * u

    def __str__(self) -> str:
        outside = "" if self.avoid is None else f" not inside [-{self.avoid:g}, {self.avoid:g}]"
        return f"sub-intervals of [-{self.c:g}, {self.c:g}]{outside}"


@dataclass(frozen=True)
class OODProtocol:
    """Training range [-c_train, c_train] and test ranges for every c in ``test_cs`` (each c >
    c_train; increasing when ``shells``). ``sub_intervals``: each sequence on its own sub-interval,
    the test ones not inside the training range (:class:`SubIntervals`; not with ``shells``)."""

    c_train: float
    test_cs: tuple[float, ...]
    shells: bool = False
    sub_intervals: bool = False

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
        if self.shells and self.sub_intervals:
            raise ValueError("OODProtocol.sub_intervals and shells exclude each other: sub-intervals keep "
                             "out of the training range by redrawing, shells by cutting it out")
        object.__setattr__(self, "test_cs", cs)

    @property
    def train_range(self) -> ValueRange | SubIntervals:
        return SubIntervals(self.c_train) if self.sub_intervals else ValueRange(self.c_train)

    def test_ranges(self) -> list[ValueRange | SubIntervals]:
        if self.sub_intervals:
            return [SubIntervals(c, avoid=self.c_train) for c in self.test_cs]
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
           values: ValueRange | SubIntervals | None = None, device=None,
           dtype: torch.dtype = torch.float32) -> AlgorithmicBatch:
    """Draw ``batch_size`` sequences for each of K = len(generators) models, values in ``values``
    (default: the training range). Targets are computed in float64, then everything is cast to
    ``dtype`` and moved to ``device`` (default: the generators' shared device)."""
    if not isinstance(task, AlgorithmicTask):
        raise TypeError(f"sample: task must be an AlgorithmicTask, got {type(task).__name__}")
    values = task.train_range if values is None else values
    if not isinstance(values, (ValueRange, SubIntervals)):
        raise TypeError(f"sample: values must be a ValueRange or SubIntervals, got {type(values).__name__}")
    target = _check_generators(generators, batch_size, dtype, device)
    xs = [values.draw(g, batch_size, task.n) for g in generators]  # per model, not per sample
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
