"""What a construction is, how its weights are painted by slot name, and how it is checked.

A construction is a theorem made runnable: ``sample`` draws an instance of its domain (its
hyperparameters and a batch of inputs), ``build`` sets the weights of :mod:`constructions.model`
for those hyperparameters, and ``errors`` runs the model and measures, per layer, how far it is from
the reference algorithm. :func:`check` runs this on fresh random instances and compares with the
stated bound; :func:`mutate` perturbs one weight matrix so that a check which cannot fail is seen.
"""

from __future__ import annotations

import time
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
class Sweep:
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
            raise ValueError(f"Sweep.axis must be 'log' or 'linear', got {self.axis!r}")
        if len(self.values) < 2:
            raise ValueError("Sweep.values needs at least two values to fit a slope")

    def fit(self, errors: list[float]) -> float:
        """Least-squares slope of log(errors) against log(values) or values."""
        xs = torch.tensor(self.values, dtype=torch.float64)
        xs = xs.log() if self.axis == "log" else xs
        ys = torch.tensor(errors, dtype=torch.float64).clamp(min=1e-300).log()
        xc = xs - xs.mean()
        return float((xc * (ys - ys.mean())).sum() / (xc * xc).sum())


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
    sweep: Sweep | None = None  # rate / hardmax-limit classes: the parameter whose rate is checked

    def __post_init__(self):
        if self.exactness not in EXACTNESS_CLASSES:
            raise ValueError(f"Construction {self.name}: exactness must be one of {EXACTNESS_CLASSES}")
        if self.exactness == "rate" and self.sweep is None:
            raise ValueError(f"Construction {self.name}: the rate class needs a sweep to fit a slope")

    def bound_for(self, case: Case) -> float:
        return float(self.bound(case)) if callable(self.bound) else float(self.bound)


# ----------------------------------------------------------------------------------------------
# Painting weights by slot name


def paint_head(w: M.Weights, layout: M.Layout, layer: int, head: int, *, Q: dict, K: dict, V: dict,
               O: dict) -> None:
    """Set one head of model 0: Q/K/V map slot name -> (slot size, Dh) block, O: slot -> (Dh, size)."""
    attn = w.blocks[layer].attn
    for weight, blocks in ((attn.W_Q, Q), (attn.W_K, K), (attn.W_V, V)):
        for slot, block in blocks.items():
            rows = layout[slot]
            weight[0, head, rows, : block.shape[1]] = block
    for slot, block in O.items():
        attn.W_O[0, head, : block.shape[0], layout[slot]] = block


def paint_mlp(w: M.Weights, layout: M.Layout, layer: int, *, W_in: dict, W_out: dict) -> None:
    """Set the MLP of model 0: W_in slot -> (size, M) block, W_out slot -> (M, size) block."""
    p = w.blocks[layer].mlp
    for slot, block in W_in.items():
        p.W_in[0, layout[slot], : block.shape[1]] = block
    for slot, block in W_out.items():
        p.W_out[0, : block.shape[0], layout[slot]] = block


def selector(layout: M.Layout, slots: dict[str, int], d_in: int, dtype=torch.float64) -> Tensor:
    """(1, d_in, D) embedding that copies input features [a, b) into slot: {"x": 0, "y": d} etc."""
    W = torch.zeros(1, d_in, layout.width, dtype=dtype)
    for slot, start in slots.items():
        s = layout[slot]
        W[0, start: start + (s.stop - s.start), s] = torch.eye(s.stop - s.start, dtype=dtype)
    return W


def unit(layout: M.Layout, slot: int | str, scale: float = 1.0, dtype=torch.float64) -> Tensor:
    """(1, D, 1) readout scale * e_slot (the first coordinate of the slot)."""
    W = torch.zeros(1, layout.width, 1, dtype=dtype)
    W[0, layout.index(slot), 0] = scale
    return W


def eye(n: int, scale: float = 1.0) -> Tensor:
    return scale * torch.eye(n, dtype=torch.float64)


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


# ----------------------------------------------------------------------------------------------
# Checking and mutating


@dataclass
class CheckResult:
    name: str
    exactness: str
    error: float
    bound: float
    passed: bool
    per_layer: dict[str, float] = field(default_factory=dict)
    cases: int = 0
    seconds: float = 0.0
    error_is: str = "max error"  # what `error` measures (see run_check)
    slopes: list[float] | None = None  # sweeps: the fitted slope of every case
    caught: bool | None = None  # set by --mutate: did the check fail on perturbed weights?
    mutated: str | None = None  # which weight was perturbed

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if not (k in ("caught", "mutated", "slopes") and v is None)}
        return out


def mutate(built: Built, gen: torch.Generator, rel_scale: float = 1e-3) -> tuple[Built, str]:
    """Perturb one weight matrix (chosen at random among the non-zero ones) by Gaussian noise of
    size rel_scale * max|entry|. Returns the perturbed copy and the perturbed key."""
    flat = isinstance(built.weights, dict)
    sd = dict(built.weights) if flat else M.to_state_dict(built.weights)
    live = sorted(k for k, t in sd.items() if t.abs().max() > 0)
    key = live[int(torch.randint(len(live), (1,), generator=gen))]
    noise = torch.randn(sd[key].shape, generator=gen, dtype=sd[key].dtype)
    sd[key] = sd[key] + rel_scale * sd[key].abs().max() * noise
    return Built(built.cfg, sd if flat else M.from_state_dict(sd)), key


def _measure(c: Construction, case: Case, gen: torch.Generator, mutated: bool, keys: list) -> dict[str, float]:
    built = c.build(case)
    if mutated:
        built, key = mutate(built, gen)
        keys.append(key)
    return c.errors(built, case)


def _one_case(c: Construction, case: Case, gen, mutated: bool, keys: list) -> tuple[float, bool, dict]:
    """(reported error, passed, per-label errors) for one case.

    Without a sweep: error = max over labels; against a fixed bound it is reported as is, against
    a per-case bound (a function of the case) as error / bound, so the reported bound is 1. With a
    sweep: the error is the fitted slope's distance from the stated one (and a per-case bound must
    also hold at every swept value)."""
    if c.sweep is None:
        errors = _measure(c, case, gen, mutated, keys)
        worst = max(errors.values())
        if callable(c.bound):
            return worst / c.bound_for(case), worst <= c.bound_for(case), errors
        return worst, worst <= c.bound, errors
    sw, per_value, within = c.sweep, {}, True
    for value in sw.values:
        swept = Case({**case.params, sw.parameter: value}, case.x, case.y, case.x_query, case.data)
        worst = max(_measure(c, swept, gen, mutated, keys).values())
        per_value[f"{sw.parameter}={value:g}"] = worst
        within = within and (not callable(c.bound) or worst <= c.bound_for(swept))
    slope = sw.fit(list(per_value.values()))
    distance = abs(slope - sw.slope)
    return distance, within and distance <= sw.tolerance, {**per_value, "slope": slope}


def run_check(c: Construction, *, seed: int = 0, n_cases: int = 8, mutated: bool = False) -> CheckResult:
    """Draw n_cases instances, build, measure; error = max over cases (and layers, or swept values).

    With ``mutated`` every build gets one perturbed matrix (:func:`mutate`), and the mutation counts
    as caught only if every single case fails on its own.
    """
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    per_layer: dict[str, float] = {}
    case_errors, case_passed, keys, slopes = [], [], [], []
    for _ in range(n_cases):
        error, passed, labels = _one_case(c, c.sample(gen), gen, mutated, keys)
        case_errors.append(error)
        case_passed.append(passed)
        if "slope" in labels:
            slopes.append(labels.pop("slope"))
        for label, err in labels.items():
            per_layer[label] = max(per_layer.get(label, err), err)
    if c.sweep is not None:
        bound, error_is = c.sweep.tolerance, f"|fitted slope - ({c.sweep.slope:g})|, worst case"
    elif callable(c.bound):
        bound, error_is = 1.0, "max error / bound(case)"
    else:
        bound, error_is = c.bound, "max error"
    result = CheckResult(c.name, c.exactness, max(case_errors), bound, all(case_passed), per_layer, n_cases,
                         time.perf_counter() - start, error_is=error_is, slopes=slopes or None)
    if mutated:
        result.caught = not any(case_passed)
        result.mutated = ", ".join(sorted(set(keys)))
    return result
