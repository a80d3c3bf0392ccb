"""Symbolic (sympy) lemmas: each exact construction equals its algorithm, in small sizes.

``symbolic`` is the exact forward pass over rationals; ``lemmas``, ``lemmas_icl`` and
``lemmas_approx`` hold the lemmas by family; ``table`` lists them all and runs them. Imports
``constructions`` (and ``synthetic``), nothing of ``experiments``.
"""
