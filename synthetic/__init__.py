"""Seeded, batched task generators: the leaf of the project (imports nothing of it).

``regression`` (linear regression, isotropic / anisotropic / noisy), ``tasks`` (noise mixtures,
sparse, task pools, representations, softmax regression), ``functions`` (nonlinear function classes:
decision trees, two-layer ReLU networks, quadratics, binary classification, and task mixtures that
record each prompt's family), ``algorithmic`` (sequence tasks and the out-of-distribution protocol)
with the reference sequence algorithms it needs (``sequences``),
``graphs`` (random graphs with node features), ``targets`` (sequence-to-sequence targets for
approximation), and ``strategies`` (hypothesis strategies for the same domains).
"""
