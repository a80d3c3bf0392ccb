"""Batched trainer for algorithmic sequence tasks: K models of one shape learn one task in one step.

Two model kinds of the same width, heads and depth, both through ``constructions.model.forward``:

    positional   attention scores from one-hot positions only (``qk_source="positions"``); the
                 tokens are the values alone (d_in = 1), so the pattern is the same for every input
    standard     attention scores from the residual stream (``qk_source="residual"``); the tokens
                 are the values with the one-hot position concatenated (d_in = 1 + T)

With ``scratch`` a token holding 0 is put in front (position 0), as the scan constructions do
(:mod:`constructions.positional.scan`): a target an attention head can point at when there is no
value to combine with. The targets are the task's output at every value position (or, for the
scalar tasks median / max_subarray, at the last token); the loss of a model is the mean squared error
over them, and the batch loss is the sum of the per-model means, so model k's gradient is the one it
would get alone. Everything per model: init generator, data generator, learning rate and schedule,
betas, weight decay, clipping (``experiments.training.optim``); a model whose loss turns non-finite is frozen.
No host synchronisation in the step loop: per-model losses accumulate on the device.

Glossary: K models, B sequences per model, n values, T = n (+1 with scratch) tokens, P parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from constructions.model import ModelConfig, forward, init
from experiments.common.seeds import derive_seed
from experiments.training.fit import fit
from experiments.training.optim import HYPER_DEFAULTS, FlatSpec, hyper_rows  # noqa: F401  (HYPER_DEFAULTS: ood reads it here)
from synthetic.algorithmic import AlgorithmicTask, ValueRange, sample

MODEL_KINDS = ("positional", "standard")
INIT_STREAM, DATA_STREAM, EVAL_STREAM = 0, 1, 2


@dataclass(frozen=True)
class SeqShape:
    """The shape shared by both model kinds: width, heads, depth, MLP width, mask, scratch token."""

    width: int = 64
    n_heads: int = 2
    n_layers: int = 3
    d_mlp: int = 128
    mask: str = "full"
    mlp: str = "relu"
    mlp_input: str = "residual"
    scratch: bool = True
    init_std: float = 0.02

    def __post_init__(self):
        if self.width % self.n_heads:
            raise ValueError(f"model.width={self.width} must be a multiple of model.n_heads={self.n_heads}")


def n_tokens(n: int, shape: SeqShape) -> int:
    return n + int(shape.scratch)


def model_config(kind: str, n: int, shape: SeqShape, d_out: int = 1) -> ModelConfig:
    """The ModelConfig of ``kind`` for sequences of n values (same width, heads, depth for both)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
    T = n_tokens(n, shape)
    positional = kind == "positional"
    return ModelConfig(
        d_model=shape.width, n_layers=shape.n_layers, n_heads=shape.n_heads, d_head=shape.width // shape.n_heads,
        d_in=1 if positional else 1 + T, d_out=d_out, d_mlp=shape.d_mlp, attention="softmax", mask=shape.mask,
        mlp=shape.mlp, mlp_input=shape.mlp_input, qk_source="positions" if positional else "residual",
        n_qk_positions=T if positional else 0,
    )


# ----------------------------------------------------------------------------------------------
# Math: tokens, predictions, one step


def make_tokens(kind: str, x: Tensor, scratch: bool) -> Tensor:
    """Values x (K, B, n) -> tokens (K, B, T, 1) (positional) or (K, B, T, 1 + T) (standard)."""
    if scratch:
        x = torch.cat([torch.zeros_like(x[..., :1]), x], dim=-1)
    tokens = x[..., None]
    if kind == "standard":
        K, B, T = x.shape
        eye = torch.eye(T, dtype=x.dtype, device=x.device).expand(K, B, T, T)
        tokens = torch.cat([tokens, eye], dim=-1)
    return tokens


def predictions(out: Tensor, n_out: int) -> Tensor:
    """Readout (K, B, T, 1) -> (K, B, n_out): the last n_out tokens (the value positions, or the
    last token for a scalar task)."""
    return out[:, :, -n_out:, 0]


def make_loss(cfg: ModelConfig, spec: FlatSpec, n_out: int):
    """Per-model mean squared error (K,) of flat weights theta on (tokens, targets)."""

    def per_model(theta, tokens, targets):
        out = forward(cfg, spec.unflatten(theta), tokens).out
        return (predictions(out, n_out) - targets).pow(2).flatten(1).mean(1)

    return per_model


# ----------------------------------------------------------------------------------------------
# The trainer


@dataclass
class SeqResult:
    """K trained models: flat weights, per-model final training loss (mean over the last
    ``log_every`` steps), whether each stayed finite, and what is needed to run them."""

    kind: str
    task: AlgorithmicTask
    shape: SeqShape
    cfg: ModelConfig
    spec: FlatSpec
    theta: Tensor  # (K, P)
    seeds: tuple[int, ...]
    final_loss: Tensor  # (K,) on the host
    alive: Tensor  # (K,) bool on the host

    def weights(self):
        return self.spec.unflatten(self.theta)


def init_theta(cfg: ModelConfig, spec: FlatSpec, seeds: Sequence[int], std: float, dtype, device) -> Tensor:
    """Model k drawn from its own generator (seeded by seeds[k]) alone: the same in a batch or alone."""
    gens = [torch.Generator().manual_seed(derive_seed(s, INIT_STREAM)) for s in seeds]
    return torch.cat([spec.flatten(init(cfg, [g], std=std, dtype=dtype, device=device)) for g in gens])


def generators(seeds: Sequence[int], stream: int, device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(derive_seed(s, stream)) for s in seeds]


def train(kind: str, task: AlgorithmicTask, shape: SeqShape, seeds: Sequence[int], hypers: Sequence[dict], *,
          steps: int, batch_size: int, dtype=torch.float32, device="cpu", log_every: int = 50) -> SeqResult:
    """Train K = len(seeds) models of ``kind`` on ``task`` together; ``hypers[k]`` are model k's
    hyperparameters (keys of HYPER_DEFAULTS; missing ones take the defaults)."""
    if len(hypers) != len(seeds):
        raise ValueError(f"train: need one hyperparameter dict per seed, got {len(hypers)} for {len(seeds)} seeds")
    device = torch.device(device)
    cfg = model_config(kind, task.n, shape)
    spec = FlatSpec.of(cfg)
    theta = init_theta(cfg, spec, seeds, shape.init_std, dtype, device)
    gens = generators(seeds, DATA_STREAM, device)

    def batches(_step: int) -> tuple:
        batch = sample(task, gens, batch_size, device=device, dtype=dtype)
        return make_tokens(kind, batch.x, shape.scratch), batch.y

    res = fit(make_loss(cfg, spec, task.n_out), theta, hypers, steps=steps, batches=batches,
              decay=spec.decay_mask(dtype, device), log_every=log_every)
    return SeqResult(kind, task, shape, cfg, spec, res.theta, tuple(seeds), res.final_loss, res.alive)


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(result: SeqResult, values: ValueRange, batch_size: int) -> dict[str, Tensor]:
    """Per model (K,): ``mse`` on fresh sequences with values in ``values`` (each model's own
    evaluation stream, restarted for every range, so every range sees the same sequences rescaled)
    and ``error`` = mse / mean(target^2), the relative squared error (scale-free, so ranges of
    different c compare: 1 is as bad as predicting 0)."""
    theta = result.theta
    gens = generators(result.seeds, EVAL_STREAM, theta.device)
    batch = sample(result.task, gens, batch_size, values=values, device=theta.device, dtype=theta.dtype)
    out = forward(result.cfg, result.weights(), make_tokens(result.kind, batch.x, result.shape.scratch)).out
    mse = (predictions(out, result.task.n_out) - batch.y).pow(2).flatten(1).mean(1)
    scale = batch.y.pow(2).flatten(1).mean(1).clamp(min=torch.finfo(theta.dtype).tiny)
    return {"mse": mse.double().cpu(), "error": (mse / scale).double().cpu()}


def auto_layers(n: int) -> int:
    """max(1, ceil(log2 n)): the depth of the Hillis-Steele scan construction."""
    return max(1, math.ceil(math.log2(n)))
