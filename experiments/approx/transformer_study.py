"""The study of :mod:`experiments.approx.transformer`: every setting one comparison depends on, checked.

A bad field raises :class:`experiments.common.validate.ConfigError` (a ValueError) naming it as
``transformer.<field>``, the config section of :mod:`experiments.approx.config` it is read from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from experiments.common.validate import ConfigError, integer, integers, real, reals
from experiments.training.optim import HYPER_DEFAULTS
from synthetic.targets import PROFILES

HYPER_FIELDS = tuple(k for k in HYPER_DEFAULTS if k != "total")


@dataclass(frozen=True)
class TransformerStudy:
    """What to train and build; validates itself."""

    n: int = 4
    d: int = 2
    targets: tuple[str, ...] = ("cosine", "relu", "abs")
    n_ridges: int = 2
    frequency: float = 2.0
    target_seed: int = 0
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    construction_widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    lams: tuple[float, ...] = (8.0, 40.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 2000
    batch_size: int = 128
    init_std: float = 0.2
    eval_inputs: int = 2048
    hyper: tuple[tuple[str, float], ...] = (("lr", 3e-3), ("warmup", 100.0), ("min_lr_ratio", 0.05))

    def __post_init__(self):
        for name in ("n", "d", "n_ridges", "steps", "batch_size", "eval_inputs"):
            integer(f"transformer.{name}", getattr(self, name), 2 if name == "n" else 1)
        integer("transformer.target_seed", self.target_seed, 0)
        bad = [t for t in self.targets if t not in PROFILES]
        if not self.targets or bad:
            raise ConfigError(f"transformer.targets must be a non-empty list of {PROFILES}, got {list(self.targets)}")
        for name in ("widths", "construction_widths"):
            for m in integers(f"transformer.{name}", list(getattr(self, name)), 1):
                if m < self.n_ridges:
                    raise ConfigError(f"transformer.{name}: every width must be >= n_ridges={self.n_ridges}, got {m}")
        integers("transformer.seeds", list(self.seeds), 0, distinct=True)
        for name in ("frequency", "init_std"):
            real(f"transformer.{name}", getattr(self, name), 0.0, open_lo=True)
        if self.lams:
            reals("transformer.lams", list(self.lams), 0.0, open_lo=True)
        unknown = sorted({k for k, _ in self.hyper} - set(HYPER_FIELDS))
        if unknown:
            raise ConfigError(f"transformer: unknown training fields {unknown}; known: {HYPER_FIELDS}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def study_from(values: dict, hyper: Sequence[tuple[str, float]] = ()) -> TransformerStudy:
    """A study from plain values (lists become tuples), with training fields merged into ``hyper``."""
    base = dict(TransformerStudy.hyper)
    base.update(dict(hyper))
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return TransformerStudy(**kw, hyper=tuple(sorted(base.items())))
