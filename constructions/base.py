"""What a construction is, how its weights are painted by slot name, and how it is checked.

A construction is a theorem made runnable: ``sample`` draws an instance of its domain (its
hyperparameters and a batch of inputs), ``build`` sets the weights of :mod:`constructions.model`
for those hyperparameters, and ``errors`` runs the model and measures, per layer, how far it is from
the reference algorithm. :func:`check` runs this on fresh random instances and compares with the
stated bound; :func:`mutate` perturbs one weight matrix so that a check which cannot fail is seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from constructions import model as M

EXACTNESS_CLASSES = ("exact", "hardmax-limit", "rate")


@dataclass
class Case:
    """One instance of a construction's domain: hyperparameters and inputs (float64 by default)."""

    params: dict  # the arguments of the module's build(), e.g. {"d": 3, "n_steps": 2, "eta": 0.1}
    x: Tensor  # (B, N, d) context inputs
    y: Tensor  # (B, N) context targets
    x_query: Tensor  # (B, d)


@dataclass
class Built:
    """Hand-set weights (K = 1) and the config they run under."""

    cfg: M.ModelConfig
    weights: M.Weights

    @property
    def layout(self) -> M.Layout:
        return self.cfg.layout


@dataclass(frozen=True)
class Construction:
    name: str
    exactness: str  # one of EXACTNESS_CLASSES
    algorithm: str  # the reference it claims, as "module.function"
    summary: str
    sample: Callable[..., Case]  # (gen, *, d=None, n=None, depth=None) -> Case
    build: Callable[[Case], Built]
    errors: Callable[[Built, Case], dict[str, float]]  # label (e.g. "layer 2") -> error
    bound: float
    bound_note: str = ""  # where the bound comes from

    def __post_init__(self):
        if self.exactness not in EXACTNESS_CLASSES:
            raise ValueError(f"Construction {self.name}: exactness must be one of {EXACTNESS_CLASSES}")


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
    caught: bool | None = None  # set by --mutate: did the check fail on perturbed weights?
    mutated: str | None = None  # which weight was perturbed

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if not (k in ("caught", "mutated") and v is None)}
        return out


def mutate(built: Built, gen: torch.Generator, rel_scale: float = 1e-3) -> tuple[Built, str]:
    """Perturb one weight matrix (chosen at random among the non-zero ones) by Gaussian noise of
    size rel_scale * max|entry|. Returns the perturbed copy and the perturbed key."""
    sd = M.to_state_dict(built.weights)
    live = sorted(k for k, t in sd.items() if t.abs().max() > 0)
    key = live[int(torch.randint(len(live), (1,), generator=gen))]
    noise = torch.randn(sd[key].shape, generator=gen, dtype=sd[key].dtype)
    sd = dict(sd)
    sd[key] = sd[key] + rel_scale * sd[key].abs().max() * noise
    return Built(built.cfg, M.from_state_dict(sd)), key


def run_check(c: Construction, *, seed: int = 0, n_cases: int = 8, mutated: bool = False) -> CheckResult:
    """Draw n_cases instances, build, measure; error = max over cases and layers.

    With ``mutated`` every case's weights get one perturbed matrix (:func:`mutate`), and the
    mutation counts as caught only if every single case fails the bound on its own.
    """
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    per_layer: dict[str, float] = {}
    case_errors, keys = [], []
    for _ in range(n_cases):
        case = c.sample(gen)
        built = c.build(case)
        if mutated:
            built, key = mutate(built, gen)
            keys.append(key)
        errors = c.errors(built, case)
        case_errors.append(max(errors.values()))
        for label, err in errors.items():
            per_layer[label] = max(per_layer.get(label, 0.0), err)
    error = max(case_errors)
    result = CheckResult(c.name, c.exactness, error, c.bound, error <= c.bound, per_layer, n_cases,
                         time.perf_counter() - start)
    if mutated:
        result.caught = min(case_errors) > c.bound
        result.mutated = ", ".join(sorted(set(keys)))
    return result
