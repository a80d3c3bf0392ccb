"""The study of :mod:`experiments.approx.mpnn`: every setting one MPNN comparison depends on, checked.

A bad field raises ValueError naming it as ``mpnn.<field>``, the config section of
:mod:`experiments.approx.study` it is read from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from experiments.common.validate import ConfigError, integer, integers, real
from experiments.training.optim import HYPER_DEFAULTS

ATTENTIONS = {"linear": "linear attention", "softmax": "softmax attention"}  # study field -> target label


INT_FIELDS = {"n": 2, "d": 1, "d_head": 1, "heads": 1, "depth_at": 1, "width_at": 1, "d_node": 1, "d_vn": 1,
              "steps": 1, "batch_size": 1, "eval_graphs": 1, "reference_seed": 0}  # name -> lowest
INT_TUPLES = {"widths": 1, "depths": 1, "seeds": 0, "relu_widths": 1, "taylor_orders": 1}  # (may be empty, not seeds)
NUMBERS = {"lr": (0.0, True), "init_std": (0.0, True), "weight_decay": (0.0, False), "min_lr_ratio": (0.0, False),
           "edge_prob": (0.0, False), "clip": (-math.inf, False), "warmup": (0.0, False)}  # name -> (lowest, strict)
TRAINING_FIELDS = ("lr", "weight_decay", "warmup", "clip", "min_lr_ratio")  # study fields that are optimiser settings
EXTRA_HYPER = tuple(k for k in HYPER_DEFAULTS if k not in TRAINING_FIELDS + ("total",))  # the rest: betas, eps


def _int_tuple(name: str, value, lowest: int) -> tuple:
    """A tuple of ints >= lowest (may be empty, except the seeds, which must also be distinct)."""
    if not isinstance(value, (tuple, list)) or (name == "seeds" and not value):
        raise ConfigError(f"mpnn.{name} must be a list of integers >= {lowest}, got {value!r}")
    return integers(f"mpnn.{name}", list(value), lowest, distinct=name == "seeds") if value else ()


@dataclass(frozen=True)
class MPNNStudy:
    """Everything one comparison depends on. Frozen; a bad field raises ValueError naming it as
    ``mpnn.<field>`` (the config section it is read from, :mod:`experiments.approx.study`).

    Softmax attention is one head: ``heads`` > 1 with ``attention="softmax"`` is rejected (the
    power-sum and selection constructions imitate one head), not silently changed."""

    attention: str = "linear"  # "linear" | "softmax"
    n: int = 6  # nodes per graph
    d: int = 2  # node features = the attention layer's width
    d_head: int = 2
    heads: int = 1
    reference_seed: int = 0
    widths: tuple = (4, 8, 16, 32, 64)  # ReLU units per trained update (width sweep) ...
    depth_at: int = 2  # ... at this many layers
    depths: tuple = (1, 2, 3, 4)  # layers (depth sweep) ...
    width_at: int = 32  # ... at this many units
    d_node: int = 16
    d_vn: int = 16
    seeds: tuple = (0, 1, 2)
    steps: int = 2000
    batch_size: int = 64  # graphs per step per model
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: float = 100  # steps of linear warmup
    clip: float = 1.0  # <= 0: no clipping
    min_lr_ratio: float = 0.1
    init_std: float = 0.05
    eval_graphs: int = 256
    edge_prob: float = 0.3
    relu_widths: tuple = (4, 8, 16, 32, 64, 128, 256)
    taylor_orders: tuple = (2, 4, 6, 8)
    taus: tuple = (2.0, 4.0, 6.0, 8.0, 10.0)
    hyper: tuple = ()  # (name, value) pairs of the other optimiser settings: beta1, beta2, eps

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"mpnn.attention must be one of {tuple(ATTENTIONS)}, got {self.attention!r}")
        for name, lowest in INT_FIELDS.items():
            integer(f"mpnn.{name}", getattr(self, name), lowest)
        for name, lowest in INT_TUPLES.items():
            object.__setattr__(self, name, _int_tuple(name, getattr(self, name), lowest))
        for name, (lowest, strict) in NUMBERS.items():
            real(f"mpnn.{name}", getattr(self, name), lowest, open_lo=strict)
        self._check_taus_and_ranges()
        self._check_hyper()

    def _check_taus_and_ranges(self):
        if not isinstance(self.taus, (tuple, list)):
            raise ValueError(f"mpnn.taus must be a tuple of numbers > 0, got {self.taus!r}")
        object.__setattr__(self, "taus", tuple(self.taus))
        for i, tau in enumerate(self.taus):
            real(f"mpnn.taus[{i}]", tau, 0.0, open_lo=True)
        real("mpnn.edge_prob", self.edge_prob, 0.0, 1.0)
        if self.attention == "softmax" and self.heads != 1:
            raise ValueError(f"mpnn.heads must be 1 for softmax attention (the constructions imitate "
                             f"one head), got {self.heads}")

    def _check_hyper(self):
        ok = isinstance(self.hyper, (tuple, list)) and all(isinstance(p, (tuple, list)) for p in self.hyper)
        pairs = tuple(tuple(p) for p in self.hyper) if ok else None
        if pairs is None or any(len(p) != 2 or p[0] not in EXTRA_HYPER for p in pairs):
            raise ValueError(f"mpnn.hyper must be (name, value) pairs with names in {EXTRA_HYPER}, "
                             f"got {self.hyper!r}")
        for name, value in pairs:
            real(f"mpnn.hyper.{name}", value, 0.0)
        object.__setattr__(self, "hyper", tuple(sorted(pairs)))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @property
    def target(self) -> str:
        return ATTENTIONS[self.attention]

    def hypers(self) -> dict:
        """The optimiser settings of every trained model (keys of ``optim.HYPER_DEFAULTS``)."""
        return {**{k: getattr(self, k) for k in TRAINING_FIELDS}, **dict(self.hyper)}

    def shapes(self) -> dict[tuple[int, int], list[tuple[str, int]]]:
        """(width, depth) -> the sweeps it belongs to, as (parameter, value) pairs, in sweep order."""
        out: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for w in self.widths:
            out.setdefault((w, self.depth_at), []).append(("width", w))
        for L in self.depths:
            out.setdefault((self.width_at, L), []).append(("depth", L))
        return out




def study_from(values: dict, hyper=()) -> MPNNStudy:
    """A study from plain values (lists become tuples); ``hyper`` (pairs or a dict of optimiser
    settings) goes to the study's fields (lr, warmup, ...) or, for the others, to ``hyper``."""
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    extra = dict(kw.pop("hyper", ()))
    for name, value in dict(hyper).items():
        if name in TRAINING_FIELDS:
            kw[name] = value
        else:
            extra[name] = value
    return MPNNStudy(**kw, hyper=tuple(extra.items()))
