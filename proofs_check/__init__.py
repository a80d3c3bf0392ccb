"""Symbolic (sympy) lemmas: each construction equals its algorithm, in small sizes."""

from proofs_check.lemmas import LEMMAS, LemmaFailed, run_all

__all__ = ["LEMMAS", "LemmaFailed", "run_all"]
