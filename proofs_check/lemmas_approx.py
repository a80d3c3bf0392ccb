"""Symbolic lemmas for the approximation constructions (sympy, small sizes, exact arithmetic).

    linear_attention_mpnn          the one-layer MPNN + VN of constructions.approx.mpnn_attention, run
                                   symbolically on n = 3 nodes with symbolic features (a fixed path
                                   graph), equals linear attention (1/n) sum_j (q_i.k_j) v_j W_O:
                                   an identity of polynomials in the features.
    rmsnorm_equals_layernorm       on a zero-mean vector, LayerNorm = g * RMSNorm + b (symbolic z,
                                   g, b, eps), and the Pre-RMSNorm weights of
                                   constructions.approx.norm_equivalence read the normed stream exactly as
                                   the Pre-LN weights do (q, k, v, the MLP input, the readout), and
                                   write exactly the centred stream.
    crmsnorm_equals_rmsnorm        the same for the Pre-CRMSNorm weights, which store D - 1
                                   coordinates of the zero-mean stream.

Weights become sympy Rationals by their exact binary value (proofs_check.symbolic.exact_number);
the fixed models use binary fractions, so the identities hold with no round-off. Each lemma takes
``built=None`` (its own fixed weights, :func:`fixed_weights`) or perturbed weights, and raises
:class:`LemmaFailed` (an AssertionError) naming what differs.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy
import torch
from sympy import Matrix, Rational, Symbol

from constructions import model as M
from constructions import mpnn
from constructions.approx import mpnn_attention, norm_equivalence
from constructions.check.contract import Built
from proofs_check.symbolic import exact_number


class LemmaFailed(AssertionError):
    """An identity between the construction and what it claims does not hold."""


def mat(t: torch.Tensor) -> Matrix:
    """A (rows, cols) or (n,) float tensor -> a sympy Matrix of exact Rationals (vectors as rows)."""
    t = t.detach().to(torch.float64)
    t = t.reshape(1, -1) if t.dim() == 1 else t
    return Matrix(t.shape[0], t.shape[1], lambda i, j: exact_number(float(t[i, j])))


def _probe(value, symbols: list) -> float:
    """|value| at a fixed point with rational coordinates (40 digits): a fast witness of nonzero."""
    point = {s: Rational(2 * i + 3, 7 * i + 5) for i, s in enumerate(sorted(symbols, key=str))}
    return abs(complex(sympy.N(value.subs(point), 40)))


def require_zero(diff: Matrix, where: str) -> None:
    """Every entry is identically zero. Perturbed weights leave gates and divisors that are not
    constants (exp and rational functions, slow to simplify), so an entry is first evaluated at a
    rational point: nonzero there is a counterexample; zero everywhere probed is then confirmed
    symbolically (the intact constructions give polynomials, which expand quickly)."""
    for (i, j), value in zip(((i, j) for i in range(diff.rows) for j in range(diff.cols)), diff):
        witness = _probe(value, list(value.free_symbols))
        if witness > 1e-25:
            raise LemmaFailed(f"{where}: entry ({i}, {j}) is {witness:.3e} at a rational point, not 0")
        residual = sympy.expand(value)
        if residual != 0 and sympy.cancel(residual) != 0:
            raise LemmaFailed(f"{where}: entry ({i}, {j}) differs by {str(residual)[:200]}")


# ----------------------------------------------------------------------------------------------
# MPNN + VN = linear attention


D_FEAT, N_NODES = 2, 3
W_Q = [[Rational(1, 2), Rational(-1, 4)], [Rational(3, 8), 1]]
W_K = [[Rational(-1, 2), Rational(1, 8)], [Rational(1, 4), Rational(3, 4)]]
W_V = [[1, Rational(-3, 8)], [Rational(1, 8), Rational(1, 2)]]
W_O = [[Rational(1, 4), Rational(5, 8)], [Rational(-1, 2), Rational(1, 8)]]
PATH = Matrix([[0, 1, 0], [1, 0, 1], [0, 1, 0]])


def linear_reference_layer() -> tuple[M.ModelConfig, M.Attention]:
    cfg = M.ModelConfig(d_model=D_FEAT, n_layers=1, n_heads=1, d_head=2, d_in=D_FEAT, attention="linear",
                        mask="full", mlp="none", bias=False)
    t = lambda rows: torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64)[None, None]
    return cfg, M.Attention(W_Q=t(W_Q), W_K=t(W_K), W_V=t(W_V), W_O=t(W_O))


def _sym_unit(cfg: mpnn.MPNNConfig, w: dict, prefix: str, u: Matrix) -> Matrix:
    """The exact unit of constructions.mpnn on symbolic rows u (one row per node)."""
    aff = lambda f: u * mat(w[f"{prefix}W_{f}"][0]) + Matrix.ones(u.rows, 1) * mat(w[f"{prefix}b_{f}"][0])
    a, b, c, g = aff("a"), aff("b"), aff("c"), aff("g")
    p = Matrix(u.rows, a.cols, lambda i, j: (1 if g[i, j] == 0 else sympy.exp(g[i, j])) * a[i, j] * b[i, j]
               / (1 + c[i, j]))
    return p * mat(w[f"{prefix}W_o"][0]) + Matrix.ones(u.rows, 1) * mat(w[f"{prefix}b_o"][0])


def sym_mpnn(built: Built, x: Matrix, adjacency: Matrix) -> Matrix:
    """constructions.mpnn.forward for exact units, in sympy (K = 1, one graph)."""
    cfg, w = built.cfg, built.weights
    if cfg.update != "exact":
        raise NotImplementedError("sym_mpnn: only exact units are polynomial/rational")
    h = x * mat(w["W_E"][0]) + Matrix.ones(x.rows, 1) * mat(w["b_E"][0])
    for l in range(cfg.n_layers):
        msgs = _sym_unit(cfg, w, f"layers.{l}.msg.", h)
        g = Matrix.ones(1, h.rows) * msgs
        u = Matrix.hstack(h, adjacency * h, Matrix.ones(h.rows, 1) * g)
        h = (h + _sym_unit(cfg, w, f"layers.{l}.upd.", u)).applyfunc(sympy.expand)
    return h * mat(w["W_U"][0])


def linear_attention_mpnn(built: Built | None = None) -> None:
    """One MPNN + VN layer with multiply/divide updates computes linear attention exactly: for
    symbolic features x (3 nodes, d = 2), MPNN(x) - (1/n) sum_j (q_i.k_j) v_j W_O expands to zero."""
    built = fixed_weights("linear_attention_mpnn") if built is None else built
    x = Matrix(N_NODES, D_FEAT, lambda i, j: Symbol(f"x{i + 1}{j + 1}", real=True))
    q, k, v = x * Matrix(W_Q), x * Matrix(W_K), x * Matrix(W_V)
    want = (q * k.T) * v * Matrix(W_O) / N_NODES
    require_zero(sym_mpnn(built, x, PATH) - want, "MPNN output vs linear attention")


# ----------------------------------------------------------------------------------------------
# LayerNorm = RMSNorm on zero-mean vectors, and the transformed weights


D_MODEL = 4  # a power of two: centring divides by D exactly in binary


def fixed_ln_model() -> tuple[M.ModelConfig, M.Weights]:
    """A one-layer Pre-LN model, D = 4, every weight a multiple of 1/8 (binary exact)."""
    cfg = M.ModelConfig(d_model=D_MODEL, n_layers=1, n_heads=1, d_head=2, d_in=2, d_out=1, d_mlp=2, mlp="relu",
                        norm="layernorm", final_norm=True, attention="linear", mask="full")
    gen = torch.Generator().manual_seed(0)
    sd = {key: torch.randint(-8, 9, shape, generator=gen).to(torch.float64) / 8
          for key, shape in M.weight_shapes(cfg, 1).items()}
    return cfg, M.from_state_dict(sd)


def _sym_norm(z: Matrix, kind: str, eps: Symbol) -> tuple[Matrix, object]:
    """(z scaled by 1/s, s^2) for LayerNorm (centred), RMSNorm, or CRMSNorm of stored z."""
    D = z.cols
    if kind == "layernorm":
        z = z - Matrix.ones(1, D) * (sum(z) / D)
        ms = sum(v**2 for v in z) / D
    elif kind == "crmsnorm":
        ms = (sum(v**2 for v in z) + sum(z) ** 2) / (D + 1)
    else:
        ms = sum(v**2 for v in z) / D
    return z, sympy.expand(ms + eps)


def _readers(cfg: M.ModelConfig, w: M.Weights, h: Matrix, eps: Symbol) -> tuple[object, dict[str, Matrix]]:
    """(s^2, {name: the affine readout of the normalized stream, times s}) for block 0 and ln_f."""
    z, s2 = _sym_norm(h, cfg.norm, eps)
    blk, out = w.blocks[0], {}

    def read(norm: M.Norm, W: torch.Tensor, b: torch.Tensor | None) -> Matrix:
        gained = Matrix(1, z.cols, lambda _, j: z[j] * exact_number(float(norm.w[0, j])))
        shift = mat(norm.b[0]) if norm.b is not None else Matrix.zeros(1, z.cols)
        bias = mat(b[0]) if b is not None else Matrix.zeros(1, W.shape[-1])
        return gained * mat(W[0]) + (shift * mat(W[0]) + bias) * Symbol("s")  # everything times s

    for r in ("Q", "K", "V"):
        out[r] = read(blk.ln1, getattr(blk.attn, f"W_{r}")[:, 0], getattr(blk.attn, f"b_{r}")[:, 0])
    out["mlp in"] = read(blk.ln2, blk.mlp.W_in, blk.mlp.b_in)
    out["readout"] = read(w.ln_f, w.W_U, w.b_U)
    return s2, out


def _check_transformed(built: Built, keep: int) -> None:
    cfg, w = fixed_ln_model()
    h = Matrix(1, D_MODEL, lambda _, j: Symbol(f"h{j + 1}", real=True))
    eps = Symbol("eps", positive=True)
    hc = h - Matrix.ones(1, D_MODEL) * (sum(h) / D_MODEL)
    s2_ln, ln = _readers(cfg, w, h, eps)
    s2_new, new = _readers(built.cfg, built.weights, hc[:, :keep], eps)
    require_zero(Matrix([[s2_ln - s2_new]]), f"{built.cfg.norm}: mean square of the zero-mean stream vs the variance")
    for name in ln:
        require_zero(new[name] - ln[name], f"{built.cfg.norm}: {name} of the normed stream")
    t = Matrix(1, cfg.d_in, lambda _, j: Symbol(f"t{j + 1}", real=True))
    emb = lambda ww: t * mat(ww.W_E[0]) + mat(ww.b_E[0])
    writers = {"embedding": (emb(built.weights), emb(w)),
               "W_O": (mat(built.weights.blocks[0].attn.W_O[0, 0]), mat(w.blocks[0].attn.W_O[0, 0])),
               "W_out": (mat(built.weights.blocks[0].mlp.W_out[0]), mat(w.blocks[0].mlp.W_out[0])),
               "b_O": (mat(built.weights.blocks[0].attn.b_O[0]), mat(w.blocks[0].attn.b_O[0])),
               "b_out": (mat(built.weights.blocks[0].mlp.b_out[0]), mat(w.blocks[0].mlp.b_out[0]))}
    for name, (got, ref) in writers.items():
        want = ref - ref * Matrix.ones(D_MODEL, D_MODEL) / D_MODEL
        require_zero(got - want[:, :keep], f"{built.cfg.norm}: {name} writes the centred stream")


def rmsnorm_equals_layernorm(built: Built | None = None) -> None:
    """LN(z) = g * RMS(z) + b for symbolic zero-mean z (D = 4), and the Pre-RMSNorm weights read
    and write the stream exactly as the Pre-LN ones (see the module docstring)."""
    z3 = [Symbol(f"z{j + 1}", real=True) for j in range(3)]
    z = Matrix([z3 + [-sum(z3)]])
    eps = Symbol("eps", positive=True)
    (ln, s2_ln), (rms, s2_rms) = _sym_norm(z, "layernorm", eps), _sym_norm(z, "rmsnorm", eps)
    require_zero(Matrix([[s2_ln - s2_rms]]), "var(z) + eps vs mean(z^2) + eps")
    require_zero(ln - rms, "z - mean(z) vs z")
    _check_transformed(fixed_weights("rmsnorm_equals_layernorm") if built is None else built, D_MODEL)


def crmsnorm_equals_rmsnorm(built: Built | None = None) -> None:
    """CRMSNorm of the first D - 1 coordinates of a zero-mean z is the first D - 1 of RMSNorm(z),
    and the Pre-CRMSNorm weights read and write the stored stream exactly as the Pre-LN ones."""
    z3 = [Symbol(f"z{j + 1}", real=True) for j in range(3)]
    eps = Symbol("eps", positive=True)
    _, s2_c = _sym_norm(Matrix([z3]), "crmsnorm", eps)
    _, s2_r = _sym_norm(Matrix([z3 + [-sum(z3)]]), "rmsnorm", eps)
    require_zero(Matrix([[s2_c - s2_r]]), "CRMS mean square vs RMS mean square")
    _check_transformed(fixed_weights("crmsnorm_equals_rmsnorm") if built is None else built, D_MODEL - 1)


LEMMAS: dict[str, Callable[..., None]] = {
    "linear_attention_mpnn": linear_attention_mpnn,
    "rmsnorm_equals_layernorm": rmsnorm_equals_layernorm,
    "crmsnorm_equals_rmsnorm": crmsnorm_equals_rmsnorm,
}


def fixed_weights(name: str) -> Built:
    """The float weights each lemma checks by default (binary fractions: they pass exactly)."""
    if name == "linear_attention_mpnn":
        _, attn = linear_reference_layer()
        heads = [{k: getattr(attn, k)[0, 0].numpy() for k in ("W_Q", "W_K", "W_V", "W_O")}]
        return mpnn_attention.build_linear_exact(heads)
    targets = {"rmsnorm_equals_layernorm": "rmsnorm", "crmsnorm_equals_rmsnorm": "crmsnorm"}
    if name not in targets:
        raise KeyError(f"no lemma named {name!r}; known: {', '.join(LEMMAS)}")
    return Built(*norm_equivalence.transform(*fixed_ln_model(), targets[name]))
