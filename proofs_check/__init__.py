"""Symbolic (sympy) lemmas: each construction equals its algorithm, in small sizes."""
