"""Batched fitting of K models to a target map: the trainer behind the approximation comparisons.

Nothing here knows which network is trained or what it imitates. The caller gives

    per_model_loss(theta, *batch) -> (K,)     the loss of every model; theta (K, P) flat weights
    batches(step) -> tuple of tensors          fresh data (and targets) for that step

and :func:`fit` runs the per-model AdamW of :mod:`experiments.training.optim` (each model its own learning
rate, schedule, clipping, weight decay; a model whose loss turns non-finite is frozen), with no host
synchronisation inside the loop: per-model losses accumulate on the device and are read once.

Glossary: K models, P parameters per model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from experiments.training.optim import Hyper, hyper_rows, masked_step


@dataclass
class FitResult:
    theta: Tensor  # (K, P), detached, on the training device
    final_loss: Tensor  # (K,) on the host: mean loss over the last ``log_every`` steps
    alive: Tensor  # (K,) bool on the host


def fit(per_model_loss: Callable[..., Tensor], theta: Tensor, hypers: Sequence[dict], *, steps: int,
        batches: Callable[[int], tuple], decay: Tensor, log_every: int = 50,
        progress: Callable[[int], None] | None = None) -> FitResult:
    """Train the K rows of ``theta`` for ``steps`` steps; ``hypers[k]`` holds model k's
    hyperparameters (keys of ``optim.HYPER_DEFAULTS``; ``total`` defaults to ``steps``).
    ``progress(s)`` is called with the steps done every ``log_every`` steps and at the end (it must
    not read device tensors)."""
    K = theta.shape[0]
    if len(hypers) != K:
        raise ValueError(f"fit: need one hyperparameter dict per model, got {len(hypers)} for K={K}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"fit: steps must be an int >= 1, got {steps!r}")
    hp = Hyper.stack(hyper_rows(hypers, steps), dtype=theta.dtype, device=theta.device)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    alive = torch.ones(K, dtype=torch.bool, device=theta.device)
    recent = torch.zeros(K, dtype=theta.dtype, device=theta.device)
    step = masked_step(per_model_loss)
    window = max(1, min(log_every, steps))
    for s in range(steps):
        t = torch.tensor(s, dtype=torch.int64, device=theta.device)
        theta, m, v, alive, per = step(theta, m, v, t, alive, batches(s), hp, decay)
        if s >= steps - window:
            recent = recent + per.detach() / window
        if progress is not None and ((s + 1) % window == 0 or s + 1 == steps):
            progress(s + 1)
    return FitResult(theta.detach(), recent.cpu(), alive.cpu())
