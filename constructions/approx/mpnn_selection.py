"""MPNN + VN of depth n + 3 selecting one node per layer: softmax attention in the hardmax limit.

Construction (3) of :mod:`constructions.approx.mpnn_attention` (whose docstring has the derivation and the
bound); the reference, the domain and the helpers are shared with it. Node slots: x (d), id, id2,
s, vsel (Dh), num (Dh), den, out (d); VN slots: K (Dh), V (Dh), W. Layer 0 squares the id; layer l
(1..n) gates every message by exp(-tau (id - l)^2), stores s = beta q . K / W and vsel = V / W,
and accumulates exp(s) vsel, exp(s) of the previous selection; layer n + 1 accumulates the last,
layer n + 2 divides through W_O.
"""

from __future__ import annotations

import math

import numpy as np

from constructions import model as M
from constructions.approx.mpnn_attention import _beta, _heads, _norms, _shell, attention_check, measured
from constructions.approx.mpnn_canvas import onehot
from constructions.check.contract import Built, Case, RateSweep, positive_float


def build_selection(head: dict, beta: float, n: int, tau: float) -> Built:
    """n + 3 layers for graphs whose nodes carry ids 1..n (see the module docstring, (3))."""
    positive_float("tau", tau)
    d, Dh = head["W_Q"].shape
    node = M.Layout.of(x=d, id=1, id2=1, s=1, vsel=Dh, num=Dh, den=1, out=d)
    c = _shell(d, node, M.Layout.of(K=Dh, V=Dh, W=1), n + 3, "exact", d_in=d + 1)
    c.W_E[d, node.index("id")] = 1.0
    c.unit(0, "upd", {"id2": 1.0}, a={"h.id": 1.0}, b={"h.id": 1.0})
    for l in range(1, n + 1):
        gate = {"id2": -tau, "id": 2 * tau * l, "const": -tau * l * l}  # -tau (id - l)^2
        for a in range(Dh):
            c.unit(l, "msg", {"K": onehot(a, Dh)}, g=gate, a={"x": head["W_K"][:, a]})
            c.unit(l, "msg", {"V": onehot(a, Dh)}, g=gate, a={"x": head["W_V"][:, a]})
            c.unit(l, "upd", {"s": 1.0}, a={"h.x": beta * head["W_Q"][:, a]}, b={"g.K": onehot(a, Dh)},
                   c={"g.W": 1.0})
            c.unit(l, "upd", {"vsel": onehot(a, Dh)}, b={"g.V": onehot(a, Dh)}, c={"g.W": 1.0})
            c.unit(l, "upd", {"vsel": onehot(a, Dh)}, a={"h.vsel": onehot(a, Dh)}, b={"const": -1.0})
        c.unit(l, "msg", {"W": 1.0}, g=gate)
        c.unit(l, "upd", {"s": 1.0}, a={"h.s": 1.0}, b={"const": -1.0})
    for l in range(2, n + 2):  # accumulate the selection of layer l - 1
        for b in range(Dh):
            c.unit(l, "upd", {"num": onehot(b, Dh)}, g={"h.s": 1.0}, a={"h.vsel": onehot(b, Dh)})
        c.unit(l, "upd", {"den": 1.0}, g={"h.s": 1.0})
    for b in range(Dh):
        c.unit(n + 2, "upd", {"out": head["W_O"][b]}, a={"h.num": onehot(b, Dh)}, c={"h.den": 1.0})
    return Built(*c.done())


def selection_leak(n: int, tau: float) -> float:
    """max over l of sum_{j != l} e^(-tau (j - l)^2), ids 1..n."""
    ids = np.arange(1, n + 1)
    w = np.exp(-tau * (ids[:, None] - ids[None, :]) ** 2)
    return float((w.sum(1) - 1).max())


def selection_bound(case: Case) -> float:
    Q, K, V, WO = _norms(case)
    n, beta = case.data["x"].shape[1], case.data["reference"][0].softmax_beta
    eps = selection_leak(n, float(case.params["tau"]))
    dv, eta = 2 * eps * V, math.expm1(beta * Q * 2 * eps * K)
    return math.inf if eta >= 1 else WO * (dv + 2 * eta * V / (1 - eta)) * (1 + 1e-9) + 1e-13


SELECTION = attention_check(
    "mpnn_softmax_selection", "softmax", {"tau": 8.0},
    exactness="hardmax-limit",
    summary="MPNN+VN of depth n + 3, one node selected per layer (distinct ids): error ~ e^-tau",
    build=lambda case: build_selection(_heads(case)[0], _beta(case), case.params["n"], float(case.params["tau"])),
    errors=lambda built, case: measured(built, case, with_ids=True),
    bound=selection_bound,
    bound_note="|W_O| (dv + 2 eta V/(1-eta)) with the leak 2 e^-tau; slope of log error vs tau",
    sweep=RateSweep("tau", (4.0, 6.0, 8.0, 10.0, 12.0), slope=-1.0, tolerance=0.15, axis="linear"),
)
