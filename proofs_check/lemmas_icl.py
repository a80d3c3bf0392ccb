"""Symbolic lemmas for the in-context constructions: one Sherman-Morrison fold, one ReLU-attention
GD step.

Both run the construction's own weights (made exact by :func:`proofs_check.symbolic.exact`: every
float becomes the Rational it is) through a small sympy forward pass written here, because
:mod:`proofs_check.symbolic` covers linear attention only: the fold needs normalised attention (a
rational function of the inputs) and the GD step needs ReLU attention, written as
ReLU(a) = (a + |a|) / 2 with sympy's Abs, which identifies |a| and |-a|, so ReLU(a) - ReLU(-a)
cancels to a exactly when (and only when) the two heads are exact negatives.

Each lemma accepts ``built=None`` (the construction's own weights) or perturbed weights, and raises
:class:`proofs_check.lemmas.LemmaFailed` (an AssertionError) naming the slot and token where model
and algorithm differ, so ``proofs_check.table.run_all`` runs these lemmas beside the others.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy
from sympy import Matrix, Rational, Symbol

from constructions.check.contract import Built
from constructions.icl import gd_relu
from constructions.icl import ridge_sherman_morrison as rsm
from proofs_check import symbolic as S
from proofs_check.lemmas import LemmaFailed  # one failure type for every lemma table

D, N = 2, 2
ETA = Rational(1, 4)
LAM = Rational(1, 2)  # the fold lemma's lam (only the embedding depends on it)


def _symbols(d: int = D, n: int = N) -> tuple[Matrix, Matrix, Matrix]:
    x = Matrix(n, d, lambda i, j: Symbol(f"x{i + 1}{j + 1}", real=True))
    y = Matrix(n, 1, lambda i, _: Symbol(f"y{i + 1}", real=True))
    xq = Matrix(1, d, lambda _, j: Symbol(f"xq{j + 1}", real=True))
    return x, y, xq


def numerator(expr) -> sympy.Expr:
    """The expanded numerator of a rational function: zero iff the function is zero."""
    return sympy.expand(sympy.numer(sympy.together(expr)))


def _point(*exprs) -> dict:
    """A fixed point with rational coordinates 2/3, 3/5, 4/7, ... for every symbol of ``exprs``
    (sorted by name), evaluated exactly: a nonzero value there proves a function nonzero; a zero
    proves nothing, and the symbolic check follows."""
    symbols = sorted(set().union(*(e.free_symbols for e in exprs)), key=str)
    return {s: Rational(k + 2, 2 * k + 3) for k, s in enumerate(symbols)}


def _probe(expr) -> sympy.Expr:
    return expr.subs(_point(expr))


def _require_zero(diff: Matrix, where: str, simplify: Callable = sympy.expand) -> None:
    """Every entry of diff is zero as a function of its symbols; otherwise LemmaFailed naming
    ``where``, the token (row) and the coordinate. A nonzero value at a probe point already proves
    an entry nonzero (fast failure for perturbed weights); the symbolic check decides the rest."""
    cells = [((i, j), diff[i, j]) for i in range(diff.rows) for j in range(diff.cols)]
    for (i, j), entry in cells:
        value = _probe(entry)
        if value.is_number and value.is_finite and value != 0:
            raise LemmaFailed(f"{where}, token {i}, coordinate {j}: model - algorithm = {value} at the probe "
                              f"point, not 0")
    for (i, j), entry in cells:
        residual = simplify(entry)
        if residual != 0:
            raise LemmaFailed(f"{where}, token {i}, coordinate {j}: model - algorithm = {residual}, not 0")


# ----------------------------------------------------------------------------------------------
# A sympy forward pass for one layer (attention "linear" / "normalized" / "relu", MLP or none)


def _head(sd: dict, layer: int, head: int, h: Matrix) -> tuple[Matrix, Matrix, Matrix]:
    key = f"blocks.{layer}.attn."
    return tuple(h * sd[key + name][head] for name in ("W_Q", "W_K", "W_V"))


def _pattern(kind: str, scores: Matrix) -> Matrix:
    """Full-mask patterns for the symbolic layers: scores / T, normalised rows, or ReLU(scores) / T."""
    T = scores.cols
    if kind == "linear":
        return scores / T
    if kind == "relu":
        return scores.applyfunc(lambda a: (a + sympy.Abs(a)) / 2) / T
    rows = []
    for i in range(scores.rows):
        total = sympy.expand(sum(scores.row(i)))
        rows.append(scores.row(i) * 0 if total == 0 else scores.row(i) / total)
    return Matrix.vstack(*rows)


def layer(sd: dict, cfg, kind: str, index: int, h: Matrix, keys: int | None = None) -> Matrix:
    """h + attention (+ the identity MLP if the layer has nonzero MLP weights); ``keys``: only the
    first ``keys`` tokens are keys (the "exclude_query" mask), else all."""
    keys = h.rows if keys is None else keys
    out = sympy.zeros(h.rows, h.cols)
    for head in range(cfg.n_heads):
        q, k, v = _head(sd, index, head, h)
        scores = (q * k[:keys, :].T).applyfunc(sympy.expand)
        out += _pattern(kind, scores) * v[:keys, :] * sd[f"blocks.{index}.attn.W_O"][head]
    h = h + out
    W_in = sd.get(f"blocks.{index}.mlp.W_in")
    if W_in is not None and cfg.mlp == "identity":
        h = h + h * W_in * sd[f"blocks.{index}.mlp.W_out"]
    return h


# ----------------------------------------------------------------------------------------------
# One Sherman-Morrison fold


def _fold_state(lay, x: Matrix, y: Matrix, xq: Matrix, A: Matrix, w: Matrix) -> Matrix:
    """The stream before a fold: x, residual y - w.x (query -w.x_q), one, pos, u = A x, scratch 0."""
    x_all, T = Matrix.vstack(x, xq), x.rows + 1
    h = sympy.zeros(T, lay.width)
    r = Matrix.vstack(y, sympy.zeros(1, 1)) - x_all * w
    for t in range(T):
        h[t, lay["x"]] = x_all.row(t)
        h[t, lay.index("y")] = r[t]
        h[t, lay.index("one")] = 1
        h[t, lay["pos"].start + t] = 1
        h[t, lay["u"]] = (A * x_all.row(t).T).T
    return h


def sherman_morrison_identity() -> None:
    """For any invertible symmetric A = G^{-1} (symbols), w = A c and a new example (x, y): the fold
    A' = A - A x x^T A / s, w' = w + A x (y - w.x) / s (s = 1 + x^T A x) is the ridge fit with the
    example added, (G + x x^T) A' = I and (G + x x^T) w' = c + y x. Checked multiplied on the left
    by A (equivalent, A being invertible), so no inverse appears:
    (I + A x x^T) A' = A and (I + A x x^T) w' = w + y A x."""
    a11, a12, a22, w1, w2, xs1, xs2, ys = sympy.symbols("a11 a12 a22 w1 w2 xs1 xs2 ys", real=True)
    A, w, xs = Matrix([[a11, a12], [a12, a22]]), Matrix([w1, w2]), Matrix([xs1, xs2])
    s = 1 + (xs.T * A * xs)[0]
    A_new = A - A * xs * xs.T * A / s
    w_new = w + A * xs * (ys - w.dot(xs)) / s
    lhs = sympy.eye(2) + A * xs * xs.T
    _require_zero(lhs * A_new - A, "Sherman-Morrison: (I + A x x^T) A' - A", numerator)
    _require_zero(lhs * w_new - (w + ys * A * xs), "recursive least squares: (I + A x x^T) w' - (w + y A x)",
                  numerator)


def _cleared(denominator: sympy.Expr) -> Callable:
    """A simplifier for rational functions whose only denominator is ``denominator`` (expanded):
    multiply and expand (fast: the model's row totals are the same expanded polynomial, so sympy
    cancels them on sight); anything left is decided by :func:`numerator`."""
    def simplify(expr):
        cleared = sympy.expand(expr * denominator)
        return cleared if cleared == 0 else numerator(expr)

    return simplify


def _fold(fc, sd: dict, c: int, x: Matrix, y: Matrix, xq: Matrix, A: Matrix, w: Matrix) -> None:
    """Run block c from the state (A, w) and compare with the Sherman-Morrison fold of example c."""
    h = _fold_state(fc.layout, x, y, xq, A, w)
    for index in range(3 * c, 3 * c + 3):
        h = layer(sd, fc, fc.attention_kind(index), index, h)
    T = x.rows + 1
    u = A * x[c, :].T
    Ts = sympy.expand(T * (1 + (x[c, :] * u)[0]))  # T s: the normalised layer's row total
    r_c = y[c] - (x[c, :] * w)[0]
    want = _fold_state(fc.layout, x, y, xq, A - T * u * u.T / Ts, w + T * u * r_c / Ts)
    _require_zero(h - want, f"fold {c} (layers {3 * c}..{3 * c + 2})", _cleared(Ts))


def sherman_morrison_fold(built: Built | None = None) -> None:
    """Every block c of ridge_sherman_morrison (d = N = 2) is one Sherman-Morrison fold: from any
    symmetric A (symbols a11, a12, a22) and any w (w1, w2), with u_i = A x_i and residuals
    y_i - w.x_i in the stream, the block leaves u_i = A' x_i and y_i - w'.x_i for every token, with
    A' = A - u u^T / s, w' = w + (r_c / s) u, u = A x_c, s = 1 + x_c^T A x_c, and zero scratch; and
    (sherman_morrison_identity) A', w' are the ridge fit with example c added. Each fold runs first
    at a rational point (cheap, catches wrong weights), then with symbols."""
    built = rsm.build(D, N, lam=float(LAM)) if built is None else built
    fc = built.cfg
    sd = S.exact(Built(fc, built.weights)).sd
    x, y, xq = _symbols()
    a11, a12, a22, w1, w2 = sympy.symbols("a11 a12 a22 w1 w2", real=True)
    A, w = Matrix([[a11, a12], [a12, a22]]), Matrix([w1, w2])
    point = _point(x, y, xq, A, w)
    at = lambda m: m.subs(point)  # noqa: E731
    for c in range(N):
        _fold(fc, sd, c, at(x), at(y), at(xq), at(A), at(w))
    _ends(fc, sd, x, y, xq, A, w)
    for c in range(N):
        _fold(fc, sd, c, x, y, xq, A, w)
    sherman_morrison_identity()


def _ends(fc, sd: dict, x: Matrix, y: Matrix, xq: Matrix, A: Matrix, w: Matrix) -> None:
    """The embedding writes the state A_0 = I / lam, w_0 = 0 (lam = LAM), and the readout of any
    state is w.x_q at the query."""
    T, lay = x.rows + 1, fc.layout
    tokens = Matrix.vstack(x.row_join(y), xq.row_join(sympy.zeros(1, 1)))
    embedded = tokens * sd["W_E"] + sd["W_pos"][:T, :]
    start = _fold_state(lay, x, y, xq, sympy.eye(x.cols) / LAM, sympy.zeros(x.cols, 1))
    _require_zero(embedded - start, "embedding vs u = x / lam, residual y")
    readout = _fold_state(lay, x, y, xq, A, w)[T - 1, :] * sd["W_U"]
    _require_zero(readout - xq * w, "readout vs w.x_q at the query")


# ----------------------------------------------------------------------------------------------
# One GD step in ReLU attention


def relu_gd_step(built: Built | None = None, *, eta=ETA) -> None:
    """One gd_relu layer (d = N = 2) is one GD step from w_0 = 0, for symbolic eta, x, y, x_q: the
    y slots hold y_i - w_1.x_i with w_1 = eta b = eta X^T y / N, the query's readout is w_1.x_q, and
    the x slots are unchanged."""
    if built is None:
        eta = Symbol("eta", positive=True)
        w = S.affine_in(lambda v: gd_relu.build(D, 1, v[0]), [eta], [ETA], ETA, [ETA / 2])
    else:
        w = S.exact(built)
    x, y, xq = _symbols()
    point = _point(x, y, xq)
    _relu_step(w, x.subs(point), y.subs(point), xq.subs(point), eta)  # cheap: catches wrong weights
    _relu_step(w, x, y, xq, eta)


def _relu_step(w: S.ExactWeights, x: Matrix, y: Matrix, xq: Matrix, eta) -> None:
    h0 = Matrix.vstack(x.row_join(y), xq.row_join(sympy.zeros(1, 1))) * w.sd["W_E"]
    h = layer(w.sd, w.cfg, "relu", 0, h0, keys=N)
    w_1 = eta * x.T * y / N
    lay = w.cfg.layout
    x_all = Matrix.vstack(x, xq)
    _require_zero(h[:N, lay.index("y")] - (y - x * w_1), "layer 1, y slot vs y_i - w_1.x_i")
    _require_zero(h[N:, :] * w.sd["W_U"] - xq * w_1, "layer 1, readout vs w_1.x_q")
    _require_zero(h[:, lay["x"]] - x_all, "layer 1, x slot")


LEMMAS: dict[str, Callable[..., None]] = {
    "sherman_morrison_fold": sherman_morrison_fold,
    "relu_gd_step": relu_gd_step,
}


def fixed_weights(name: str) -> Built:
    """The float weights each lemma checks when given ``built=`` (the starting point for mutations)."""
    builds = {"sherman_morrison_fold": lambda: rsm.build(D, N, lam=float(LAM)),
              "relu_gd_step": lambda: gd_relu.build(D, 1, float(ETA))}
    if name not in builds:
        raise KeyError(f"no lemma named {name!r}; known: {', '.join(builds)}")
    return builds[name]()
