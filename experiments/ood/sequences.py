"""Algorithmic sequence tasks as a training family: positional versus standard transformers.

Two model kinds of the same width, heads and depth, both through ``constructions.model.forward``:

    positional   attention scores from one-hot positions only (``qk_source="positions"``); the
                 tokens are the values alone (d_in = 1), so the pattern is the same for every input
    standard     attention scores from the residual stream (``qk_source="residual"``); the tokens
                 are the values with the one-hot position concatenated (d_in = 1 + T)

With ``scratch`` a token holding 0 is put in front (position 0), as the scan constructions do
(:mod:`constructions.positional.scan`): a target an attention head can point at when there is no
value to combine with. The targets are the task's output at every value position (or, for the
scalar tasks median / max_subarray, at the last token); a model's loss is the mean squared error
over them. A :class:`SeqRun` is one model (one seed); the seeds of one (task, n, model kind, shape)
train as one batch of THE trainer (:mod:`experiments.training.trainer`) through the sweep engine.

Glossary: K models, B sequences per model, n values, T = n (+1 with scratch) tokens, P parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from constructions.model import ModelConfig, forward, init, save_weights
from experiments.common.devices import DTYPES, pick_device
from experiments.common.ids import RunSpec
from experiments.common.seeds import DATA_STREAM, EVAL_STREAM, INIT_STREAM, derive_seed
from experiments.sweeps.spec import Family
from experiments.training.optim import HYPER_DEFAULTS, FlatSpec, hyper_rows
from experiments.training.trainer import Loop, SeededProblem, Trainer
from synthetic.algorithmic import AlgorithmicTask, ValueRange, sample

MODEL_KINDS = ("positional", "standard")
HYPER_FIELDS = tuple(k for k in HYPER_DEFAULTS if k != "total")


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


def auto_layers(n: int) -> int:
    """max(1, ceil(log2 n)): the depth of the Hillis-Steele scan construction."""
    return max(1, math.ceil(math.log2(n)))


# ----------------------------------------------------------------------------------------------
# Math: tokens, predictions


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


# ----------------------------------------------------------------------------------------------
# One run: one model


@dataclass(frozen=True)
class SeqRun(RunSpec):
    """One sequence model: what it learns (task, n, c_train), its kind and shape, its seed and
    training. ``hyper`` holds (name, value) pairs of optimiser settings (keys of HYPER_DEFAULTS)."""

    task: str
    n: int
    c_train: float
    model_kind: str
    shape: SeqShape
    seed: int
    steps: int
    batch_size: int
    log_every: int = 50
    checkpoint_every: int = 0
    hyper: tuple[tuple[str, float], ...] = ()
    dtype: str = "float32"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hyper"] = dict(self.hyper)
        return {"kind": "sequence", **out}

    @property
    def label(self) -> str:
        return f"{self.model_kind} {self.task} n={self.n} seed={self.seed}"

    def shape_text(self) -> str:
        s = self.shape
        return (f"{self.model_kind} {self.task} n={self.n} L={s.n_layers} D={s.width} H={s.n_heads} "
                f"B={self.batch_size} steps={self.steps}")

    def algorithmic_task(self) -> AlgorithmicTask:
        return AlgorithmicTask(self.task, self.n, self.c_train)

    def model_config(self) -> ModelConfig:
        return model_config(self.model_kind, self.n, self.shape)


class SequenceProblem(SeededProblem):
    """K sequence runs of one batch group, for THE trainer."""

    def __init__(self, runs: Sequence[SeqRun], device=None):
        if len({r.group_key() for r in runs}) != 1:
            raise ValueError("sequence runs must share everything but seed and optimiser settings to train together")
        self.runs, first = list(runs), runs[0]
        self.device, self.dtype = pick_device(device), DTYPES[first.dtype]
        self.cfg, self.task, self.kind, self.shape = first.model_config(), first.algorithmic_task(), first.model_kind, \
            first.shape
        self.spec = FlatSpec.of(self.cfg)

    def init_theta(self) -> Tensor:
        return torch.cat([self.spec.flatten(init(self.cfg, [g], std=self.shape.init_std, dtype=self.dtype,
                                                 device=self.device)) for g in self.seeded(INIT_STREAM)])

    def hypers(self) -> list[dict]:
        return hyper_rows([dict(r.hyper) for r in self.runs], self.runs[0].steps)

    def generators(self, stream: int = DATA_STREAM) -> list[torch.Generator]:
        return self.seeded(stream, self.device)

    def batch(self, gens: list[torch.Generator], step: int) -> tuple[Tensor, Tensor]:
        b = sample(self.task, gens, self.runs[0].batch_size, device=self.device, dtype=self.dtype)
        return make_tokens(self.kind, b.x, self.shape.scratch), b.y

    def losses(self, theta: Tensor, tokens: Tensor, targets: Tensor) -> Tensor:
        out = forward(self.cfg, self.spec.unflatten(theta), tokens).out
        return (predictions(out, self.task.n_out) - targets).pow(2).flatten(1).mean(1)

    def evaluate(self, theta: Tensor) -> list[dict]:
        """In distribution (the training range): mse and relative squared error per model."""
        ev = evaluate(self.cfg, self.task, self.kind, self.shape.scratch, theta, [r.seed for r in self.runs],
                      self.task.train_range, 1024)
        return [{"eval_mse": float(m), "eval_error": float(e)} for m, e in zip(ev["mse"], ev["error"])]

    def save_weights(self, path, theta_k: Tensor) -> None:
        save_weights(path, self.cfg, self.spec.unflatten(theta_k))


def make_trainer(runs: Sequence[SeqRun], device=None, compile: bool = False, autocast: str | None = None) -> Trainer:
    first = runs[0]
    return Trainer(SequenceProblem(runs, device), Loop(first.steps, first.log_every, first.checkpoint_every),
                   compile=compile, autocast=autocast)


SEQUENCE = Family("sequence", make_trainer)


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(cfg: ModelConfig, task: AlgorithmicTask, kind: str, scratch: bool, theta: Tensor, seeds: Sequence[int],
             values: ValueRange, batch_size: int) -> dict[str, Tensor]:
    """Per model (K,): ``mse`` on fresh sequences with values in ``values`` (each model's own
    evaluation stream, restarted for every range, so every range sees the same sequences rescaled)
    and ``error`` = mse / mean(target^2), the relative squared error (scale-free, so ranges of
    different c compare: 1 is as bad as predicting 0). ``theta`` (K, P) flat weights."""
    gens = [torch.Generator(device=theta.device).manual_seed(derive_seed(s, EVAL_STREAM)) for s in seeds]
    batch = sample(task, gens, batch_size, values=values, device=theta.device, dtype=theta.dtype)
    out = forward(cfg, FlatSpec.of(cfg).unflatten(theta), make_tokens(kind, batch.x, scratch)).out
    mse = (predictions(out, task.n_out) - batch.y).pow(2).flatten(1).mean(1)
    scale = batch.y.pow(2).flatten(1).mean(1).clamp(min=torch.finfo(theta.dtype).tiny)
    return {"mse": mse.double().cpu(), "error": (mse / scale).double().cpu()}


# ----------------------------------------------------------------------------------------------
# In memory, without a store (tests, notebooks)


@dataclass
class SeqResult:
    """K trained models: flat weights, per-model final training loss, whether each stayed finite,
    and what is needed to run them."""

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


def train(kind: str, task: AlgorithmicTask, shape: SeqShape, seeds: Sequence[int], hypers: Sequence[dict], *,
          steps: int, batch_size: int, dtype=torch.float32, device="cpu", log_every: int = 50) -> SeqResult:
    """Train K = len(seeds) models of ``kind`` on ``task`` together, in memory; ``hypers[k]`` are
    model k's optimiser settings (keys of HYPER_DEFAULTS; missing ones take the defaults)."""
    if len(hypers) != len(seeds):
        raise ValueError(f"train: need one hyperparameter dict per seed, got {len(hypers)} for {len(seeds)} seeds")
    name = next(k for k, v in DTYPES.items() if v == dtype)
    runs = [SeqRun(task.kind, task.n, task.c_train, kind, shape, s, steps, batch_size, log_every,
                   hyper=tuple(sorted(h.items())), dtype=name) for s, h in zip(seeds, hypers)]
    trainer = make_trainer(runs, device=device)
    state = trainer.fit(trainer.initial_state())
    last = [m[-1]["loss"] if m else float("nan") for m in state.metrics]
    return SeqResult(kind, task, shape, trainer.problem.cfg, trainer.spec, state.theta.detach(), tuple(seeds),
                     torch.tensor(last, dtype=torch.float64), state.alive.cpu())
