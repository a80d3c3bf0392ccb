"""Symbolic lemmas (proofs_check): they hold, they fail on perturbed weights, and the sympy forward
pass is the same function as constructions/model.py.

Three oracles meet here: the lemmas compare the sympy forward pass with the reference algorithms as
polynomials; the agreement tests compare the sympy forward pass with the float64 model on numbers;
the perturbation tests show that a lemma can fail. Sizes are tiny (d, N <= 3) because the
identities are polynomial: they hold for every input or for none.
"""

from __future__ import annotations

import pytest
import sympy
import torch
from sympy import Matrix, Rational, Symbol

from constructions import model as M
from constructions.check.contract import Built
from constructions.check.run import mutate
from constructions.icl import gd
from constructions.registry import CONSTRUCTIONS
from proofs_check import lemmas as L
from proofs_check import symbolic as S
from proofs_check import table

F64 = torch.float64
NAMES = list(L.LEMMAS)
def _symbolic_ok(c) -> bool:
    """Exact constructions whose config the symbolic pass can run (linear attention, no ReLU)."""
    cfg = c.build(c.sample(torch.Generator().manual_seed(0), d=2, n=2, depth=1)).cfg
    if not isinstance(cfg, M.ModelConfig):
        return False
    try:
        S.check_supported(cfg)
    except NotImplementedError:
        return False
    return True


EXACT = [name for name, c in CONSTRUCTIONS.items() if c.exactness == "exact" and _symbolic_ok(c)]


# ----------------------------------------------------------------------------------------------
# Anchors computed by hand


def test_exact_numbers_are_the_binary_floats_themselves_not_nearby_short_fractions():
    assert S.exact_number(0.25) == Rational(1, 4)
    assert S.exact_number(0.1) == Rational(3602879701896397, 2**55)  # the float 0.1, not 1/10


def test_one_gd_layer_subtracts_eta_y1_x1_xq_from_the_query_y_slot():
    """d = N = 1, eta = 1/2, one key (N = 1): by hand the query's y slot becomes -(1/2) y1 x1 xq,
    the example's becomes y1 - (1/2) y1 x1^2, and the readout (minus the y slot) is (1/2) y1 x1 xq."""
    x1, y1, xq = sympy.symbols("x1 y1 xq", real=True)
    run = S.forward(gd.build(1, 1, 0.5), Matrix([[x1, y1], [xq, 0]]))
    h = S.to_matrix(run.residuals[1])
    assert sympy.expand(h[1, 1] + y1 * x1 * xq / 2) == 0
    assert sympy.expand(h[0, 1] - (y1 - y1 * x1**2 / 2)) == 0
    assert sympy.expand(S.to_matrix(run.out)[1, 0] - y1 * x1 * xq / 2) == 0


# ----------------------------------------------------------------------------------------------
# The lemmas hold


@pytest.mark.parametrize("name", NAMES)
def test_every_lemma_holds_for_symbolic_inputs_and_symbolic_hyperparameters(name):
    L.LEMMAS[name]()


@pytest.mark.parametrize("name", NAMES)
def test_every_lemma_holds_on_the_constructions_own_float_weights_at_binary_hyperparameters(name):
    L.LEMMAS[name](built=L.fixed_weights(name))


def test_run_all_reports_each_named_lemma_as_passed_with_its_time():
    results = table.run_all(["gd_one_step", "newton_one_iteration"])
    assert [r["name"] for r in results] == ["gd_one_step", "newton_one_iteration"]
    assert all(r["passed"] and r["message"] == "" and r["seconds"] >= 0 for r in results)


def test_run_all_rejects_an_unknown_lemma_name_and_lists_the_known_ones():
    with pytest.raises(KeyError, match="gd_one_step"):
        table.run_all(["no_such_lemma"])


def test_run_all_records_a_failed_lemma_with_its_message(monkeypatch):
    failing = lambda: L.gd_one_step(built=rescaled(L.fixed_weights("gd_one_step"), "W_U", 2.0))  # noqa: E731
    monkeypatch.setitem(L.LEMMAS, "gd_one_step", failing)
    [result] = table.run_all(["gd_one_step"])
    assert not result["passed"] and "layer 1, readout" in result["message"]


# ----------------------------------------------------------------------------------------------
# The lemmas can fail


def rescaled(built: Built, key: str, factor: float) -> Built:
    sd = dict(M.to_state_dict(built.weights))
    sd[key] = sd[key] * factor
    return Built(built.cfg, M.from_state_dict(sd))


@pytest.mark.parametrize("name", NAMES)
def test_every_lemma_fails_on_weights_perturbed_by_mutate(name):
    """mutate adds noise of relative size 1e-3 to every entry of one nonzero tensor. In exact
    rationals no round-off can absorb it: each seed must leave a nonzero polynomial."""
    for seed in range(3):
        built, key = mutate(L.fixed_weights(name), torch.Generator().manual_seed(seed))
        with pytest.raises(L.LemmaFailed, match="not 0"):
            L.LEMMAS[name](built=built)


@pytest.mark.parametrize("name", NAMES)
def test_every_lemma_fails_when_any_nonzero_weight_tensor_is_rescaled_by_one_part_in_1024(name):
    """Every tensor a construction sets is read by its lemma: scaling the nonzero entries (the
    smallest change that keeps the zero pattern, so no new slot is read) is caught for each one."""
    built = L.fixed_weights(name)
    live = [k for k, t in M.to_state_dict(built.weights).items() if t.abs().max() > 0]
    for key in live:
        with pytest.raises(L.LemmaFailed):
            L.LEMMAS[name](built=rescaled(built, key, 1 + 2**-10))


def test_a_rescaled_readout_is_caught_at_layer_one_where_the_prediction_stops_being_zero():
    """At layer 0 the query's y slot is 0, so any W_U reads 0 = w_0.x_q; at layer 1 it reads
    -(1 + 2^-10) times -w_1.x_q."""
    built = rescaled(L.fixed_weights("gd_one_step"), "W_U", 1 + 2**-10)
    with pytest.raises(L.LemmaFailed, match="layer 1, readout vs w_1.x_q, query"):
        L.gd_one_step(built=built)


def test_the_symbolic_pass_alone_names_the_nonzero_residual_polynomial():
    """Without the random-input pass the failure is the polynomial itself: W_Q of the GD layer scaled
    by 1 + 2^-10 leaves -(2^-10) eta (1/N) sum_j y_j x_j.x_q in the readout, a polynomial in x, y, x_q."""
    built = rescaled(L.fixed_weights("gd_one_step"), "blocks.0.attn.W_Q", 1 + 2**-10)
    with pytest.raises(L.LemmaFailed, match=r"layer 1, readout vs w_1.x_q, query, coordinate 0: .*xq1"):
        L.check_gd(S.exact(built), [L.ETA * sympy.eye(2)], 2, 2, rng=None)


def test_a_hyperparameter_entering_the_weights_nonlinearly_is_not_taken_as_affine():
    eta = Symbol("eta", positive=True)
    with pytest.raises(AssertionError, match="not affine"):
        S.affine_in(lambda v: gd.build(2, 1, v[0] ** 2), [eta], [L.ETA], L.ETA, [L.ETA / 2])


# ----------------------------------------------------------------------------------------------
# The sympy forward pass is constructions/model.py


def assert_agrees_with_model(built: Built, T: int, gen: torch.Generator) -> None:
    """Every residual and the readout, evaluated exactly at random float tokens, match the float64
    model to 1e-12 (relative to max(1, |value|)): the symbolic side is exact at the same inputs,
    and the model's round-off is a few eps per layer times sums over <= 8 terms, ~1e-15."""
    din = built.cfg.d_in
    tokens = Matrix(T, din, lambda i, j: Symbol(f"t{i}_{j}", real=True))
    values = torch.randn(T, din, generator=gen, dtype=F64)
    point = {tokens[i, j]: values[i, j].item() for i in range(T) for j in range(din)}
    sym = S.forward(built, tokens)
    num = M.forward(built.cfg, built.weights, values[None], residuals=True)
    for layer, (got, want) in enumerate(zip(sym.residuals + [sym.out], num.residuals + [num.out])):
        got = torch.tensor(S.evaluate(got, point).tolist(), dtype=F64)
        scale = max(1.0, want[0, 0].abs().max().item())
        assert (got - want[0, 0]).abs().max().item() <= 1e-12 * scale, f"layer {layer}"


@pytest.mark.parametrize("name", EXACT)
def test_symbolic_forward_agrees_with_the_model_for_every_exact_construction(name):
    gen = torch.Generator().manual_seed(0)
    c = CONSTRUCTIONS[name]
    built = c.build(c.sample(gen, d=2, n=2, depth=1))
    assert_agrees_with_model(built, T=4, gen=gen)


@pytest.mark.parametrize("mask", M.MASKS)
@pytest.mark.parametrize("residual", [True, False])
def test_symbolic_forward_agrees_with_the_model_with_biases_positions_and_an_identity_mlp(mask, residual):
    """Parts no construction uses (biases, learned positions, two heads, causal and full masks,
    no residual) on dense random weights. One layer: with dense weights every layer triples the
    degree of the polynomials (layer 2 would have thousands of terms per entry); composition of
    layers is covered by the constructions above."""
    cfg = M.ModelConfig(d_model=3, n_layers=1, n_heads=2, d_head=2, d_in=2, d_out=2, d_mlp=3,
                        attention="linear", mask=mask, mlp="identity", bias=True, n_positions=5,
                        residual=residual)
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(shape, generator=gen, dtype=F64) for k, shape in M.weight_shapes(cfg, 1).items()}
    assert_agrees_with_model(Built(cfg, M.from_state_dict(sd)), T=4, gen=gen)


@pytest.mark.parametrize("field, value", [("attention", "softmax"), ("attention", "relu"), ("mlp", "relu"),
                                          ("norm", "layernorm")])
def test_symbolic_forward_names_the_config_field_it_cannot_run(field, value):
    base = dict(d_model=2, n_layers=1, n_heads=1, d_head=2, d_in=2, d_mlp=2, attention="linear", mlp="none")
    cfg = M.ModelConfig(**{**base, field: value})
    with pytest.raises(NotImplementedError, match=f"{field}={value!r}"):
        S.forward(Built(cfg, M.zeros(cfg)), Matrix(2, 2, sympy.symbols("a:4")))


@pytest.mark.parametrize("name", ["gd_looped", "preconditioned_gd_looped"])
def test_symbolic_forward_runs_every_loop_of_a_looped_construction(name):
    """Depth 3 = one block applied three times: the symbolic pass must loop like the model (a pass
    that applied the block once would stop after one residual and disagree from the second on).
    GD++ is left out: it also transforms the x slots every loop, and three loops of it are
    polynomials of thousands of terms (minutes of sympy)."""
    gen = torch.Generator().manual_seed(0)
    c = CONSTRUCTIONS[name]
    built = c.build(c.sample(gen, d=2, n=2, depth=3))
    assert built.cfg.n_layers == 1 and built.cfg.n_loops == 3
    sym = S.forward(built, Matrix(4, built.cfg.d_in, sympy.symbols(f"t:{4 * built.cfg.d_in}")))
    assert len(sym.residuals) == 4
    assert_agrees_with_model(built, T=4, gen=gen)
