"""The one forward pass, shared by hand-set and trained weights.

Read top to bottom: residual-stream layout, config, typed weights, initialisation, norm, attention,
MLP, block, model. Every weight tensor carries a leading model axis K, so K models of one shape run
(and train) in one call.

Glossary of shapes
    K   models in a batch (leading axis of every weight)
    B   prompts per model
    T   tokens per prompt
    D   residual width (d_model)
    H   heads;  Dh  head width
    M   MLP width
    L   layers
    Din token feature width (before the embedding);  Dout readout width

Attention kinds (config ``attention``):
    softmax  A = softmax(beta * q.k) over the visible keys (beta is an explicit inverse temperature;
             ``beta=None`` means the usual 1/sqrt(Dh))
    linear   A = (q.k) / N, unnormalised, N = number of keys the query sees
    relu     A = ReLU(q.k) / N
    normalized  A = (q.k) / sum_j' (q.k_j') over the visible keys (normalised linear attention; a
             query whose scores sum to exactly 0, e.g. an unused all-zero head, reads nothing)
``layer_attention`` (a tuple, one kind per layer) overrides ``attention`` layer by layer.
Masks (config ``mask``): ``causal`` (key j visible to query i iff j <= i), ``full``,
``exclude_query`` (every query sees every token except the last one: the in-context regression
layout where the last token is the query and must not act as an example).
Positional attention (``qk_source="positions"``): queries and keys come from one-hot positions only
(W_Q, W_K have n_qk_positions rows: row t is position t's query / key), values from the stream, so
the attention pattern is the same for every input.
Norms (pre-norm): ``layernorm``, ``rmsnorm``, and ``crmsnorm`` (RMSNorm of the zero-mean vector whose
first D coordinates the stream stores; Jiang et al. 2023).
``mlp_input="concat"``: the MLP reads [stream, attention output] and its output replaces the
stream (no residual), as in the positional-attention constructions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor
from torch.nn import functional as F

ATTENTION_KINDS = ("softmax", "linear", "relu", "normalized")
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

    def __post_init__(self):
        ints = ("d_model", "n_layers", "n_heads", "d_head", "d_in", "d_out", "d_mlp", "n_positions",
                "n_qk_positions")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ModelConfig.{name} must be an int, got {type(value).__name__} {value!r}")
            lowest = 0 if name in ("d_mlp", "n_positions", "n_layers", "n_qk_positions") else 1
            if value < lowest:
                raise ValueError(f"ModelConfig.{name} must be >= {lowest}, got {value}")
        for name in ("final_norm", "residual", "bias"):
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
    """Write weights as safetensors (no pickle); the config travels in the JSON header."""
    import json

    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in to_state_dict(w).items()}
    save_file(tensors, str(path), metadata={"ttb_config": json.dumps(cfg.to_dict())})


def load_weights(path, device=None) -> tuple[ModelConfig, Weights]:
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        cfg = ModelConfig.from_dict(json.loads(f.metadata()["ttb_config"]))
        sd = {k: f.get_tensor(k) for k in f.keys()}
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


# ----------------------------------------------------------------------------------------------
# The forward pass


def norm(cfg: ModelConfig, p: Norm | None, h: Tensor) -> Tensor:
    """Pre-norm over the last axis. h: (K, B, T, D); gains (K, D) broadcast over B, T."""
    if cfg.norm == "none" or p is None:
        return h
    if cfg.norm == "layernorm":
        h = h - h.mean(-1, keepdim=True)
    if cfg.norm == "crmsnorm":
        # h holds the first D-1 coordinates of a zero-mean D-vector z (the last is -sum(h)), so
        # mean(z^2) = (|h|^2 + (sum h)^2) / (D_stored + 1): RMSNorm of z without storing it.
        ms = (h.pow(2).sum(-1, keepdim=True) + h.sum(-1, keepdim=True).pow(2)) / (h.shape[-1] + 1)
        h = h * torch.rsqrt(ms + cfg.norm_eps)
    else:
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
    h = h * p.w[:, None, None, :]
    if p.b is not None:
        h = h + p.b[:, None, None, :]
    return h


def key_mask(kind: str, T: int, device=None) -> Tensor:
    """(T, T) bool, True where query i may read key j."""
    i = torch.arange(T, device=device)
    if kind == "causal":
        return i[None, :] <= i[:, None]
    if kind == "full":
        return torch.ones(T, T, dtype=torch.bool, device=device)
    if kind == "exclude_query":
        if T < 2:
            raise ValueError("mask 'exclude_query' needs at least 2 tokens (examples, then the query)")
        return (i[None, :] < T - 1).expand(T, T)
    raise ValueError(f"mask must be one of {MASKS}, got {kind!r}")


def _bias(b: Tensor | None, shape) -> Tensor | float:
    return 0.0 if b is None else b.view(shape)


def attention_pattern(cfg: ModelConfig, p: Attention, h: Tensor, kind: str | None = None) -> Tensor:
    """Attention weights (K, B, H, T, T) for input h (K, B, T, D); kind defaults to cfg.attention."""
    kind = cfg.attention if kind is None else kind
    K, B, T, D = h.shape
    if cfg.qk_source == "positions":  # one-hot positions in: row t of W_Q / W_K is position t's vector
        if T > cfg.n_qk_positions:
            raise ValueError(f"prompt has {T} tokens but positional attention has n_qk_positions={cfg.n_qk_positions}")
        q = p.W_Q[:, None, :, :T, :] + _bias(p.b_Q, (K, 1, -1, 1, cfg.d_head))  # (K, 1, H, T, Dh)
        k = p.W_K[:, None, :, :T, :] + _bias(p.b_K, (K, 1, -1, 1, cfg.d_head))
    else:
        q = torch.einsum("kbtd,khde->kbhte", h, p.W_Q) + _bias(p.b_Q, (K, 1, -1, 1, cfg.d_head))
        k = torch.einsum("kbtd,khde->kbhte", h, p.W_K) + _bias(p.b_K, (K, 1, -1, 1, cfg.d_head))
    scores = (q @ k.transpose(-1, -2)).expand(K, B, -1, T, T)  # (K, B, H, T, T)
    visible = key_mask(cfg.mask, T, h.device)
    if kind == "softmax":
        scores = (cfg.softmax_beta * scores).masked_fill(~visible, float("-inf"))
        return torch.softmax(scores, dim=-1)
    if kind == "normalized":
        scores = scores * visible
        total = scores.sum(-1, keepdim=True)
        return torch.where(total == 0, 0.0, scores / torch.where(total == 0, 1.0, total))
    n_keys = visible.sum(-1, keepdim=True).to(h.dtype)  # (T, 1): N for each query
    if kind == "relu":
        scores = F.relu(scores)
    return scores * visible / n_keys


def attention(cfg: ModelConfig, p: Attention, h: Tensor, pattern: Tensor | None = None) -> Tensor:
    """Multi-head attention output (K, B, T, D); sums heads through W_O."""
    K = h.shape[0]
    if pattern is None:
        pattern = attention_pattern(cfg, p, h)
    v = torch.einsum("kbtd,khde->kbhte", h, p.W_V) + _bias(p.b_V, (K, 1, -1, 1, cfg.d_head))
    z = pattern @ v  # (K, B, H, T, Dh)
    out = torch.einsum("kbhte,khed->kbtd", z, p.W_O)
    return out + _bias(p.b_O, (K, 1, 1, -1))


def mlp(cfg: ModelConfig, p: MLP, h: Tensor) -> Tensor:
    """Position-wise MLP (K, B, T, D) -> (K, B, T, D)."""
    K = h.shape[0]
    a = torch.einsum("kbtd,kdm->kbtm", h, p.W_in) + _bias(p.b_in, (K, 1, 1, -1))
    if cfg.mlp == "relu":
        a = F.relu(a)
    elif cfg.mlp == "gelu":
        a = F.gelu(a)
    elif cfg.mlp == "gelu_tanh":
        a = F.gelu(a, approximate="tanh")
    return torch.einsum("kbtm,kmd->kbtd", a, p.W_out) + _bias(p.b_out, (K, 1, 1, -1))


def block(cfg: ModelConfig, p: Block, h: Tensor, keep: dict | None = None, layer: int = 0) -> Tensor:
    """One pre-norm block: h + attn(norm(h)), then h + mlp(norm(h)) (no residual if disabled)."""
    x = norm(cfg, p.ln1, h)
    pattern = attention_pattern(cfg, p.attn, x, cfg.attention_kind(layer))
    if keep is not None:
        keep["attention"].append(pattern)
    a = attention(cfg, p.attn, x, pattern)
    if cfg.mlp_input == "concat":  # MLP([h, attention output]) replaces the stream: no residual
        return mlp(cfg, p.mlp, torch.cat([h, a], dim=-1))
    h = h + a if cfg.residual else a
    if cfg.mlp != "none":
        m = mlp(cfg, p.mlp, norm(cfg, p.ln2, h))
        h = h + m if cfg.residual else m
    return h


def embed(cfg: ModelConfig, w: Weights, tokens: Tensor) -> Tensor:
    """tokens (B, T, Din) shared by all models, or (K, B, T, Din) -> residual (K, B, T, D)."""
    given = tuple(tokens.shape)
    if tokens.dim() == 3:
        tokens = tokens.unsqueeze(0).expand(w.K, *tokens.shape)
    if tokens.dim() != 4 or tokens.shape[0] != w.K or tokens.shape[-1] != cfg.d_in:
        raise ValueError(
            f"tokens must have shape (B, T, d_in={cfg.d_in}) or (K={w.K}, B, T, d_in={cfg.d_in}), got {given}"
        )
    T = tokens.shape[2]
    h = torch.einsum("kbti,kid->kbtd", tokens, w.W_E) + _bias(w.b_E, (w.K, 1, 1, -1))
    if cfg.n_positions:
        if T > cfg.n_positions:
            raise ValueError(f"prompt has {T} tokens but the model has n_positions={cfg.n_positions}")
        h = h + w.W_pos[:, None, :T, :]
    return h


def readout(cfg: ModelConfig, w: Weights, h: Tensor) -> Tensor:
    """The model's readout (final norm, then unembedding) on any residual (K, B, T, D)."""
    h = norm(cfg, w.ln_f, h) if cfg.final_norm else h
    return torch.einsum("kbtd,kdo->kbto", h, w.W_U) + _bias(w.b_U, (w.K, 1, 1, -1))


@dataclass
class Output:
    out: Tensor  # (K, B, T, Dout)
    residuals: list[Tensor] | None = None  # L + 1 tensors (K, B, T, D): embedding, after each block
    attention: list[Tensor] | None = None  # L tensors (K, B, H, T, T)


def forward(cfg: ModelConfig, w: Weights, tokens: Tensor, *, residuals: bool = False,
            attention_patterns: bool = False) -> Output:
    """Run K models on tokens; optionally keep the residual stream after every layer."""
    if len(w.blocks) != cfg.n_layers:
        raise ValueError(f"weights have {len(w.blocks)} blocks, config says n_layers={cfg.n_layers}")
    if tokens.dtype != w.W_E.dtype:
        raise TypeError(f"tokens are {tokens.dtype} but weights are {w.W_E.dtype}")
    keep = {"attention": []} if attention_patterns else None
    h = embed(cfg, w, tokens)
    stream = [h]
    for layer, p in enumerate(w.blocks):
        h = block(cfg, p, h, keep, layer)
        stream.append(h)
    return Output(
        out=readout(cfg, w, h),
        residuals=stream if residuals else None,
        attention=keep["attention"] if keep else None,
    )
