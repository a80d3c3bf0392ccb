"""Run configuration: the task, model and training sections of a sweep file, validated.

A run is fully described by a ``RunConfig`` (three frozen sections). Its resolved form (every
default filled in) is what gets hashed into the run id and written to the run directory. Every
check raises ``ConfigError`` naming the field (``train.lr``) and the allowed values, so a bad sweep
file fails before anything trains.

Which fields must agree for runs to train in one batch (``RunConfig.group_key``): everything that
fixes tensor shapes or the loop (model shape, d, n_points, format, batch size, steps, curriculum,
loop curriculum and window, dtype, logging and checkpoint cadence, evaluation size, the training loss
``task.loss``). Everything else is per model: seeds, noise
and input distribution, learning rate and schedule, betas, eps, weight decay, clipping, init scale
and early stopping.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields

import torch

from constructions.model import ATTENTION_KINDS, MLP_KINDS, NORMS, ModelConfig
from experiments.common.devices import DTYPES
from experiments.common.ids import run_id
from experiments.common.validate import ConfigError, boolean, choice, integer, real, section
from experiments.training.optim import SCHEDULES
from synthetic.regression import X_DISTS

FORMATS = ("interleaved", "example", "interleaved_y0")
TASK_KINDS = ("isotropic", "anisotropic", "noise_mixture", "sparse", "pool", "representation", "tree", "relu2nn",
              "quadratic", "logistic", "mixture")
# Fields that only some task kinds read: kind -> its fields (each defaults to "unused", and a field
# given for another kind is an error). Defaults are left out of the hashed config, so run ids of
# isotropic / anisotropic runs are the ones they had before these kinds existed.
KIND_FIELDS = {"noise_mixture": ("noise_levels", "noise_probs"), "sparse": ("k",),
               "pool": ("pool_size", "pool_seed"), "representation": ("phi_depth", "phi_width", "phi_seed"),
               "tree": ("tree_depth",), "relu2nn": ("relu_width", "relu_scale"), "quadratic": ("quadratic_form",),
               "logistic": ("labels", "logistic_scale", "loss"), "mixture": ("mixture", "mixture_probs")}
# The families a task.mixture may list; a mixture also reads its components' fields (task.k for
# "sparse", task.tree_depth for "tree", ...; not task.loss), and task.d, task.noise_std, task.w_std.
MIXTURE_FAMILIES = ("isotropic", "sparse", "tree", "relu2nn", "quadratic", "logistic")
# Kinds whose inputs follow the dimension curriculum (trailing coordinates of x zeroed, as Garg et al.).
CURRICULUM_KINDS = ("isotropic", "anisotropic", "tree", "relu2nn", "quadratic", "logistic", "mixture")
LOSSES = ("squared", "logistic")  # task.loss: squared error, or log(1 + exp(-y f)) on +-1 labels
QUADRATIC_FORMS = ("squares", "inner")
LABEL_KINDS = ("sign", "bernoulli")
IO_KINDS = ("learned", "identity")
OPTIONAL_FIELDS = ("x_dist", "x_range")  # left out of the resolved config at their defaults
DATA_ON = ("device", "cpu")
MASK_OF_FORMAT = {"interleaved": "causal", "example": "exclude_query", "interleaved_y0": "causal"}


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class TaskSpec:
    """The data: ``kind`` isotropic / anisotropic (synthetic.regression), or one of the in-context
    kinds of synthetic.tasks: noise_mixture (sigma drawn per prompt from noise_levels with prior
    noise_probs), sparse (k nonzero coordinates of w), pool (w from a fixed pool of pool_size
    vectors, pool_seed), representation (y = w . Phi(x), Phi a fixed random ReLU network of
    phi_depth layers of phi_width units, phi_seed), or one of synthetic.functions: tree (tree_depth),
    relu2nn (relu_width, relu_scale), quadratic (quadratic_form), logistic (+-1 labels of the kind
    ``labels``, logistic_scale; trained with ``loss``), mixture (each prompt from one of the families
    ``mixture`` with probabilities ``mixture_probs``). x ~ N(0, I_d) for the in-context kinds."""

    d: int = 8
    n_points: int = 16  # points per prompt; the last is the query in the "example" format
    noise_std: float = 0.0
    kind: str = "isotropic"
    condition_number: float = 1.0
    basis_seed: int = 0
    w_std: float = 1.0
    format: str = "interleaved"
    eval_batch_size: int = 256
    noise_levels: tuple[float, ...] = ()  # noise_mixture: sigma_m, each >= 0
    noise_probs: tuple[float, ...] = ()  # noise_mixture: their prior (empty: uniform)
    k: int = 0  # sparse: nonzero coordinates of w, 1 <= k <= d
    pool_size: int = 0  # pool: number of weight vectors in the fixed pool
    pool_seed: int = 0  # pool: seed of the pool
    phi_depth: int = 1  # representation: ReLU layers of Phi
    phi_width: int = 16  # representation: units per layer (the feature dimension)
    phi_seed: int = 0  # representation: seed of Phi
    x_dist: str = "gaussian"  # gaussian | uniform (isotropic / anisotropic kinds)
    x_range: float = 1.0  # uniform: half-width r of U(-r, r)
    tree_depth: int = 4  # tree: depth of the random decision trees (Garg et al.)
    relu_width: int = 100  # relu2nn: hidden units of the random two-layer ReLU networks
    relu_scale: float = 1.0  # relu2nn: output scale
    quadratic_form: str = "squares"  # quadratic: "squares" (x*x).w / sqrt 3 (Garg) or "inner" (w.x)^2 / sqrt(2d)
    labels: str = "sign"  # logistic: "sign" y = sign(w.x) (Garg) or "bernoulli" P(y=1) = sigmoid(scale w.x) (Bai)
    logistic_scale: float = 1.0  # logistic: the scale inside the sigmoid of "bernoulli" labels
    loss: str = "squared"  # logistic: the training loss, "squared" or "logistic" (log(1 + exp(-y f)))
    mixture: tuple[str, ...] = ()  # mixture: the families of MIXTURE_FAMILIES each prompt is drawn from
    mixture_probs: tuple[float, ...] = ()  # mixture: their probabilities (empty: uniform)

    def __post_init__(self):
        integer("task.d", self.d, 1)
        integer("task.n_points", self.n_points, 2 if self.format == "example" else 1)
        real("task.noise_std", self.noise_std, 0.0)
        choice("task.kind", self.kind, TASK_KINDS)
        real("task.condition_number", self.condition_number, 1.0)
        if self.kind != "anisotropic" and self.condition_number != 1.0:
            raise ConfigError(f"task.condition_number must be 1.0 when task.kind = {self.kind!r} "
                              f"(use 'anisotropic'), got {self.condition_number}")
        self._check_kind_fields()
        self._check_inputs()
        integer("task.basis_seed", self.basis_seed, 0)
        real("task.w_std", self.w_std, 0.0, open_lo=True)
        choice("task.format", self.format, FORMATS)
        integer("task.eval_batch_size", self.eval_batch_size, 1)

    def _check_kind_fields(self) -> None:
        for name in ("noise_levels", "noise_probs", "mixture", "mixture_probs"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind == "mixture":
            self._check_mixture_families()
        read = self.read_kinds()
        for kind, names in KIND_FIELDS.items():
            for name in names:
                if name not in _read_fields(read) and getattr(self, name) != _TASK_DEFAULTS[name]:
                    raise ConfigError(f"task.{name} applies to task.kind = {kind!r} only, got it with "
                                      f"task.kind = {self.kind!r}")
        self._check_function_fields(read)
        if self.kind == "noise_mixture":
            self._check_mixture()
        if self.kind == "sparse" and integer("task.k", self.k, 1) > self.d:
            raise ConfigError(f"task.k must be an integer in [1, task.d = {self.d}] for a sparse task, got {self.k}")
        if self.kind == "pool":
            integer("task.pool_size", self.pool_size, 1)
            integer("task.pool_seed", self.pool_seed, 0)
        if self.kind == "representation":
            for name in ("phi_depth", "phi_width"):
                integer(f"task.{name}", getattr(self, name), 1)
            integer("task.phi_seed", self.phi_seed, 0)

    def read_kinds(self) -> tuple[str, ...]:
        """The kinds whose fields this task reads: its own, and a mixture's components."""
        return (self.kind, *self.mixture) if self.kind == "mixture" else (self.kind,)

    def _check_mixture_families(self) -> None:
        for name in ("mixture", "mixture_probs"):
            if not isinstance(getattr(self, name), tuple):
                raise ConfigError(f"task.{name} must be a list, got {getattr(self, name)!r}")
        if not self.mixture:
            raise ConfigError(f"task.mixture must list at least one of {list(MIXTURE_FAMILIES)} for task.kind = 'mixture'")
        for m, family in enumerate(self.mixture):
            choice(f"task.mixture[{m}]", family, MIXTURE_FAMILIES)
        probs = tuple(real(f"task.mixture_probs[{m}]", p, 0.0, open_lo=True) for m, p in enumerate(self.mixture_probs))
        if probs and (len(probs) != len(self.mixture) or abs(sum(probs) - 1.0) > 1e-9):
            raise ConfigError(f"task.mixture_probs must be {len(self.mixture)} positive numbers summing to 1 (or "
                              f"empty for uniform), got {list(self.mixture_probs)}")
        object.__setattr__(self, "mixture_probs", probs)

    def _check_function_fields(self, read: tuple[str, ...]) -> None:
        if "tree" in read:
            integer("task.tree_depth", self.tree_depth, 1, 20)
        if "relu2nn" in read:
            integer("task.relu_width", self.relu_width, 1)
            real("task.relu_scale", self.relu_scale, 0.0, open_lo=True)
        if "quadratic" in read:
            choice("task.quadratic_form", self.quadratic_form, QUADRATIC_FORMS)
        if "logistic" in read:
            choice("task.labels", self.labels, LABEL_KINDS)
            real("task.logistic_scale", self.logistic_scale, 0.0, open_lo=True)
        if "sparse" in read and self.kind == "mixture" and not 1 <= integer("task.k", self.k, 1) <= self.d:
            raise ConfigError(f"task.k must be an integer in [1, task.d = {self.d}] for a sparse component, got {self.k}")
        choice("task.loss", self.loss, LOSSES)
        if self.kind == "logistic" and self.noise_std != 0.0:
            raise ConfigError(f"task.noise_std must be 0 when task.kind = 'logistic' (labels are +-1), got {self.noise_std}")

    def _check_inputs(self) -> None:
        choice("task.x_dist", self.x_dist, X_DISTS)
        real("task.x_range", self.x_range, 0.0, open_lo=True)
        if self.x_dist != "gaussian" and self.kind in KIND_FIELDS:
            raise ConfigError(f"task.x_dist must be 'gaussian' for task.kind = {self.kind!r} (uniform inputs are "
                              f"for the isotropic and anisotropic kinds), got {self.x_dist!r}")
        if self.x_dist == "gaussian" and self.x_range != 1.0:
            raise ConfigError(f"task.x_range applies to task.x_dist = 'uniform' only, got {self.x_range}")

    def _check_mixture(self) -> None:
        for name in ("noise_levels", "noise_probs"):
            if not isinstance(getattr(self, name), tuple):
                raise ConfigError(f"task.{name} must be a list of numbers, got {getattr(self, name)!r}")
        if not self.noise_levels:
            raise ConfigError("task.noise_levels must list at least one noise level for task.kind = 'noise_mixture'")
        levels = tuple(real(f"task.noise_levels[{m}]", s, 0.0) for m, s in enumerate(self.noise_levels))
        probs = tuple(real(f"task.noise_probs[{m}]", p, 0.0, open_lo=True) for m, p in enumerate(self.noise_probs))
        if probs and (len(probs) != len(levels) or abs(sum(probs) - 1.0) > 1e-9):
            raise ConfigError(f"task.noise_probs must be {len(levels)} positive numbers summing to 1 (or empty "
                              f"for uniform), got {list(self.noise_probs)}")
        if self.noise_std != 0.0:
            raise ConfigError("task.noise_std must be 0 when task.kind = 'noise_mixture' (give task.noise_levels)")
        object.__setattr__(self, "noise_levels", levels)
        object.__setattr__(self, "noise_probs", probs)

    def resolved(self) -> dict:
        """The fields as hashed and stored: the kind-specific ones and the input distribution only
        where they differ from the defaults (so configs written before those fields existed keep
        their run ids)."""
        out = dataclasses.asdict(self)
        for name in (*(n for names in KIND_FIELDS.values() for n in names), *OPTIONAL_FIELDS):
            if out[name] == _TASK_DEFAULTS[name]:
                del out[name]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @property
    def n_tokens(self) -> int:
        return self.n_points if self.format == "example" else 2 * self.n_points


_TASK_DEFAULTS = {f.name: f.default for f in fields(TaskSpec)}


def _read_fields(kinds: tuple[str, ...]) -> set[str]:
    """The kind-specific fields that tasks of ``kinds`` read (a mixture reads its components' fields,
    not their training loss)."""
    return {name for kind in kinds for name in KIND_FIELDS.get(kind, ()) if kind == kinds[0] or name != "loss"}


@dataclass(frozen=True)
class ModelSpec:
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 0  # 0: d_model // n_heads
    d_mlp: int = 0  # 0: 4 * d_model
    attention: str = "softmax"
    beta: float = 0.0  # softmax inverse temperature; left out (stored as 0): 1 / sqrt(d_head)
    mlp: str = "gelu"
    norm: str = "layernorm"
    final_norm: bool = True
    residual: bool = True
    bias: bool = True
    mask: str = "auto"  # auto: causal for interleaved, exclude_query for example
    init_std: float = 0.02
    positions: bool = True  # learned position embeddings
    io: str = "learned"  # learned embedding and readout, or "identity": tokens are the stream, readout -y (fixed)
    n_loops: int = 1  # b: the n_layers blocks applied b times with shared weights (1: no loop; Yang et al. 2023)
    input_injection: bool = False  # add the embedding to the stream before every loop after the first

    def __post_init__(self):
        for name in ("n_layers", "d_model", "n_heads", "n_loops"):
            integer(f"model.{name}", getattr(self, name), 1)
        integer("model.d_head", self.d_head, 0)
        integer("model.d_mlp", self.d_mlp, 0)
        if self.d_head == 0 and self.d_model % self.n_heads:
            raise ConfigError(f"model.d_head must be given when model.n_heads ({self.n_heads}) does not "
                              f"divide model.d_model ({self.d_model})")
        choice("model.attention", self.attention, ATTENTION_KINDS)
        real("model.beta", self.beta, 0.0)
        choice("model.mlp", self.mlp, MLP_KINDS)
        choice("model.norm", self.norm, NORMS)
        for name in ("final_norm", "residual", "bias"):
            boolean(f"model.{name}", getattr(self, name))
        choice("model.mask", self.mask, ("auto",) + tuple(MASK_OF_FORMAT.values()))
        real("model.init_std", self.init_std, 0.0, open_lo=True)
        boolean("model.positions", self.positions)
        choice("model.io", self.io, IO_KINDS)
        boolean("model.input_injection", self.input_injection)
        if self.input_injection and self.n_loops == 1:
            raise ConfigError("model.input_injection needs model.n_loops > 1 (it adds the embedding before every "
                              "loop after the first), got n_loops = 1")

    def resolved(self) -> dict:
        """The fields as hashed and stored; ``positions``, ``io``, ``n_loops`` and ``input_injection``
        only where they differ from the defaults (configs written before they existed keep their run ids)."""
        out = dataclasses.asdict(self)
        for name, default in (("positions", True), ("io", "learned"), ("n_loops", 1), ("input_injection", False)):
            if out[name] == default:
                del out[name]
        return out


@dataclass(frozen=True)
class Curriculum:
    """Active dimensions and points grow by ``*_inc`` every ``interval`` steps, up to d, n_points."""

    dims_start: int = 1
    dims_inc: int = 1
    points_start: int = 2
    points_inc: int = 1
    interval: int = 100

    def __post_init__(self):
        for name in ("dims_start", "points_start", "interval"):
            integer(f"train.curriculum.{name}", getattr(self, name), 1)
        for name in ("dims_inc", "points_inc"):
            integer(f"train.curriculum.{name}", getattr(self, name), 0)

    def at(self, step: int, d: int, n_points: int) -> tuple[int, int]:
        """(n_points, n_dims_active) in force at ``step``."""
        k = step // self.interval
        return min(self.points_start + k * self.points_inc, n_points), min(self.dims_start + k * self.dims_inc, d)


@dataclass(frozen=True)
class TrainSpec:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"  # after the warmup: cosine or linear decay to min_lr_ratio * lr (optim.SCHEDULES)
    grad_clip: float = 1.0  # 0: no clipping
    seed: int = 0  # init; also the data seed unless data_seed is given
    data_seed: int = -1  # -1: same as seed
    dtype: str = "float32"
    log_every: int = 50
    checkpoint_every: int = 0  # 0: no checkpoints; else a multiple of log_every
    early_stop_patience: int = 0  # steps without improvement of the logged loss; 0: off
    early_stop_min_delta: float = 0.0  # relative improvement that counts
    early_stop_target: float = 0.0  # stop once the logged loss is <= this; 0: off
    data_on: str = "device"  # where the data generators live ("cpu": same numbers on every device)
    curriculum: Curriculum | None = None
    loops_start: int = 0  # looped models: loops at step 0 (0: off, every step runs model.n_loops)
    loops_every: int = 100  # ... grown by loops_step every loops_every steps, up to model.n_loops
    loops_step: int = 1
    loop_window: int = 0  # T: the loss averages the last T loops' errors, backprop through them (0: final loop's)

    def __post_init__(self):
        for name, lo in (("steps", 1), ("batch_size", 1), ("warmup_steps", 0), ("seed", 0),
                         ("log_every", 1), ("checkpoint_every", 0), ("early_stop_patience", 0),
                         ("loops_start", 0), ("loops_every", 1), ("loops_step", 1), ("loop_window", 0)):
            integer(f"train.{name}", getattr(self, name), lo)
        integer("train.data_seed", self.data_seed, -1)
        real("train.lr", self.lr, 0.0, open_lo=True)
        real("train.beta1", self.beta1, 0.0, 1.0 - 1e-12)
        real("train.beta2", self.beta2, 0.0, 1.0 - 1e-12)
        real("train.eps", self.eps, 0.0, open_lo=True)
        for name in ("weight_decay", "grad_clip", "early_stop_min_delta", "early_stop_target"):
            real(f"train.{name}", getattr(self, name), 0.0)
        real("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        choice("train.schedule", self.schedule, SCHEDULES)
        choice("train.dtype", self.dtype, tuple(DTYPES))
        choice("train.data_on", self.data_on, DATA_ON)
        if self.checkpoint_every % self.log_every:
            raise ConfigError(f"train.checkpoint_every ({self.checkpoint_every}) must be a multiple of "
                              f"train.log_every ({self.log_every})")
        for name in ("loops_every", "loops_step"):
            if self.loops_start == 0 and getattr(self, name) != _LOOP_DEFAULTS[name]:
                raise ConfigError(f"train.{name} applies to a loop curriculum only (train.loops_start > 0), "
                                  f"got {getattr(self, name)} with loops_start = 0")

    def loops_at(self, step: int, n_loops: int) -> int:
        """Loops in force at ``step``: loops_start + loops_step * (step // loops_every), at most
        ``n_loops`` (model.n_loops); ``n_loops`` at every step without a loop curriculum."""
        if self.loops_start == 0:
            return n_loops
        return min(self.loops_start + self.loops_step * (step // self.loops_every), n_loops)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def data_seed_resolved(self) -> int:
        return self.seed if self.data_seed < 0 else self.data_seed

    def hyper(self) -> dict:
        """This model's optimiser settings (the keys of ``optim.HYPER_DEFAULTS`` and the schedule's name)."""
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, "warmup": self.warmup_steps, "total": self.steps,
                "min_lr_ratio": self.min_lr_ratio, "clip": self.grad_clip, "schedule": self.schedule}

    def resolved(self) -> dict:
        """The fields as hashed and stored; ``schedule`` only where it is not the default cosine
        (configs written before it existed keep their run ids)."""
        out = dataclasses.asdict(self)
        if out["schedule"] == "cosine":
            del out["schedule"]
        for name, default in _LOOP_DEFAULTS.items():  # looped training: kept out when off (ids as before)
            if out[name] == default:
                del out[name]
        return out


_LOOP_DEFAULTS = {"loops_start": 0, "loops_every": 100, "loops_step": 1, "loop_window": 0}


# ----------------------------------------------------------------------------------------------
# A run


@dataclass(frozen=True)
class RunConfig:
    task: TaskSpec
    model: ModelSpec
    train: TrainSpec

    def __post_init__(self):
        mask = self.model.mask
        if mask != "auto" and mask != MASK_OF_FORMAT[self.task.format]:
            raise ConfigError(f"model.mask must be 'auto' or {MASK_OF_FORMAT[self.task.format]!r} when "
                              f"task.format = {self.task.format!r}, got {mask!r}")
        cur = self.train.curriculum
        if cur is not None and (cur.dims_start > self.task.d or cur.points_start > self.task.n_points):
            raise ConfigError(f"train.curriculum.dims_start ({cur.dims_start}) must be <= task.d ({self.task.d}) "
                              f"and points_start ({cur.points_start}) <= task.n_points ({self.task.n_points})")
        if cur is not None and self.task.kind not in CURRICULUM_KINDS and cur.dims_start < self.task.d:
            raise ConfigError(f"train.curriculum.dims_start must equal task.d ({self.task.d}) when task.kind = "
                              f"{self.task.kind!r} (only the number of points can grow), got {cur.dims_start}")
        if self.model.io == "identity" and (self.model.d_model != self.task.d + 1 or
                                            self.task.format == "interleaved_y0"):
            raise ConfigError(f"model.io = 'identity' feeds the tokens as the stream and reads -y: it needs model.d_model "
                              f"= task.d + 1 ({self.task.d + 1}) and y in the last token slot (not task.format = "
                              f"'interleaved_y0'), got d_model = {self.model.d_model}, format = {self.task.format!r}")
        if cur is not None and self.task.format == "example" and cur.points_start < 2:
            raise ConfigError("train.curriculum.points_start must be >= 2 when task.format = 'example'")
        self._check_loops()
        try:
            self.model_config()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"[model]: {err}") from None

    def _check_loops(self) -> None:
        b, tr = self.model.n_loops, self.train
        for name in ("loops_start", "loop_window"):
            value = getattr(tr, name)
            if value and b == 1:
                raise ConfigError(f"train.{name} needs a looped model (model.n_loops > 1), got {name} = {value} "
                                  f"with n_loops = 1")
            if value > b:
                raise ConfigError(f"train.{name} must be <= model.n_loops ({b}), got {value}")

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        unknown = set(data) - {"task", "model", "train"}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}; allowed are ['task', 'model', 'train']")
        train = section(TrainSpec, "train", data.get("train", {}))
        if train.get("curriculum") is not None:
            train["curriculum"] = Curriculum(**section(Curriculum, "train.curriculum", train["curriculum"]))
        return cls(task=TaskSpec(**section(TaskSpec, "task", data.get("task", {}))),
                   model=ModelSpec(**section(ModelSpec, "model", data.get("model", {}))),
                   train=TrainSpec(**train))

    def to_dict(self) -> dict:
        return {"task": self.task.resolved(), "model": self.model.resolved(),
                "train": self.train.resolved()}

    @property
    def run_id(self) -> str:
        """12 hex digits of the SHA-256 of the resolved config (canonical JSON)."""
        return run_id(self.to_dict())

    def model_config(self) -> ModelConfig:
        m, t = self.model, self.task
        return ModelConfig(
            d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads,
            d_head=m.d_head or m.d_model // m.n_heads, d_in=t.d if t.format == "interleaved_y0" else t.d + 1, d_out=1,
            d_mlp=0 if m.mlp == "none" else (m.d_mlp or 4 * m.d_model), attention=m.attention,
            beta=None if m.beta == 0.0 else m.beta, mask=MASK_OF_FORMAT[t.format], mlp=m.mlp, norm=m.norm,
            final_norm=m.final_norm, residual=m.residual, bias=m.bias, n_positions=t.n_tokens if m.positions else 0,
            n_loops=m.n_loops, input_injection=m.input_injection,
        )

    @property
    def steps(self) -> int:
        return self.train.steps

    def shape_text(self) -> str:
        """The batch's shape in a few words (``ttb sweep --dry-run``)."""
        m, t = self.model, self.train
        loops = f" b={m.n_loops}" if m.n_loops > 1 else ""
        return (f"L={m.n_layers}{loops} D={m.d_model} H={m.n_heads} T={self.task.n_tokens} B={t.batch_size} "
                f"steps={t.steps}")

    def group_key(self) -> str:
        """Runs with equal keys can train in one batch (see the module docstring)."""
        t, tr = self.task, self.train
        shared = {
            "model": self.model_config().to_dict(),
            "task": {"d": t.d, "n_points": t.n_points, "format": t.format, "eval_batch_size": t.eval_batch_size},
            "train": {k: getattr(tr, k) for k in ("steps", "batch_size", "dtype", "log_every",
                                                   "checkpoint_every", "data_on")},
            "curriculum": None if tr.curriculum is None else dataclasses.asdict(tr.curriculum),
        }
        if t.loss != "squared":  # the loss is one per batch (kept out at its default: keys as before)
            shared["loss"] = t.loss
        loops = {k: v for k, v in tr.resolved().items() if k in _LOOP_DEFAULTS}
        if loops:  # the loop curriculum and window fix each step's graph (kept out when off: keys as before)
            shared["loops"] = loops
        return json.dumps(shared, sort_keys=True)
