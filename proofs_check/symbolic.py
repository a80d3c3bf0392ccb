"""The forward pass of :mod:`constructions.model` in sympy, for the configs exact constructions use.

Supported: attention ``linear`` (A = (q.k) / N, N = number of keys the query sees, from the model's
own :func:`constructions.model.key_mask`, so masks ``exclude_query``, ``full`` and ``causal``), MLP
``none`` / ``identity``, norm ``none``, residual on or off, biases and learned positions if present.
Anything else raises NotImplementedError naming the field and its value, before any work (ReLU
attention or a ReLU MLP would need the sign of a symbolic score; softmax and norms are not
polynomial).

Exact weights. A construction's float64 weights become sympy Rationals by ``sympy.Rational(float)``,
the exact value of the binary float, never a guess. The constructions are built with parameters
that are binary fractions (eta = 1/4, alpha = 1/8, ...) and paint them as multiples of identities,
so their weights are exactly those fractions and an identity between polynomials holds with no
round-off at all. ``nsimplify(..., rational=True)`` would instead guess a short fraction near the
float: it can round a perturbed weight back to a "nice" value and hide the perturbation, and it
turns 0.1 (not a binary float) into 1/10, which the float model does not compute. The price of
exactness: a weight meant to be 1/3 arrives as the float nearest 1/3 and an identity fails by
~1e-17, so lemmas choose parameters that are binary fractions.

Symbolic parameters. :func:`affine_in` turns a build function whose weights are affine in some
parameters (eta, alpha, the entries of P) into exact weights with sympy symbols in place of the
parameters: it builds at a base point and one step along each parameter, and checks the affine
formula against one more build (a probe point).

Polynomial arithmetic. Every residual entry is a polynomial over QQ in the input symbols (and
parameter symbols), so the pass runs in the ring QQ[symbols] (sympy ``DomainMatrix``): products
come out expanded and "expands to zero" is an exact, fast test, where expanding expression trees
would cost seconds per layer.

Shapes: weights lose the model axis (K must be 1): a (D, Dh) tensor becomes a D x Dh Matrix, a
vector a 1 x n row Matrix; attention weights and biases with a head axis become a list of H of
those (b_O has none). Tokens are a T x Din Matrix;
residuals are T x D DomainMatrices (:func:`to_matrix` turns them back into Matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import sympy
import torch
from sympy.polys.matrices import DomainMatrix

from constructions import model as M
from constructions.check.contract import Built

SymTensor = sympy.Matrix | list  # a Matrix, or one Matrix per head
SUPPORTED = {"attention": ("linear",), "mlp": ("none", "identity"), "norm": ("none",)}


@dataclass
class ExactWeights:
    """A config and its weights as exact sympy matrices, keyed like :func:`model.to_state_dict`."""

    cfg: M.ModelConfig
    sd: dict[str, SymTensor]


# ----------------------------------------------------------------------------------------------
# Exact weights


def exact_number(value: float) -> sympy.Rational:
    """The exact rational value of a binary float (0.25 -> 1/4, 0.1 -> 3602879701896397/2**55)."""
    return sympy.Rational(float(value))


def exact_tensor(t: torch.Tensor) -> sympy.Matrix:
    """A (K = 1)-less tensor of rank 1 or 2 as a row Matrix or a Matrix of exact Rationals."""
    if t.dim() == 1:
        return sympy.Matrix(1, t.shape[0], [exact_number(v) for v in t.tolist()])
    if t.dim() == 2:
        return sympy.Matrix([[exact_number(v) for v in row] for row in t.tolist()])
    raise ValueError(f"exact_tensor: expected rank 1 or 2, got shape {tuple(t.shape)}")


def _per_head(key: str) -> bool:
    """Attention weights and biases with a head axis (all but b_O)."""
    return ".attn." in key and not key.endswith("b_O")


def exact(built: Built | ExactWeights) -> ExactWeights:
    """Exact weights of a construction (K must be 1); ExactWeights pass through unchanged."""
    if isinstance(built, ExactWeights):
        return built
    if built.weights.K != 1:
        raise ValueError(f"symbolic forward needs one model (K = 1), got K = {built.weights.K}")
    M.check_weights(built.cfg, built.weights)
    sd = {key: t[0].detach().cpu() for key, t in M.to_state_dict(built.weights).items()}
    convert = lambda key, t: [exact_tensor(part) for part in t] if _per_head(key) else exact_tensor(t)  # noqa: E731
    return ExactWeights(built.cfg, {key: convert(key, t) for key, t in sd.items()})


def map_weights(fn: Callable, *sds: dict[str, SymTensor]) -> dict[str, SymTensor]:
    """Apply ``fn`` to matching matrices of several state dicts (per head for per-head weights)."""
    out = {}
    for key, first in sds[0].items():
        if isinstance(first, list):
            out[key] = [fn(*parts) for parts in zip(*(sd[key] for sd in sds))]
        else:
            out[key] = fn(*(sd[key] for sd in sds))
    return out


def _parts(t: SymTensor) -> list[sympy.Matrix]:
    return t if isinstance(t, list) else [t]


def _binary(value) -> sympy.Rational:
    """value as a Rational that a float holds exactly (else the builds would not be at the points)."""
    exact_value = sympy.Rational(value)
    if sympy.Rational(float(exact_value)) != exact_value:
        raise ValueError(f"affine_in: {value} is not a binary fraction; use points like 1/4, 3/8")
    return exact_value


def affine_in(build_at: Callable[[list[float]], Built], symbols: Sequence[sympy.Symbol],
              base: Sequence, step, probe: Sequence) -> ExactWeights:
    """Exact weights as affine functions of ``symbols``, from builds at binary-fraction points.

    W(theta) = W(base) + sum_k (theta_k - base_k) / step * (W(base + step e_k) - W(base)).
    Raises AssertionError unless W(probe) from the formula equals build_at(probe) exactly (a
    necessary condition for affinity; that the construction paints its parameters linearly is read
    off its code).
    """
    base, probe, step = [_binary(v) for v in base], [_binary(v) for v in probe], _binary(step)
    at = lambda point: exact(build_at([float(v) for v in point]))  # noqa: E731
    w0 = at(base)
    sd = w0.sd
    for k, symbol in enumerate(symbols):
        wk = at([v + (step if i == k else 0) for i, v in enumerate(base)])
        scale = (symbol - base[k]) / step
        sd = map_weights(lambda s, a, b: s + scale * (b - a), sd, w0.sd, wk.sd)
    at_probe = dict(zip(symbols, probe))
    got = map_weights(lambda m: m.subs(at_probe).applyfunc(sympy.expand), sd)
    want = at(probe).sd
    bad = [key for key in want if _parts(got[key]) != _parts(want[key])]
    if bad:
        raise AssertionError(f"build is not affine in {list(symbols)}: weights {bad} differ at the probe "
                             f"{probe}")
    return ExactWeights(w0.cfg, map_weights(lambda m: m.applyfunc(sympy.expand), sd))


# ----------------------------------------------------------------------------------------------
# Polynomial matrices


def polynomial_ring(*matrices: sympy.Matrix):
    """QQ[every free symbol of the matrices] (symbols sorted by name), or QQ if there are none."""
    gens = sorted(set().union(*(m.free_symbols for m in matrices)), key=str)
    return sympy.QQ.poly_ring(*gens) if gens else sympy.QQ


def to_poly(value, ring):
    """A sympy Matrix (or a scalar) of polynomials over QQ as a DomainMatrix (or an element) of ring."""
    if not isinstance(value, sympy.MatrixBase):
        return ring.from_sympy(sympy.sympify(value))
    return DomainMatrix([[ring.from_sympy(e) for e in row] for row in value.tolist()], value.shape, ring)


def to_matrix(dm: DomainMatrix) -> sympy.Matrix:
    """Back to a sympy Matrix of expanded expressions."""
    return dm.to_Matrix()


def evaluate(dm: DomainMatrix, point: dict) -> sympy.Matrix:
    """Exact value of every entry at ``point`` (symbol -> number; floats are taken exactly)."""
    ring = dm.domain
    if ring == sympy.QQ:
        return dm.to_Matrix()
    args = [ring.domain.from_sympy(sympy.Rational(point[g])) for g in ring.symbols]
    return sympy.Matrix([[ring.domain.to_sympy(p(*args)) if p else 0 for p in row] for row in dm.to_list()])


# ----------------------------------------------------------------------------------------------
# The forward pass


def check_supported(cfg: M.ModelConfig) -> None:
    """NotImplementedError naming the first config field the symbolic pass cannot run."""
    for name, allowed in SUPPORTED.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise NotImplementedError(
                f"symbolic forward: {name}={value!r} is not supported (supported: {allowed})")
    for field, value, allowed in (("layer_attention", cfg.layer_attention, None), ("qk_source", cfg.qk_source, "residual"),
                                  ("mlp_input", cfg.mlp_input, "residual")):
        if value != allowed:
            raise NotImplementedError(f"symbolic forward: {field}={value!r} is not supported (supported: {allowed!r})")


def _rows(m: DomainMatrix, row: DomainMatrix | None) -> DomainMatrix:
    """m plus a bias row (1, n) broadcast over its rows (no bias: m itself)."""
    return m if row is None else m + DomainMatrix.ones((m.shape[0], 1), m.domain) * row


@dataclass
class Pass:
    """One model on one token matrix, in the polynomial ring of both: residuals layer by layer."""

    cfg: M.ModelConfig
    sd: dict[str, DomainMatrix | list[DomainMatrix]]
    ring: object  # QQ[symbols]; convert references with to_poly(m, ring)
    tokens: DomainMatrix  # (T, Din)

    def get(self, key: str, head: int | None = None):
        value = self.sd.get(key)
        return value if value is None or head is None else value[head]

    def residuals(self) -> Iterator[DomainMatrix]:
        """The embedding, then the stream after each block (T, D), computed lazily: a check can
        stop at the first wrong layer without paying for the later ones."""
        h = e = embed(self, self.tokens)
        yield h
        for loop in range(self.cfg.n_loops):  # a looped model applies its n_layers blocks n_loops times
            if loop and self.cfg.input_injection:
                h = h + e
            for layer in range(self.cfg.n_layers):
                h = block(self, layer, h)
                yield h

    def readout(self, h: DomainMatrix) -> DomainMatrix:
        """The readout (T, Dout) of any residual: h W_U + b_U (norm is "none")."""
        return _rows(h * self.get("W_U"), self.get("b_U"))


def visibility(p: Pass, T: int) -> DomainMatrix:
    """(T, T): 1 / N_i where query i sees key j, else 0 (the model's own key_mask)."""
    visible = M.key_mask(p.cfg.mask, T)
    n_keys = visible.sum(-1).tolist()
    scale = sympy.Matrix(T, T, lambda i, j: sympy.Rational(1, n_keys[i]) if visible[i, j] else 0)
    return to_poly(scale, p.ring)


def attention(p: Pass, layer: int, h: DomainMatrix) -> DomainMatrix:
    """Linear multi-head attention on h (T, D): sum over heads of (q k^T * mask / N) v W_O."""
    key = f"blocks.{layer}.attn."
    scale = visibility(p, h.shape[0])
    out = DomainMatrix.zeros((h.shape[0], p.cfg.d_model), p.ring)
    for head in range(p.cfg.n_heads):
        q = _rows(h * p.get(key + "W_Q", head), p.get(key + "b_Q", head))  # (T, Dh)
        k = _rows(h * p.get(key + "W_K", head), p.get(key + "b_K", head))
        v = _rows(h * p.get(key + "W_V", head), p.get(key + "b_V", head))
        pattern = (q * k.transpose()).mul_elementwise(scale)  # (T, T)
        out = out + pattern * v * p.get(key + "W_O", head)
    return _rows(out, p.get(key + "b_O"))


def mlp(p: Pass, layer: int, h: DomainMatrix) -> DomainMatrix:
    """Identity MLP: (h W_in + b_in) W_out + b_out."""
    key = f"blocks.{layer}.mlp."
    a = _rows(h * p.get(key + "W_in"), p.get(key + "b_in"))
    return _rows(a * p.get(key + "W_out"), p.get(key + "b_out"))


def block(p: Pass, layer: int, h: DomainMatrix) -> DomainMatrix:
    """h + attn(h), then h + mlp(h) (no residual if the config turns it off)."""
    a = attention(p, layer, h)
    h = h + a if p.cfg.residual else a
    if p.cfg.mlp != "none":
        m = mlp(p, layer, h)
        h = h + m if p.cfg.residual else m
    return h


def embed(p: Pass, tokens: DomainMatrix) -> DomainMatrix:
    """tokens (T, Din) -> residual (T, D): tokens W_E + b_E (+ the first T learned positions)."""
    T = tokens.shape[0]
    h = _rows(tokens * p.get("W_E"), p.get("b_E"))
    if p.cfg.n_positions:
        if T > p.cfg.n_positions:
            raise ValueError(f"prompt has {T} tokens but n_positions={p.cfg.n_positions}")
        h = h + p.get("W_pos").extract(list(range(T)), list(range(p.cfg.d_model)))
    return h


def prepare(w: Built | ExactWeights, tokens: sympy.Matrix) -> Pass:
    """Weights and tokens (T, Din) of polynomials (symbols, numbers) in one ring, ready to run."""
    check_supported(w.cfg)
    w = exact(w)
    if tokens.cols != w.cfg.d_in:
        raise ValueError(f"tokens must have d_in={w.cfg.d_in} columns, got {tokens.cols}")
    ring = polynomial_ring(tokens, *(m for v in w.sd.values() for m in _parts(v)))
    sd = map_weights(lambda m: to_poly(m, ring), w.sd)
    return Pass(w.cfg, sd, ring, to_poly(tokens, ring))


@dataclass
class Output:
    out: DomainMatrix  # (T, Dout) readout after the last layer
    residuals: list[DomainMatrix]  # L + 1 matrices (T, D): embedding, then after each block
    ring: object  # the polynomial ring of every entry


def forward(w: Built | ExactWeights, tokens: sympy.Matrix) -> Output:
    """Run the model on a token matrix (T, Din): every residual and the readout, as polynomials."""
    p = prepare(w, tokens)
    stream = list(p.residuals())
    return Output(out=p.readout(stream[-1]), residuals=stream, ring=p.ring)
