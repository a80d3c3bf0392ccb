"""Batched trainer: K models of one shape learn in-context linear regression in one step.

One step is one batched forward/backward through ``constructions.model.forward`` and one AdamW
update of the flat (K, P) parameter buffer (``experiments.training.optim``). The loss is the sum over models
of each model's mean squared error, so model k's gradient is exactly the gradient it would get
alone. Everything else is per model as well: data stream (one generator each), init seed, learning
rate and schedule, betas, weight decay, gradient clipping, early stopping. A model whose loss or
gradient turns non-finite is masked from then on (its update is zeroed) and its step recorded.

No host synchronisation inside the step loop: per-model losses accumulate on the device and come
to the host every ``log_every`` steps, where logging and early stopping happen.

Token formats (``task.format``): "interleaved" (x_1, y_1, x_2, ..., causal mask, a prediction at
every x token, loss averaged over all of them) and "example" (z_i = (x_i, y_i), query (x_q, 0),
"exclude_query" mask, one prediction per prompt).

Glossary: K models, B prompts per model, N points per prompt, d input dimension, P parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from constructions.model import Weights, forward, init
from constructions.tokens import (
    example_tokens,
    interleaved_predictions,
    interleaved_tokens,
    query_prediction,
)
from experiments.common.devices import pick_device
from experiments.common.seeds import DATA_STREAM, EVAL_STREAM, INIT_STREAM, derive_seed
from experiments.training import tasks
from experiments.training.config import RunConfig
from experiments.training.optim import FlatSpec, Hyper, adamw, clip_coef, grad_norms, lr_at

CPU_CHUNK_BYTES = 32 * 2**20


# ----------------------------------------------------------------------------------------------
# Math: tokens, loss, one step


def make_tokens(fmt: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """x (K, B, N, d), y (K, B, N) -> tokens and the targets the predictions are scored against."""
    if fmt == "interleaved":
        return interleaved_tokens(x, y), y  # targets (K, B, N)
    return example_tokens(x[:, :, :-1], y[:, :, :-1], x[:, :, -1]), y[:, :, -1:]  # targets (K, B, 1)


def predictions(fmt: str, out: Tensor) -> Tensor:
    """Readout (K, B, T, 1) -> predictions shaped like the targets."""
    return interleaved_predictions(out) if fmt == "interleaved" else query_prediction(out)[..., None]


def make_step(cfg, spec: FlatSpec, fmt: str, model_chunk: int | None = None) -> Callable:
    """The pure training step for one shape (a function of tensors only, so it can be compiled).

    ``model_chunk``: run forward/backward for at most this many models at a time (the models are
    independent, so the gradients are the same; it only bounds the size of each activation).
    """

    def model_losses(theta, tokens, targets):  # (K,)
        out = forward(cfg, spec.unflatten(theta), tokens).out
        return (predictions(fmt, out) - targets).pow(2).flatten(1).mean(1)

    def total(theta, tokens, targets, alive):
        per = model_losses(theta, tokens, targets)
        return torch.where(alive, per, torch.zeros_like(per)).sum(), per

    grad_fn = torch.func.grad(total, has_aux=True)

    def gradients(theta, tokens, targets, alive):
        K = theta.shape[0]
        if model_chunk is None or model_chunk >= K:
            return grad_fn(theta, tokens, targets, alive)
        parts = [grad_fn(*(x[i:i + model_chunk] for x in (theta, tokens, targets, alive)))
                 for i in range(0, K, model_chunk)]
        return torch.cat([g for g, _ in parts]), torch.cat([p for _, p in parts])

    def step(theta, m, v, t, alive, diverged_step, tokens, targets, hp: Hyper, decay):
        g, per = gradients(theta, tokens, targets, alive)
        norms = grad_norms(g)
        ok = alive & torch.isfinite(per) & torch.isfinite(norms)
        g = g * clip_coef(norms, hp.clip)[:, None]
        new = adamw(theta, m, v, g, t, lr_at(hp, t), hp, decay)
        keep = ok[:, None]
        theta, m, v = (torch.where(keep, a, b) for a, b in zip(new, (theta, m, v)))
        diverged_step = torch.where(alive & ~ok, t, diverged_step)
        return theta, m, v, ok, diverged_step, per, norms

    return step


def auto_model_chunk(cfg, device: torch.device, batch_size: int, n_tokens: int, dtype) -> int | None:
    """On the CPU, bound each activation to ~CPU_CHUNK_BYTES: huge temporaries are mapped and
    unmapped by the allocator on every step (page faults), which made K = 32 slower than a loop.
    Accelerators get no chunking (one launch per kernel for all K models)."""
    if device.type != "cpu":
        return None
    widest = max(cfg.n_heads * n_tokens, cfg.d_mlp, cfg.d_model) * batch_size * n_tokens
    return max(1, CPU_CHUNK_BYTES // (widest * torch.finfo(dtype).bits // 8))


# ----------------------------------------------------------------------------------------------
# State


@dataclass
class TrainState:
    """Everything needed to continue training K models (device tensors plus host bookkeeping)."""

    theta: Tensor  # (K, P)
    m: Tensor  # (K, P)
    v: Tensor  # (K, P)
    t: Tensor  # 0-dim int64: the next step index, on the device
    alive: Tensor  # (K,) bool
    diverged_step: Tensor  # (K,) int64, -1 if never
    loss_sum: Tensor  # (K,) since the last log
    gnorm_sum: Tensor  # (K,)
    count: Tensor  # (K,) steps each model took since the last log
    generators: list[torch.Generator]
    step: int = 0  # host copy of t
    best: list[float] = field(default_factory=list)
    best_step: list[int] = field(default_factory=list)
    stopped_step: list[int] = field(default_factory=list)
    metrics: list[list[dict]] = field(default_factory=list)  # per model, one row per log


# ----------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Trains the runs of one batch group (equal ``RunConfig.group_key``) together."""

    def __init__(self, runs: Sequence[RunConfig], device=None, compile: bool = False,
                 model_chunk: int | None = None):
        keys = {r.group_key() for r in runs}
        if len(keys) != 1:
            raise ValueError(f"Trainer: runs must share one group key (shape, steps, ...), got {len(keys)}")
        self.runs, self.K = list(runs), len(runs)
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        first = self.runs[0]
        self.cfg, self.task, self.tr = first.model_config(), first.task, first.train
        self.dtype = self.tr.torch_dtype
        self.spec = FlatSpec.of(self.cfg)
        self.hp = Hyper.stack([_hyper_row(r) for r in self.runs], dtype=self.dtype, device=self.device)
        self.decay = self.spec.decay_mask(self.dtype, self.device)
        self.task_groups = _task_groups(self.runs)
        self.model_chunk = model_chunk or auto_model_chunk(self.cfg, self.device, self.tr.batch_size,
                                                           self.task.n_tokens, self.dtype)
        step = make_step(self.cfg, self.spec, self.task.format, self.model_chunk)
        self._step = torch.compile(step) if compile else step

    # -- setup ---------------------------------------------------------------------------------

    def gen_device(self) -> torch.device:
        return torch.device("cpu") if self.tr.data_on == "cpu" else self.device

    def generators(self, stream: int) -> list[torch.Generator]:
        seeds = [derive_seed(r.train.data_seed_resolved, stream) for r in self.runs]
        return [torch.Generator(device=self.gen_device()).manual_seed(s) for s in seeds]

    def init_theta(self) -> Tensor:
        rows = []
        for r in self.runs:
            gen = torch.Generator().manual_seed(derive_seed(r.train.seed, INIT_STREAM))
            w = init(self.cfg, [gen], std=r.model.init_std, dtype=self.dtype, device=self.device)
            rows.append(self.spec.flatten(w))
        return torch.cat(rows)

    def initial_state(self) -> TrainState:
        theta = self.init_theta()
        K, dev = self.K, self.device
        zeros = lambda: torch.zeros(K, dtype=self.dtype, device=dev)  # noqa: E731
        return TrainState(
            theta=theta, m=torch.zeros_like(theta), v=torch.zeros_like(theta),
            t=torch.zeros((), dtype=torch.int64, device=dev), alive=torch.ones(K, dtype=torch.bool, device=dev),
            diverged_step=torch.full((K,), -1, dtype=torch.int64, device=dev),
            loss_sum=zeros(), gnorm_sum=zeros(), count=zeros(), generators=self.generators(DATA_STREAM),
            best=[float("inf")] * K, best_step=[0] * K, stopped_step=[-1] * K, metrics=[[] for _ in range(K)],
        )

    # -- data ----------------------------------------------------------------------------------

    def batch(self, gens: list[torch.Generator], batch_size: int, n_points: int, n_dims: int):
        """Tokens and targets for every model; each task group is sampled with its own generators."""
        xs, ys, order = [], [], []
        for fields_, idx in self.task_groups:
            task = tasks.task_of(fields_, n_points, n_dims)
            b = tasks.sample(task, [gens[i] for i in idx], batch_size, device=self.device, dtype=self.dtype)
            xs.append(b.x)
            ys.append(b.y)
            order += idx
        x, y = torch.cat(xs), torch.cat(ys)
        if order != list(range(self.K)):
            inverse = torch.as_tensor(np.argsort(order), device=self.device)
            x, y = x[inverse], y[inverse]
        return make_tokens(self.task.format, x, y)

    def curriculum(self, step: int) -> tuple[int, int]:
        cur = self.tr.curriculum
        return (self.task.n_points, self.task.d) if cur is None else cur.at(step, self.task.d, self.task.n_points)

    # -- the loop ------------------------------------------------------------------------------

    def step(self, s: TrainState) -> None:
        """One step for every model (no host synchronisation)."""
        tokens, targets = self.batch(s.generators, self.tr.batch_size, *self.curriculum(s.step))
        s.theta, s.m, s.v, ok, s.diverged_step, per, norms = self._step(
            s.theta, s.m, s.v, s.t, s.alive, s.diverged_step, tokens, targets, self.hp, self.decay)
        okf = ok.to(self.dtype)
        s.loss_sum = s.loss_sum + torch.where(ok, per, 0.0)
        s.gnorm_sum = s.gnorm_sum + torch.where(ok, norms, 0.0)
        s.count = s.count + okf
        s.alive = ok
        s.t = s.t + 1
        s.step += 1

    def fit(self, s: TrainState, on_log: Callable | None = None, on_checkpoint: Callable | None = None,
            max_steps: int | None = None) -> TrainState:
        """Train until ``train.steps`` (or ``max_steps``), or until every model stopped."""
        end = min(self.tr.steps, max_steps) if max_steps is not None else self.tr.steps
        while s.step < end:
            self.step(s)
            if s.step % self.tr.log_every == 0 or s.step == self.tr.steps:
                rows = self.log(s)
                if on_log is not None:
                    on_log(s, rows)
                if self.tr.checkpoint_every and s.step % self.tr.checkpoint_every == 0 and on_checkpoint:
                    on_checkpoint(s)
                if not bool(s.alive.any()):
                    break
        return s

    def log(self, s: TrainState) -> list[dict | None]:
        """Bring the window's per-model means to the host (the one sync), record rows, early-stop."""
        n_points, n_dims = self.curriculum(s.step - 1)
        lr = lr_at(self.hp, s.t - 1)
        host = torch.stack([s.loss_sum, s.gnorm_sum, s.count, lr]).cpu().double().numpy()
        rows: list[dict | None] = []
        for k in range(self.K):
            loss_sum, gnorm_sum, count, lr_k = host[:, k]
            if count == 0:
                rows.append(None)
                continue
            loss = float(loss_sum / count)
            row = {"step": s.step, "loss": loss, "nmse": loss / n_dims, "grad_norm": float(gnorm_sum / count),
                   "lr": float(lr_k), "n_points": n_points, "n_dims": n_dims}
            s.metrics[k].append(row)
            rows.append(row)
            self._early_stop(s, k, loss)
        s.loss_sum, s.gnorm_sum, s.count = (torch.zeros_like(s.count) for _ in range(3))
        return rows

    def _early_stop(self, s: TrainState, k: int, loss: float) -> None:
        tr = self.runs[k].train
        if loss < s.best[k] * (1 - tr.early_stop_min_delta):
            s.best[k], s.best_step[k] = loss, s.step
        target_hit = tr.early_stop_target > 0 and loss <= tr.early_stop_target
        stale = tr.early_stop_patience > 0 and s.step - s.best_step[k] >= tr.early_stop_patience
        if (target_hit or stale) and s.stopped_step[k] < 0 and s.step < tr.steps:
            s.stopped_step[k] = s.step
            s.alive[k] = False

    # -- results -------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, s: TrainState) -> list[dict]:
        """Fresh prompts at full size (own seed stream): squared error per position, per model."""
        tokens, targets = self.batch(self.generators(EVAL_STREAM), self.task.eval_batch_size,
                                     self.task.n_points, self.task.d)
        out = forward(self.cfg, self.spec.unflatten(s.theta), tokens).out
        curve = (predictions(self.task.format, out) - targets).pow(2).mean(1).double().cpu()  # (K, N')
        first = 0 if self.task.format == "interleaved" else self.task.n_points - 1
        d = self.task.d
        return [{"eval_mse": float(c.mean()), "eval_nmse": float(c.mean()) / d,
                 "curve": [{"n_examples": first + i, "nmse": float(e) / d} for i, e in enumerate(c)]}
                for c in curve]

    def summary(self, s: TrainState) -> list[dict]:
        """Per model: status, steps done, divergence/stop steps, last logged loss, evaluation."""
        diverged = s.diverged_step.cpu().tolist()
        evals = self.evaluate(s)
        out = []
        for k in range(self.K):
            last = s.metrics[k][-1] if s.metrics[k] else {}
            ended = [x for x in (diverged[k], s.stopped_step[k]) if x >= 0]
            out.append({"status": "diverged" if diverged[k] >= 0 else "done",
                        "steps_done": min(ended) if ended else s.step, "diverged_step": diverged[k],
                        "stopped_step": s.stopped_step[k], "final_loss": last.get("loss", float("nan")),
                        "final_nmse": last.get("nmse", float("nan")), **evals[k]})
        return out

    def weights(self, s: TrainState, k: int) -> Weights:
        """Model k's weights (K = 1), detached copies."""
        return self.spec.unflatten(s.theta[k:k + 1].detach().clone())


# ----------------------------------------------------------------------------------------------
# Checkpoints: one model's slice of the state as tensors plus JSON-able bookkeeping (no I/O here)


def checkpoint_slice(trainer: Trainer, s: TrainState, k: int) -> tuple[dict[str, Tensor], dict]:
    """Model k's state at a log boundary: tensors (weights, moments, RNG state) and metadata."""
    tensors = {"theta": s.theta[k], "m": s.m[k], "v": s.v[k], "rng": s.generators[k].get_state()}
    n_points, n_dims = trainer.curriculum(s.step)
    meta = {"run_id": trainer.runs[k].run_id, "step": s.step, "alive": bool(s.alive[k]),
            "diverged_step": int(s.diverged_step[k]), "best": s.best[k], "best_step": s.best_step[k],
            "stopped_step": s.stopped_step[k], "metrics": s.metrics[k],
            "curriculum": {"n_points": n_points, "n_dims": n_dims}}
    return tensors, meta


def state_from_slices(trainer: Trainer, slices: list[tuple[dict, dict]]) -> TrainState:
    """Inverse of :func:`checkpoint_slice` for all K models (all saved at the same step)."""
    steps = {meta["step"] for _, meta in slices}
    if len(steps) != 1:
        raise ValueError(f"checkpoints of one batch must share a step, got {sorted(steps)}")
    s = trainer.initial_state()
    dev = trainer.device
    stack = lambda name: torch.stack([t[name] for t, _ in slices]).to(device=dev, dtype=trainer.dtype)  # noqa: E731
    s.theta, s.m, s.v = stack("theta"), stack("m"), stack("v")
    for gen, (tensors, _) in zip(s.generators, slices):
        gen.set_state(tensors["rng"])
    metas = [meta for _, meta in slices]
    s.step = steps.pop()
    s.t = torch.tensor(s.step, dtype=torch.int64, device=dev)
    s.alive = torch.tensor([m["alive"] for m in metas], dtype=torch.bool, device=dev)
    s.diverged_step = torch.tensor([m["diverged_step"] for m in metas], dtype=torch.int64, device=dev)
    s.best = [float("inf") if m["best"] is None else m["best"] for m in metas]
    s.best_step = [m["best_step"] for m in metas]
    s.stopped_step = [m["stopped_step"] for m in metas]
    s.metrics = [m["metrics"] for m in metas]
    return s


def _hyper_row(r: RunConfig) -> dict:
    t = r.train
    return {"lr": t.lr, "beta1": t.beta1, "beta2": t.beta2, "eps": t.eps, "weight_decay": t.weight_decay,
            "warmup": t.warmup_steps, "total": t.steps, "min_lr_ratio": t.min_lr_ratio, "clip": t.grad_clip}


def train_runs(runs: Sequence[RunConfig], device=None, compile: bool = False) -> tuple[Trainer, TrainState]:
    """Train ``runs`` (one batch group) from scratch in memory; for tests and notebooks."""
    trainer = Trainer(runs, device=device, compile=compile)
    return trainer, trainer.fit(trainer.initial_state())


def _task_groups(runs: Sequence[RunConfig]) -> list[tuple[dict, list[int]]]:
    """Models with the same data distribution, sampled in one call: [(task fields, model indices)]."""
    groups: dict[tuple, list[int]] = {}
    for k, r in enumerate(runs):
        groups.setdefault(tuple(tasks.data_fields(r.task).items()), []).append(k)
    return [(dict(key), idx) for key, idx in groups.items()]
