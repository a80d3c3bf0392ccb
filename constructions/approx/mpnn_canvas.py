"""Painting MPNN + VN weights by slot name (numpy, then tensors): the MPNN analogue of base.paint_*.

A unit is described by its affine forms and its output: each form (``a``, ``b``, ``c``, ``g`` for
exact units, ``a`` for ReLU units) maps input slot names to coefficient vectors, plus an optional
``"const"`` (the bias; for the divisor c the form is the whole divisor, stored as b_c = const - 1);
``out`` maps output slot names to the unit's row of W_o. Message units read
the node state (slots of ``cfg.layout``) and write the VN (``cfg.vn_layout``); node updates read
``h.<slot>``, ``nbr.<slot>``, ``g.<slot>`` (:meth:`MPNNConfig.update_input_layout`) and write the
node state. A given form without "const" has bias 0; omitted exact forms default to the constant 1 for a, b, c and to 0 for the gate g, so
``unit(a=..., b=...)`` is a product and ``unit(a=..., c=...)`` a ratio.

:meth:`Canvas.block` paints ``count`` units at once (vectors become (size, count) matrices, consts
(count,) and outputs (count, size)), which keeps builds with thousands of ReLU units vectorised.
The width P is the largest number of units any layer uses; :meth:`Canvas.done` allocates it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import torch

from constructions.mpnn import EXACT_FORMS, MPNNConfig, weight_shapes

DEFAULT_CONST = {"a": 1.0, "b": 1.0, "c": 1.0, "g": 0.0}


def onehot(i: int, size: int, scale: float = 1.0) -> np.ndarray:
    v = np.zeros(size)
    v[i] = scale
    return v


class Canvas:
    """One model's MPNN weights under construction (K = 1, float64)."""

    def __init__(self, cfg: MPNNConfig):
        if cfg.layout is None or cfg.vn_layout is None:
            raise ValueError("Canvas: the config needs a node layout and a VN layout")
        self.cfg = cfg
        self.W_E = np.zeros((cfg.d_in, cfg.d_node))
        self.b_E = np.zeros(cfg.d_node)
        self.W_U = np.zeros((cfg.d_node, cfg.d_out))
        self._blocks: dict[tuple[int, str], list] = defaultdict(list)
        self._count: dict[tuple[int, str], int] = defaultdict(int)
        self._lay = {"msg": (cfg.layout, cfg.vn_layout), "upd": (cfg.update_input_layout(), cfg.layout)}

    def _layouts(self, part: str):
        if part not in self._lay:
            raise ValueError(f"part must be 'msg' or 'upd', got {part!r}")
        return self._lay[part]

    def block(self, layer: int, part: str, count: int, out: dict, **forms: dict) -> None:
        """``count`` units of ``layer``'s message (``part="msg"``) or node update (``"upd"``)."""
        if not 0 <= layer < self.cfg.n_layers:
            raise ValueError(f"layer {layer} outside 0..{self.cfg.n_layers - 1}")
        allowed = EXACT_FORMS if self.cfg.update == "exact" else ("a",)
        unknown = set(forms) - set(allowed)
        if unknown:
            raise ValueError(f"{self.cfg.update} units have forms {allowed}, got {sorted(unknown)}")
        start = self._count[(layer, part)]
        self._count[(layer, part)] += count
        self._blocks[(layer, part)].append((start, count, out, forms))

    def unit(self, layer: int, part: str, out: dict, **forms: dict) -> None:
        """One unit (vectors of shape (size,), numbers for one-wide slots)."""
        one = lambda v: np.asarray(v, dtype=float).reshape(-1, 1)
        forms = {f: {k: (float(v) if k == "const" else one(v)) for k, v in spec.items()} for f, spec in forms.items()}
        self.block(layer, part, 1, {k: one(v).T for k, v in out.items()}, **forms)

    def _paint(self, w: dict, prefix: str, part: str, start: int, count: int, out: dict, forms: dict) -> None:
        lay_in, lay_out = self._layouts(part)
        cols = slice(start, start + count)
        for f in (EXACT_FORMS if self.cfg.update == "exact" else ("a",)):
            spec = forms.get(f, {})
            absent = DEFAULT_CONST[f] if self.cfg.update == "exact" else 0.0
            const = spec.get("const", 0.0) if f in forms else absent
            w[f"{prefix}b_{f}"][cols] = const - 1.0 if f == "c" else const  # the divisor is 1 + (u W_c + b_c)
            for slot, mat in spec.items():
                if slot != "const":
                    w[f"{prefix}W_{f}"][lay_in[slot], cols] += mat
        for slot, mat in out.items():
            w[f"{prefix}W_o"][cols, lay_out[slot]] += mat

    def done(self) -> tuple[MPNNConfig, dict[str, torch.Tensor]]:
        """The config (width = the most units any layer uses) and its weights (K = 1, float64)."""
        cfg = dataclasses.replace(self.cfg, width=max([1, *self._count.values()]))
        w = {k: np.zeros(s[1:]) for k, s in weight_shapes(cfg, 1).items()}
        w["W_E"], w["b_E"], w["W_U"] = self.W_E, self.b_E, self.W_U
        for (layer, part), blocks in self._blocks.items():
            for start, count, out, forms in blocks:
                self._paint(w, f"layers.{layer}.{part}.", part, start, count, out, forms)
        return cfg, {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in w.items()}
