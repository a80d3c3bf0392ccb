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

Training data: fresh sequences every step (the default), or, with ``train_size`` N > 0, a fixed set
of N sequences drawn once from the model's data stream and visited epoch by epoch in a fresh random
order, without replacement (:class:`FixedSet`: de Luca et al.'s DataLoader with shuffle=True).
``sub_intervals`` puts every sequence on its own random sub-interval of the range
(:class:`synthetic.algorithmic.SubIntervals`); ``plateau`` cuts a model's learning rate when its
logged loss stalls (:class:`experiments.training.trainer.Plateau`; with log_every = N / batch_size a
log is an epoch, as torch's ReduceLROnPlateau stepped once per epoch). Each of these is left out of
the run's resolved config at its default, so the run ids of configs that do not use them stay as
they were.

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
from experiments.ood.init import torch_init
from experiments.sweeps.spec import Family
from experiments.training.optim import HYPER_DEFAULTS, FlatSpec, hyper_rows
from experiments.training.trainer import Loop, Plateau, SeededProblem, Trainer
from synthetic.algorithmic import AlgorithmicTask, SubIntervals, ValueRange, sample

MODEL_KINDS = ("positional", "standard")
HYPER_FIELDS = tuple(k for k in HYPER_DEFAULTS if k != "total")
INITS = ("normal", "torch")
SHUFFLE_STREAM = 4  # the order in which a fixed training set is visited, epoch by epoch


@dataclass(frozen=True)
class SeqShape:
    """The shape shared by both model kinds: width, heads, depth, MLP width, mask, scratch token, and
    the init: ``normal`` (GPT-2 style, N(0, init_std) matrices, zero biases) or ``torch`` (PyTorch's
    default, as de Luca et al.'s model has it: :func:`experiments.ood.init.torch_init`)."""

    width: int = 64
    n_heads: int = 2
    n_layers: int = 3
    d_mlp: int = 128
    mask: str = "full"
    mlp: str = "relu"
    mlp_input: str = "residual"
    scratch: bool = True
    init_std: float = 0.02
    init: str = "normal"

    def __post_init__(self):
        if self.width % self.n_heads:
            raise ValueError(f"model.width={self.width} must be a multiple of model.n_heads={self.n_heads}")
        if self.init not in INITS:
            raise ValueError(f"model.init must be one of {INITS}, got {self.init!r}")


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


def log2_plus_one_layers(n: int) -> int:
    """floor(log2 n) + 1: de Luca et al.'s depth (``np.log2(n).astype(int) + 1``; 4 for n = 8)."""
    return int(math.floor(math.log2(n))) + 1


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


# Fields left out of a run's resolved config (and so of its id) at these defaults.
OPTIONAL_RUN_FIELDS = {"sub_intervals": False, "train_size": 0, "plateau": None}
OPTIONAL_SHAPE_FIELDS = {"init": "normal"}


@dataclass(frozen=True)
class SeqRun(RunSpec):
    """One sequence model: what it learns (task, n, c_train, sub_intervals), its kind and shape, its
    seed and training. ``hyper`` holds (name, value) pairs of optimiser settings (keys of
    HYPER_DEFAULTS); ``train_size`` > 0 trains on a fixed set of that many sequences (a multiple of
    ``batch_size``: every epoch is whole batches); ``plateau`` is this model's reduce-on-plateau."""

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
    sub_intervals: bool = False
    train_size: int = 0
    plateau: Plateau | None = None

    PER_MODEL = ("seed", "hyper", "plateau")  # the trainer keeps a learning-rate scale per model

    def __post_init__(self):
        if self.train_size and (self.train_size < self.batch_size or self.train_size % self.batch_size):
            raise ValueError(f"train.train_size ({self.train_size}) must be a multiple of train.batch_size "
                             f"({self.batch_size}): an epoch is whole batches")

    def to_dict(self) -> dict:
        """The resolved config (hashed into the run id); optional fields at their defaults left out."""
        out = asdict(self)
        out["hyper"] = dict(self.hyper)
        out["plateau"] = None if self.plateau is None else self.plateau._asdict()
        out["shape"] = {k: v for k, v in out["shape"].items() if OPTIONAL_SHAPE_FIELDS.get(k, object()) != v}
        out = {k: v for k, v in out.items() if k not in OPTIONAL_RUN_FIELDS or OPTIONAL_RUN_FIELDS[k] != v}
        return {"kind": "sequence", **out}

    @property
    def label(self) -> str:
        return f"{self.model_kind} {self.task} n={self.n} seed={self.seed}"

    def shape_text(self) -> str:
        s = self.shape
        return (f"{self.model_kind} {self.task} n={self.n} L={s.n_layers} D={s.width} H={s.n_heads} "
                f"B={self.batch_size} steps={self.steps}")

    def algorithmic_task(self) -> AlgorithmicTask:
        return AlgorithmicTask(self.task, self.n, self.c_train, self.sub_intervals)

    def model_config(self) -> ModelConfig:
        return model_config(self.model_kind, self.n, self.shape)


class FixedSet:
    """N sequences per model, drawn once from each model's data stream, visited as de Luca et al.'s
    ``DataLoader(shuffle=True)`` visits theirs: epoch e is a fresh random order of the N sequences
    (no replacement), cut into N / B batches.

    Epoch e's order for the model of seed s is ``randperm(N)`` from a generator seeded with
    derive_seed(derive_seed(s, SHUFFLE_STREAM), e) alone: a pure function of (seed, step), so model k
    visits the same batches alone or in a batch, and a run resumed at any step goes on exactly."""

    def __init__(self, task: AlgorithmicTask, seeds: Sequence[int], size: int, batch_size: int, device, dtype):
        gens = [torch.Generator(device=device).manual_seed(derive_seed(s, DATA_STREAM)) for s in seeds]
        data = sample(task, gens, size, device=device, dtype=dtype)
        self.x, self.y = data.x, data.y  # (K, N, n), (K, N, n_out)
        self.seeds, self.size, self.batch_size, self.device = list(seeds), size, batch_size, device
        self._epoch, self._order = -1, None

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.batch_size

    def order(self, epoch: int) -> Tensor:
        """(K, N) indices: every model's visiting order in ``epoch`` (kept until the next epoch)."""
        if epoch != self._epoch:
            seeds = [derive_seed(derive_seed(s, SHUFFLE_STREAM), epoch) for s in self.seeds]
            self._order = torch.stack([torch.randperm(self.size, device=self.device,
                                                      generator=torch.Generator(device=self.device).manual_seed(s))
                                       for s in seeds])
            self._epoch = epoch
        return self._order

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Step ``step``'s (x (K, B, n), y (K, B, n_out)): batch j of epoch e, step = e N / B + j."""
        epoch, j = divmod(step, self.steps_per_epoch)
        idx = self.order(epoch)[:, j * self.batch_size:(j + 1) * self.batch_size]
        rows = torch.arange(len(self.seeds), device=self.device)[:, None]
        return self.x[rows, idx], self.y[rows, idx]


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
        self._fixed: FixedSet | None = None  # drawn at the first batch

    def init_theta(self) -> Tensor:
        gens = self.seeded(INIT_STREAM)
        if self.shape.init == "torch":
            return torch_init(self.cfg, gens, dtype=self.dtype, device=self.device)
        return torch.cat([self.spec.flatten(init(self.cfg, [g], std=self.shape.init_std, dtype=self.dtype,
                                                 device=self.device)) for g in gens])

    def hypers(self) -> list[dict]:
        return hyper_rows([dict(r.hyper) for r in self.runs], self.runs[0].steps)

    def plateaus(self) -> list[Plateau | None]:
        return [r.plateau for r in self.runs]

    def generators(self, stream: int = DATA_STREAM) -> list[torch.Generator]:
        return self.seeded(stream, self.device)

    def fixed_set(self) -> FixedSet:
        """The runs' fixed training sets (``train_size`` > 0), drawn once."""
        if self._fixed is None:
            first = self.runs[0]
            self._fixed = FixedSet(self.task, [r.seed for r in self.runs], first.train_size, first.batch_size,
                                   self.device, self.dtype)
        return self._fixed

    def batch(self, gens: list[torch.Generator], step: int) -> tuple[Tensor, Tensor]:
        """This step's (tokens, targets): from the fixed sets, or fresh from the data generators."""
        if self.runs[0].train_size:
            x, y = self.fixed_set().batch(step)
        else:
            b = sample(self.task, gens, self.runs[0].batch_size, device=self.device, dtype=self.dtype)
            x, y = b.x, b.y
        return make_tokens(self.kind, x, self.shape.scratch), y

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
             values: ValueRange | SubIntervals, batch_size: int) -> dict[str, Tensor]:
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
          steps: int, batch_size: int, dtype=torch.float32, device="cpu", log_every: int = 50, train_size: int = 0,
          plateaus: Sequence[Plateau | None] | None = None) -> SeqResult:
    """Train K = len(seeds) models of ``kind`` on ``task`` together, in memory; ``hypers[k]`` are
    model k's optimiser settings (keys of HYPER_DEFAULTS; missing ones take the defaults) and
    ``plateaus[k]`` its reduce-on-plateau (default: none); ``train_size`` > 0: a fixed training set."""
    if len(hypers) != len(seeds):
        raise ValueError(f"train: need one hyperparameter dict per seed, got {len(hypers)} for {len(seeds)} seeds")
    name = next(k for k, v in DTYPES.items() if v == dtype)
    plateaus = [None] * len(seeds) if plateaus is None else plateaus
    runs = [SeqRun(task.kind, task.n, task.c_train, kind, shape, s, steps, batch_size, log_every,
                   hyper=tuple(sorted(h.items())), dtype=name, sub_intervals=task.sub_intervals,
                   train_size=train_size, plateau=p) for s, h, p in zip(seeds, hypers, plateaus)]
    trainer = make_trainer(runs, device=device)
    state = trainer.fit(trainer.initial_state())
    last = [m[-1]["loss"] if m else float("nan") for m in state.metrics]
    return SeqResult(kind, task, shape, trainer.problem.cfg, trainer.spec, state.theta.detach(), tuple(seeds),
                     torch.tensor(last, dtype=torch.float64), state.alive.cpu())
