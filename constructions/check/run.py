"""Checking a construction: fresh random instances, the measured error against the bound, mutations.

:func:`run_check` draws instances of a construction's domain, builds, measures and compares with the
stated bound (or, for rate classes, fits the slope of its :class:`RateSweep`); :func:`mutate`
perturbs one weight matrix so that a check which cannot fail is seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from constructions import model as M
from constructions.check.contract import Built, Case, Construction


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
