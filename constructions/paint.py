"""Painting hand-set weights by residual-slot name (model 0 of a :class:`constructions.model.Weights`).

Constructions build on the all-zero canvas of :func:`constructions.model.zeros` and set one head or
one MLP at a time, addressing rows and columns by the names of the config's :class:`Layout`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constructions import model as M


def paint_head(w: M.Weights, layout: M.Layout, layer: int, head: int, *, Q: dict, K: dict, V: dict,
               O: dict) -> None:
    """Set one head of model 0: Q/K/V map slot name -> (slot size, Dh) block, O: slot -> (Dh, size)."""
    attn = w.blocks[layer].attn
    for weight, blocks in ((attn.W_Q, Q), (attn.W_K, K), (attn.W_V, V)):
        for slot, block in blocks.items():
            rows = layout[slot]
            weight[0, head, rows, : block.shape[1]] = block
    for slot, block in O.items():
        attn.W_O[0, head, : block.shape[0], layout[slot]] = block


def paint_mlp(w: M.Weights, layout: M.Layout, layer: int, *, W_in: dict, W_out: dict) -> None:
    """Set the MLP of model 0: W_in slot -> (size, M) block, W_out slot -> (M, size) block."""
    p = w.blocks[layer].mlp
    for slot, block in W_in.items():
        p.W_in[0, layout[slot], : block.shape[1]] = block
    for slot, block in W_out.items():
        p.W_out[0, : block.shape[0], layout[slot]] = block


def selector(layout: M.Layout, slots: dict[str, int], d_in: int, dtype=torch.float64) -> Tensor:
    """(1, d_in, D) embedding that copies input features [a, b) into slot: {"x": 0, "y": d} etc."""
    W = torch.zeros(1, d_in, layout.width, dtype=dtype)
    for slot, start in slots.items():
        s = layout[slot]
        W[0, start: start + (s.stop - s.start), s] = torch.eye(s.stop - s.start, dtype=dtype)
    return W


def unit(layout: M.Layout, slot: int | str, scale: float = 1.0, dtype=torch.float64) -> Tensor:
    """(1, D, 1) readout scale * e_slot (the first coordinate of the slot)."""
    W = torch.zeros(1, layout.width, 1, dtype=dtype)
    W[0, layout.index(slot), 0] = scale
    return W


def eye(n: int, scale: float = 1.0) -> Tensor:
    return scale * torch.eye(n, dtype=torch.float64)


