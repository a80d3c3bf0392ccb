"""The `ttb approx` config, every field checked before anything trains.

    name = "approx_cpu"
    device = "auto"                 # auto | cpu | cuda | cuda:N | mps
    dtype = "float32"               # training dtype; every evaluation runs in float64
    backend = "local"               # local | ray (the sweep engine's backends)
    [transformer]                   # experiments.approx.transformer_study.TransformerStudy
    n = 4, d = 2, targets = ["cosine", "relu", "abs"], widths = [8, 16, 32, 64, 128],
    construction_widths = [...], lams = [8.0, 40.0], seeds = [0, 1, 2], steps, batch_size,
    lr, warmup, min_lr_ratio, weight_decay, clip, ...  (training fields of experiments.training.optim)
    [mpnn]                          # experiments.approx.mpnn_study.MPNNStudy
    attention = ["linear", "softmax"]   # one study per kind
    widths = [...], depths = [...], relu_widths = [...], taylor_orders = [...], taus = [...], ...
    [curves]                        # construction-only curves (experiments.approx.curves)
    n_cases = 3, seed = 0

Each family section is optional, but one is needed. A wrong field raises
:class:`experiments.common.validate.ConfigError` naming it (``transformer.widths``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments.approx.mpnn_study import MPNNStudy
from experiments.approx.mpnn_study import study_from as mpnn_study_from
from experiments.approx.transformer_study import HYPER_FIELDS, TransformerStudy
from experiments.approx.transformer_study import study_from as transformer_study_from
from experiments.common.devices import DTYPES, check_device_name
from experiments.common.validate import ConfigError, choice, choices, integer, read_toml, real, string, table

TOP = ("name", "device", "dtype", "backend", "transformer", "mpnn", "curves")


@dataclass(frozen=True)
class ApproxConfig:
    name: str
    transformer: TransformerStudy | None
    mpnn: tuple[MPNNStudy, ...] = ()  # one per attention kind
    curves: dict = field(default_factory=dict)  # {"n_cases": int, "seed": int} or empty (no curves)
    dtype: str = "float32"
    device: str = "auto"
    backend: str = "local"

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "device": self.device, "backend": self.backend,
                "curves": self.curves, "transformer": asdict(self.transformer) if self.transformer else None,
                "mpnn": [asdict(s) for s in self.mpnn]}


def _split_training(section: str, values: dict) -> tuple[dict, dict]:
    """(study fields, training hyperparameters) of a section; a hyperparameter is a finite number >= 0."""
    hyper = {k: real(f"{section}.{k}", values[k], 0.0) for k in values if k in HYPER_FIELDS}
    return {k: v for k, v in values.items() if k not in hyper}, hyper


def _study(section: str, cls, values: dict, hyper: dict, build):
    table(section, values, [*cls.field_names(), *HYPER_FIELDS])
    try:
        return build(values, hyper)
    except (TypeError, ValueError) as err:
        message = str(err)
        raise ConfigError(message if message.startswith(section) else f"{section}: {message}") from None


def parse_config(data: dict, default_name: str = "approx") -> ApproxConfig:
    """A config dict (as read from TOML) -> ApproxConfig, or ConfigError naming the bad field."""
    table("", data, TOP)
    sections = {s: table(s, data[s], [*HYPER_FIELDS, *_fields(s)]) for s in ("transformer", "mpnn", "curves")
                if s in data}
    if not sections:
        raise ConfigError("the config needs at least one of [transformer], [mpnn], [curves]")
    transformer = None
    if "transformer" in sections:
        values, hyper = _split_training("transformer", sections["transformer"])
        transformer = _study("transformer", TransformerStudy, values, hyper, transformer_study_from)
    mpnn = ()
    if "mpnn" in sections:
        values, hyper = _split_training("mpnn", sections["mpnn"])
        kinds = choices("mpnn.attention", values.pop("attention", ["linear", "softmax"]), ("linear", "softmax"))
        mpnn = tuple(_study("mpnn", MPNNStudy, {**values, "attention": k}, hyper, mpnn_study_from) for k in kinds)
    return ApproxConfig(string("name", data.get("name", default_name)), transformer, mpnn,
                        _curves(sections.get("curves")), choice("dtype", data.get("dtype", "float32"), DTYPES),
                        check_device_name("device", data.get("device", "auto")),
                        choice("backend", data.get("backend", "local"), ("local", "ray")))


def _fields(section: str) -> tuple[str, ...]:
    return {"transformer": TransformerStudy.field_names(), "mpnn": MPNNStudy.field_names(),
            "curves": ("n_cases", "seed")}[section]


def _curves(curves: dict | None) -> dict:
    if curves is None:
        return {}
    table("curves", curves, ("n_cases", "seed"))
    return {"n_cases": integer("curves.n_cases", curves.get("n_cases", 3), 1),
            "seed": integer("curves.seed", curves.get("seed", 0), 0)}


def load_config(path) -> ApproxConfig:
    return parse_config(read_toml(path), default_name=Path(path).stem)
