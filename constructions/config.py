"""Model configuration: the variant choices, the named residual-stream layout, and ModelConfig.

Frozen dataclasses that validate themselves on construction: a wrong field fails with its name
before any work. The meaning of every choice is documented in :mod:`constructions.model`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

ATTENTION_KINDS = ("softmax", "linear", "relu", "normalized", "linear_sum")
MASKS = ("causal", "full", "exclude_query")
MLP_KINDS = ("none", "relu", "gelu", "gelu_tanh", "identity")
NORMS = ("none", "layernorm", "rmsnorm", "crmsnorm")
QK_SOURCES = ("residual", "positions")
MLP_INPUTS = ("residual", "concat")


# ----------------------------------------------------------------------------------------------
# Residual-stream layout: named slices


@dataclass(frozen=True)
class Layout:
    """Named, contiguous slices of the residual stream, e.g. ``Layout((("x", 3), ("y", 1)))``."""

    slots: tuple[tuple[str, int], ...]

    def __post_init__(self):
        names = [n for n, _ in self.slots]
        if len(set(names)) != len(names):
            raise ValueError(f"Layout: slot names must be unique, got {names}")
        for name, size in self.slots:
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"Layout: slot {name!r} must have a positive int size, got {size!r}")

    @classmethod
    def of(cls, **sizes: int) -> Layout:
        return cls(tuple(sizes.items()))

    @property
    def width(self) -> int:
        return sum(size for _, size in self.slots)

    def __getitem__(self, name: str) -> slice:
        start = 0
        for slot, size in self.slots:
            if slot == name:
                return slice(start, start + size)
            start += size
        raise KeyError(f"Layout has no slot {name!r}; slots are {[n for n, _ in self.slots]}")

    def index(self, name: str) -> int:
        """The first coordinate of slot ``name`` (convenient for one-wide slots)."""
        return self[name].start

    def labels(self) -> list[str]:
        """One label per coordinate: ``x[0], x[1], y, ...`` (for plots)."""
        return [name if size == 1 else f"{name}[{i}]" for name, size in self.slots for i in range(size)]


# ----------------------------------------------------------------------------------------------
# Config

_LOOP_DEFAULTS = {"n_loops": 1, "input_injection": False}


def _check_choice(owner: str, name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Shape and variant of a transformer. Frozen; validates itself on construction."""

    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_in: int
    d_out: int = 1
    d_mlp: int = 0
    attention: str = "softmax"
    beta: float | None = None
    mask: str = "causal"
    mlp: str = "relu"
    norm: str = "none"
    final_norm: bool = False
    residual: bool = True
    bias: bool = True
    n_positions: int = 0
    norm_eps: float = 1e-5
    layout: Layout | None = None
    qk_source: str = "residual"
    n_qk_positions: int = 0
    mlp_input: str = "residual"
    layer_attention: tuple[str, ...] | None = None
    n_loops: int = 1
    input_injection: bool = False

    def __post_init__(self):
        ints = ("d_model", "n_layers", "n_heads", "d_head", "d_in", "d_out", "d_mlp", "n_positions",
                "n_qk_positions", "n_loops")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ModelConfig.{name} must be an int, got {type(value).__name__} {value!r}")
            lowest = 0 if name in ("d_mlp", "n_positions", "n_layers", "n_qk_positions") else 1
            if value < lowest:
                raise ValueError(f"ModelConfig.{name} must be >= {lowest}, got {value}")
        for name in ("final_norm", "residual", "bias", "input_injection"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelConfig.{name} must be a bool, got {getattr(self, name)!r}")
        _check_choice("ModelConfig", "attention", self.attention, ATTENTION_KINDS)
        _check_choice("ModelConfig", "mask", self.mask, MASKS)
        _check_choice("ModelConfig", "mlp", self.mlp, MLP_KINDS)
        _check_choice("ModelConfig", "norm", self.norm, NORMS)
        _check_choice("ModelConfig", "qk_source", self.qk_source, QK_SOURCES)
        _check_choice("ModelConfig", "mlp_input", self.mlp_input, MLP_INPUTS)
        if self.qk_source == "positions" and self.n_qk_positions < 1:
            raise ValueError("ModelConfig.n_qk_positions must be >= 1 when qk_source='positions'")
        if self.layer_attention is not None:
            if not isinstance(self.layer_attention, tuple) or len(self.layer_attention) != self.n_layers:
                raise ValueError(f"ModelConfig.layer_attention must be a tuple of n_layers={self.n_layers} kinds, "
                                 f"got {self.layer_attention!r}")
            for kind in self.layer_attention:
                _check_choice("ModelConfig", "layer_attention[i]", kind, ATTENTION_KINDS)
        if self.mlp_input == "concat" and self.mlp == "none":
            raise ValueError("ModelConfig.mlp_input='concat' needs an MLP (mlp != 'none')")
        if self.beta is not None and (not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool)):
            raise TypeError(f"ModelConfig.beta must be a float or None, got {self.beta!r}")
        if self.mlp != "none" and self.d_mlp < 1:
            raise ValueError(f"ModelConfig.d_mlp must be >= 1 when mlp={self.mlp!r}, got {self.d_mlp}")
        if not isinstance(self.norm_eps, (int, float)) or isinstance(self.norm_eps, bool):
            raise TypeError(f"ModelConfig.norm_eps must be a float, got {self.norm_eps!r}")
        if self.norm_eps < 0:
            raise ValueError(f"ModelConfig.norm_eps must be >= 0, got {self.norm_eps}")
        if self.layout is not None and not isinstance(self.layout, Layout):
            raise TypeError(f"ModelConfig.layout must be a Layout or None, got {type(self.layout).__name__}")
        if self.layout is not None and self.layout.width != self.d_model:
            raise ValueError(
                f"ModelConfig.layout has width {self.layout.width} but d_model is {self.d_model}"
            )

    def attention_kind(self, layer: int) -> str:
        return self.attention if self.layer_attention is None else self.layer_attention[layer]

    @property
    def softmax_beta(self) -> float:
        return 1.0 / math.sqrt(self.d_head) if self.beta is None else float(self.beta)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for name in ("n_loops", "input_injection"):  # an unlooped model's dict stays as it always was
            if out[name] == _LOOP_DEFAULTS[name]:
                del out[name]
        out["layout"] = None if self.layout is None else [list(s) for s in self.layout.slots]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {sorted(unknown)}; known fields are {sorted(known)}")
        data = dict(data)
        if data.get("layout") is not None:
            data["layout"] = Layout(tuple((str(n), int(s)) for n, s in data["layout"]))
        if data.get("layer_attention") is not None:
            data["layer_attention"] = tuple(data["layer_attention"])
        return cls(**data)
