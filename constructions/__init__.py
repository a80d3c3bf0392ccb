"""The one forward pass, the reference algorithms and every hand-set weight construction.

Top level: ``model`` (THE forward pass), ``config`` and ``weights`` (its config and typed weights),
``tokens`` (token formats), ``paint`` (setting weights by residual-slot name), ``mpnn`` (the second
forward pass, for graphs), ``hf`` (HuggingFace GPT-2 in and out), ``registry`` (name ->
construction). Subpackages: ``reference`` (the algorithms constructions claim to run, and
baselines), ``check`` (the construction contract, checking, domains, strategies), and one per family:
``icl``, ``positional``, ``approx``. Imports ``synthetic`` only; writes no files but weights.
"""
