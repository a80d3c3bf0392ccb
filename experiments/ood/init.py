"""PyTorch's default initialisation, as de Luca et al.'s model gets it, for the forward pass's weights.

Their ``Transformer`` (``model.py`` of opallab/positional_attention) keeps ``nn.Linear``'s default for
the input ``encoding``, the layers of every MLP and the ``decoding``: weights and biases uniform on
[-1/sqrt(fan_in), 1/sqrt(fan_in)] (kaiming_uniform with a = sqrt(5)). Its attention sets
``qk_proj``, ``v_proj`` and ``o_proj`` to xavier_uniform, bound sqrt(6 / (fan_in + fan_out)), with
zero biases.

Their ``qk_proj`` maps what the queries read (the stream, width D, or the one-hot positions, width
T) to queries and keys of that same width d_k for every head, all stacked: fan_in = d_k, fan_out =
2 H d_k. Ours map to d_head. Drawing every coordinate with their bound still gives each score
q.k / sqrt(width) their distribution at init: the variance of a sum of ``width`` independent
products, divided by ``width``, does not depend on ``width``. ``v_proj`` and ``o_proj`` are D x D
(H heads of d_head = D / H), as ours.

Model k's weights come from ``generators[k]`` alone, key by key in the order of
:func:`constructions.model.weight_shapes`, so model k is the same alone or in a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from constructions.model import ModelConfig
from experiments.training.optim import FlatSpec

LINEAR_WEIGHTS = ("W_E", "W_in", "W_out", "W_U")  # nn.Linear default; shape (fan_in, fan_out)
LINEAR_BIASES = {"b_E": "W_E", "b_in": "W_in", "b_out": "W_out", "b_U": "W_U"}  # bias -> its weight
ZERO = ("b_Q", "b_K", "b_V", "b_O")


def bounds(cfg: ModelConfig) -> dict[str, float]:
    """key -> b: that weight is uniform on [-b, b] (b = 0: zeros)."""
    spec = FlatSpec.of(cfg)
    shapes = dict(zip(spec.keys, spec.shapes))
    out = {}
    for key, shape in shapes.items():
        prefix, _, name = key.rpartition(".")
        out[key] = _bound(cfg, name, shape, lambda weight: shapes[f"{prefix}.{weight}" if prefix else weight])
    return out


def _bound(cfg: ModelConfig, name: str, shape: tuple[int, ...], shape_of) -> float:
    if name in ("W_Q", "W_K"):  # (H, d_k, d_head): their stacked qk_proj, d_k -> 2 H d_k
        d_k = shape[1]
        return math.sqrt(6 / (d_k + 2 * cfg.n_heads * d_k))
    if name in ("W_V", "W_O"):  # D -> D
        return math.sqrt(6 / (2 * cfg.d_model))
    if name in ZERO:
        return 0.0
    if name in LINEAR_WEIGHTS:
        return 1 / math.sqrt(shape[0])
    if name in LINEAR_BIASES:
        return 1 / math.sqrt(shape_of(LINEAR_BIASES[name])[0])
    raise ValueError(f"model.init = 'torch' covers de Luca et al.'s model (no norms, no learned positions); "
                     f"it has no rule for weight {name!r}")


def torch_init(cfg: ModelConfig, generators: Sequence[torch.Generator], *, dtype=torch.float32,
               device=None) -> Tensor:
    """Flat weights (K, P), row k drawn from ``generators[k]`` alone (see the module docstring)."""
    spec, bound = FlatSpec.of(cfg), bounds(cfg)
    rows = []
    for g in generators:
        parts = [(2 * torch.rand(shape, generator=g, dtype=dtype, device=g.device) - 1) * bound[key]
                 for key, shape in zip(spec.keys, spec.shapes)]
        rows.append(torch.cat([p.reshape(-1) for p in parts]))
    return torch.stack(rows).to(device)
