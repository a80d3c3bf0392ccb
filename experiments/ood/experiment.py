"""Out-of-distribution value generalisation: positional versus standard transformers.

Config (TOML), every field checked before anything trains (a wrong one raises ``ConfigError``
naming it, e.g. ``task.test_cs``)::

    name = "positional_ood_cpu"
    device = "auto"                  # auto | cpu | cuda | cuda:N | mps
    dtype = "float32"                # float32 | float64
    [task]
    kinds = ["cumsum", "cummin"]     # synthetic.algorithmic.TASK_KINDS
    n = 8                            # or a list: one experiment per n (a sweep over n)
    c_train = 2.0                    # training values uniform in [-c_train, c_train]
    test_cs = [4, 8, 20]             # test values in [-c, c], every c > c_train
    shells = false                   # test range i keeps only c_{i-1} < |x| <= c_i
    [model]
    kinds = ["positional", "standard"]
    width = 64, n_heads = 2, n_layers = 3 (or "log2": ceil(log2 n)), d_mlp = 128,
    mask = "full", mlp = "relu", mlp_input = "residual", scratch = true, init_std = 0.02
    [train]
    seeds = [0, 1, 2]  (or an int: range(seeds)), steps, batch_size, lr, weight_decay,
    warmup, min_lr_ratio, clip, beta1, beta2, eps, log_every
    [eval]
    batch_size = 1024

For every (n, task, model kind) the seeds train as one batch (``experiments.ood.sequences``); each
model is evaluated at the training range (c = c_train, in distribution) and at every test c. The
error of a model at c is its relative squared error (``train_seq.evaluate``: mse / mean target^2,
so 1 means no better than predicting 0). The table holds, per (model kind, task, n, c), the median
and the worst error over seeds. Pure functions here; the files are written by :func:`write`.
"""

from __future__ import annotations

import io
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from experiments.common.validate import ConfigError, read_toml
from experiments.ood import sequences as TS
from synthetic.algorithmic import TASK_KINDS, AlgorithmicTask, OODProtocol, ValueRange

TABLE_COLUMNS = ("model_kind", "task", "n", "c", "median_error", "worst_error")
SECTIONS = {
    "": ("name", "device", "dtype", "task", "model", "train", "eval"),
    "task": ("kinds", "n", "c_train", "test_cs", "shells"),
    "model": ("kinds", "width", "n_heads", "n_layers", "d_mlp", "mask", "mlp", "mlp_input", "scratch", "init_std"),
    "train": ("seeds", "steps", "batch_size", "log_every", *TS.HYPER_DEFAULTS),
    "eval": ("batch_size",),
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


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

    def shape_for(self, n: int) -> TS.SeqShape:
        layers = self.shape.get("n_layers", 3)
        return TS.SeqShape(**{**self.shape, "n_layers": TS.auto_layers(n) if layers == "log2" else layers})

    def protocol(self) -> OODProtocol:
        return OODProtocol(self.c_train, self.test_cs, self.shells)


# ----------------------------------------------------------------------------------------------
# Config: parse and validate (each error names its field)


def _int(where: str, v, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise ConfigError(f"{where} must be an int >= {lo}, got {v!r}")
    return int(v)


def _real(where: str, v, lo: float = 0.0, strict: bool = True) -> float:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v <= lo if strict else v < lo):
        raise ConfigError(f"{where} must be a finite number {'>' if strict else '>='} {lo}, got {v!r}")
    return float(v)


def _choices(where: str, v, allowed) -> tuple[str, ...]:
    items = v if isinstance(v, list) else [v]
    if not items or any(x not in allowed for x in items):
        raise ConfigError(f"{where} must be one or a list of {tuple(allowed)}, got {v!r}")
    return tuple(items)


def _check_keys(data: dict) -> None:
    for section, allowed in SECTIONS.items():
        part = data if not section else data.get(section, {})
        if not isinstance(part, dict):
            raise ConfigError(f"[{section}] must be a table, got {part!r}")
        for key in part:
            if key not in allowed:
                raise ConfigError(f"{(section + '.') if section else ''}{key}: unknown field; known: {allowed}")


def parse_config(data: dict, default_name: str = "ood") -> OODConfig:
    """A config dict (as read from TOML) -> OODConfig, or ConfigError naming the bad field."""
    _check_keys(data)
    dtype, device = data.get("dtype", "float32"), data.get("device", "auto")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    if not isinstance(device, str):
        raise ConfigError(f"device must be a string, got {device!r}")
    model = data.get("model", {})
    return OODConfig(
        name=str(data.get("name", default_name)), **_parse_task(data.get("task", {})),
        model_kinds=_choices("model.kinds", model.get("kinds", list(TS.MODEL_KINDS)), TS.MODEL_KINDS),
        shape=_parse_shape(model), **_parse_train(data.get("train", {})),
        eval_batch_size=_int("eval.batch_size", data.get("eval", {}).get("batch_size", 1024)),
        dtype=dtype, device=device)


def _parse_task(task: dict) -> dict:
    n = task.get("n", 8)
    ns = tuple(_int("task.n", v) for v in (n if isinstance(n, list) else [n]))
    if not ns:
        raise ConfigError("task.n must be an int or a non-empty list of ints")
    c_train = _real("task.c_train", task.get("c_train", 2.0))
    test_cs = task.get("test_cs", [4.0, 8.0, 16.0])
    if not isinstance(test_cs, list) or not test_cs:
        raise ConfigError(f"task.test_cs must be a non-empty list of numbers, got {test_cs!r}")
    test_cs = tuple(_real("task.test_cs", c) for c in test_cs)
    shells = task.get("shells", False)
    if not isinstance(shells, bool):
        raise ConfigError(f"task.shells must be true or false, got {shells!r}")
    try:
        OODProtocol(c_train, test_cs, shells)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task.test_cs: {err}") from None
    return {"task_kinds": _choices("task.kinds", task.get("kinds", "cumsum"), TASK_KINDS), "ns": ns,
            "c_train": c_train, "test_cs": test_cs, "shells": shells}


def _parse_train(train: dict) -> dict:
    seeds = train.get("seeds", 3)
    seeds = tuple(range(_int("train.seeds", seeds))) if not isinstance(seeds, list) else \
        tuple(_int("train.seeds", s, lo=0) for s in seeds)
    if not seeds:
        raise ConfigError("train.seeds must name at least one seed")
    hyper = {k: _real(f"train.{k}", train[k], strict=k == "lr") for k in TS.HYPER_DEFAULTS if k in train}
    for k in ("beta1", "beta2", "min_lr_ratio"):
        if k in hyper and (hyper[k] > 1 or (hyper[k] == 1 and k != "min_lr_ratio")):
            raise ConfigError(f"train.{k} must be {'<=' if k == 'min_lr_ratio' else '<'} 1, got {hyper[k]}")
    return {"seeds": seeds, "steps": _int("train.steps", train.get("steps", 1000)),
            "batch_size": _int("train.batch_size", train.get("batch_size", 64)),
            "log_every": _int("train.log_every", train.get("log_every", 50)), "hyper": hyper}


def _parse_shape(model: dict) -> dict:
    shape = {k: model[k] for k in SECTIONS["model"] if k in model and k != "kinds"}
    for k in ("width", "n_heads", "d_mlp"):
        if k in shape:
            _int(f"model.{k}", shape[k])
    if shape.get("n_layers", 3) != "log2":
        _int("model.n_layers", shape.get("n_layers", 3))
    for k, allowed in (("mask", ("full", "causal")), ("mlp", ("relu", "gelu", "gelu_tanh")),
                       ("mlp_input", ("residual", "concat"))):
        if k in shape and shape[k] not in allowed:
            raise ConfigError(f"model.{k} must be one of {allowed}, got {shape[k]!r}")
    if "scratch" in shape and not isinstance(shape["scratch"], bool):
        raise ConfigError(f"model.scratch must be true or false, got {shape['scratch']!r}")
    if "init_std" in shape:
        shape["init_std"] = _real("model.init_std", shape["init_std"])
    try:
        TS.SeqShape(**{**shape, "n_layers": 1})
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return shape


def load_config(path) -> OODConfig:
    data = read_toml(path)
    return parse_config(data, default_name=Path(path).stem)


# ----------------------------------------------------------------------------------------------
# The experiment (math; no files)


def evaluation_ranges(cfg: OODConfig) -> list[tuple[float, ValueRange]]:
    """(c, range): the training range first (in distribution), then every test range."""
    return [(cfg.c_train, ValueRange(cfg.c_train))] + list(zip(cfg.test_cs, cfg.protocol().test_ranges()))


def run(cfg: OODConfig, device=None, progress=None) -> pd.DataFrame:
    """Train and evaluate everything: one row per (model kind, task, n, seed, c) with error, mse,
    final training loss and whether c is the training range."""
    device = torch.device(_pick_device(device or cfg.device))
    rows = []
    for n in cfg.ns:
        for kind_task in cfg.task_kinds:
            task = AlgorithmicTask(kind_task, n, cfg.c_train)
            for kind in cfg.model_kinds:
                result = TS.train(kind, task, cfg.shape_for(n), cfg.seeds, [cfg.hyper] * len(cfg.seeds),
                                  steps=cfg.steps, batch_size=cfg.batch_size, dtype=DTYPES[cfg.dtype],
                                  device=device, log_every=cfg.log_every)
                rows += _eval_rows(cfg, result, n)
                if progress:
                    progress(f"trained {kind} on {kind_task} (n={n})")
    return pd.DataFrame(rows)


def _eval_rows(cfg: OODConfig, result: TS.SeqResult, n: int) -> list[dict]:
    rows = []
    for i, (c, values) in enumerate(evaluation_ranges(cfg)):
        ev = TS.evaluate(result, values, cfg.eval_batch_size)
        for k, seed in enumerate(result.seeds):
            rows.append({"model_kind": result.kind, "task": result.task.kind, "n": n, "c": c, "seed": seed,
                         "in_distribution": i == 0, "error": float(ev["error"][k]), "mse": float(ev["mse"][k]),
                         "final_train_loss": float(result.final_loss[k])})
    return rows


def summarize(per_model: pd.DataFrame) -> pd.DataFrame:
    """Median and worst (largest) error over seeds per (model kind, task, n, c)."""
    g = per_model.groupby(["model_kind", "task", "n", "c"], sort=True)["error"]
    table = g.agg(median_error="median", worst_error="max").reset_index()
    return table[list(TABLE_COLUMNS)]


def _pick_device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------
# Figure and files


def figure(table: pd.DataFrame):
    """Median error (markers) and worst error (dashed) versus c, log scale, one panel per model
    kind side by side with a shared y axis; one colour per task (and n when there are several)."""
    import matplotlib.pyplot as plt

    kinds = list(pd.unique(table["model_kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.4 * len(kinds), 3.6), sharey=True, squeeze=False)
    label = _curve_label(table)
    for ax, kind in zip(axes[0], kinds):
        part = table[table["model_kind"] == kind]
        for i, (name, curve) in enumerate(part.groupby(label.loc[part.index], sort=True)):
            curve = curve.sort_values("c")
            (line,) = ax.plot(curve["c"], curve["median_error"], marker="o", ms=4, label=name, color=f"C{i}")
            ax.plot(curve["c"], curve["worst_error"], ls="--", lw=0.8, color=line.get_color())
        ax.set_yscale("log")
        ax.set_xlabel("test range c (values in [-c, c])")
        ax.set_title(f"{kind} attention")
    axes[0][0].set_ylabel("relative squared error\n(median; dashed: worst seed)")
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _curve_label(table: pd.DataFrame) -> pd.Series:
    if table["n"].nunique() > 1:
        return table["task"].astype(str) + " n=" + table["n"].astype(str)
    return table["task"].astype(str)


def write(out: Path, table: pd.DataFrame, per_model: pd.DataFrame, cfg: OODConfig) -> list[Path]:
    """table.csv, per_model.csv, config.json and the figure (PNG, SVG and its CSV), each atomically."""
    import matplotlib.pyplot as plt

    from experiments.common.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "table.csv", out / "per_model.csv", out / "config.json", out / "error_vs_c.png",
             out / "error_vs_c.svg", out / "error_vs_c.csv"]
    atomic_write_text(paths[0], table.to_csv(index=False))
    atomic_write_text(paths[1], per_model.to_csv(index=False))
    atomic_write_json(paths[2], {**cfg.__dict__, "shape": dict(cfg.shape)})
    fig = figure(table)
    fig.tight_layout()
    for path, fmt in ((paths[3], "png"), (paths[4], "svg")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=110)
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    atomic_write_text(paths[5], table.to_csv(index=False))
    return paths
