"""What a construction is: the contract every construction module fills in, and the rate-sweep spec.

A construction is a theorem made runnable: ``sample`` draws an instance of its domain (its
hyperparameters and a batch of inputs), ``build`` sets the weights of :mod:`constructions.model`
for those hyperparameters, and ``errors`` runs the model and measures, per layer, how far it is from
the reference algorithm. :mod:`constructions.check.run` runs this on fresh random instances against
the stated bound; weights are painted by slot name with :mod:`constructions.paint`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from constructions import model as M

EXACTNESS_CLASSES = ("exact", "hardmax-limit", "rate")


@dataclass
class Case:
    """One instance of a construction's domain: hyperparameters and inputs (float64 by default).

    In-context regression constructions fill x, y, x_query; others (sequences, graphs) put their
    inputs in ``data``.
    """

    params: dict  # the arguments of the module's build(), e.g. {"d": 3, "n_steps": 2, "eta": 0.1}
    x: Tensor | None = None  # (B, N, d) context inputs
    y: Tensor | None = None  # (B, N) context targets
    x_query: Tensor | None = None  # (B, d)
    data: dict = field(default_factory=dict)


@dataclass
class Built:
    """Hand-set weights (K = 1) and the config they run under. ``weights`` is a model.Weights, or
    a flat dict of tensors for forward passes other than model.py's (e.g. the MPNN)."""

    cfg: object
    weights: M.Weights | dict

    @property
    def layout(self) -> M.Layout:
        return self.cfg.layout


@dataclass(frozen=True)
class RateSweep:
    """How an approximate construction's error must fall as one build parameter varies.

    For each case the check builds at every value of ``parameter``, takes the error (max over
    labels), and fits the slope of log(error) against log(value) (``axis="log"``: a power law,
    error ~ value^slope) or against the value itself (``axis="linear"``: error ~ exp(slope * value)).
    The fitted slope must be within ``tolerance`` of ``slope``.
    """

    parameter: str
    values: tuple[float, ...]
    slope: float
    tolerance: float
    axis: str = "log"

    def __post_init__(self):
        if self.axis not in ("log", "linear"):
            raise ValueError(f"RateSweep.axis must be 'log' or 'linear', got {self.axis!r}")
        if len(self.values) < 2:
            raise ValueError("RateSweep.values needs at least two values to fit a slope")

    def fit(self, errors: list[float]) -> float:
        """Least-squares slope of log(errors) against log(values) or values (:func:`fit_slope`)."""
        return fit_slope(self.values, errors, self.axis)


def fit_line(values, errors, axis: str = "log") -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through log(errors) against log(values)
    (``axis="log"``: a power law, error ~ value^slope) or against the values (``axis="linear"``:
    error ~ exp(slope * value)). Errors are clamped at 1e-300 (an exact zero has no log)."""
    xs = torch.tensor([float(v) for v in values], dtype=torch.float64)
    xs = xs.log() if axis == "log" else xs
    ys = torch.tensor([float(e) for e in errors], dtype=torch.float64).clamp(min=1e-300).log()
    xc = xs - xs.mean()
    slope = (xc * (ys - ys.mean())).sum() / (xc * xc).sum()
    return float(slope), float(ys.mean() - slope * xs.mean())


def fit_slope(values, errors, axis: str = "log") -> float:
    """The slope of :func:`fit_line`."""
    return fit_line(values, errors, axis)[0]


@dataclass(frozen=True)
class Construction:
    name: str
    exactness: str  # one of EXACTNESS_CLASSES
    algorithm: str  # the reference it claims, as "module.function"
    summary: str
    sample: Callable[..., Case]  # (gen, *, d=None, n=None, depth=None) -> Case
    build: Callable[[Case], Built]
    errors: Callable[[Built, Case], dict[str, float]]  # label (e.g. "layer 2") -> error
    bound: float | Callable[[Case], float]  # a number, or the theorem's bound for this case
    bound_note: str = ""  # where the bound comes from
    sweep: RateSweep | None = None  # rate / hardmax-limit classes: the parameter whose rate is checked

    def __post_init__(self):
        if self.exactness not in EXACTNESS_CLASSES:
            raise ValueError(f"Construction {self.name}: exactness must be one of {EXACTNESS_CLASSES}")
        if self.exactness == "rate" and self.sweep is None:
            raise ValueError(f"Construction {self.name}: the rate class needs a sweep to fit a slope")

    def bound_for(self, case: Case) -> float:
        return float(self.bound(case)) if callable(self.bound) else float(self.bound)


# ----------------------------------------------------------------------------------------------
# Measuring


def scaled_error(got: Tensor, want: Tensor) -> float:
    """max |got - want| / max(1, max |want|): absolute for O(1) values, relative for large ones."""
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: got {tuple(got.shape)}, want {tuple(want.shape)}")
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    return float("inf") if err != err else err / scale  # NaN counts as failure


def require(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless condition: for preconditions named in the message."""
    if not condition:
        raise ValueError(message)


def positive_int(name: str, value, lowest: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    require(value >= lowest, f"{name} must be >= {lowest}, got {value}")


def positive_float(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    require(value > 0 and value == value and value != float("inf"),
            f"{name} must be a finite number > 0, got {value}")


