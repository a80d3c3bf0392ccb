"""Decision-tree and gradient-boosting baselines (Garg et al. 2022's DecisionTreeModel and
XGBoostModel), backed by scikit-learn, the optional ``baselines`` extra.

Conventions as in :mod:`constructions.reference.nonlinear`: x (..., N, d), y (..., N), x_query
(..., d) -> (...), or (..., N + 1) with ``prefix=True`` (entry n fits the first n examples; n = 0
predicts 0). A tree is fitted by a sequential greedy search that has no batched form, so these
loop over prompts (and prefixes) in Python, one scikit-learn fit each: B (N + 1) fits for every
prefix. That is the one place in constructions/reference/ with a per-prompt loop.

Gradient boosting uses scikit-learn's GradientBoostingRegressor, not XGBoost, so that one extra
(scikit-learn) serves every baseline; its defaults here are XGBRegressor's (the model Garg et al.
call with no arguments): 100 trees of depth 6, learning rate 0.3, squared error, no subsampling.
(XGBoost also puts an L2 penalty of 1 on leaf values, which GradientBoostingRegressor has not.)
scikit-learn is imported on first use; without it a one-line ImportError names the extra.

Glossary: B prompts (every leading axis flattened), N examples, d input dimension.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

EXTRA_HINT = 'pip install -e ".[baselines]"'


def sklearn_modules():
    """(sklearn.tree, sklearn.ensemble), or an ImportError naming the ``baselines`` extra when
    scikit-learn is absent (imported here, on first use: it is optional and slow to import)."""
    try:
        from sklearn import ensemble, tree
    except ImportError:
        raise ImportError(f"the tree and boosting baselines need scikit-learn: {EXTRA_HINT}") from None
    return tree, ensemble


def _check_depth(max_depth) -> None:
    if max_depth is not None and (isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1):
        raise ValueError(f"max_depth must be None or an int >= 1, got {max_depth!r}")


def per_prompt(fit_predict, x: Tensor, y: Tensor, x_query: Tensor, prefix: bool) -> Tensor:
    """Apply ``fit_predict(X (n, d), y (n,), q (1, d)) -> float`` to every prompt (and prefix n >= 1)
    in numpy float64; n = 0 gives 0. Returns (...) or (..., N + 1) in x's dtype and device."""
    lead, (N, d) = x.shape[:-2], x.shape[-2:]
    X = x.detach().reshape(-1, N, d).cpu().to(torch.float64).numpy()
    Y = y.detach().reshape(-1, N).cpu().to(torch.float64).numpy()
    Q = x_query.detach().reshape(-1, 1, d).cpu().to(torch.float64).numpy()
    sizes = range(N + 1) if prefix else [N]
    out = np.zeros((X.shape[0], len(sizes)))
    for b in range(X.shape[0]):
        for j, n in enumerate(sizes):
            if n > 0:
                out[b, j] = fit_predict(X[b, :n], Y[b, :n], Q[b])
    result = torch.from_numpy(out).to(dtype=x.dtype, device=x.device)
    return result.reshape(lead + ((N + 1,) if prefix else ()))


def decision_tree(x: Tensor, y: Tensor, x_query: Tensor, *, max_depth: int | None = 4, seed: int = 0,
                  prefix: bool = False) -> Tensor:
    """scikit-learn's DecisionTreeRegressor(max_depth) fitted on each prompt (Garg et al. use
    max_depth 4, the depth of their tree task, and None, grown until the leaves are pure);
    ``seed`` fixes the order in which features are tried (ties between equally good splits)."""
    _check_depth(max_depth)
    tree = sklearn_modules()[0]

    def fit_predict(X, Y, q):
        return float(tree.DecisionTreeRegressor(max_depth=max_depth, random_state=seed).fit(X, Y).predict(q)[0])
    return per_prompt(fit_predict, x, y, x_query, prefix)


def gradient_boosting(x: Tensor, y: Tensor, x_query: Tensor, *, n_estimators: int = 100, max_depth: int = 6,
                      learning_rate: float = 0.3, seed: int = 0, prefix: bool = False) -> Tensor:
    """scikit-learn's GradientBoostingRegressor fitted on each prompt, with XGBRegressor's defaults
    (see the module docstring). Costs about n_estimators tree fits per prompt and prefix: reduce
    ``n_estimators`` for quick looks."""
    _check_depth(max_depth)
    if isinstance(n_estimators, bool) or not isinstance(n_estimators, int) or n_estimators < 1:
        raise ValueError(f"n_estimators must be an int >= 1, got {n_estimators!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    ensemble = sklearn_modules()[1]

    def fit_predict(X, Y, q):
        model = ensemble.GradientBoostingRegressor(n_estimators=n_estimators, max_depth=max_depth,
                                                   learning_rate=learning_rate, random_state=seed)
        return float(model.fit(X, Y).predict(q)[0])
    return per_prompt(fit_predict, x, y, x_query, prefix)
