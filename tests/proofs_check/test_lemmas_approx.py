"""Symbolic lemmas of the approximation constructions (proofs_check.lemmas_approx): they hold on
the constructions' own weights and fail on perturbed ones."""

import pytest
import sympy
import torch

from constructions import model as M
from constructions.check.contract import Built
from constructions.check.run import mutate
from proofs_check import lemmas_approx as L

NAMES = list(L.LEMMAS)


@pytest.mark.parametrize("name", NAMES)
def test_lemma_holds_on_the_construction_weights(name):
    L.LEMMAS[name]()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", range(4))
def test_lemma_fails_on_perturbed_weights(name, seed):
    broken, _ = mutate(L.fixed_weights(name), torch.Generator().manual_seed(seed))
    with pytest.raises(L.LemmaFailed):
        L.LEMMAS[name](built=broken)


def test_lemma_names_the_entry_that_differs_when_one_weight_moves_by_two_to_the_minus_ten():
    built = L.fixed_weights("crmsnorm_equals_rmsnorm")
    sd = M.to_state_dict(built.weights)
    sd["blocks.0.attn.W_V"] = sd["blocks.0.attn.W_V"].clone()
    sd["blocks.0.attn.W_V"][0, 0, 1, 0] += 2.0**-10
    with pytest.raises(L.LemmaFailed, match="crmsnorm: V of the normed stream: entry"):
        L.crmsnorm_equals_rmsnorm(built=Built(built.cfg, M.from_state_dict(sd)))


def test_lemma_failure_is_an_assertion_error_and_exact_numbers_are_binary():
    assert issubclass(L.LemmaFailed, AssertionError)
    assert L.mat(torch.tensor([0.125])) == sympy.Matrix([[sympy.Rational(1, 8)]])
