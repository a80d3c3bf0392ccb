"""The `ttb ood` config: what to train and test, every field checked before anything trains.

    name = "positional_ood_cpu"
    device = "auto"                  # auto | cpu | cuda | cuda:N | mps
    dtype = "float32"                # float32 | float64
    backend = "local"                # local | ray (the sweep engine's backends)
    [task]
    kinds = ["cumsum", "cummin"]     # synthetic.algorithmic.TASK_KINDS
    n = 8                            # or a list: one experiment per n (a sweep over n)
    c_train = 2.0                    # training values uniform in [-c_train, c_train]
    test_cs = [4, 8, 20]             # test values in [-c, c], every c > c_train
    shells = false                   # test range i keeps only c_{i-1} < |x| <= c_i
    sub_intervals = false            # every sequence on its own random sub-interval (de Luca et al.)
    [model]
    kinds = ["positional", "standard"]
    width = 64, n_heads = 2, d_mlp = 128, mask = "full", mlp = "relu", mlp_input = "residual",
    n_layers = 3 (or "log2": ceil(log2 n); "log2+1": floor(log2 n) + 1, de Luca et al.'s depth),
    scratch = true, init_std = 0.02, init = "normal" (or "torch": PyTorch's defaults, as their model)
    [train]
    seeds = [0, 1, 2]  (or an int: range(seeds)), steps, batch_size, lr, weight_decay,
    warmup, min_lr_ratio, clip, beta1, beta2, eps, log_every, checkpoint_every
    train_size = 0                   # > 0: a fixed set of that many sequences per seed, visited in
                                     # epochs of train_size / batch_size steps (a whole number)
    plateau_factor, plateau_patience, plateau_threshold   # any of them: reduce-on-plateau, per model,
                                     # every log an epoch (the others take torch's 0.1, 10, 1e-4)
    [eval]
    batch_size = 1024

A field left out takes the value that keeps a config written before it existed (and its run ids)
unchanged. A wrong field raises :class:`experiments.common.validate.ConfigError` naming it
(``task.test_cs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from experiments.common.devices import DTYPES, check_device_name
from experiments.common.validate import (
    ConfigError,
    boolean,
    choice,
    choices,
    integer,
    integers,
    read_toml,
    real,
    reals,
    string,
    table,
)
from experiments.ood.sequences import (
    HYPER_FIELDS,
    INITS,
    MODEL_KINDS,
    SeqRun,
    SeqShape,
    auto_layers,
    log2_plus_one_layers,
)
from experiments.training.trainer import Plateau
from synthetic.algorithmic import TASK_KINDS, AlgorithmicTask, OODProtocol

TOP = ("name", "device", "dtype", "backend", "task", "model", "train", "eval")
PLATEAU_FIELDS = ("plateau_factor", "plateau_patience", "plateau_threshold")
FIELDS = {
    "task": ("kinds", "n", "c_train", "test_cs", "shells", "sub_intervals"),
    "model": ("kinds", "width", "n_heads", "n_layers", "d_mlp", "mask", "mlp", "mlp_input", "scratch", "init_std",
              "init"),
    "train": ("seeds", "steps", "batch_size", "log_every", "checkpoint_every", "train_size", *PLATEAU_FIELDS,
              *HYPER_FIELDS),
    "eval": ("batch_size",),
}
AUTO_LAYERS = {"log2": auto_layers, "log2+1": log2_plus_one_layers}


@dataclass(frozen=True)
class OODConfig:
    name: str
    task_kinds: tuple[str, ...]
    ns: tuple[int, ...]
    c_train: float
    test_cs: tuple[float, ...]
    shells: bool
    model_kinds: tuple[str, ...]
    shape: dict  # SeqShape fields; n_layers may be "log2"
    seeds: tuple[int, ...]
    steps: int
    batch_size: int
    log_every: int
    hyper: dict = field(default_factory=dict)
    eval_batch_size: int = 1024
    dtype: str = "float32"
    device: str = "auto"
    backend: str = "local"
    checkpoint_every: int = 0
    sub_intervals: bool = False
    train_size: int = 0
    plateau: Plateau | None = None

    def shape_for(self, n: int) -> SeqShape:
        layers = self.shape.get("n_layers", 3)
        return SeqShape(**{**self.shape, "n_layers": AUTO_LAYERS[layers](n) if layers in AUTO_LAYERS else layers})

    def protocol(self) -> OODProtocol:
        return OODProtocol(self.c_train, self.test_cs, self.shells, self.sub_intervals)

    def runs(self) -> list[SeqRun]:
        """One run per (n, task, model kind, seed); the seeds of one (n, task, kind) train as one batch."""
        hyper = tuple(sorted(self.hyper.items()))
        return [SeqRun(task, n, self.c_train, kind, self.shape_for(n), seed, self.steps, self.batch_size,
                       self.log_every, self.checkpoint_every, hyper, self.dtype, self.sub_intervals, self.train_size,
                       self.plateau)
                for n in self.ns for task in self.task_kinds for kind in self.model_kinds for seed in self.seeds]


def parse_config(data: dict, default_name: str = "ood") -> OODConfig:
    """A config dict (as read from TOML) -> OODConfig, or ConfigError naming the bad field."""
    table("", data, TOP)
    sections = {name: table(name, data.get(name, {}), allowed) for name, allowed in FIELDS.items()}
    model = sections["model"]
    return OODConfig(
        name=string("name", data.get("name", default_name)), **_task(sections["task"]),
        model_kinds=choices("model.kinds", model.get("kinds", list(MODEL_KINDS)), MODEL_KINDS),
        shape=_shape(model), **_train(sections["train"]),
        eval_batch_size=integer("eval.batch_size", sections["eval"].get("batch_size", 1024), 1),
        dtype=choice("dtype", data.get("dtype", "float32"), DTYPES),
        device=check_device_name("device", data.get("device", "auto")),
        backend=choice("backend", data.get("backend", "local"), ("local", "ray")))


def _task(task: dict) -> dict:
    ns = integers("task.n", task.get("n", 8), 1)
    c_train = real("task.c_train", task.get("c_train", 2.0), 0.0, open_lo=True)
    test_cs = task.get("test_cs", [4.0, 8.0, 16.0])
    if not isinstance(test_cs, list):
        raise ConfigError(f"task.test_cs must be a non-empty list of numbers, got {test_cs!r}")
    test_cs = reals("task.test_cs", test_cs, 0.0, open_lo=True)
    shells = boolean("task.shells", task.get("shells", False))
    sub_intervals = boolean("task.sub_intervals", task.get("sub_intervals", False))
    if shells and sub_intervals:
        raise ConfigError("task.sub_intervals = true excludes task.shells = true: sub-intervals keep the test "
                          "sequences out of the training range by redrawing their intervals")
    try:
        OODProtocol(c_train, test_cs, shells)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task.test_cs: {err}") from None
    kinds = choices("task.kinds", task.get("kinds", "cumsum"), TASK_KINDS)
    for kind in kinds:
        for n in ns:
            try:
                AlgorithmicTask(kind, n, c_train)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"task.n: {err}") from None
    return {"task_kinds": kinds, "ns": ns, "c_train": c_train, "test_cs": test_cs, "shells": shells,
            "sub_intervals": sub_intervals}


def _train(train: dict) -> dict:
    seeds = train.get("seeds", 3)
    seeds = tuple(range(integer("train.seeds", seeds, 1))) if not isinstance(seeds, list) else \
        integers("train.seeds", seeds, 0, distinct=True)
    hyper = {k: real(f"train.{k}", train[k], 0.0, open_lo=k == "lr") for k in HYPER_FIELDS if k in train}
    for k in ("beta1", "beta2"):
        if k in hyper:
            real(f"train.{k}", hyper[k], 0.0, 1.0, open_hi=True)
    if "min_lr_ratio" in hyper:
        real("train.min_lr_ratio", hyper["min_lr_ratio"], 0.0, 1.0)
    log_every = integer("train.log_every", train.get("log_every", 50), 1)
    checkpoint_every = integer("train.checkpoint_every", train.get("checkpoint_every", 0), 0)
    if checkpoint_every % log_every:
        raise ConfigError(f"train.checkpoint_every ({checkpoint_every}) must be a multiple of train.log_every "
                          f"({log_every})")
    batch_size = integer("train.batch_size", train.get("batch_size", 64), 1)
    return {"seeds": seeds, "steps": integer("train.steps", train.get("steps", 1000), 1), "batch_size": batch_size,
            "log_every": log_every, "checkpoint_every": checkpoint_every, "hyper": hyper,
            "train_size": _train_size(train, batch_size), "plateau": _plateau(train)}


def _train_size(train: dict, batch_size: int) -> int:
    size = integer("train.train_size", train.get("train_size", 0), 0)
    if size and (size < batch_size or size % batch_size):
        raise ConfigError(f"train.train_size ({size}) must be a multiple of train.batch_size ({batch_size}): "
                          "every epoch of the fixed set is whole batches")
    return size


def _plateau(train: dict) -> Plateau | None:
    """Reduce-on-plateau when any plateau_* field is given; the others take torch's defaults."""
    if not any(k in train for k in PLATEAU_FIELDS):
        return None
    default = Plateau()
    return Plateau(
        factor=real("train.plateau_factor", train.get("plateau_factor", default.factor), 0.0, 1.0, open_lo=True,
                    open_hi=True),
        patience=integer("train.plateau_patience", train.get("plateau_patience", default.patience), 0),
        threshold=real("train.plateau_threshold", train.get("plateau_threshold", default.threshold), 0.0))


def _shape(model: dict) -> dict:
    shape = {k: model[k] for k in FIELDS["model"] if k in model and k != "kinds"}
    for k in ("width", "n_heads", "d_mlp"):
        if k in shape:
            integer(f"model.{k}", shape[k], 1)
    if shape.get("n_layers", 3) not in AUTO_LAYERS:
        integer("model.n_layers", shape.get("n_layers", 3), 1)
    for k, allowed in (("mask", ("full", "causal")), ("mlp", ("relu", "gelu", "gelu_tanh")),
                       ("mlp_input", ("residual", "concat"))):
        if k in shape:
            choice(f"model.{k}", shape[k], allowed)
    if "scratch" in shape:
        boolean("model.scratch", shape["scratch"])
    if "init_std" in shape:
        shape["init_std"] = real("model.init_std", shape["init_std"], 0.0, open_lo=True)
    if "init" in shape:
        choice("model.init", shape["init"], INITS)
    try:
        SeqShape(**{**shape, "n_layers": 1})
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return shape


def load_config(path) -> OODConfig:
    return parse_config(read_toml(path), default_name=Path(path).stem)
