"""In-context linear regression as a training problem: K runs of one shape (``ttb sweep``).

The runs of one batch group (equal ``RunConfig.group_key``) share the model shape, the token
format, the batch size and the loop; everything else is per model (seeds, task distribution,
optimiser settings, early stopping). Each step draws fresh prompts for every model from its own
generator (models with the same data distribution in one call), turns them into tokens, and scores
the readout with the mean squared error over the predicted positions, or with the logistic loss
log(1 + exp(-y f)) on +-1 labels where ``task.loss = "logistic"`` (one loss per batch group).

Token formats (``task.format``): "interleaved" (x_1, y_1, x_2, ..., causal mask, a prediction at
every x token, loss averaged over all of them), "interleaved_y0" (the same with d-wide tokens and y
in the first coordinate of its token, as Garg et al.) and "example" (z_i = (x_i, y_i), query
(x_q, 0), "exclude_query" mask, one prediction per prompt).

Looped models (``model.n_loops`` b > 1; Yang et al. 2023, "Looped transformers are better at
learning learning algorithms", code Leiay/looped_transformer): with a loop curriculum
(``train.loops_start``, ``loops_every``, ``loops_step``: :meth:`TrainSpec.loops_at`) or a window
(``train.loop_window`` T) each step runs b_t loops and the loss averages the error of the readout
after each of the last T' = min(T, b_t) loops (:func:`window_losses`); gradients flow through those
loops only (the stream entering them is detached, Yang et al.'s truncated backpropagation). Without
a window the loss is the final readout's, backpropagated through every loop, as for any model. Differences from their setup: the
loops are this project's pre-norm blocks with a final norm applied at the readout only (their GPT-2
backbone applies its final LayerNorm inside every loop, and adds its position embedding in every
loop: here positions enter with the embedding, so input injection re-adds them); the first loop
reads the embedding itself (theirs: zeros + embedding, the same); the detached loops still run with
autograd on (the graph is built and dropped, not skipped under no_grad: more memory, same
gradients); AdamW with this project's clipping and schedule in place of their Adam at a constant
rate (looped_gpu.toml sets a constant rate and no clipping); one init_std for every matrix (their
GPT-2 init scales the residual output projections by 1 / sqrt(2 n_layers)); the curriculum's loop
count comes from the step index (theirs: a counter, the same numbers).

Glossary: K models, B prompts per model, N points per prompt, d input dimension, P parameters,
b loops, L layers per loop, T' loops in the loss window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from constructions.model import ModelConfig, forward, init, readout, save_weights
from constructions.tokens import (
    example_tokens,
    interleaved_predictions,
    interleaved_tokens,
    interleaved_y0_tokens,
    query_prediction,
)
from experiments.common.devices import pick_device
from experiments.common.seeds import DATA_STREAM, EVAL_STREAM, INIT_STREAM, derive_seed
from experiments.training import tasks
from experiments.training.config import RunConfig
from experiments.training.memory import check_fits
from experiments.training.optim import FlatSpec
from experiments.training.trainer import EarlyStop, Loop, Plateau, Trainer

CPU_CHUNK_BYTES = 6 * 2**20


def make_tokens(fmt: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """x (K, B, N, d), y (K, B, N) -> tokens and the targets the predictions are scored against."""
    if fmt == "interleaved":
        return interleaved_tokens(x, y), y  # targets (K, B, N)
    if fmt == "interleaved_y0":
        return interleaved_y0_tokens(x, y), y
    return example_tokens(x[:, :, :-1], y[:, :, :-1], x[:, :, -1]), y[:, :, -1:]  # targets (K, B, 1)


def predictions(fmt: str, out: Tensor) -> Tensor:
    """Readout (K, B, T, 1) -> predictions shaped like the targets."""
    return query_prediction(out)[..., None] if fmt == "example" else interleaved_predictions(out)


def pointwise_loss(loss: str, pred: Tensor, targets: Tensor) -> Tensor:
    """The loss at every predicted position: (pred - y)^2, or softplus(-y pred) = log(1 + exp(-y pred))
    for ``loss = "logistic"`` (y = +-1; the cross-entropy of sigmoid(pred) against (y + 1) / 2)."""
    if loss == "logistic":
        return torch.nn.functional.softplus(-targets * pred)
    return (pred - targets).pow(2)


def loop_weights(K: int, loops: int, window: int, dtype=torch.float32, device=None) -> Tensor:
    """(K, b): the weight of the readout after each loop in the loss, 1 / T' on the last
    T' = min(window, b) loops (window 0: the final loop alone) and 0 before. Its width is the step's
    loop count, so the count travels with the batch (sliced per model chunk, no host sync)."""
    weights = torch.zeros(K, loops, dtype=dtype, device=device)
    last = min(window or 1, loops)
    weights[:, loops - last:] = 1.0 / last
    return weights


def window_losses(cfg: ModelConfig, w, tokens: Tensor, targets: Tensor, weights: Tensor, window: int,
                  fmt: str, loss: str = "squared") -> Tensor:
    """Per-model loss (K,) of a looped model run for b = weights.shape[1] loops: sum over the last
    T' = min(window, b) loops i of weights[:, i] * the mean loss of the readout after loop i
    (readout(residuals[(i + 1) L]), the prediction the model would give if it stopped there). The
    stream entering loop b - T' is detached, so no gradient reaches the loops before the window.
    ``window`` 0 (no window, a loop curriculum alone): the final readout, backpropagated through
    every loop."""
    loops, L = weights.shape[1], cfg.n_layers
    first = loops - min(window or 1, loops)
    hooks = {f"blocks.{first * L - 1}.hook_resid_post": Tensor.detach} if first and window else None
    run = forward(cfg, w, tokens, residuals=True, loops=loops, hooks=hooks)
    h = torch.stack([run.residuals[(i + 1) * L] for i in range(first, loops)], dim=1)  # (K, T', B, T, D)
    K, n, B = h.shape[:3]
    out = readout(cfg, w, h.flatten(1, 2))  # (K, T' B, T, 1)
    pred = predictions(fmt, out).reshape(K, n, B, -1)  # (K, T', B, N')
    per_loop = pointwise_loss(loss, pred, targets[:, None]).flatten(2).mean(2)  # (K, T')
    return (per_loop * weights[:, first:]).sum(1)


def auto_model_chunk(cfg: ModelConfig, device: torch.device, batch_size: int, n_tokens: int, dtype) -> int | None:
    """On the CPU, bound each activation to ~CPU_CHUNK_BYTES: a forward/backward whose temporaries
    outgrow the caches turns memory-bound (and huge ones are mapped and unmapped by the allocator on
    every step). Measured with `ttb bench train` on a 2-core machine (2 MiB L2 per core, 32 MiB L3):
    6 MiB per activation was best for the gpt2_small shape (4 models per chunk: 1.45x the plain loop,
    against 1.23x unchunked), and keeps the small shapes unchunked. Accelerators get no chunking
    (one launch per kernel for all K models)."""
    if device.type != "cpu":
        return None
    widest = max(cfg.n_heads * n_tokens, cfg.d_mlp, cfg.d_model) * batch_size * n_tokens
    return max(1, CPU_CHUNK_BYTES // (widest * torch.finfo(dtype).bits // 8))


class RegressionProblem:
    """K in-context regression runs of one batch group (see the module docstring)."""

    def __init__(self, runs: Sequence[RunConfig], device=None):
        keys = {r.group_key() for r in runs}
        if len(keys) != 1:
            raise ValueError(f"runs must share one group key (shape, steps, ...) to train together, got {len(keys)}")
        self.runs = list(runs)
        self.device = pick_device(device)
        check_fits(self.runs, self.device)  # before anything is allocated
        first = self.runs[0]
        self.cfg, self.task, self.tr = first.model_config(), first.task, first.train
        self.dtype = self.tr.torch_dtype
        self.spec = FlatSpec.of(self.cfg)
        self.task_groups = task_groups(self.runs)
        self.windowed = self.tr.loops_start > 0 or self.tr.loop_window > 0  # looped training (module docstring)

    # -- what the trainer asks ------------------------------------------------------------------

    def init_theta(self) -> Tensor:
        gens = [torch.Generator().manual_seed(derive_seed(r.train.seed, INIT_STREAM)) for r in self.runs]
        weights = [init(self.cfg, [g], std=r.model.init_std, dtype=self.dtype, device=self.device)
                   for g, r in zip(gens, self.runs)]
        if self.runs[0].model.io == "identity":
            weights = [identity_io(w) for w in weights]
        return torch.cat([self.spec.flatten(w) for w in weights])

    def hypers(self) -> list[dict]:
        return [r.train.hyper() for r in self.runs]

    def decay_mask(self) -> Tensor:
        return self.spec.decay_mask(self.dtype, self.device)

    def trainable_mask(self) -> Tensor | None:
        """With ``model.io = "identity"`` the embedding and readout are fixed: 0 there."""
        if self.runs[0].model.io != "identity":
            return None
        return self.spec.key_mask(IO_KEYS, self.dtype, self.device)

    def plateaus(self) -> list[Plateau | None]:
        return [None] * len(self.runs)

    def early_stops(self) -> list[EarlyStop]:
        return [EarlyStop(r.train.early_stop_patience, r.train.early_stop_min_delta, r.train.early_stop_target)
                for r in self.runs]

    def generators(self, stream: int = DATA_STREAM) -> list[torch.Generator]:
        device = torch.device("cpu") if self.tr.data_on == "cpu" else self.device
        return [torch.Generator(device=device).manual_seed(derive_seed(r.train.data_seed_resolved, stream))
                for r in self.runs]

    def batch(self, gens: list[torch.Generator], step: int) -> tuple[Tensor, ...]:
        """(tokens, targets), and with looped training the step's :func:`loop_weights`."""
        tokens, targets = self.prompts(gens, self.tr.batch_size, *self.curriculum(step))
        if not self.windowed:
            return tokens, targets
        loops = self.tr.loops_at(step, self.cfg.n_loops)
        return tokens, targets, loop_weights(len(self.runs), loops, self.tr.loop_window, self.dtype, self.device)

    def losses(self, theta: Tensor, tokens: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
        if weights is not None:
            return window_losses(self.cfg, self.spec.unflatten(theta), tokens, targets, weights, self.tr.loop_window,
                                 self.task.format, self.task.loss)
        out = forward(self.cfg, self.spec.unflatten(theta), tokens).out
        return pointwise_loss(self.task.loss, predictions(self.task.format, out), targets).flatten(1).mean(1)

    def log_fields(self, step: int, loss: float) -> dict:
        n_points, n_dims = self.curriculum(step)
        loops = {"n_loops": self.tr.loops_at(step, self.cfg.n_loops)} if self.windowed else {}
        return {"nmse": loss / n_dims, "n_points": n_points, "n_dims": n_dims, **loops}

    def evaluate(self, theta: Tensor) -> list[dict]:
        """Fresh prompts at full size (own seed stream): squared error per position, per model; for
        task.kind = "logistic" also ``eval_accuracy``, the fraction of positions with sign(f) = y."""
        tokens, targets = self.prompts(self.generators(EVAL_STREAM), self.task.eval_batch_size, self.task.n_points,
                                       self.task.d)
        pred = predictions(self.task.format, forward(self.cfg, self.spec.unflatten(theta), tokens).out)
        curve = (pred - targets).pow(2).mean(1).double().cpu()  # (K, N')
        first, d = (self.task.n_points - 1 if self.task.format == "example" else 0), self.task.d
        rows = [{"eval_mse": float(c.mean()), "eval_nmse": float(c.mean()) / d,
                 "curve": [{"n_examples": first + i, "nmse": float(e) / d} for i, e in enumerate(c)]}
                for c in curve]
        correct = (torch.where(pred >= 0, 1.0, -1.0) == targets).double().flatten(1).mean(1).cpu()
        for row, run, acc in zip(rows, self.runs, correct):
            if run.task.kind == "logistic":
                row["eval_accuracy"] = float(acc)
        return rows

    def save_weights(self, path, theta_k: Tensor) -> None:
        save_weights(path, self.cfg, self.spec.unflatten(theta_k))

    # -- data ----------------------------------------------------------------------------------

    def curriculum(self, step: int) -> tuple[int, int]:
        """(n_points, active dimensions) in force at ``step``."""
        cur = self.tr.curriculum
        return (self.task.n_points, self.task.d) if cur is None else cur.at(step, self.task.d, self.task.n_points)

    def prompts(self, gens: list[torch.Generator], batch_size: int, n_points: int, n_dims: int):
        """Tokens and targets for every model; each task group is sampled with its own generators."""
        xs, ys, order = [], [], []
        for fields_, idx in self.task_groups:
            task = tasks.task_of(fields_, n_points, n_dims)
            b = tasks.sample_parallel(task, [gens[i] for i in idx], batch_size, device=self.device, dtype=self.dtype,
                                      workers=torch.get_num_threads())
            xs.append(b.x)
            ys.append(b.y)
            order += idx
        x, y = torch.cat(xs), torch.cat(ys)
        if order != list(range(len(self.runs))):
            inverse = torch.as_tensor(np.argsort(order), device=self.device)
            x, y = x[inverse], y[inverse]
        return make_tokens(self.task.format, x, y)


IO_KEYS = ("W_E", "b_E", "W_U", "b_U")


def identity_io(w):
    """The embedding copies the tokens into the stream (W_E = I, b_E = 0) and the readout is minus
    the last slot (W_U = -e_y, b_U = 0), as a linear self-attention layer without input or output
    projection reads its prediction (von Oswald et al.)."""
    w.W_E.zero_()
    w.W_E[0] = torch.eye(*w.W_E.shape[1:], dtype=w.W_E.dtype, device=w.W_E.device)
    w.W_U.zero_()
    w.W_U[0, -1, 0] = -1.0
    for bias in (w.b_E, w.b_U):
        if bias is not None:
            bias.zero_()
    return w


def task_groups(runs: Sequence[RunConfig]) -> list[tuple[dict, list[int]]]:
    """Models with the same data distribution, sampled in one call: [(task fields, model indices)]."""
    groups: dict[tuple, list[int]] = {}
    for k, r in enumerate(runs):
        groups.setdefault(tuple(tasks.data_fields(r.task).items()), []).append(k)
    return [(dict(key), idx) for key, idx in groups.items()]


def make_trainer(runs: Sequence[RunConfig], device=None, compile: bool = False,
                 model_chunk: int | None = None, autocast: str | None = None) -> Trainer:
    """The trainer of one batch group of regression runs."""
    problem = RegressionProblem(runs, device)
    tr = problem.tr
    chunk = model_chunk or auto_model_chunk(problem.cfg, problem.device, tr.batch_size, problem.task.n_tokens,
                                            problem.dtype)
    return Trainer(problem, Loop(tr.steps, tr.log_every, tr.checkpoint_every), compile=compile, model_chunk=chunk,
                   autocast=autocast)


def train_runs(runs: Sequence[RunConfig], device=None, compile: bool = False):
    """Train ``runs`` (one batch group) from scratch in memory: (trainer, final state)."""
    trainer = make_trainer(runs, device=device, compile=compile)
    return trainer, trainer.fit(trainer.initial_state())
