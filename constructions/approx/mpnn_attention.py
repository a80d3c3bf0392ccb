"""MPNN + virtual node computing an attention layer of constructions/model.py (Cai et al. 2023).

The reference is one attention layer of :mod:`constructions.model` (mask ``full``, no biases):
out_i = sum_h W_O^h^T sum_j A^h_ij v^h_j with q = x W_Q, k = x W_K, v = x W_V, computed by
``model.attention``. Node i of the MPNN starts from x_i; the graph's edges are never needed (their
weights are zero: the constructions work on every graph). Node slots: x (d), scratch, out (d);
the readout is W_U = I on out. Three constructions:

(1) Linear attention, A_ij = q_i.k_j / n, in ONE layer of width H Dh^2 + 1, independent of n.
    exact updates   messages: unit (h, a, b) = k_a v_b into VN slot S_h[a, b], one unit = 1 into N;
                    the VN sums: S_h = sum_j k_j v_j^T, N = n. Node update: unit (h, a, b) =
                    q_a * S_h[a, b] / N, output row W_O^h[b] into out. So out_i = sum_h W_O^h^T
                    S_h^T q_i / n = the reference, exactly (float round-off), for every n.
    ReLU updates    (built for graphs of n nodes, features in the unit ball): products by
                    x y = ((x + y)^2 - (x - y)^2) / 4, each square the piecewise-linear
                    interpolant of s^2 on [-L, L] with m pieces (m ReLUs; |error| <= h^2 / 4,
                    h = 2 L / m; the constants L^2 cancel in the difference). Messages carry
                    k_a v_b / n, so the VN holds the mean (range independent of n); the node
                    update multiplies q_a by it. Error <= sum over products of h^2/8 terms
                    (:func:`relu_bound`): rate m^-2.
(2) Softmax attention (one head, A = softmax(beta q.k)) through power sums. Truncate
    exp(s) ~ sum_{t<=T} s^t / t!; with multinomials (q.k)^t = sum_{|al|=t} t!/al! q^al k^al,
        exp(beta q.k) ~ sum_{|al|<=T} c_al q^al k^al,     c_al = beta^|al| / al!.
    Slots qm, km hold every monomial of q, k of degree 1..T: degree-1 ones come from the
    embedding, layer l multiplies two stored monomials of degree <= 2^(l-1) (one exact unit
    each), so ceil(log2 T) layers build them. Then one layer: messages k_j^al v_j -> P[al] and
    k_j^al -> Z[al] (al = 0 included: the VN counts), the node forms num = sum_al c_al q^al P[al]
    and den = sum_al c_al q^al Z[al]; a last layer divides, num / den, through W_O. Width
    C(T + Dh, Dh) (Dh + 1). Each weight exp(s_ij) is replaced by one with relative error
    <= eps_T = e^rho rho^(T+1) / (T+1)! (Lagrange remainder), rho = max |score|, so
        |out - ref| <= |W_O|_2 * 2 eps_T V / (1 - eps_T),     V = max |v_j|
    with rho the largest |beta q_i . k_j| of the input (the sampler's beta makes rho = 1)
    (:func:`taylor_bound`); log error falls like log(rho^(T+1) / (T+1)!) in T.
(3) Depth O(n), width O(Dh), one node selected per layer (softmax attention, one head). The
    separability assumption: nodes carry distinct integer ids 1..n (the feature after x). Layer 0
    squares the id. Layer l (1..n): messages gated by exp(-tau (id - l)^2) carry [k_j, v_j, 1];
    the VN sums, so K / W, V / W is the (tau-softened) key and value of the node with id l: a
    leak of at most eps = max_l sum_{j != l} e^(-tau (id_j - l)^2) ~ 2 e^-tau, times 2 max|k|.
    The node update stores s_i = beta q_i . K / W and v_sel = V / W (overwriting the previous
    ones) and adds exp(s_i) v_sel, exp(s_i) of the previous selection into num, den (exponential
    gate). After the last selection, one layer accumulates and one divides. Error
    <= |W_O|_2 (dv + 2 eta V / (1 - eta)), dv = 2 eps V, eta = exp(beta max|q| 2 eps max|k|) - 1
    (:func:`constructions.approx.mpnn_selection.selection_bound`): hardmax limit, ~ e^-tau. Built in
    :mod:`constructions.approx.mpnn_selection` (its own module for length).
"""

from __future__ import annotations

import dataclasses
import math
from itertools import combinations_with_replacement

import numpy as np
import torch

from constructions import model as M
from constructions import mpnn
from constructions.approx.mpnn_canvas import Canvas, onehot
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, RateSweep, positive_int, scaled_error
from synthetic import graphs

BATCH = 4  # graphs per case


# ----------------------------------------------------------------------------------------------
# The reference layer and the domain


def reference_layer(gen: torch.Generator, d: int, H: int, Dh: int, kind: str, beta: float | None = None):
    """A random attention layer of model.py: (ModelConfig, Attention), weights N(0, 1/fan_in)."""
    cfg = M.ModelConfig(d_model=d, n_layers=1, n_heads=H, d_head=Dh, d_in=d, attention=kind, beta=beta,
                        mask="full", mlp="none", bias=False)
    draw = lambda *s: torch.randn(1, *s, generator=gen, dtype=torch.float64) / math.sqrt(s[-2])
    return cfg, M.Attention(W_Q=draw(H, d, Dh), W_K=draw(H, d, Dh), W_V=draw(H, d, Dh), W_O=draw(H, Dh, d))


def reference(case: Case) -> torch.Tensor:
    """model.attention on the node features: (B, n, d)."""
    cfg, attn = case.data["reference"]
    return M.attention(cfg, attn, case.data["x"][None])[0]


def _heads(case: Case):
    _, a = case.data["reference"]
    return [{k: getattr(a, k)[0, h].numpy() for k in ("W_Q", "W_K", "W_V", "W_O")} for h in range(a.W_Q.shape[1])]


def _graphs(gen: torch.Generator, d: int, n: int, batch_size: int = BATCH) -> dict:
    batch = graphs.sample(graphs.GraphTask(n, d), [gen], batch_size)
    return {"x": batch.features[0], "adjacency": batch.adjacency[0], "ids": batch.ids[0]}


def run(built: Built, case: Case, with_ids: bool = False) -> mpnn.MPNNOutput:
    x = case.data["x"]
    feats = torch.cat([x, case.data["ids"][..., None]], dim=-1) if with_ids else x
    return mpnn.forward(built.cfg, built.weights, feats, case.data["adjacency"], states=True)


def measured(built: Built, case: Case, with_ids: bool = False, exact: bool = False) -> dict[str, float]:
    """``input``: the embedding's x slot against the features (exact); ``output``: the readout
    against model.attention, scaled (exact constructions) or absolute (the others)."""
    res = run(built, case, with_ids)
    x_slot = res.states[0][0][..., built.cfg.layout["x"]]
    error = scaled_error if exact else _abs_error
    return {"input": scaled_error(x_slot, case.data["x"]), "output": error(res.out[0], reference(case))}


def _shell(d: int, node: M.Layout, vn: M.Layout, n_layers: int, update: str, d_in: int | None = None) -> Canvas:
    cfg = mpnn.MPNNConfig(d_in=d_in or d, d_node=node.width, d_vn=vn.width, n_layers=n_layers, width=1,
                          d_out=d, update=update, layout=node, vn_layout=vn)
    c = Canvas(cfg)
    c.W_E[:d, node["x"]] = np.eye(d)
    c.W_U[node["out"], :] = np.eye(d)
    return c


# ----------------------------------------------------------------------------------------------
# (1) linear attention


def build_linear_exact(heads: list[dict]) -> Built:
    """One layer, exact units: the VN holds S_h = sum_j k_j v_j^T and N; nodes form q S / N."""
    d, Dh = heads[0]["W_Q"].shape
    vn = M.Layout(tuple((f"S{h}", Dh * Dh) for h in range(len(heads))) + (("N", 1),))
    c = _shell(d, M.Layout.of(x=d, out=d), vn, 1, "exact")
    for h, p in enumerate(heads):
        for a in range(Dh):
            for b in range(Dh):
                e = onehot(a * Dh + b, Dh * Dh)
                c.unit(0, "msg", {f"S{h}": e}, a={"x": p["W_K"][:, a]}, b={"x": p["W_V"][:, b]})
                c.unit(0, "upd", {"out": p["W_O"][b]}, a={"h.x": p["W_Q"][:, a]}, b={f"g.S{h}": e}, c={"g.N": 1.0})
    c.unit(0, "msg", {"N": 1.0})
    return Built(*c.done())


def square_interpolant(L: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Knots (P, m) and slope changes (P, m) of the m-piece interpolant of s^2 on [-L_p, L_p]:
    I(s) = L^2 + sum_k c_k relu(s - t_k), t_k = -L + k h, c_0 = -2 L + h, c_k = 2 h."""
    h = 2 * L[:, None] / m
    knots = -L[:, None] + h * np.arange(m)
    changes = np.broadcast_to(2 * h, knots.shape).copy()
    changes[:, 0] = (-2 * L + h[:, 0])
    return knots, changes


def _product_block(c: Canvas, part: str, out_slot: str, x_form: dict, y_form: dict, L: np.ndarray,
                   out_rows: np.ndarray, m: int) -> None:
    """m ReLUs per square, two squares per product: sum_p out_rows[p] * (x_p y_p) approximately.
    x_form / y_form: slot -> (size, P) matrices; L (P,) covers |x_p| + |y_p|; out_rows (P, size)."""
    knots, changes = square_interpolant(L, m)
    for sign in (1.0, -1.0):
        form = {slot: np.repeat(x_form.get(slot, 0) + sign * y_form.get(slot, 0), m, axis=1)
                for slot in set(x_form) | set(y_form)}
        rows = np.repeat(out_rows, m, axis=0) * (sign / 4) * changes.reshape(-1, 1)
        c.block(0, part, knots.size, {out_slot: rows}, a={**form, "const": -knots.reshape(-1)})


def _relu_ranges(heads: list[dict], m: int):
    """Per product (h, a, b): L1 (message square range), eps1, L2 (node square range)."""
    norms = lambda W: np.linalg.norm(W, axis=0)
    L1, eps1, L2 = [], [], []
    for p in heads:
        Q, K, V = norms(p["W_Q"]), norms(p["W_K"]), norms(p["W_V"])
        l1 = (K[:, None] + V[None, :]).reshape(-1)
        e1 = (2 * l1 / m) ** 2 / 8
        L1.append(l1), eps1.append(e1), L2.append((Q[:, None] + K[:, None] * V[None, :]).reshape(-1) + e1)
    return L1, eps1, L2


def build_linear_relu(heads: list[dict], n: int, m: int) -> Built:
    """One layer, ReLU units, for graphs of n nodes: the VN holds the mean of k v^T, the node the
    products q_a * mean; every product by two m-piece squares."""
    d, Dh = heads[0]["W_Q"].shape
    vn = M.Layout(tuple((f"S{h}", Dh * Dh) for h in range(len(heads))))
    c = _shell(d, M.Layout.of(x=d, out=d), vn, 1, "relu")
    L1, _, L2 = _relu_ranges(heads, m)
    eye = np.eye(Dh * Dh)
    for h, p in enumerate(heads):
        ka = np.repeat(p["W_K"], Dh, axis=1)  # column a * Dh + b reads k_a
        vb = np.tile(p["W_V"], (1, Dh))  # ... and v_b
        _product_block(c, "msg", f"S{h}", {"x": ka}, {"x": vb}, L1[h], eye / n, m)
        qa = np.repeat(p["W_Q"], Dh, axis=1)
        rows = np.tile(p["W_O"], (Dh, 1))  # product (a, b) writes W_O^h[b]
        _product_block(c, "upd", "out", {"h.x": qa}, {f"g.S{h}": eye}, L2[h], rows, m)
    return Built(*c.done())


def relu_bound(case: Case) -> float:
    """sup_c sum_{h,b} |W_O^h[b, c]| sum_a (eps2 + |q_a| eps1): the products' errors, propagated."""
    heads, m = _heads(case), int(case.params["m"])
    _, eps1, L2 = _relu_ranges(heads, m)
    total = 0.0
    for h, p in enumerate(heads):
        Dh = p["W_Q"].shape[1]
        Q = np.repeat(np.linalg.norm(p["W_Q"], axis=0), Dh)
        per_product = (2 * L2[h] / m) ** 2 / 8 + Q * eps1[h]  # (a * Dh + b)
        per_b = per_product.reshape(Dh, Dh).sum(0)  # sum over a
        total = total + np.abs(p["W_O"]).T @ per_b  # (d,)
    return float(np.max(total)) * (1 + 1e-9) + 1e-13


# ----------------------------------------------------------------------------------------------
# (2) softmax attention through power sums


def monomials(Dh: int, T: int) -> list[tuple[int, ...]]:
    """Every monomial of degree 1..T in Dh variables, as a sorted tuple of variable indices."""
    return [m for t in range(1, T + 1) for m in combinations_with_replacement(range(Dh), t)]


def taylor_coefficient(mono: tuple[int, ...], beta: float) -> float:
    """beta^|al| / al! (al! = product of the factorials of the multiplicities)."""
    return beta ** len(mono) / math.prod(math.factorial(mono.count(v)) for v in set(mono))


def build_softmax_taylor(head: dict, beta: float, T: int) -> Built:
    """ceil(log2 T) layers build the monomials, one sums them into the VN and forms num / den, one
    divides (see the module docstring, (2))."""
    positive_int("T", T)
    d, Dh = head["W_Q"].shape
    monos = monomials(Dh, T)
    M_, index = len(monos), {mono: i for i, mono in enumerate(monos)}
    n_build = math.ceil(math.log2(T)) if T > 1 else 0
    node = M.Layout.of(x=d, qm=M_, km=M_, num=Dh, den=1, out=d)
    c = _shell(d, node, M.Layout.of(P=(M_ + 1) * Dh, Z=M_ + 1), n_build + 2, "exact")
    for a in range(Dh):
        c.W_E[:d, node.index("qm") + index[(a,)]] = head["W_Q"][:, a]
        c.W_E[:d, node.index("km") + index[(a,)]] = head["W_K"][:, a]
    eye = np.eye(M_)
    for layer in range(n_build):  # layer l builds degrees in (2^l, 2^(l+1)], from two halves
        built = [m for m in monos if 2**layer < len(m) <= 2 ** (layer + 1)]
        first = eye[:, [index[m[:math.ceil(len(m) / 2)]] for m in built]]
        second = eye[:, [index[m[math.ceil(len(m) / 2):]] for m in built]]
        for slot in ("qm", "km"):
            c.block(layer, "upd", len(built), {slot: eye[[index[m] for m in built]]},
                    a={f"h.{slot}": first}, b={f"h.{slot}": second})
    _power_sums(c, head, beta, monos, n_build)
    for b in range(Dh):
        c.unit(n_build + 1, "upd", {"out": head["W_O"][b]}, a={"h.num": onehot(b, Dh)}, c={"h.den": 1.0})
    return Built(*c.done())


def _power_sums(c: Canvas, head: dict, beta: float, monos: list, layer: int) -> None:
    """Messages k^al v_b -> P[al, b], k^al -> Z[al]; node num_b += c_al q^al P[al, b], den += ...
    (al = 0, the empty monomial, is the constant 1: the count n and c_0 = 1)."""
    Dh, M_ = head["W_Q"].shape[1], len(monos)
    coef = np.array([1.0] + [taylor_coefficient(m, beta) for m in monos])  # (M_ + 1,)
    pick = np.vstack([np.zeros((1, M_)), np.eye(M_)]).T  # (M_, M_ + 1): column 0 is the constant
    const = np.eye(M_ + 1)[0]  # 1 for the empty monomial
    rep = lambda v: np.repeat(v, Dh, axis=-1)
    P = (M_ + 1) * Dh
    c.block(layer, "msg", P, {"P": np.eye(P)}, a={"km": rep(pick), "const": rep(const)},
            b={"x": np.tile(head["W_V"], (1, M_ + 1))})
    c.block(layer, "upd", P, {"num": np.tile(np.eye(Dh), (M_ + 1, 1))},
            a={"h.qm": rep(pick * coef), "const": rep(const)}, b={"g.P": np.eye(P)})
    c.block(layer, "msg", M_ + 1, {"Z": np.eye(M_ + 1)}, a={"km": pick, "const": const})
    c.block(layer, "upd", M_ + 1, {"den": np.ones((M_ + 1, 1))}, a={"h.qm": pick * coef, "const": const},
            b={"g.Z": np.eye(M_ + 1)})


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max over columns (last axis) of max|got - want| / max|want|: each quantity against its own size."""
    scale = want.abs().flatten(0, -2).max(0).values.clamp(min=1e-300)
    err = float(((got - want).abs().flatten(0, -2).max(0).values / scale).max())
    return math.inf if math.isnan(err) else err


def taylor_errors(built: Built, case: Case) -> dict[str, float]:
    """The output against the reference (the Taylor rate), and every intermediate the proof names
    against its direct value (float64 round-off when intact): the monomials after the building
    layers, the VN's power sums, num and den. The top-degree terms weigh ~rho^T / T! in the output,
    so only the intermediates show a perturbation of the weights that build them."""
    x, head, T, beta = case.data["x"], _heads(case)[0], int(case.params["T"]), _beta(case)
    q, k, v = (x @ torch.from_numpy(head[W]) for W in ("W_Q", "W_K", "W_V"))
    monos, lay = monomials(q.shape[-1], T), built.cfg.layout
    power = lambda z, ms: torch.stack([z[..., list(m)].prod(-1) for m in ms], dim=-1)
    res = mpnn.forward(built.cfg, built.weights, x, case.data["adjacency"], states=True)
    h, g, n_build = res.states, res.vn, built.cfg.n_layers - 2
    kal = torch.cat([torch.ones_like(k[..., :1]), power(k, monos)], dim=-1)  # (B, n, M + 1)
    s = beta * q @ k.transpose(-1, -2)
    texp = sum(s**t / math.factorial(t) for t in range(T + 1))
    inter = {
        "monomials": (torch.cat([h[n_build][0][..., lay["qm"]], h[n_build][0][..., lay["km"]]], -1),
                      torch.cat([power(q, monos), power(k, monos)], -1)),
        "power sums": (g[n_build][0], torch.cat([torch.einsum("bja,bjc->bac", kal, v).flatten(1),
                                                 kal.sum(1)], dim=-1)),
        "num, den": (h[n_build + 1][0][..., lay["num"].start:lay.index("den") + 1],
                     torch.cat([texp @ v, texp.sum(-1, keepdim=True)], dim=-1)),
    }
    out = {name: relative_error(got, want) for name, (got, want) in inter.items()}
    x_slot = h[0][0][..., lay["x"]]
    return {"input": scaled_error(x_slot, x), "output": _abs_error(res.out[0], reference(case)), **out}


def _norms(case: Case) -> tuple[float, float, float, float]:
    """max |q_i|, max |k_j|, max |v_j| over the case's nodes, and |W_O|_2 (one head)."""
    p, x = _heads(case)[0], case.data["x"].numpy()
    big = lambda W: float(np.linalg.norm(x @ W, axis=-1).max())
    return big(p["W_Q"]), big(p["W_K"]), big(p["W_V"]), float(np.linalg.norm(p["W_O"], 2))


def max_score(case: Case) -> float:
    """rho = max over graphs and pairs of |beta q_i . k_j| (one head)."""
    p, x = _heads(case)[0], case.data["x"]
    q, k = x @ torch.from_numpy(p["W_Q"]), x @ torch.from_numpy(p["W_K"])
    return _beta(case) * float((q @ k.transpose(-1, -2)).abs().max())


def taylor_bound(case: Case) -> float:
    """|W_O|_2 2 eps_T V / (1 - eps_T), eps_T = e^rho rho^(T+1) / (T+1)! (inf when eps_T >= 1),
    rho = the largest |score| of the case (the remainder of every weight is bounded at its own s)."""
    _, _, V, WO = _norms(case)
    T, rho = int(case.params["T"]), max_score(case)
    eps = math.exp(rho) * rho ** (T + 1) / math.factorial(T + 1)
    return math.inf if eps >= 1 else WO * 2 * eps * V / (1 - eps) * (1 + 1e-9) + 1e-13


# ----------------------------------------------------------------------------------------------
# Domains, measurements, the registered checks


def _sizes(gen: torch.Generator, d: int | None, n: int | None) -> tuple[int, int, int]:
    """Features d and nodes n (:func:`domains.small_sizes`), then the head width Dh in 1..2."""
    d, n = domains.small_sizes(gen, d, n)
    return d, n, domains.draw_int(gen, 1, 2)


def _sampler(kind: str, params: dict, heads: int = 1, batch_size: int = BATCH):
    """Graphs (B = batch_size, n nodes, features in the unit ball, ids 1..n) and a random reference layer.
    Softmax layers get beta = 1 / max_ij |q_i . k_j| over the case (so some pair has |s| = 1, the
    Taylor remainder is attained and its slope in T is the stated one)."""
    def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None,
               depth: int | None = None) -> Case:
        d, n, Dh = _sizes(gen, d, n)
        H = domains.draw_int(gen, 1, heads)
        data = _graphs(gen, d, n, batch_size)
        cfg, attn = reference_layer(gen, d, H, Dh, kind)
        if kind == "softmax":
            s = torch.einsum("bid,bjd->bij", data["x"] @ attn.W_Q[0, 0], data["x"] @ attn.W_K[0, 0])
            cfg = dataclasses.replace(cfg, beta=1.0 / float(s.abs().max()))
        return Case({"n": n, **params}, data={**data, "reference": (cfg, attn)})
    return sample


def _abs_error(got: torch.Tensor, want: torch.Tensor) -> float:
    err = float((got - want).abs().max())
    return math.inf if math.isnan(err) else err


def _beta(case: Case) -> float:
    return case.data["reference"][0].softmax_beta


TAYLOR_T = (2.0, 4.0, 6.0, 8.0)  # even orders: the truncated exponential stays positive


def remainder_slope(Ts: tuple[float, ...]) -> float:
    """The least-squares slope of log(1 / (T+1)!) against T: the rate of the Taylor remainder
    rho^(T+1) / (T+1)! at rho = 1, which the sampler's beta makes the largest |score|."""
    return RateSweep("T", Ts, 0.0, 0.0, axis="linear").fit([1 / math.factorial(int(t) + 1) for t in Ts])


def attention_check(name: str, kind: str, params: dict, *, heads: int = 1, batch_size: int = BATCH,
                    **fields) -> Construction:
    """The check of a construction against one ``kind`` attention layer of model.py (the reference)
    on graphs drawn by :func:`_sampler` with build parameters ``params``; ``fields``: the rest."""
    return Construction(name=name, algorithm=f"model.attention ({kind}, mask full)",
                        sample=_sampler(kind, params, heads, batch_size), **fields)


LINEAR_EXACT = attention_check(
    "mpnn_linear_attention", "linear", {}, heads=2,
    exactness="exact",
    summary="one MPNN+VN layer with multiply/divide updates = linear attention, width H Dh^2 + 1 for every n",
    build=lambda case: build_linear_exact(_heads(case)),
    errors=lambda built, case: measured(built, case, exact=True),
    bound=1e-12,
    bound_note="float64 round-off of sums of n products and one division: ~ n d eps",
)

LINEAR_RELU = attention_check(
    "mpnn_linear_attention_relu", "linear", {"m": 64}, heads=2, batch_size=16,  # more nodes: a steadier sup
    exactness="rate",
    summary="one MPNN+VN layer with ReLU-MLP updates: products by squares of m pieces, error ~ m^-2",
    build=lambda case: build_linear_relu(_heads(case), case.params["n"], int(case.params["m"])),
    errors=measured,
    bound=relu_bound,
    bound_note="sum over products of (2L/m)^2/8 terms, through W_O; log-log slope vs m",
    # tolerance: the sampled sup over 16 graphs moves with where nodes fall between knots; over 64
    # cases the fitted slope was within 0.07 of -2 for 95% of them, 0.26 at worst
    sweep=RateSweep("m", (8.0, 32.0, 128.0, 512.0, 2048.0), slope=-2.0, tolerance=0.35, axis="log"),
)

SOFTMAX_TAYLOR = attention_check(
    "mpnn_softmax_taylor", "softmax", {"T": 6},
    exactness="rate",
    summary="MPNN+VN, VN holds power sums to degree T: softmax attention up to the Taylor remainder",
    build=lambda case: build_softmax_taylor(_heads(case)[0], _beta(case), int(case.params["T"])),
    errors=taylor_errors,
    bound=taylor_bound,
    bound_note="|W_O| 2 eps V/(1-eps), eps = e^rho rho^(T+1)/(T+1)!; slope: that of log 1/(T+1)! over the T swept",
    # tolerance: the values and weights around the largest score change with T a little; over 64
    # cases the fitted slope was within 0.18 of the remainder's for 95% of them, 0.25 at worst
    sweep=RateSweep("T", TAYLOR_T, slope=remainder_slope(TAYLOR_T), tolerance=0.35, axis="linear"),
)
