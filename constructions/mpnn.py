"""The MPNN + virtual-node forward pass (graphs), batched over K models like constructions/model.py.

A graph has n nodes with states h_i (width D) and one virtual node (VN) with state g (width Dv).
Layer l, for every graph at once:

    messages   m_j = msg_l(h_j)                          (Dv)   every node -> the virtual node
    aggregate  g   = sum_j m_j                           (Dv)   the VN sums (its state is replaced)
    broadcast  h_i = h_i + upd_l([h_i, sum_{j~i} h_j, g])  (D)  the VN -> every node; j~i: graph edges

The VN keeps no memory between layers: whatever must last is broadcast into the nodes. Embedding
h_i = x_i W_E + b_E; readout y_i = h_i W_U.

``msg`` and ``upd`` are *units* of ``width`` P, of one of two kinds (config ``update``):

    relu     p = ReLU(u W_a + b_a);                                 unit(u) = p W_o + b_o
             a one-hidden-layer MLP ("small MLP updates").
    exact    p = exp(u W_g + b_g) * (u W_a + b_a) * (u W_b + b_b) / (1 + u W_c + b_c)
             elementwise; unit(u) = p W_o + b_o. Products and quotients of affine forms, with an
             exponential gate ("exact multiply/divide updates"). The divisor is written 1 + (...)
             so that all-zero weights are the neutral unit (0 * 0 / 1 = 0, gate exp(0) = 1): a
             weight is nonzero only where a construction uses it.

Glossary of shapes
    K   models;  B  graphs per model;  n  nodes per graph
    Din raw node features;  D  node state;  Dv  virtual-node state;  P  units per update
    Dout readout width;  L  layers
    unit inputs: messages read h (D); node updates read [h, neighbour sum, g] (2 D + Dv)

Weights are a flat dict of tensors, each with the leading model axis K (the form
:func:`constructions.check.run.mutate` and safetensors take): ``W_E``, ``b_E``, ``W_U`` and
``layers.{l}.{msg,upd}.{W_a, b_a, ..., W_o, b_o}``; :func:`weight_shapes` is the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from constructions.model import Layout

UPDATES = ("exact", "relu")
EXACT_FORMS = ("a", "b", "c", "g")  # affine forms of an exact unit: factors a, b, divisor c, gate g


@dataclass(frozen=True)
class MPNNConfig:
    """Shape and variant of an MPNN + VN. Frozen; validates itself on construction."""

    d_in: int
    d_node: int
    d_vn: int
    n_layers: int
    width: int
    d_out: int = 1
    update: str = "exact"
    layout: Layout | None = None  # named slots of the node state
    vn_layout: Layout | None = None  # named slots of the virtual node

    def __post_init__(self):
        for name in ("d_in", "d_node", "d_vn", "n_layers", "width", "d_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"MPNNConfig.{name} must be an int, got {type(value).__name__} {value!r}")
            if value < (0 if name == "n_layers" else 1):
                raise ValueError(f"MPNNConfig.{name} must be >= {0 if name == 'n_layers' else 1}, got {value}")
        if self.update not in UPDATES:
            raise ValueError(f"MPNNConfig.update must be one of {UPDATES}, got {self.update!r}")
        for name, width in (("layout", self.d_node), ("vn_layout", self.d_vn)):
            lay = getattr(self, name)
            if lay is not None and (not isinstance(lay, Layout) or lay.width != width):
                raise ValueError(f"MPNNConfig.{name} must be a Layout of width {width}, got {lay!r}")

    @property
    def d_update_in(self) -> int:
        """Width of a node update's input [h, neighbour sum, g]."""
        return 2 * self.d_node + self.d_vn

    def update_input_layout(self) -> Layout | None:
        """Named slots of [h, neighbour sum, g]: ``h.<slot>``, ``nbr.<slot>``, ``g.<slot>``."""
        if self.layout is None or self.vn_layout is None:
            return None
        slots = [(f"{p}.{s}", k) for p, lay in (("h", self.layout), ("nbr", self.layout)) for s, k in lay.slots]
        return Layout(tuple(slots) + tuple((f"g.{s}", k) for s, k in self.vn_layout.slots))


def _unit_shapes(cfg: MPNNConfig, prefix: str, d_in: int, d_out: int, K: int) -> dict[str, tuple]:
    P = cfg.width
    forms = EXACT_FORMS if cfg.update == "exact" else ("a",)
    shapes = {}
    for f in forms:
        shapes[f"{prefix}W_{f}"] = (K, d_in, P)
        shapes[f"{prefix}b_{f}"] = (K, P)
    shapes[f"{prefix}W_o"] = (K, P, d_out)
    shapes[f"{prefix}b_o"] = (K, d_out)
    return shapes


def weight_shapes(cfg: MPNNConfig, K: int = 1) -> dict[str, tuple[int, ...]]:
    """Every weight's key and shape (the contract between builders, trainers and the forward pass)."""
    shapes = {"W_E": (K, cfg.d_in, cfg.d_node), "b_E": (K, cfg.d_node)}
    for layer in range(cfg.n_layers):
        shapes |= _unit_shapes(cfg, f"layers.{layer}.msg.", cfg.d_node, cfg.d_vn, K)
        shapes |= _unit_shapes(cfg, f"layers.{layer}.upd.", cfg.d_update_in, cfg.d_node, K)
    shapes["W_U"] = (K, cfg.d_node, cfg.d_out)
    return shapes


def zeros(cfg: MPNNConfig, K: int = 1, *, dtype=torch.float64, device=None) -> dict[str, Tensor]:
    """All-zero weights: every unit computes 0, every layer leaves the nodes as they are."""
    return {k: torch.zeros(s, dtype=dtype, device=device) for k, s in weight_shapes(cfg, K).items()}


def init(cfg: MPNNConfig, generators: list[torch.Generator], *, std: float = 0.02, dtype=torch.float32,
         device=None) -> dict[str, Tensor]:
    """Random matrices N(0, std^2) from model k's own generator (in :func:`weight_shapes` order),
    zero biases; divisor matrices W_c and gates W_g start at zero (divisor 1, gate 1: a random divisor
    could cross zero)."""
    if not generators:
        raise ValueError("init: need at least one generator (one per model)")
    w = zeros(cfg, len(generators), dtype=dtype, device=device)
    for key, shape in weight_shapes(cfg, 1).items():
        if key.split(".")[-1].startswith("W") and not key.endswith(("W_c", "W_g")):
            draws = [torch.randn(shape[1:], generator=g, dtype=dtype, device=g.device) for g in generators]
            w[key] = (torch.stack(draws) * std).to(device)
    return w


def check_weights(cfg: MPNNConfig, w: dict[str, Tensor]) -> int:
    """Assert every tensor has the shape ``cfg`` implies; returns K."""
    K = w["W_E"].shape[0] if "W_E" in w else 0
    expected = weight_shapes(cfg, K)
    missing, unknown = sorted(set(expected) - set(w)), sorted(set(w) - set(expected))
    if missing or unknown:
        raise ValueError(f"MPNN weights do not match config: missing {missing}, unexpected {unknown}")
    for key, shape in expected.items():
        if tuple(w[key].shape) != shape:
            raise ValueError(f"MPNN weight {key} has shape {tuple(w[key].shape)}, config implies {shape}")
    return K


# ----------------------------------------------------------------------------------------------
# The forward pass


def _affine(u: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """u (K, ..., Din) @ W (K, Din, P) + b (K, P) -> (K, ..., P)."""
    K = u.shape[0]
    flat = u.reshape(K, -1, u.shape[-1]) @ W + b[:, None, :]
    return flat.reshape(*u.shape[:-1], W.shape[-1])


def unit(cfg: MPNNConfig, w: dict[str, Tensor], prefix: str, u: Tensor) -> Tensor:
    """One unit (see the module docstring) applied to u (K, ..., Din) -> (K, ..., Dout)."""
    a = _affine(u, w[prefix + "W_a"], w[prefix + "b_a"])
    if cfg.update == "relu":
        p = torch.relu(a)
    else:
        gate = torch.exp(_affine(u, w[prefix + "W_g"], w[prefix + "b_g"]))
        divisor = 1 + _affine(u, w[prefix + "W_c"], w[prefix + "b_c"])
        p = gate * a * _affine(u, w[prefix + "W_b"], w[prefix + "b_b"]) / divisor
    return _affine(p, w[prefix + "W_o"], w[prefix + "b_o"])


def layer(cfg: MPNNConfig, w: dict[str, Tensor], l: int, h: Tensor, adjacency: Tensor) -> tuple[Tensor, Tensor]:
    """One MPNN + VN layer: h (K, B, n, D) -> (new h, the VN state g (K, B, Dv))."""
    g = unit(cfg, w, f"layers.{l}.msg.", h).sum(dim=2)  # (K, B, Dv): sum of the messages
    nbr = adjacency @ h  # (K, B, n, D): sum over graph neighbours
    u = torch.cat([h, nbr, g[:, :, None, :].expand(-1, -1, h.shape[2], -1)], dim=-1)
    return h + unit(cfg, w, f"layers.{l}.upd.", u), g


@dataclass
class MPNNOutput:
    out: Tensor  # (K, B, n, Dout)
    states: list[Tensor] | None = None  # L + 1 node states (K, B, n, D): embedding, after each layer
    vn: list[Tensor] | None = None  # L virtual-node states (K, B, Dv)


def _batched(x: Tensor, K: int, name: str, dims: int) -> Tensor:
    if x.dim() == dims - 1:
        x = x.unsqueeze(0).expand(K, *x.shape)
    if x.dim() != dims or x.shape[0] != K:
        raise ValueError(f"{name} must have {dims - 1} dims (shared by all models) or {dims} with K={K} first, "
                         f"got shape {tuple(x.shape)}")
    return x


def forward(cfg: MPNNConfig, w: dict[str, Tensor], features: Tensor, adjacency: Tensor | None = None, *,
            states: bool = False) -> MPNNOutput:
    """features (B, n, Din) or (K, B, n, Din); adjacency (B, n, n) / (K, B, n, n) or None (no edges)."""
    K = check_weights(cfg, w)
    x = _batched(features, K, "features", 4)
    if x.shape[-1] != cfg.d_in:
        raise ValueError(f"features have {x.shape[-1]} columns, MPNNConfig.d_in is {cfg.d_in}")
    if x.dtype != w["W_E"].dtype:
        raise TypeError(f"features are {x.dtype} but weights are {w['W_E'].dtype}")
    n = x.shape[2]
    A = torch.zeros(n, n, dtype=x.dtype, device=x.device) if adjacency is None else adjacency.to(x.dtype)
    A = _batched(A, K, "adjacency", 4) if A.dim() >= 3 else A.expand(K, x.shape[1], n, n)
    if A.shape[-2:] != (n, n):
        raise ValueError(f"adjacency must end in ({n}, {n}), got {tuple(A.shape)}")
    h = _affine(x, w["W_E"], w["b_E"])
    kept, vns = [h], []
    for l in range(cfg.n_layers):
        h, g = layer(cfg, w, l, h, A)
        kept.append(h)
        vns.append(g)
    out = _affine(h, w["W_U"], torch.zeros(K, cfg.d_out, dtype=h.dtype, device=h.device))
    return MPNNOutput(out, kept if states else None, vns if states else None)


def n_parameters(cfg: MPNNConfig) -> int:
    return sum(math.prod(s) for s in weight_shapes(cfg, 1).values())
