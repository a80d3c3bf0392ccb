"""Evaluation prompts: a batch of in-context regression prompts drawn from a run's own task.

Every kind of :class:`experiments.training.config.TaskSpec` is drawn through the trainer's task
tables (:mod:`experiments.training.tasks`), in float64, from one generator seeded by ``seed``, with
n_points - 1 examples in context and the last point as the query.
"""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.analysis.core import F64, Prompts
from experiments.training import tasks as T
from synthetic import shifts
from synthetic.regression import RegressionTask, sample


def task_prompts(task, n_prompts: int, seed: int = 0, shift: shifts.Shift | None = None
                 ) -> tuple[Prompts, dict[str, Tensor]]:
    """(Prompts, extras) for a TaskSpec: n_points - 1 examples and a query per prompt, under the
    test-time ``shift`` if one is given (synthetic.shifts; None draws the task as trained). Extras:
    ``noise_std`` (B,) for a noise mixture, ``features`` (B, N+1, width) and ``w_feature`` (B, width)
    for a representation task, ``task_index`` (B,) for a pool, ``family`` (B,) for a mixture."""
    synthetic, gens = T.synthetic_task(task), [torch.Generator().manual_seed(seed)]
    if shift is None:
        batch = T.sample(synthetic, gens, n_prompts, dtype=F64)
    else:
        batch = shifts.sample(synthetic, shift, gens, n_prompts, dtype=F64)
    x, y = batch.x[0], batch.y[0]
    w = None if task.kind == "representation" else batch.w[0]
    extras = {name: getattr(batch, name)[0] for name in ("noise_std", "features", "task_index", "family")
              if getattr(batch, name, None) is not None}
    if task.kind == "representation":
        extras["w_feature"] = batch.w[0]
    return Prompts(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], w, task=task), extras


def prompts_for_task(task, n_prompts: int, seed: int = 0, shift: shifts.Shift | None = None) -> Prompts:
    """Prompts for a TaskSpec (see :func:`task_prompts`)."""
    return task_prompts(task, n_prompts, seed, shift)[0]


def sample_prompts(d: int, n: int, n_prompts: int, *, seed: int = 0, noise_std: float = 0.0,
                   kind: str = "isotropic", condition_number: float = 1.0, basis_seed: int = 0,
                   w_std: float = 1.0) -> Prompts:
    """n_prompts prompts of the synthetic regression task (n context examples + 1 query)."""
    task = RegressionTask(d=d, n_points=n + 1, noise_std=noise_std, kind=kind,
                          condition_number=condition_number, basis_seed=basis_seed, w_std=w_std)
    batch = sample(task, [torch.Generator().manual_seed(seed)], n_prompts, dtype=F64)
    x, y = batch.x[0], batch.y[0]
    return Prompts(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], batch.w[0])
