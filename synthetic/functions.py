"""Nonlinear function classes and task mixtures for in-context learning, sampled for K models at once.

The function classes of Garg et al. 2022 ("What can transformers learn in-context?") and the
classification / mixture tasks of Bai et al. 2023 ("Transformers as statisticians"). A prompt is N
points (x_i, f(x_i)) sharing one random function f; x_i ~ N(0, I_d) as for the linear kinds.

    DecisionTreeTask    f a full binary tree of ``depth``: at every internal node a feature index
                        uniform in [0, d), x[feature] > 0 goes right (threshold 0); leaves N(0, 1)
    ReluNetworkTask     f(x) = scale * sqrt(2 / width) * relu(x W1) W2, W1 (d, width) and W2 (width,)
                        N(0, 1) entries (Garg's normalisation to the linear-regression scale)
    QuadraticTask       form "squares": f(x) = (x * x) . w / sqrt(3) (Garg); form "inner":
                        f(x) = (w . x)^2 / sqrt(2 d) (variance d + 3 ~ d like linear regression,
                        mean sqrt(d / 2))
    ClassificationTask  labels in {-1, +1}: "sign": y = sign(w . x) (Garg's linear classification,
                        sign(0) = +1); "bernoulli": P(y = +1) = sigmoid(scale * w . x) (Bai's logistic
                        regression); w ~ N(0, w_std^2 I_d)
    MixtureTask         each prompt from one of several components (any of the above, or an isotropic
                        RegressionTask / SparseRegressionTask) with probabilities ``probs``; the index
                        of every prompt's component is recorded (``FunctionBatch.family``)

Real-valued classes add ``noise_std * eps`` to y. Curriculum (``n_dims_active = k``): x's last d - k
coordinates are zero, as in synthetic.regression; the function keeps its full-d parameters.

``w`` of a batch is the linear weight where the class has one (ClassificationTask, and the linear
components of a mixture) and NaN ("no linear weight") for trees, networks and quadratics, so that
anything reading it as a linear weight gets NaN rather than a plausible number.

Glossary of shapes
    K   models in a batch (one torch.Generator each)
    B   prompts per model (``batch_size``)
    N   points per prompt (``n_points``)
    d   input dimension;  M  mixture components

Draw order, per model, all from ``generators[k]`` in float64 on its device:
    z (B, N, d) for x, then the class's parameters and noise (``label``):
    DecisionTreeTask    features (B, 2^depth - 1) int64, leaves (B, 2^depth), eps (B, N)
    ReluNetworkTask     W1 (B, d, width), W2 (B, width), eps (B, N)
    QuadraticTask       w (B, d), eps (B, N)
    ClassificationTask  w (B, d), u (B, N) uniform (drawn for "sign" labels too)
    MixtureTask         z, then u (B,) uniform picks the component, then every component's
                        parameters and noise for all B prompts, in component order
eps and u are drawn whatever noise_std and labels are, so those fields change y only. Model k of a
K-model batch sees exactly what it would see alone; a float32 batch is the float64 one rounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from synthetic.regression import (
    RegressionBatch,
    RegressionTask,
    _check_int,
    _check_real,
    _target_device,
    check_sample_arguments,
)
from synthetic.tasks import SparseRegressionTask

F64 = torch.float64
QUADRATIC_FORMS = ("squares", "inner")
LABEL_KINDS = ("sign", "bernoulli")


def _validate_common(task) -> None:
    """d, n_points >= 1, n_dims_active in [1, d] or None, and noise_std / w_std stored as floats."""
    name = type(task).__name__
    _check_int(f"{name}.d", task.d, lo=1)
    _check_int(f"{name}.n_points", task.n_points, lo=1)
    if task.n_dims_active is not None:
        _check_int(f"{name}.n_dims_active", task.n_dims_active, lo=1, hi=task.d)
    for field, strict in (("noise_std", False), ("w_std", True), ("scale", True)):
        if hasattr(task, field):
            value = _check_real(f"{name}.{field}", getattr(task, field), 0.0, strict=strict)
            object.__setattr__(task, field, value)


def _check_choice(where: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{where} must be one of {allowed}, got {value!r}")


def inputs(task, g: torch.Generator, B: int) -> Tensor:
    """x (B, N, d) ~ N(0, I_d) with the coordinates beyond ``n_dims_active`` set to zero."""
    x = torch.randn(B, task.n_points, task.d, generator=g, device=g.device, dtype=F64)
    if task.n_dims_active is not None:
        x[..., task.n_dims_active:] = 0.0
    return x


def _noise(g: torch.Generator, x: Tensor) -> Tensor:
    return torch.randn(x.shape[:-1], generator=g, device=g.device, dtype=F64)


def _no_weight(x: Tensor) -> Tensor:
    """The ``w`` of a class without a linear weight: NaN (B, d)."""
    return torch.full((x.shape[0], x.shape[-1]), math.nan, dtype=F64, device=x.device)


# ----------------------------------------------------------------------------------------------
# Function classes: frozen configs; ``label(g, x)`` draws B functions and evaluates them on x


@dataclass(frozen=True)
class DecisionTreeTask:
    """Random decision trees of ``depth`` >= 1 (module docstring); ``noise_std`` >= 0."""

    d: int
    n_points: int
    depth: int = 4
    noise_std: float = 0.0
    n_dims_active: int | None = None

    def __post_init__(self):
        _validate_common(self)
        _check_int("DecisionTreeTask.depth", self.depth, lo=1, hi=20)

    def label(self, g: torch.Generator, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, N, d) -> y (B, N), w NaN (B, d). Nodes are numbered heap-wise (root 0, children of
        i at 2i + 1 (left) and 2i + 2 (right)); the loop runs over depth, not over prompts."""
        B, n_internal = x.shape[0], 2**self.depth - 1
        features = torch.randint(self.d, (B, n_internal), generator=g, device=g.device)
        leaves = torch.randn(B, n_internal + 1, generator=g, device=g.device, dtype=F64)
        node = torch.zeros(x.shape[:2], dtype=torch.int64, device=x.device)  # (B, N)
        for _ in range(self.depth):
            feature = features.gather(1, node)  # (B, N)
            right = x.gather(2, feature[..., None])[..., 0] > 0
            node = 2 * node + 1 + right.long()
        y = leaves.gather(1, node - n_internal)
        return y + self.noise_std * _noise(g, x), _no_weight(x)


@dataclass(frozen=True)
class ReluNetworkTask:
    """Random two-layer ReLU networks of ``width`` >= 1 hidden units and output ``scale`` > 0."""

    d: int
    n_points: int
    width: int = 100
    scale: float = 1.0
    noise_std: float = 0.0
    n_dims_active: int | None = None

    def __post_init__(self):
        _validate_common(self)
        _check_int("ReluNetworkTask.width", self.width, lo=1)

    def label(self, g: torch.Generator, x: Tensor) -> tuple[Tensor, Tensor]:
        B = x.shape[0]
        W1 = torch.randn(B, self.d, self.width, generator=g, device=g.device, dtype=F64)
        W2 = torch.randn(B, self.width, generator=g, device=g.device, dtype=F64)
        hidden = torch.relu(torch.bmm(x, W1))  # (B, N, width)
        y = self.scale * math.sqrt(2.0 / self.width) * torch.einsum("bnh,bh->bn", hidden, W2)
        return y + self.noise_std * _noise(g, x), _no_weight(x)


@dataclass(frozen=True)
class QuadraticTask:
    """Quadratic functions of the ``form`` in QUADRATIC_FORMS (module docstring); w ~ N(0, w_std^2)."""

    d: int
    n_points: int
    form: str = "squares"
    w_std: float = 1.0
    noise_std: float = 0.0
    n_dims_active: int | None = None

    def __post_init__(self):
        _validate_common(self)
        _check_choice("QuadraticTask.form", self.form, QUADRATIC_FORMS)

    def label(self, g: torch.Generator, x: Tensor) -> tuple[Tensor, Tensor]:
        w = torch.randn(x.shape[0], self.d, generator=g, device=g.device, dtype=F64) * self.w_std
        if self.form == "squares":
            y = (x * x * w[:, None, :]).sum(-1) / math.sqrt(3.0)
        else:
            y = (x * w[:, None, :]).sum(-1).pow(2) / math.sqrt(2.0 * self.d)
        return y + self.noise_std * _noise(g, x), _no_weight(x)


@dataclass(frozen=True)
class ClassificationTask:
    """Binary linear classification, labels +-1 of the kind in LABEL_KINDS (module docstring);
    ``scale`` > 0 multiplies w . x inside the sigmoid of "bernoulli" labels (unused for "sign")."""

    d: int
    n_points: int
    labels: str = "sign"
    scale: float = 1.0
    w_std: float = 1.0
    n_dims_active: int | None = None

    def __post_init__(self):
        _validate_common(self)
        _check_choice("ClassificationTask.labels", self.labels, LABEL_KINDS)

    def label(self, g: torch.Generator, x: Tensor) -> tuple[Tensor, Tensor]:
        w = torch.randn(x.shape[0], self.d, generator=g, device=g.device, dtype=F64) * self.w_std
        u = torch.rand(x.shape[:-1], generator=g, device=g.device, dtype=F64)
        margin = (x * w[:, None, :]).sum(-1)
        positive = margin >= 0 if self.labels == "sign" else u < torch.sigmoid(self.scale * margin)
        return torch.where(positive, 1.0, -1.0).to(F64), w


def _label_linear(task: RegressionTask, g: torch.Generator, x: Tensor) -> tuple[Tensor, Tensor]:
    """An isotropic RegressionTask as a mixture component: w (B, d), then eps (B, N)."""
    w = torch.randn(x.shape[0], task.d, generator=g, device=g.device, dtype=F64) * task.w_std
    return (x * w[:, None, :]).sum(-1) + task.noise_std * _noise(g, x), w


def _label_sparse(task: SparseRegressionTask, g: torch.Generator, x: Tensor) -> tuple[Tensor, Tensor]:
    """A SparseRegressionTask as a mixture component: w, keys (B, d) (the k largest keys are the
    support), then eps, as SparseRegressionTask.draw draws them after x."""
    w = torch.randn(x.shape[0], task.d, generator=g, device=g.device, dtype=F64) * task.w_std
    keys = torch.rand(x.shape[0], task.d, generator=g, device=g.device, dtype=F64)
    w = w * torch.zeros_like(w).scatter_(-1, keys.topk(task.k, dim=-1).indices, 1.0)
    return (x * w[:, None, :]).sum(-1) + task.noise_std * _noise(g, x), w


FUNCTION_TASKS = (DecisionTreeTask, ReluNetworkTask, QuadraticTask, ClassificationTask)
# component class -> label(task, g, x) -> (y (B, N), w (B, d)): what a MixtureTask can hold
LABELERS = {RegressionTask: _label_linear, SparseRegressionTask: _label_sparse,
            **{cls: cls.label for cls in FUNCTION_TASKS}}


# ----------------------------------------------------------------------------------------------
# Mixtures


@dataclass(frozen=True)
class MixtureTask:
    """Each prompt from one of ``components`` (tasks of the LABELERS classes, all with this d and
    n_points; a RegressionTask must be isotropic with gaussian inputs and no n_dims_active of its
    own) with probabilities ``probs`` (positive, summing to 1; None for uniform)."""

    d: int
    n_points: int
    components: tuple = ()
    probs: tuple[float, ...] | None = None
    n_dims_active: int | None = None

    def __post_init__(self):
        _validate_common(self)
        object.__setattr__(self, "components", tuple(self.components))
        if not self.components:
            raise ValueError("MixtureTask.components must hold at least one task, got ()")
        for m, c in enumerate(self.components):
            self._check_component(m, c)
        if self.probs is not None:
            probs = tuple(_check_real(f"MixtureTask.probs[{m}]", p, 0.0, strict=True) for m, p in enumerate(self.probs))
            if len(probs) != len(self.components) or abs(sum(probs) - 1.0) > 1e-9:
                raise ValueError(f"MixtureTask.probs must be {len(self.components)} positive numbers summing to 1, "
                                 f"got {self.probs!r}")
            object.__setattr__(self, "probs", probs)

    def _check_component(self, m: int, c) -> None:
        where = f"MixtureTask.components[{m}]"
        if type(c) not in LABELERS:
            raise TypeError(f"{where} must be one of {[t.__name__ for t in LABELERS]}, got {type(c).__name__}")
        if (c.d, c.n_points) != (self.d, self.n_points):
            raise ValueError(f"{where} must have d={self.d}, n_points={self.n_points}, got d={c.d}, "
                             f"n_points={c.n_points}")
        if getattr(c, "n_dims_active", None) is not None:
            raise ValueError(f"{where}.n_dims_active must be None (the mixture's n_dims_active applies), got "
                             f"{c.n_dims_active}")
        if isinstance(c, RegressionTask) and (c.kind != "isotropic" or c.x_dist != "gaussian"):
            raise ValueError(f"{where} must be an isotropic RegressionTask with gaussian inputs, got "
                             f"kind={c.kind!r}, x_dist={c.x_dist!r}")

    @property
    def weights(self) -> tuple[float, ...]:
        """The component probabilities (uniform when ``probs`` is None)."""
        return self.probs or tuple(1.0 / len(self.components) for _ in self.components)

    def label(self, g: torch.Generator, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, N, d) -> y (B, N), w (B, d), family (B,) int64, in the documented draw order."""
        u = torch.rand(x.shape[0], generator=g, device=g.device, dtype=F64)
        cdf = torch.tensor(self.weights, dtype=F64, device=g.device).cumsum(0)
        family = torch.searchsorted(cdf, u, right=True).clamp(max=len(self.components) - 1)
        drawn = [LABELERS[type(c)](c, g, x) for c in self.components]  # every component for all B prompts
        ys, ws = torch.stack([y for y, _ in drawn]), torch.stack([w for _, w in drawn])  # (M, B, N), (M, B, d)
        rows = torch.arange(x.shape[0], device=x.device)
        return ys[family, rows], ws[family, rows], family


TASKS = (*FUNCTION_TASKS, MixtureTask)


# ----------------------------------------------------------------------------------------------
# Batches and sampling


@dataclass
class FunctionBatch(RegressionBatch):
    """A RegressionBatch (``w`` NaN where there is no linear weight) and, for a mixture, the index
    of every prompt's component, ``family`` (K, B) int64 (None for a single class)."""

    family: Tensor | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.family is not None and tuple(self.family.shape) != tuple(self.y.shape[:2]):
            raise ValueError(f"FunctionBatch.family must be {tuple(self.y.shape[:2])}, got {tuple(self.family.shape)}")

    def to(self, device=None, dtype: torch.dtype | None = None) -> FunctionBatch:
        """A copy on ``device`` and/or in ``dtype`` (``family`` keeps int64)."""
        x, y, w = (t.to(device=device, dtype=dtype) for t in (self.x, self.y, self.w))
        return FunctionBatch(x, y, w, None if self.family is None else self.family.to(device=device))


def draw(task, g: torch.Generator, batch_size: int) -> dict[str, Tensor]:
    """One model's prompts: x, y, w (and ``family`` for a mixture), float64 on g's device."""
    x = inputs(task, g, batch_size)
    if isinstance(task, MixtureTask):
        y, w, family = task.label(g, x)
        return {"x": x, "y": y, "w": w, "family": family}
    y, w = task.label(g, x)
    return {"x": x, "y": y, "w": w}


def sample(task, generators: Sequence[torch.Generator], batch_size: int, *, device=None,
           dtype: torch.dtype = torch.float32) -> FunctionBatch:
    """Draw ``batch_size`` prompts for each of K = len(generators) models (see the module docstring).

    Model k's prompts come from ``generators[k]`` alone; x, y, w are cast to ``dtype`` (``family``
    stays int64) and everything moves to ``device`` (default: the generators' common device)."""
    if not isinstance(task, TASKS):
        raise TypeError(f"sample: task must be one of {[t.__name__ for t in TASKS]}, got {type(task).__name__}")
    if isinstance(generators, torch.Generator) or not isinstance(generators, Sequence) or not generators:
        raise TypeError("sample: generators must be a non-empty list of torch.Generator (one per model)")
    check_sample_arguments(generators, batch_size, dtype)
    target = _target_device(generators, device)
    drawn = [draw(task, g, batch_size) for g in generators]  # per model, not per prompt

    def stack(name: str) -> Tensor:
        parts = [part[name].to(target) for part in drawn]
        return torch.stack([p.to(dtype) if p.is_floating_point() else p for p in parts])

    return FunctionBatch(**{name: stack(name) for name in drawn[0]})
