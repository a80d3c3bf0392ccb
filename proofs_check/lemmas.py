"""Symbolic lemmas: each exact construction computes its algorithm, as an identity of polynomials.

Every lemma takes symbolic inputs of a small size (x_ij, y_i, x_q are sympy symbols), runs the
construction's weights through :mod:`proofs_check.symbolic` and checks that model minus algorithm
is the zero polynomial, entry by entry and layer by layer: an identity in the inputs, so it holds
for every input, not only for sampled ones. Without ``built``, the construction's hyperparameter
(eta, gamma, P, alpha; and lam, carried by tokens) is a symbol as well, through
:func:`proofs_check.symbolic.affine_in`. With ``built`` (e.g. weights perturbed by
:func:`constructions.check.run.mutate`) the lemma checks those weights against the algorithm at a fixed
binary-fraction value of the hyperparameter (:func:`fixed_weights` gives the matching unperturbed
weights); in exact arithmetic any change of a weight that is read leaves a nonzero residual.

Each lemma runs its check twice (:func:`prove`): at exact random rational inputs first (a nonzero
residual there is a counterexample, found fast), then with symbols (the proof). A lemma returns
None, or raises :class:`LemmaFailed` naming the layer, the token, the coordinate and the nonzero
residual (a number at the random inputs, or the polynomial's first terms). :data:`LEMMAS` lists
the lemmas; :func:`run_all` runs them and reports.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import sympy
import torch
from sympy import Matrix, Rational, Symbol
from sympy.polys.matrices import DomainMatrix

from constructions.check.contract import Built
from constructions.icl import gd, gd_plus_plus, newton, preconditioned_gd, ridge_newton
from proofs_check import symbolic as S

ETA = Rational(1, 4)  # fixed step for supplied weights (binary fraction: exact as a float)
GAMMA = Rational(1, 8)
P_FIXED = Matrix([[Rational(1, 2), Rational(1, 8)], [Rational(-1, 16), Rational(1, 4)]])
ALPHA = Rational(1, 8)
D, N = 2, 2  # sizes of every lemma: the identities are polynomial, small sizes keep sympy fast


class LemmaFailed(AssertionError):
    """A construction's output differs from its algorithm's as a polynomial in the inputs."""


# ----------------------------------------------------------------------------------------------
# Symbolic inputs and checks


def scalar_input(name: str, rng: random.Random | None, positive: bool = False):
    """The symbol ``name``, or (rng given) an exact random rational in its place."""
    if rng is None:
        return Symbol(name, positive=True) if positive else Symbol(name, real=True)
    top = rng.randint(1, 99) if positive else rng.choice([-1, 1]) * rng.randint(1, 99)
    return Rational(top, rng.randint(1, 99))


def regression_inputs(d: int = D, n: int = N,
                      rng: random.Random | None = None) -> tuple[Matrix, Matrix, Matrix]:
    """x (n, d) with entries x_ij, y (n, 1) with y_i, the query xq (1, d): symbols, or random rationals."""
    x = Matrix(n, d, lambda i, j: scalar_input(f"x{i + 1}{j + 1}", rng))
    y = Matrix(n, 1, lambda i, _: scalar_input(f"y{i + 1}", rng))
    xq = Matrix(1, d, lambda _, j: scalar_input(f"xq{j + 1}", rng))
    return x, y, xq


def example_tokens(x: Matrix, y: Matrix, xq: Matrix) -> Matrix:
    """Rows (x_i, y_i), then the query (x_q, 0): the ``example`` format of constructions.tokens."""
    return Matrix.vstack(x.row_join(y), xq.row_join(sympy.zeros(1, 1)))


def statistics(x: DomainMatrix, y: DomainMatrix) -> tuple[DomainMatrix, DomainMatrix]:
    """S = X^T X / N (d, d) and b = X^T y / N (d, 1), in the ring of x."""
    inv_n = x.domain.from_sympy(Rational(1, x.shape[0]))
    return x.transpose() * x * inv_n, x.transpose() * y * inv_n


def describe(poly) -> str:
    """A nonzero polynomial for a message: its size and its first terms."""
    if not hasattr(poly, "terms"):  # a number (inputs and parameters all numbers)
        return f"{float(poly):.6g}" if float(poly) else str(poly)
    head = poly.ring.from_terms(poly.terms()[:3]).as_expr()
    more = f" + ... ({len(poly)} terms)" if len(poly) > 3 else ""
    return f"{head}{more}"


def require_equal(got: DomainMatrix, want: DomainMatrix, where: str, rows: list[str]) -> None:
    """got (the model) - want (the algorithm) is the zero polynomial in every entry; otherwise
    LemmaFailed naming ``where``, the token (``rows``), the coordinate and the residual."""
    if got.shape != want.shape:
        raise LemmaFailed(f"{where}: model gives shape {got.shape}, algorithm {want.shape}")
    diff = got - want
    if diff.is_zero_matrix:
        return
    for (i, j), residual in zip(itertools.product(*map(range, diff.shape)), diff.to_list_flat()):
        if residual:
            raise LemmaFailed(f"{where}, {rows[i]}, coordinate {j}: model - algorithm = {describe(residual)}, "
                              f"not 0")


def part(h: DomainMatrix, rows, cols) -> DomainMatrix:
    """Rows (a list or a slice) and columns (a slice of the layout, or an index) of a residual."""
    rows = list(range(h.shape[0]))[rows] if isinstance(rows, slice) else list(rows)
    cols = list(range(h.shape[1]))[cols] if isinstance(cols, slice) else [cols]
    return h.extract(rows, cols)


def prove(check: Callable[[random.Random | None], None]) -> None:
    """Disprove fast, then prove. First ``check`` at exact random rational inputs: a nonzero residual
    there is a counterexample, found in milliseconds where the symbolic residual of perturbed
    weights can have thousands of terms per entry. Then ``check`` with symbols: the identity."""
    try:
        check(random.Random(0))
    except LemmaFailed as err:
        raise LemmaFailed(f"{err} (at exact random rational inputs, seed 0: a counterexample)") from None
    check(None)


def weights(built: Built | None, build_at: Callable, symbols, base, step, probe) -> S.ExactWeights:
    """Supplied weights made exact, or the construction's weights affine in ``symbols``."""
    if built is not None:
        return S.exact(built)
    try:
        return S.affine_in(build_at, symbols, base, step, probe)
    except AssertionError as err:
        raise LemmaFailed(str(err)) from None


# ----------------------------------------------------------------------------------------------
# Gradient descent (plain, preconditioned, GD++)


def check_gd(w: S.ExactWeights, Ps: list[Matrix], d: int, n: int, rng: random.Random | None) -> None:
    """After every layer t: the query's readout is w_t.x_q, the examples' y slots hold the residuals
    y_i - w_t.x_i and the x slots hold x, where w_{t+1} = w_t - P_t (S w_t - b), w_0 = 0."""
    x, y, xq = regression_inputs(d, n, rng)
    run = S.prepare(w, example_tokens(x, y, xq))
    R = lambda v: S.to_poly(v, run.ring)  # noqa: E731
    X, Y, XQ, X_all = R(x), R(y), R(xq), R(Matrix.vstack(x, xq))
    Sx, b = statistics(X, Y)
    lay, w_t = w.cfg.layout, R(sympy.zeros(d, 1))
    names = [f"example {i + 1}" for i in range(n)] + ["query"]
    for t, h in enumerate(run.residuals()):
        if t > 0:
            w_t = w_t - R(Ps[t - 1]) * (Sx * w_t - b)
        require_equal(part(run.readout(h), [n], 0), XQ * w_t, f"layer {t}, readout vs w_{t}.x_q", ["query"])
        y_slot = part(h, slice(n), lay.index("y"))
        require_equal(y_slot, Y - X * w_t, f"layer {t}, y slot vs y_i - w_{t}.x_i", names)
        require_equal(part(h, slice(None), lay["x"]), X_all, f"layer {t}, x slot", names)


def _gd(n_steps: int, n: int, built: Built | None, eta) -> None:
    if built is None:
        eta = Symbol("eta", positive=True)
    w = weights(built, lambda v: gd.build(D, n_steps, v[0]), [eta], [ETA], ETA, [ETA / 2])
    prove(lambda rng: check_gd(w, [eta * sympy.eye(D)] * n_steps, D, n, rng))


def gd_one_step(built: Built | None = None, *, eta=ETA) -> None:
    """One linear-attention layer (gd, d = N = 2) is one GD step from w_0 = 0 with step eta, for
    symbolic eta, x, y, x_q: the query's readout is w_1.x_q and every example's y slot holds its
    residual y_i - w_1.x_i (and at layer 0, w_0 = 0)."""
    _gd(1, N, built, eta)


def gd_two_steps(built: Built | None = None, *, eta=ETA) -> None:
    """Two layers (gd, d = 2, N = 3) are two GD steps, for symbolic eta: readout w_t.x_q and
    residual y slots after each layer t = 0, 1, 2 (the second layer reads residuals written by the
    first: the induction step of the proof composes)."""
    _gd(2, 3, built, eta)


def preconditioned_gd_one_step(built: Built | None = None, *, P: Matrix = P_FIXED) -> None:
    """One layer of preconditioned_gd (d = N = 2) is w_1 = w_0 - P (S w_0 - b) = P b for a symbolic,
    not necessarily symmetric, P: readout w_1.x_q and residual y slots."""
    if built is None:
        P = Matrix(D, D, lambda i, j: Symbol(f"p{i + 1}{j + 1}", real=True))

    def build_at(v: list[float]) -> Built:
        return preconditioned_gd.build(D, 1, torch.tensor(v, dtype=torch.float64).view(D, D))

    probe = [Rational(1, 2), Rational(-1, 4), Rational(1, 8), Rational(3, 4)]
    w = weights(built, build_at, list(P), [0] * D * D, 1, probe)
    prove(lambda rng: check_gd(w, [P], D, N, rng))


def gd_plus_plus_one_step(built: Built | None = None, *, eta=ETA, gamma=GAMMA) -> None:
    """One GD++ layer (d = N = 2), symbolic eta and gamma: the examples' y slots hold
    y_i - (eta/N) sum_j y_j x_j.x_i, the readout is the GD prediction eta b.x_q, and every x slot
    (the query's too) holds (I - gamma S) x: both heads read the layer's input."""
    if built is None:
        eta, gamma = Symbol("eta", positive=True), Symbol("gamma", positive=True)
    build_at = lambda v: gd_plus_plus.build(D, 1, v[0], v[1])  # noqa: E731
    w = weights(built, build_at, [eta, gamma], [ETA, GAMMA], GAMMA, [ETA / 2, 3 * GAMMA])
    prove(lambda rng: check_gd_plus_plus(w, eta, gamma, rng))


def check_gd_plus_plus(w: S.ExactWeights, eta, gamma, rng: random.Random | None) -> None:
    """After layer 1: readout eta b.x_q, y slots y_i - eta b.x_i, x slots (I - gamma S) x."""
    x, y, xq = regression_inputs(D, N, rng)
    run = S.prepare(w, example_tokens(x, y, xq))
    h = list(run.residuals())[1]
    R = lambda v: S.to_poly(v, run.ring)  # noqa: E731
    X, Y, XQ, X_all = R(x), R(y), R(xq), R(Matrix.vstack(x, xq))
    Sx, b = statistics(X, Y)
    w_1, lay = b * R(eta), w.cfg.layout
    names = [f"example {i + 1}" for i in range(N)] + ["query"]
    require_equal(part(run.readout(h), [N], 0), XQ * w_1, "layer 1, readout vs w_1.x_q", ["query"])
    require_equal(part(h, slice(N), lay.index("y")), Y - X * w_1, "layer 1, y slot vs residual", names)
    x_new = ((R(sympy.eye(D)) - Sx * R(gamma)) * X_all.transpose()).transpose()
    require_equal(part(h, slice(None), lay["x"]), x_new, "layer 1, x slot vs (I - gamma S) x", names)


# ----------------------------------------------------------------------------------------------
# Newton-Schulz (plain and ridge)


def newton_iterates(A: DomainMatrix, alpha, n_iter: int) -> list[DomainMatrix]:
    """M_0 = alpha A, M_{t+1} = 2 M_t - M_t A M_t (alpha an element of A's ring)."""
    Ms = [A * alpha]
    for _ in range(n_iter):
        Ms.append(Ms[-1] + Ms[-1] - Ms[-1] * A * Ms[-1])
    return Ms


def check_newton(w: S.ExactWeights, tokens: Matrix, keep: list[int], x: Matrix, y: Matrix, xq: Matrix,
                 lam, alpha, n_iter: int, u_scale=1) -> None:
    """Rows ``keep`` of the tokens (the examples, then the query): after layer t + 1 the u slot holds
    u_scale M_t x, with M_t Newton's iterates on A = S + lam I, and the final readout is x^T M_k b."""
    run = S.prepare(w, tokens)
    R = lambda v: S.to_poly(v, run.ring)  # noqa: E731
    Sx, b = statistics(R(x), R(y))
    X_all = R(Matrix.vstack(x, xq))
    Ms = newton_iterates(Sx + R(lam * sympy.eye(x.cols)), R(alpha), n_iter)
    names = [f"example {i + 1}" for i in range(len(keep) - 1)] + ["query"]
    lay = w.cfg.layout
    for t, h in enumerate(run.residuals()):
        if t == 0:
            require_equal(part(h, keep, lay["x"]), X_all, "layer 0, x slot", names)
        elif t <= len(Ms):
            want = (Ms[t - 1] * X_all.transpose()).transpose() * R(u_scale)
            require_equal(part(h, keep, lay["u"]), want, f"layer {t}, u slot vs M_{t - 1} x", names)
    want = X_all * Ms[-1] * b
    require_equal(part(run.readout(h), keep, 0), want, f"readout after layer {t} vs x^T M_{n_iter} b", names)


def _newton(n_iter: int, built: Built | None, alpha) -> None:
    if built is None:
        alpha = Symbol("alpha", positive=True)
    w = weights(built, lambda v: newton.build(D, n_iter, v[0]), [alpha], [ALPHA], ALPHA, [ALPHA / 2])

    def check(rng: random.Random | None) -> None:
        x, y, xq = regression_inputs(D, N, rng)
        check_newton(w, example_tokens(x, y, xq), list(range(N + 1)), x, y, xq, 0, alpha, n_iter)

    prove(check)


def newton_one_iteration(built: Built | None = None, *, alpha=ALPHA) -> None:
    """The newton construction with one iteration (3 layers, d = N = 2), for symbolic alpha, x, y,
    x_q: after the start layer every token's u slot is M_0 x_i = alpha S x_i, after the Newton layer
    it is M_1 x_i = (2 M_0 - M_0 S M_0) x_i, and the prediction is x_i^T M_1 b (query included)."""
    _newton(1, built, alpha)


def newton_two_iterations(built: Built | None = None, *, alpha=ALPHA) -> None:
    """newton with two iterations (4 layers, d = N = 2), symbolic alpha: u = M_0 x, M_1 x, M_2 x
    after layers 1, 2, 3 and the prediction x^T M_2 b (a Newton layer reading what a Newton layer
    wrote, so the induction step composes)."""
    _newton(2, built, alpha)


def ridge_newton_one_iteration(built: Built | None = None, *, alpha=ALPHA) -> None:
    """ridge_newton with one iteration (d = N = 2), symbolic alpha and lam: with regulariser tokens
    (s e_m, 0), s = sqrt(N lam) a positive symbol (so lam = s^2 / N and no square root appears),
    the examples' and query's u slots hold M_t x / c with c = N / (N + d), M_t Newton's iterates on
    A = S + lam I, and the prediction is x^T M_1 b. The weights do not depend on lam."""
    if built is None:
        alpha = Symbol("alpha", positive=True)
    build_at = lambda v: ridge_newton.build(D, N, 1, lam=0.125, alpha=v[0])  # noqa: E731
    w = weights(built, build_at, [alpha], [ALPHA], ALPHA, [ALPHA / 2])
    keep = list(range(N)) + [N + D]  # drop the regulariser tokens

    def check(rng: random.Random | None) -> None:
        x, y, xq = regression_inputs(D, N, rng)
        s = scalar_input("s", rng, positive=True)
        tokens = example_tokens(Matrix.vstack(x, s * sympy.eye(D)), Matrix.vstack(y, sympy.zeros(D, 1)), xq)
        check_newton(w, tokens, keep, x, y, xq, s**2 / N, alpha, 1, u_scale=Rational(N + D, N))

    prove(check)


# ----------------------------------------------------------------------------------------------
# The table


LEMMAS: dict[str, Callable[..., None]] = {
    "gd_one_step": gd_one_step,
    "gd_two_steps": gd_two_steps,
    "preconditioned_gd_one_step": preconditioned_gd_one_step,
    "gd_plus_plus_one_step": gd_plus_plus_one_step,
    "newton_one_iteration": newton_one_iteration,
    "newton_two_iterations": newton_two_iterations,
    "ridge_newton_one_iteration": ridge_newton_one_iteration,
}


def fixed_weights(name: str) -> Built:
    """The float weights a lemma checks against its fixed hyperparameters when given ``built=``
    (binary fractions, so the lemma passes on them exactly): the starting point for mutations."""
    P = torch.tensor([[float(v) for v in row] for row in P_FIXED.tolist()], dtype=torch.float64)
    builds = {
        "gd_one_step": lambda: gd.build(D, 1, float(ETA)),
        "gd_two_steps": lambda: gd.build(D, 2, float(ETA)),
        "preconditioned_gd_one_step": lambda: preconditioned_gd.build(D, 1, P),
        "gd_plus_plus_one_step": lambda: gd_plus_plus.build(D, 1, float(ETA), float(GAMMA)),
        "newton_one_iteration": lambda: newton.build(D, 1, float(ALPHA)),
        "newton_two_iterations": lambda: newton.build(D, 2, float(ALPHA)),
        "ridge_newton_one_iteration": lambda: ridge_newton.build(D, N, 1, lam=0.125, alpha=float(ALPHA)),
    }
    if name not in builds:
        raise KeyError(f"no lemma named {name!r}; known: {', '.join(builds)}")
    return builds[name]()
