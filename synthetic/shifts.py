"""Test-time distribution shifts of in-context regression prompts (Garg et al. 2022, section 4).

A shift is applied at evaluation only: the task's own sampler draws a batch exactly as it would
unshifted, then the shift transforms it, drawing whatever randomness it needs from the same
generators afterwards. Model k's prompts therefore still come from ``generators[k]`` alone, and the
shifted batch stays consistent with each prompt's function: where x changes, y is recomputed as
f(x') + (y - f(x)), so a noisy task keeps each point's noise draw.

Shifts (names as in :data:`SHIFTS`; Garg et al.'s names and code in ``src/eval.py`` in brackets)

    standard          no change                                                      [standard]
    skewed            x <- x S with S = U diag(lam) U^T, lam_i = 1 / i (i = 1 .. d), rescaled so
                      sum lam_i^2 = d (tr Cov = d for N(0, I) inputs), U a random rotation, one
                      per model and call                                             [skewed]
    orthant           each prompt draws a sign pattern s in {-1, 1}^d; every context x <- s * |x|
                      (one random orthant per prompt); the query keeps its own draw, from the
                      full distribution                                       [random_quadrants]
    orthogonal_query  the query is projected off the span of the context examples and rescaled to
                      its own norm. With N >= d examples they span R^d (no nonzero query is
                      orthogonal to them all): the query is then orthogonal to the first d - 1,
                      where Garg et al. leave it zero                   [orthogonal_train_test]
    query_in_context  the query is one of the N context examples, uniform per prompt; its y is
                      f(x_q) + the query's own noise draw               [overlapping_train_test]
    scale_x:c         x <- c x (Garg et al.'s U diag(c) U^T is c I)                 [scale-x=c]
    scale_y:c         y <- c y and w <- c w (the function scaled, noise included)   [scale-y=c]
    noisy_y:s         y <- y + s eps, eps ~ N(0, 1) per point (without Garg et al.'s
                      per-batch renormalisation of y, which depends on the batch)      [noisyLR]

Draw order per model (after the task's own draws): skewed a (d, d) standard normal matrix for U;
orthant a (B, d) standard normal matrix whose signs are the pattern; query_in_context a (B,)
integer index; noisy_y eps (B, N + 1). The others draw nothing.

Which tasks: a shift needs the prompt's function evaluated at new x. :data:`EVALUATORS` maps a task
class to ``evaluate(one, x) -> y``: ``one`` holds one model's batch fields without the K axis (x
(B, N+1, d), y (B, N+1), and the prompt's function: w for the linear kinds, whatever parameters another
kind's batch carries), x (B, N+1, d) new inputs, y (B, N+1) the noise-free function values; the
task's sampler must be in :data:`SAMPLERS`. The linear kinds (``y = w . x + noise``) are registered.
The function classes of :mod:`synthetic.functions` (trees, ReLU networks, quadratics, classification,
mixtures) keep no function parameters in their batch; they are shifted while drawn instead
(:func:`sample` only): x is drawn, shifted (the shift's draws), then the task draws its functions
and labels the shifted x, then the y shifts apply.
The y-only shifts (scale_y, noisy_y) need the evaluator too (w is scaled with y where the batch has
one); standard works for every task. Anything else raises one line naming the task class and the
supported ones.

Glossary of shapes
    K   models in a batch (one torch.Generator each)
    B   prompts per model
    N   context examples per prompt (the task's n_points - 1); the query is the last point
    d   input dimension
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor

from synthetic import functions, regression
from synthetic import tasks as icl_tasks

F64 = torch.float64
SHIFTS = ("standard", "skewed", "orthant", "orthogonal_query", "query_in_context", "scale_x", "scale_y",
          "noisy_y")
DEFAULT_FACTORS = {"scale_x": 2.0, "scale_y": 2.0, "noisy_y": 1.0}  # the shifts that take a factor
QUERY_SHIFTS = ("orthogonal_query", "query_in_context")  # the query depends on the examples in context


def _linear(batch, x: Tensor) -> Tensor:
    """w . x for every point: one model's batch.w (B, d), x (B, N+1, d) -> (B, N+1)."""
    return (x * batch.w[:, None, :]).sum(-1)


EVALUATORS: dict[type, Callable] = {
    regression.RegressionTask: _linear,
    icl_tasks.NoiseMixtureTask: _linear,
    icl_tasks.SparseRegressionTask: _linear,
    icl_tasks.TaskPoolTask: _linear,
}
SAMPLERS: dict[type, Callable] = {regression.RegressionTask: regression.sample,
                                  **{cls: icl_tasks.sample for cls in icl_tasks.TASKS}}


@dataclass(frozen=True)
class Shift:
    """One named shift (``name`` in SHIFTS) with its ``factor`` (scale c of scale_x / scale_y, noise
    std s of noisy_y; None for the default of DEFAULT_FACTORS; must be None for the others)."""

    name: str
    factor: float | None = None

    def __post_init__(self):
        if self.name not in SHIFTS:
            raise ValueError(f"unknown shift {self.name!r}; known shifts are {', '.join(SHIFTS)}")
        if self.name not in DEFAULT_FACTORS:
            if self.factor is not None:
                raise ValueError(f"shift {self.name!r} takes no factor, got {self.factor!r}")
            return
        factor = DEFAULT_FACTORS[self.name] if self.factor is None else self.factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
            raise ValueError(f"shift {self.name!r}: factor must be a finite number, got {factor!r}")
        if factor < 0 or (factor == 0 and self.name != "noisy_y"):
            raise ValueError(f"shift {self.name!r}: factor must be {'>= 0' if self.name == 'noisy_y' else '> 0'}, "
                             f"got {factor}")
        object.__setattr__(self, "factor", float(factor))

    def __str__(self) -> str:
        """"skewed", "scale_x:2", "noisy_y:0.5": the form :func:`parse_shift` reads."""
        return self.name if self.factor is None else f"{self.name}:{self.factor:g}"


def parse_shift(text: str) -> Shift:
    """"NAME" or "NAME:FACTOR" -> Shift (a ValueError naming the known shifts if NAME is unknown)."""
    name, _, factor = text.strip().partition(":")
    if not factor:
        return Shift(name)
    try:
        value = float(factor)
    except ValueError:
        raise ValueError(f"shift {text!r}: factor must be a number, got {factor!r}") from None
    return Shift(name, value)


# ----------------------------------------------------------------------------------------------
# Per-model transformations: float64 tensors of one model, randomness from its generator alone


def _rotation(g: torch.Generator, d: int) -> Tensor:
    """A random orthogonal (d, d) matrix: Q of the QR of a Gaussian matrix, signs fixed by R's diagonal."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, device=g.device, dtype=F64))
    return q * torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(F64)


def skewed_transform(g: torch.Generator, d: int) -> Tensor:
    """S = U diag(lam) U^T, lam_i = 1 / i rescaled to sum lam_i^2 = d: (d, d), symmetric."""
    lam = 1.0 / torch.arange(1, d + 1, dtype=F64, device=g.device)
    lam = lam * math.sqrt(d / float(lam.pow(2).sum()))
    u = _rotation(g, d)
    return u @ torch.diag(lam) @ u.T


def orthogonal_query(x: Tensor) -> Tensor:
    """x (B, N+1, d) -> the last point projected off the first min(N, d - 1) points' span and
    rescaled to its own norm: (B, d). A query of norm 0 after projection stays 0."""
    B, T, d = x.shape
    m = min(T - 1, d - 1)
    q = x[:, -1]
    if m > 0:
        basis = torch.linalg.qr(x[:, :m].mT)[0]  # (B, d, m), orthonormal columns spanning the examples
        q = q - (basis @ (basis.mT @ q[..., None]))[..., 0]
    norm = q.norm(dim=-1, keepdim=True)
    scale = torch.where(norm > 0, x[:, -1].norm(dim=-1, keepdim=True) / norm.clamp_min(1e-300), 0.0)
    return q * scale


def _shift_x(shift: Shift, x: Tensor, g: torch.Generator) -> Tensor:
    """The shifted inputs x' (B, N+1, d) of one model (x itself where the shift leaves x alone)."""
    B, T, d = x.shape
    if shift.name == "skewed":
        return x @ skewed_transform(g, d)
    if shift.name == "orthant":
        signs = torch.randn(B, 1, d, generator=g, device=g.device, dtype=F64).sign()
        return torch.cat([x[:, :-1].abs() * signs, x[:, -1:]], dim=1)
    if shift.name == "orthogonal_query":
        return torch.cat([x[:, :-1], orthogonal_query(x)[:, None]], dim=1)
    if shift.name == "query_in_context":
        index = torch.randint(0, max(T - 1, 1), (B,), generator=g, device=g.device)
        return torch.cat([x[:, :-1], x[torch.arange(B, device=x.device), index][:, None]], dim=1)
    if shift.name == "scale_x":
        return x * shift.factor
    return x


def _shift_one(shift: Shift, evaluate: Callable, batch, g: torch.Generator) -> dict[str, Tensor]:
    """Model k's shifted x, y (and w where the batch has one). ``batch`` holds one model's fields
    (no K axis, float64): x (B, N+1, d), y (B, N+1) and whatever ``evaluate`` reads."""
    x, y, w = batch.x, batch.y, getattr(batch, "w", None)
    new_x = _shift_x(shift, x, g)
    if new_x is not x:
        y = evaluate(batch, new_x) + (y - evaluate(batch, x))  # keep each point's noise draw
    if shift.name == "scale_y":
        y, w = y * shift.factor, None if w is None else w * shift.factor
    if shift.name == "noisy_y":
        y = y + shift.factor * torch.randn(y.shape, generator=g, device=g.device, dtype=F64)
    return {"x": new_x, "y": y, **({} if w is None else {"w": w})}


# ----------------------------------------------------------------------------------------------
# Batched entry points


def check_supported(task, shift: Shift) -> Callable | None:
    """The evaluator of ``task``'s class (None for a function class, shifted while drawn), or a
    one-line ValueError naming the supported classes."""
    if isinstance(task, functions.TASKS):
        return None
    evaluate = EVALUATORS.get(type(task))
    if evaluate is None:
        known = ", ".join(cls.__name__ for cls in (*EVALUATORS, *functions.TASKS))
        raise ValueError(f"shift {str(shift)!r} needs a task whose function can be evaluated at new x; "
                         f"{type(task).__name__} has none (supported: {known})")
    return evaluate


def apply(shift: Shift, task, batch, generators: Sequence[torch.Generator]):
    """The shifted copy of ``batch`` (drawn from ``task``, float64, K = len(generators) models);
    model k's extra randomness from ``generators[k]`` alone. Other batch fields are kept."""
    if shift.name == "standard":
        return batch
    evaluate = check_supported(task, shift)
    if evaluate is None:
        raise ValueError(f"shifts.apply: {type(task).__name__} batches carry no function to re-evaluate; "
                         f"draw them shifted with shifts.sample")
    if batch.x.dtype != F64:
        raise ValueError(f"shifts.apply: the batch must be float64 (shift before casting), got {batch.x.dtype}")
    if len(generators) != batch.x.shape[0]:
        raise ValueError(f"shifts.apply: {len(generators)} generators for a batch of K = {batch.x.shape[0]} models")
    parts = []
    for k, g in enumerate(generators):
        one = SimpleNamespace(**{f.name: getattr(batch, f.name)[k].to(g.device) for f in dataclasses.fields(batch)})
        parts.append(_shift_one(shift, evaluate, one, g))
    out = {name: torch.stack([p[name].to(batch.x.device) for p in parts]) for name in parts[0]}
    return dataclasses.replace(batch, **out)


def sample(task, shift: Shift, generators: Sequence[torch.Generator], batch_size: int, *, device=None,
           dtype: torch.dtype = torch.float32):
    """Prompts of ``task`` under ``shift``: the task's own draw (float64, exactly as unshifted), then
    :func:`apply`, then cast to ``dtype`` on ``device``."""
    if shift.name != "standard":
        check_supported(task, shift)  # before drawing anything
    if isinstance(task, functions.TASKS):
        shifted = _sample_function_task(task, shift, generators, batch_size, device)
    else:
        batch = SAMPLERS[type(task)](task, generators, batch_size, device=device, dtype=F64)
        shifted = apply(shift, task, batch, generators)
    return dataclasses.replace(shifted, **{f.name: getattr(shifted, f.name).to(dtype=dtype)
                                           for f in dataclasses.fields(shifted)
                                           if getattr(shifted, f.name) is not None
                                           and getattr(shifted, f.name).is_floating_point()})


def _draw_function_task(task, shift: Shift, g: torch.Generator, batch_size: int) -> dict[str, Tensor]:
    """One model's shifted prompts of a function class, float64: x, the shift's draws, the task's
    functions on the shifted x, then the y shifts (w, NaN where a class has none, scales with y)."""
    x = _shift_x(shift, functions.inputs(task, g, batch_size), g)
    drawn = dict(zip(("y", "w", "family"), task.label(g, x)))
    y, w = drawn["y"], drawn["w"]
    if shift.name == "scale_y":
        y, w = y * shift.factor, w * shift.factor
    if shift.name == "noisy_y":
        y = y + shift.factor * torch.randn(y.shape, generator=g, device=g.device, dtype=F64)
    return {"x": x, "y": y, "w": w, **({"family": drawn["family"]} if "family" in drawn else {})}


def _sample_function_task(task, shift: Shift, generators: Sequence[torch.Generator], batch_size: int, device):
    """:func:`_draw_function_task` for each model, stacked into a FunctionBatch on ``device``."""
    parts = [_draw_function_task(task, shift, g, batch_size) for g in generators]
    target = device if device is not None else generators[0].device
    return functions.FunctionBatch(**{name: torch.stack([p[name].to(target) for p in parts]) for name in parts[0]})
