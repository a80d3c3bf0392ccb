"""Typed weights with a leading model axis K, their flat state dict, safetensors I/O and init.

Every tensor has shape (K, ...). ``weight_shapes(cfg, K)`` is the contract: the flat keys
(``blocks.0.attn.W_Q``, ...) and shapes a config implies; ``to_state_dict`` / ``from_state_dict``
convert losslessly, ``check_weights`` asserts every shape, and ``save_weights`` / ``load_weights``
use safetensors with the config in the JSON header (no pickle).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save
from torch import Tensor

from constructions.config import ModelConfig

# ----------------------------------------------------------------------------------------------
# Typed weights (every tensor has the leading model axis K)


@dataclass
class Norm:
    w: Tensor  # (K, D)
    b: Tensor | None = None  # (K, D); LayerNorm only


@dataclass
class Attention:
    W_Q: Tensor  # (K, H, D, Dh)
    W_K: Tensor  # (K, H, D, Dh)
    W_V: Tensor  # (K, H, D, Dh)
    W_O: Tensor  # (K, H, Dh, D)
    b_Q: Tensor | None = None  # (K, H, Dh)
    b_K: Tensor | None = None  # (K, H, Dh)
    b_V: Tensor | None = None  # (K, H, Dh)
    b_O: Tensor | None = None  # (K, D)


@dataclass
class MLP:
    W_in: Tensor  # (K, D, M)
    W_out: Tensor  # (K, M, D)
    b_in: Tensor | None = None  # (K, M)
    b_out: Tensor | None = None  # (K, D)


@dataclass
class Block:
    attn: Attention
    mlp: MLP | None = None
    ln1: Norm | None = None
    ln2: Norm | None = None


@dataclass
class Weights:
    W_E: Tensor  # (K, Din, D)
    blocks: list[Block]
    W_U: Tensor  # (K, D, Dout)
    b_E: Tensor | None = None  # (K, D)
    W_pos: Tensor | None = None  # (K, n_positions, D)
    ln_f: Norm | None = None
    b_U: Tensor | None = None  # (K, Dout)
    extra: dict = field(default_factory=dict)  # not weights: free-form notes, never serialised

    @property
    def K(self) -> int:
        return self.W_E.shape[0]

    def map(self, fn) -> Weights:
        """A copy with ``fn`` applied to every tensor (``.to(device)``, ``.detach()``, ...)."""
        out = from_state_dict({k: fn(v) for k, v in to_state_dict(self).items()})
        out.extra = dict(self.extra)
        return out

    def select(self, k) -> Weights:
        """Models ``k`` (an int, slice or index tensor) of the batch, keeping the K axis."""
        if isinstance(k, int):
            k = slice(k, k + 1)
        return self.map(lambda t: t[k])


def weight_shapes(cfg: ModelConfig, K: int) -> dict[str, tuple[int, ...]]:
    """The flat state-dict keys of a model with config ``cfg`` and their shapes (the contract)."""
    D, H, Dh, M = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    shapes: dict[str, tuple[int, ...]] = {"W_E": (K, cfg.d_in, D)}
    if cfg.bias:
        shapes["b_E"] = (K, D)
    if cfg.n_positions:
        shapes["W_pos"] = (K, cfg.n_positions, D)
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        if cfg.norm != "none":
            shapes[p + "ln1.w"] = (K, D)
            if cfg.norm == "layernorm":
                shapes[p + "ln1.b"] = (K, D)
        qk_in = cfg.n_qk_positions if cfg.qk_source == "positions" else D
        shapes[p + "attn.W_Q"] = (K, H, qk_in, Dh)
        shapes[p + "attn.W_K"] = (K, H, qk_in, Dh)
        shapes[p + "attn.W_V"] = (K, H, D, Dh)
        shapes[p + "attn.W_O"] = (K, H, Dh, D)
        if cfg.bias:
            for name in ("b_Q", "b_K", "b_V"):
                shapes[p + "attn." + name] = (K, H, Dh)
            shapes[p + "attn.b_O"] = (K, D)
        if cfg.mlp != "none":
            if cfg.norm != "none":
                shapes[p + "ln2.w"] = (K, D)
                if cfg.norm == "layernorm":
                    shapes[p + "ln2.b"] = (K, D)
            shapes[p + "mlp.W_in"] = (K, 2 * D if cfg.mlp_input == "concat" else D, M)
            shapes[p + "mlp.W_out"] = (K, M, D)
            if cfg.bias:
                shapes[p + "mlp.b_in"] = (K, M)
                shapes[p + "mlp.b_out"] = (K, D)
    if cfg.final_norm and cfg.norm != "none":
        shapes["ln_f.w"] = (K, D)
        if cfg.norm == "layernorm":
            shapes["ln_f.b"] = (K, D)
    shapes["W_U"] = (K, D, cfg.d_out)
    if cfg.bias:
        shapes["b_U"] = (K, cfg.d_out)
    return shapes


def to_state_dict(w: Weights) -> dict[str, Tensor]:
    """Flatten typed weights into ``{"blocks.0.attn.W_Q": tensor, ...}`` (absent parts omitted)."""
    out: dict[str, Tensor] = {}

    def put(prefix: str, obj) -> None:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, Tensor):
                out[prefix + f.name] = value
            elif isinstance(value, (Norm, Attention, MLP)):
                put(prefix + f.name + ".", value)

    put("", w)
    for i, block in enumerate(w.blocks):
        put(f"blocks.{i}.", block)
    return out


def _part(cls, sd: dict[str, Tensor], prefix: str):
    names = [f.name for f in fields(cls)]
    if not any(prefix + n in sd for n in names):
        return None
    return cls(**{n: sd.get(prefix + n) for n in names})


def from_state_dict(sd: dict[str, Tensor]) -> Weights:
    """Inverse of :func:`to_state_dict`. Unknown keys are an error, never silently dropped."""
    n_layers = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.")), default=-1)
    blocks = [
        Block(
            attn=_part(Attention, sd, f"blocks.{i}.attn."),
            mlp=_part(MLP, sd, f"blocks.{i}.mlp."),
            ln1=_part(Norm, sd, f"blocks.{i}.ln1."),
            ln2=_part(Norm, sd, f"blocks.{i}.ln2."),
        )
        for i in range(n_layers)
    ]
    w = Weights(
        W_E=sd["W_E"], blocks=blocks, W_U=sd["W_U"], b_E=sd.get("b_E"), W_pos=sd.get("W_pos"),
        ln_f=_part(Norm, sd, "ln_f."), b_U=sd.get("b_U"),
    )
    unknown = set(sd) - set(to_state_dict(w))
    if unknown:
        raise KeyError(f"from_state_dict: unknown keys {sorted(unknown)}")
    return w


def check_weights(cfg: ModelConfig, w: Weights) -> None:
    """Assert every tensor has exactly the shape ``cfg`` implies (the same way for every model)."""
    sd = to_state_dict(w)
    expected = weight_shapes(cfg, w.K)
    missing, unknown = set(expected) - set(sd), set(sd) - set(expected)
    if missing or unknown:
        raise ValueError(f"weights do not match config: missing {sorted(missing)}, unexpected {sorted(unknown)}")
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise ValueError(f"weight {key} has shape {tuple(sd[key].shape)}, config implies {shape}")


def save_weights(path, cfg: ModelConfig, w: Weights) -> None:
    """Write weights as safetensors (no pickle); the config travels in the JSON header. Atomic: the
    bytes go to a temporary file beside ``path``, renamed over it once complete, so a reader never
    sees a half-written file."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in to_state_dict(w).items()}
    data = safetensors_save(tensors, metadata={"ttb_config": json.dumps(cfg.to_dict())})
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_weights(path, device=None) -> tuple[ModelConfig, Weights]:
    """The config and weights of a file written by :func:`save_weights`; a file that is not
    safetensors, or whose header has no model config, is a ValueError naming it."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as err:  # a bad header, a cut-short file
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if "ttb_config" not in header:
        raise ValueError(f"{path}: its header has no model config ('ttb_config'); weights are read from files "
                         f"written by ttb (ttb sweep, ttb import garg)")
    cfg = ModelConfig.from_dict(json.loads(header["ttb_config"]))
    w = from_state_dict(sd)
    check_weights(cfg, w)
    return cfg, (w if device is None else w.map(lambda t: t.to(device)))


# ----------------------------------------------------------------------------------------------
# Initialisation: one generator per model, so model k is the same whether trained alone or in a batch


def zeros(cfg: ModelConfig, K: int = 1, *, dtype=torch.float64, device=None) -> Weights:
    """All-zero weights (norm gains one): the canvas hand-set constructions paint on."""
    sd = {}
    for key, shape in weight_shapes(cfg, K).items():
        fill = 1.0 if key.endswith(".w") and ("ln" in key) else 0.0
        sd[key] = torch.full(shape, fill, dtype=dtype, device=device)
    return from_state_dict(sd)


def init(cfg: ModelConfig, generators: list[torch.Generator], *, std: float = 0.02,
         dtype=torch.float32, device=None) -> Weights:
    """GPT-2-style init (normal(0, std) matrices, zero biases, unit gains), one generator per model.

    Output projections (W_O, W_out) get std / sqrt(2 L) as in GPT-2. Model k's tensors are drawn
    from ``generators[k]`` alone, in the fixed order of :func:`weight_shapes`.
    """
    K = len(generators)
    if K < 1:
        raise ValueError("init: need at least one generator (one per model)")
    shapes = weight_shapes(cfg, K)
    out_std = std / math.sqrt(2 * max(cfg.n_layers, 1))
    per_model: list[dict[str, Tensor]] = []
    for gen in generators:
        tensors = {}
        for key, shape in shapes.items():
            if key.split(".")[-1].startswith("b") or key.endswith(".w"):
                continue
            scale = out_std if key.endswith(("W_O", "W_out")) else std
            gen_device = gen.device
            tensors[key] = (torch.randn(shape[1:], generator=gen, dtype=dtype, device=gen_device) * scale).to(device)
        per_model.append(tensors)
    w = zeros(cfg, K, dtype=dtype, device=device)
    sd = to_state_dict(w)
    for key in per_model[0]:
        sd[key] = torch.stack([m[key] for m in per_model])
    return from_state_dict(sd)
