"""THE batched trainer: K models of one shape learn in one step, whatever they learn.

A :class:`Problem` says what the K models learn (their flat weights, their data, their per-model
loss, their evaluation); the :class:`Trainer` runs the loop every family shares:

    one step    one batched forward/backward of the sum of the live models' losses (plain autograd
                over the flat (K, P) parameter buffer, so row k of the gradient is model k's own
                gradient), per-model clipping, and one in-place AdamW update of every row with that
                model's learning rate, schedule, betas and weight decay (``experiments.training.optim``)
    masking     a model whose loss or gradient turns non-finite keeps its weights and is marked
                dead (``alive`` False) with its step recorded; the others go on
    no sync     per-model losses accumulate on the device and come to the host every ``log_every``
                steps, where logging, early stopping and checkpoints happen
    resume      a model's state at a log boundary is a checkpoint slice (weights, moments, the
                data generator's state, the logged metrics); K slices rebuild the batch exactly

Families: in-context regression (:mod:`experiments.training.regression`), the sequence tasks of
``ttb ood`` (:mod:`experiments.ood.sequences`) and the approximation fits of ``ttb approx``
(:mod:`experiments.approx.transformer`, :mod:`experiments.approx.mpnn`).

Glossary: K models, P parameters per model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from experiments.common.seeds import derive_seed
from experiments.training.optim import FlatSpec, Hyper, adamw_, clip_coef, grad_norms, lr_at


class Plateau(NamedTuple):
    """One model's learning rate multiplied by ``factor`` once its logged loss has not improved by a
    relative ``threshold`` for more than ``patience`` logs (torch's ReduceLROnPlateau in "min" mode,
    with logs for epochs)."""

    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4


class EarlyStop(NamedTuple):
    """One model's early stopping: stop once the logged loss is <= target (0: off), or after
    ``patience`` steps without a relative improvement of ``min_delta`` (0: off)."""

    patience: int = 0
    min_delta: float = 0.0
    target: float = 0.0


@dataclass(frozen=True)
class Loop:
    """What the K models of a batch share: the number of steps and the logging cadence."""

    steps: int
    log_every: int = 50
    checkpoint_every: int = 0  # 0: none; else a multiple of log_every


class Problem(Protocol):
    """What K models of one shape learn. Every method is pure apart from advancing generators."""

    runs: Sequence  # one run spec per model (``run_id`` each)
    spec: FlatSpec
    device: torch.device
    dtype: torch.dtype

    def init_theta(self) -> Tensor: ...  # (K, P); row k from model k's own init seed alone

    def hypers(self) -> list[dict]: ...  # per model: keys of optim.HYPER_DEFAULTS

    def decay_mask(self) -> Tensor: ...  # (P,) 1 where weight decay applies

    def trainable_mask(self) -> Tensor | None: ...  # (P,) 0 on frozen weights, or None: all train

    def early_stops(self) -> list[EarlyStop]: ...

    def plateaus(self) -> list[Plateau | None]: ...  # per model: reduce its lr on a plateau, or None

    def generators(self) -> list[torch.Generator]: ...  # per model: its training-data stream

    def batch(self, gens: list[torch.Generator], step: int) -> tuple: ...  # this step's data

    def losses(self, theta: Tensor, *batch) -> Tensor: ...  # (K,) per-model losses

    def log_fields(self, step: int, loss: float) -> dict: ...  # extra columns of a log row

    def evaluate(self, theta: Tensor) -> list[dict]: ...  # per model, after training

    def save_weights(self, path, theta_k: Tensor) -> None: ...  # one model's (1, P) weights


class SeededProblem:
    """Defaults for a :class:`Problem` whose runs each carry a ``seed``: streams derived from it
    (``experiments.common.seeds``), weight decay on matrices only, no early stopping, nothing to log
    beyond the loss. A family sets ``runs``, ``spec``, ``device``, ``dtype`` and the rest."""

    def seeded(self, stream: int, device=None) -> list[torch.Generator]:
        """One generator per model for ``stream`` of its seed (on ``device``, default the CPU)."""
        return [torch.Generator(device=device or "cpu").manual_seed(derive_seed(r.seed, stream)) for r in self.runs]

    def decay_mask(self) -> Tensor:
        return self.spec.decay_mask(self.dtype, self.device)

    def trainable_mask(self) -> Tensor | None:
        return None

    def early_stops(self) -> list[EarlyStop]:
        return [EarlyStop()] * len(self.runs)

    def plateaus(self) -> list[Plateau | None]:
        return [None] * len(self.runs)

    def log_fields(self, step: int, loss: float) -> dict:
        return {}


class StepState(NamedTuple):
    """The device tensors one step reads and writes."""

    theta: Tensor  # (K, P)
    m: Tensor  # (K, P) AdamW first moment
    v: Tensor  # (K, P) AdamW second moment
    t: Tensor  # 0-dim int64: the index of the next step
    alive: Tensor  # (K,) bool
    diverged_step: Tensor  # (K,) int64, -1 if never
    lr_scale: Tensor  # (K,) factor on the scheduled learning rate (reduce-on-plateau; 1 otherwise)


class StepOut(NamedTuple):
    state: StepState
    ok: Tensor  # (K,) bool: the model took this step
    losses: Tensor  # (K,) the step's losses (before the update)
    grad_norms: Tensor  # (K,) before clipping


@dataclass
class TrainState:
    """Everything needed to continue training K models: the step tensors, the window's sums on
    the device, the data generators, and host bookkeeping."""

    tensors: StepState
    loss_sum: Tensor  # (K,) since the last log
    gnorm_sum: Tensor  # (K,)
    count: Tensor  # (K,) steps each model took since the last log
    generators: list[torch.Generator]
    step: int = 0  # host copy of t
    plateau_best: list[float] = field(default_factory=list)  # per model, for Plateau
    plateau_wait: list[int] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    best_step: list[int] = field(default_factory=list)
    stopped_step: list[int] = field(default_factory=list)
    metrics: list[list[dict]] = field(default_factory=list)  # per model, one row per log

    @property
    def theta(self) -> Tensor:
        return self.tensors.theta

    @property
    def alive(self) -> Tensor:
        return self.tensors.alive


# ----------------------------------------------------------------------------------------------
# One step (pure: tensors in, tensors out; no host synchronisation)


def gradients(losses: Callable, theta: Tensor, alive: Tensor, batch: tuple,
              model_chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """(g (K, P), per-model losses (K,)): the gradient of the sum of the live models' losses.
    ``model_chunk`` runs at most that many models per forward/backward (models are independent,
    so the gradient is the same; it bounds the size of each activation)."""
    K = theta.shape[0]
    if model_chunk is not None and model_chunk < K:
        parts = [gradients(losses, theta[i:i + model_chunk], alive[i:i + model_chunk],
                           tuple(x[i:i + model_chunk] for x in batch)) for i in range(0, K, model_chunk)]
        return torch.cat([g for g, _ in parts]), torch.cat([p for _, p in parts])
    with torch.enable_grad():
        leaf = theta.detach().requires_grad_(True)
        per = losses(leaf, *batch)
        total = torch.where(alive, per, torch.zeros_like(per)).sum()
        (g,) = torch.autograd.grad(total, leaf)
    return g, per.detach()


AUTOCAST = {"bfloat16": torch.bfloat16}


def with_autocast(losses: Callable, autocast: str | None, device: torch.device) -> Callable:
    """``losses`` run under torch.autocast in ``autocast`` ("bfloat16": matmuls and attention in bf16,
    reductions and the loss in float32; the weights and the optimiser stay in the training dtype)."""
    if autocast is None:
        return losses
    if autocast not in AUTOCAST:
        raise ValueError(f"autocast must be one of {list(AUTOCAST)} or None, got {autocast!r}")

    def autocast_losses(theta: Tensor, *batch) -> Tensor:
        with torch.autocast(device.type, dtype=AUTOCAST[autocast]):
            return losses(theta, *batch).to(theta.dtype)

    return autocast_losses


def make_step(losses: Callable, model_chunk: int | None = None, update: Callable = adamw_,
              trainable: Tensor | None = None) -> Callable:
    """``step(state, batch, hp, decay) -> StepOut`` for per-model ``losses(theta, *batch) -> (K,)``.
    ``trainable`` (P,) zeroes the gradient of frozen weights: their moments stay 0, so AdamW leaves
    them exactly as they are (the decay mask must be 0 there too)."""

    def step(s: StepState, batch: tuple, hp: Hyper, decay: Tensor) -> StepOut:
        g, per = gradients(losses, s.theta, s.alive, batch, model_chunk)
        if trainable is not None:
            g = g * trainable
        norms = grad_norms(g)
        ok = s.alive & torch.isfinite(per) & torch.isfinite(norms)
        g = torch.where(ok[:, None], g * clip_coef(norms, hp.clip)[:, None], torch.zeros_like(g))
        theta, m, v = update(s.theta, s.m, s.v, g, s.t, lr_at(hp, s.t) * s.lr_scale, hp, decay, ok)
        diverged = torch.where(s.alive & ~ok, s.t, s.diverged_step)
        return StepOut(StepState(theta, m, v, s.t + 1, ok, diverged, s.lr_scale), ok, per, norms)

    return step


# ----------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Trains the K models of one problem together (see the module docstring)."""

    def __init__(self, problem: Problem, loop: Loop, *, compile: bool = False, model_chunk: int | None = None,
                 autocast: str | None = None):
        self.problem, self.loop = problem, loop
        self.K, self.device, self.dtype, self.spec = len(problem.runs), problem.device, problem.dtype, problem.spec
        self.runs = problem.runs
        self.hp = Hyper.stack(problem.hypers(), dtype=self.dtype, device=self.device)
        trainable = problem.trainable_mask()
        self.decay = problem.decay_mask() if trainable is None else problem.decay_mask() * trainable
        self.stops = problem.early_stops()
        self.plateaus = problem.plateaus()
        losses = torch.compile(problem.losses) if compile else problem.losses
        self._step = make_step(with_autocast(losses, autocast, self.device), model_chunk, trainable=trainable)

    @property
    def cfg(self):
        """The model config of the problem's models."""
        return self.problem.cfg

    def initial_state(self) -> TrainState:
        theta = self.problem.init_theta().to(device=self.device, dtype=self.dtype)
        K, dev = self.K, self.device
        zeros = lambda: torch.zeros(K, dtype=self.dtype, device=dev)  # noqa: E731
        tensors = StepState(theta, torch.zeros_like(theta), torch.zeros_like(theta),
                            torch.zeros((), dtype=torch.int64, device=dev), torch.ones(K, dtype=torch.bool, device=dev),
                            torch.full((K,), -1, dtype=torch.int64, device=dev),
                            torch.ones(K, dtype=self.dtype, device=dev))
        return TrainState(tensors, zeros(), zeros(), zeros(), self.problem.generators(), best=[float("inf")] * K,
                          plateau_best=[float("inf")] * K, plateau_wait=[0] * K,
                          best_step=[0] * K, stopped_step=[-1] * K, metrics=[[] for _ in range(K)])

    def step(self, s: TrainState) -> None:
        """One step for every model (no host synchronisation)."""
        out = self._step(s.tensors, self.problem.batch(s.generators, s.step), self.hp, self.decay)
        s.tensors = out.state
        s.loss_sum = s.loss_sum + torch.where(out.ok, out.losses, 0.0)
        s.gnorm_sum = s.gnorm_sum + torch.where(out.ok, out.grad_norms, 0.0)
        s.count = s.count + out.ok.to(self.dtype)
        s.step += 1

    def fit(self, s: TrainState, on_log: Callable | None = None, on_checkpoint: Callable | None = None,
            max_steps: int | None = None) -> TrainState:
        """Train until ``loop.steps`` (or ``max_steps``), or until every model stopped."""
        end = self.loop.steps if max_steps is None else min(self.loop.steps, max_steps)
        while s.step < end:
            self.step(s)
            if s.step % self.loop.log_every == 0 or s.step == self.loop.steps:
                rows = self.log(s)
                if on_log is not None:
                    on_log(s, rows)
                if self.loop.checkpoint_every and s.step % self.loop.checkpoint_every == 0 and on_checkpoint:
                    on_checkpoint(s)
                if not bool(s.alive.any()):
                    break
        return s

    def log(self, s: TrainState) -> list[dict | None]:
        """Bring the window's per-model means to the host (the one sync), record rows, early-stop."""
        lr = lr_at(self.hp, s.tensors.t - 1) * s.tensors.lr_scale
        host = torch.stack([s.loss_sum, s.gnorm_sum, s.count, lr]).cpu().double().numpy()
        rows: list[dict | None] = []
        for k in range(self.K):
            loss_sum, gnorm_sum, count, lr_k = host[:, k]
            if count == 0:
                rows.append(None)
                continue
            loss = float(loss_sum / count)
            row = {"step": s.step, "loss": loss, **self.problem.log_fields(s.step - 1, loss),
                   "grad_norm": float(gnorm_sum / count), "lr": float(lr_k)}
            s.metrics[k].append(row)
            rows.append(row)
            self._early_stop(s, k, loss)
            self._plateau(s, k, loss)
        s.loss_sum, s.gnorm_sum, s.count = (torch.zeros_like(s.count) for _ in range(3))
        return rows

    def _early_stop(self, s: TrainState, k: int, loss: float) -> None:
        stop = self.stops[k]
        if loss < s.best[k] * (1 - stop.min_delta):
            s.best[k], s.best_step[k] = loss, s.step
        target_hit = stop.target > 0 and loss <= stop.target
        stale = stop.patience > 0 and s.step - s.best_step[k] >= stop.patience
        if (target_hit or stale) and s.stopped_step[k] < 0 and s.step < self.loop.steps:
            s.stopped_step[k] = s.step
            s.tensors.alive[k] = False

    def _plateau(self, s: TrainState, k: int, loss: float) -> None:
        rule = self.plateaus[k]
        if rule is None:
            return
        if loss < s.plateau_best[k] * (1 - rule.threshold):
            s.plateau_best[k], s.plateau_wait[k] = loss, 0
            return
        s.plateau_wait[k] += 1
        if s.plateau_wait[k] > rule.patience:
            s.tensors.lr_scale[k] *= rule.factor
            s.plateau_wait[k] = 0

    # -- results -------------------------------------------------------------------------------

    def summary(self, s: TrainState) -> list[dict]:
        """Per model: status, steps done, divergence / stop steps, last logged loss, evaluation."""
        diverged = s.tensors.diverged_step.cpu().tolist()
        with torch.no_grad():
            evals = self.problem.evaluate(s.theta.detach())
        out = []
        for k in range(self.K):
            last = s.metrics[k][-1] if s.metrics[k] else {}
            ended = [x for x in (diverged[k], s.stopped_step[k]) if x >= 0]
            out.append({"status": "diverged" if diverged[k] >= 0 else "done",
                        "steps_done": min(ended) if ended else s.step, "diverged_step": diverged[k],
                        "stopped_step": s.stopped_step[k], "final_loss": last.get("loss", float("nan")),
                        "final_nmse": last.get("nmse", float("nan")), **evals[k]})
        return out

    def theta(self, s: TrainState, k: int) -> Tensor:
        """Model k's flat weights (1, P), a detached copy."""
        return s.theta[k:k + 1].detach().clone()

    def weights(self, s: TrainState, k: int):
        """Model k's typed weights (K = 1), detached copies (transformer problems)."""
        return self.spec.unflatten(self.theta(s, k))

    def save_weights(self, path, s: TrainState, k: int) -> None:
        self.problem.save_weights(path, self.theta(s, k))

    # -- checkpoints: one model's slice of the state (no I/O here) ------------------------------

    def checkpoint_slice(self, s: TrainState, k: int) -> tuple[dict[str, Tensor], dict]:
        """Model k's state at a log boundary: tensors (weights, moments, RNG state) and metadata."""
        t = s.tensors
        tensors = {"theta": t.theta[k], "m": t.m[k], "v": t.v[k]}
        if s.generators:  # a problem whose batches come from elsewhere has no generators to save
            tensors["rng"] = s.generators[k].get_state()
        meta = {"run_id": self.runs[k].run_id, "step": s.step, "alive": bool(t.alive[k]),
                "diverged_step": int(t.diverged_step[k]), "best": s.best[k], "best_step": s.best_step[k],
                "stopped_step": s.stopped_step[k], "metrics": s.metrics[k], "lr_scale": float(t.lr_scale[k]),
                "plateau_best": s.plateau_best[k], "plateau_wait": s.plateau_wait[k]}
        return tensors, meta

    def state_from_slices(self, slices: list[tuple[dict, dict]]) -> TrainState:
        """Inverse of :meth:`checkpoint_slice` for all K models (all saved at the same step)."""
        steps = {meta["step"] for _, meta in slices}
        if len(steps) != 1:
            raise ValueError(f"checkpoints of one batch must share a step, got {sorted(steps)}")
        s, dev = self.initial_state(), self.device
        stack = lambda name: torch.stack([t[name] for t, _ in slices]).to(device=dev, dtype=self.dtype)  # noqa: E731
        for gen, (tensors, _) in zip(s.generators, slices):
            gen.set_state(tensors["rng"])  # (zip: nothing to restore where the problem has no generators)
        metas = [meta for _, meta in slices]
        s.step = steps.pop()
        s.tensors = StepState(stack("theta"), stack("m"), stack("v"), torch.tensor(s.step, dtype=torch.int64, device=dev),
                              torch.tensor([m["alive"] for m in metas], dtype=torch.bool, device=dev),
                              torch.tensor([m["diverged_step"] for m in metas], dtype=torch.int64, device=dev),
                              torch.tensor([m.get("lr_scale", 1.0) for m in metas], dtype=self.dtype, device=dev))
        s.plateau_best = [float("inf") if m.get("plateau_best") is None else m["plateau_best"] for m in metas]
        s.plateau_wait = [m.get("plateau_wait", 0) for m in metas]
        s.best = [float("inf") if m["best"] is None else m["best"] for m in metas]
        s.best_step = [m["best_step"] for m in metas]
        s.stopped_step = [m["stopped_step"] for m in metas]
        s.metrics = [m["metrics"] for m in metas]
        return s
