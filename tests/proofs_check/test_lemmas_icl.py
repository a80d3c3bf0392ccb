"""Symbolic lemmas of the in-context constructions: they hold for the constructions' weights, and
fail, naming where, for perturbed weights."""

import pytest
import sympy
import torch

from constructions.check.run import mutate
from proofs_check import lemmas_icl as L


@pytest.mark.parametrize("name", list(L.LEMMAS))
def test_lemma_holds_for_the_construction(name):
    L.LEMMAS[name]()


def test_relu_lemma_holds_for_its_fixed_float_weights():
    """The float weights at eta = 1/4 (a binary fraction, so exact as a Rational) pass as well as
    the weights with a symbolic eta. (The fold lemma's default weights are these float weights.)"""
    L.relu_gd_step(L.fixed_weights("relu_gd_step"))


@pytest.mark.parametrize("name", list(L.LEMMAS))
@pytest.mark.parametrize("seed", range(5))
def test_lemma_fails_on_perturbed_weights(name, seed):
    """mutate() perturbs one nonzero weight matrix entrywise; every matrix of these constructions
    is read (the embedding, each layer, the readout), so the lemma must fail, naming the layer."""
    broken, key = mutate(L.fixed_weights(name), torch.Generator().manual_seed(seed))
    with pytest.raises(L.LemmaFailed, match="fold|layer|embedding|readout"):
        L.LEMMAS[name](broken)


def test_sherman_morrison_identity_holds_symbolically():
    L.sherman_morrison_identity()


def test_relu_of_a_and_minus_a_cancel_to_a_in_the_symbolic_pattern():
    """The identity the ReLU construction rests on, as the lemma's pass writes ReLU."""
    a = sympy.Symbol("x1") * sympy.Symbol("x2") - sympy.Symbol("x3")
    relu = L._pattern("relu", sympy.Matrix([[a, -a]]))
    assert sympy.expand(relu[0] - relu[1] - a / 2) == 0  # pattern rows are scaled 1 / T, T = 2


def test_unknown_lemma_name_is_listed():
    with pytest.raises(KeyError, match="known: sherman_morrison_fold"):
        L.fixed_weights("nope")
