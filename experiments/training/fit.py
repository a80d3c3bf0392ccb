"""Fit the K rows of any flat weight buffer to any per-model loss with THE trainer, in one call.

For a loss that is not a family of its own (a notebook, a test, a one-off study)::

    res = fit(losses, theta, [{"lr": 1e-2}] * K, steps=200, batches=lambda step: (x, y), decay=mask)

``losses(theta, *batch) -> (K,)`` is the loss of every model (theta (K, P)), ``batches(step)``
the data of that step. It runs :class:`experiments.training.trainer.Trainer` (per-model AdamW,
clipping, schedule, masking of non-finite models, no host sync in the loop) on a
:class:`FunctionProblem` and returns the final weights and the mean loss of the last ``log_every``
steps per model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from experiments.training.optim import FlatSpec, hyper_rows
from experiments.training.trainer import EarlyStop, Loop, Plateau, Trainer


@dataclass
class FitResult:
    theta: Tensor  # (K, P), detached, on the training device
    final_loss: Tensor  # (K,) on the host: mean loss over the last ``log_every`` steps
    alive: Tensor  # (K,) bool on the host


@dataclass(frozen=True)
class _Row:
    run_id: str


class FunctionProblem:
    """A :class:`experiments.training.trainer.Problem` from a loss function and a batch function."""

    def __init__(self, losses: Callable, theta: Tensor, hypers: list[dict], batches: Callable, decay: Tensor):
        self.runs = [_Row(f"model{k}") for k in range(theta.shape[0])]
        self.spec = FlatSpec(("theta",), ((theta.shape[1],),))
        self.device, self.dtype = theta.device, theta.dtype
        self._theta, self._hypers, self._batches, self._losses, self._decay = theta, hypers, batches, losses, decay

    def init_theta(self) -> Tensor:
        return self._theta.detach().clone()

    def hypers(self) -> list[dict]:
        return self._hypers

    def decay_mask(self) -> Tensor:
        return self._decay.to(device=self.device, dtype=self.dtype)

    def trainable_mask(self) -> Tensor | None:
        return None

    def plateaus(self) -> list[Plateau | None]:
        return [None] * len(self.runs)

    def early_stops(self) -> list[EarlyStop]:
        return [EarlyStop()] * len(self.runs)

    def generators(self) -> list[torch.Generator]:
        return []  # the batch function holds its own state

    def batch(self, gens, step: int) -> tuple:
        return tuple(self._batches(step))

    def losses(self, theta: Tensor, *batch) -> Tensor:
        return self._losses(theta, *batch)

    def log_fields(self, step: int, loss: float) -> dict:
        return {}

    def evaluate(self, theta: Tensor) -> list[dict]:
        return [{} for _ in self.runs]

    def save_weights(self, path, theta_k: Tensor) -> None:
        raise NotImplementedError("a FunctionProblem has no file format; save theta yourself")


def fit(losses: Callable[..., Tensor], theta: Tensor, hypers: Sequence[dict], *, steps: int,
        batches: Callable[[int], tuple], decay: Tensor, log_every: int = 50,
        progress: Callable[[int], None] | None = None) -> FitResult:
    """Train the K rows of ``theta`` for ``steps`` steps; ``hypers[k]`` holds model k's
    hyperparameters (keys of ``optim.HYPER_DEFAULTS``; ``total`` defaults to ``steps``).
    ``progress(s)`` is called with the steps done every ``log_every`` steps and at the end."""
    K = theta.shape[0]
    if len(hypers) != K:
        raise ValueError(f"fit: need one hyperparameter dict per model, got {len(hypers)} for K={K}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"fit: steps must be an int >= 1, got {steps!r}")
    window = max(1, min(log_every, steps))
    problem = FunctionProblem(losses, theta, hyper_rows(hypers, steps), batches, decay)
    trainer = Trainer(problem, Loop(steps, window))
    state = trainer.fit(trainer.initial_state(), on_log=None if progress is None else lambda s, _: progress(s.step))
    last = [m[-1]["loss"] if m else float("nan") for m in state.metrics]
    return FitResult(state.theta.detach(), torch.tensor(last, dtype=theta.dtype), state.alive.cpu())
