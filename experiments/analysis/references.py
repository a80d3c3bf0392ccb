"""Reference algorithms as the analysis sees them: a prompt -> regression weights at every iteration.

Every reference here is linear in the query (prediction = w . x_q), so its gradient with respect to
x_q is its weight vector. ``reference(name, ...)`` builds one by name (an explicit table) and
``parse_references("gd,newton:alpha=0.3,ols")`` a list from the ``--algorithms`` syntax.

Task references need the run's task (:class:`experiments.training.config.TaskSpec`):

    bayes_ridge        posterior mean under w ~ N(0, w_std^2 I) at noise ``sigma`` (default: the
                       task's noise_std): ridge with lam = sigma^2 / w_std^2 (sum convention),
                       min-norm least squares at sigma = 0
    mixture_posterior  posterior mean under the task's mixture of noise levels
    pool_posterior     posterior mean over the task's finite pool of weight vectors
    bayes_mixture      the Bayes selector over the task's families (a mixture's components, or the
                       task's own kind): isotropic, sparse, quadratic ("squares" form) and logistic
                       (see constructions.reference.nonlinear.bayes_mixture); not linear in x_q

Nonlinear baselines (Garg et al. 2022; constructions.reference.nonlinear and .trees) are not linear
in the query: their Reference carries ``predict`` instead of weights (see :class:`Reference`):

    knn, knn_distance  3 nearest neighbours, mean or 1/distance-weighted (option k)
    tree, deep_tree    a decision tree of depth 4 (option depth) or grown to pure leaves (scikit-learn)
    boosting           gradient boosting, XGBoost's defaults (options trees, depth; scikit-learn)
    nn_gd              a 2-layer ReLU net fitted by Adam on each prompt (options width, steps, lr)
    logistic, logistic_mean   L2 logistic regression (option lam): the +-1 label, or E[y] = tanh(z/2)

:func:`default_spec` gives the baselines drawn by default for each nonlinear task kind.

Zero noise levels enter the two posteriors as SIGMA_FLOOR * w_std (a zero level has no density on
data; the floor makes the posterior pick the noiseless explanation whenever it fits).

Glossary: B prompts, N context examples, d input dimension, I + 1 iterates (0 .. I).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from constructions.reference import algorithms as alg
from constructions.reference import baselines as bl
from constructions.reference import nonlinear as nl
from constructions.reference import trees as tr
from experiments.analysis.core import F64, Prompts
from experiments.training import tasks as T

TASK_REFERENCE_NAMES = ("bayes_ridge", "mixture_posterior", "pool_posterior", "bayes_mixture")
SIGMA_FLOOR = 1e-3


@dataclass(frozen=True)
class Reference:
    """``weights(x, y, prefix)`` -> (I + 1, B, [N + 1,] d): iterate k's weights (I = 0 for closed
    forms). ``prefix=True`` fits every prefix at once (entry n uses the first n examples).

    A baseline that is not linear in the query (``linear`` False) has ``predict(x, y, x_query,
    prefix)`` -> (1, B, [N + 1]) instead, and its ``weights`` raise a ValueError saying so; read
    every reference through :meth:`predictions`, :meth:`prefix_predictions` and :meth:`query_gradients`."""

    name: str
    weights: Callable[[Tensor, Tensor, bool], Tensor]
    iterative: bool = True
    predict: Callable[[Tensor, Tensor, Tensor, bool], Tensor] | None = None

    @property
    def linear(self) -> bool:
        return self.predict is None

    def predictions(self, p: Prompts) -> Tensor:
        """(I + 1, B) predictions w_k . x_q for the full context."""
        if self.predict is not None:
            return self.predict(p.x, p.y, p.x_query, False)
        return alg.predict(self.weights(p.x, p.y, False), p.x_query)

    def prefix_predictions(self, p: Prompts) -> Tensor:
        """(I + 1, B, N + 1): the prediction at x_q from the first n examples, n = 0 .. N."""
        if self.predict is not None:
            return self.predict(p.x, p.y, p.x_query, True)
        return alg.predict(self.weights(p.x, p.y, True), p.x_query.unsqueeze(-2))

    def query_gradients(self, p: Prompts) -> Tensor:
        """(I + 1, B, d): d prediction / d x_q, the weights of a linear reference; NaN for a nonlinear
        one (a tree or k-NN is piecewise constant, so no gradient compares with a model's)."""
        if self.predict is None:
            return self.weights(p.x, p.y, False)
        return torch.full((1, p.B, p.d), math.nan, dtype=p.x.dtype, device=p.x.device)


def top_eigenvalue(x: Tensor, prefix: bool = False) -> Tensor:
    """lambda_max(S), S = X^T X / N, per prompt (and per prefix)."""
    return torch.linalg.eigvalsh(alg.statistics(x, prefix=prefix)[0])[..., -1]


def default_eta(x: Tensor) -> float:
    """1 / E[lambda_max(S)] over the prompts: one step size for every prompt, stable for any prompt
    whose lambda_max(S) is below twice the average."""
    return float(1.0 / top_eigenvalue(x).mean())


def _positive(reference: str, name: str, value: float | None, default: str = "") -> float | None:
    """An explicit value must be > 0; None stands for the reference's ``default`` (named in the error)."""
    if value is not None and not value > 0:
        hint = f" (leave it out for {default})" if default else ""
        raise ValueError(f"{reference}: {name} must be > 0, got {value!r}{hint}")
    return value


def _gd(eta, n_iter):
    """GD with step eta; eta=None uses eta = 1 / lambda_max(S) per prompt (and per prefix), the
    largest step that keeps every eigenvalue of I - eta S in [0, 1): GD then never diverges nor
    oscillates, whatever the number of examples."""
    eta = _positive("gd", "eta", eta, "1 / lambda_max(S) per prompt")

    def weights(x, y, prefix):
        step = eta if eta is not None else 1.0 / top_eigenvalue(x, prefix).clamp(min=1e-12)  # (B, [N+1])
        return alg.gd(x, y, eta=step, n_steps=n_iter, prefix=prefix)
    return weights


def _newton(alpha, n_iter):
    """Newton-Schulz weights M_k b; alpha=None uses alpha = 1 / lambda_max(S)^2 per prompt (and
    per prefix), inside the convergence range 0 < alpha < 2 / lambda_max^2."""
    alpha = _positive("newton", "alpha", alpha, "1 / lambda_max(S)^2 per prompt")

    def weights(x, y, prefix):
        a = alpha if alpha is not None else 1.0 / top_eigenvalue(x, prefix).clamp(min=1e-12).pow(2)
        return alg.newton(x, y, alpha=a, n_iter=n_iter, prefix=prefix)
    return weights


def _ridge(lam):
    """w = (X^T X + lam I)^{-1} X^T y = (S + lam / n I)^{-1} b for n examples (lam = sigma^2 /
    tau^2 is the Bayes-optimal choice for w ~ N(0, tau^2 I) and noise sigma): algorithms.ridge in
    its sum convention."""
    _positive("ridge", "lam", lam)

    def weights(x, y, prefix):
        return alg.ridge(x, y, lam=lam, prefix=prefix, convention="sum").unsqueeze(0)
    return weights


def _gd_plus_plus(eta, gamma, n_iter):
    """GD++'s prediction is linear in x_q; its weights are its predictions on the basis vectors."""
    eta = _positive("gd_plus_plus", "eta", eta, "1 / E[lambda_max(S)]")

    def one(x, y):
        e = eta if eta is not None else default_eta(x)
        g = gamma if gamma is not None else 0.25 * e
        d = x.shape[-1]
        xs, ys = x.expand(d, *x.shape), y.expand(d, *y.shape)
        basis = torch.eye(d, dtype=x.dtype, device=x.device)[:, None, :].expand(d, x.shape[0], d)
        return alg.gd_plus_plus(xs, ys, basis, eta=e, gamma=g, n_steps=n_iter).prediction.movedim(1, -1)

    def weights(x, y, prefix):
        if not prefix:
            return one(x, y)
        first = torch.zeros(n_iter + 1, x.shape[0], x.shape[-1], dtype=x.dtype, device=x.device)
        return torch.stack([first] + [one(x[:, :n], y[:, :n]) for n in range(1, x.shape[1] + 1)], dim=-2)
    return weights


def _lasso(alpha):
    """The Lasso, 1/(2n) |X w - y|^2 + alpha |w|_1 (scikit-learn's convention, Garg et al.'s
    LassoModel; alpha=None: 0.1), by coordinate descent batched over prompts; one solve per prefix.
    500 sweeps: below d examples the features are collinear and 100 sweeps left errors of 0.3 in w."""
    alpha = 0.1 if _positive("lasso", "alpha", alpha, "0.1") is None else alpha

    def weights(x, y, prefix):
        if not prefix:
            return bl.lasso_cd(x, y, alpha=alpha, n_sweeps=500).unsqueeze(0)
        fits = [torch.zeros_like(x[:, 0])] + [bl.lasso_cd(x[:, :n], y[:, :n], alpha=alpha, n_sweeps=500)
                                              for n in range(1, x.shape[1] + 1)]
        return torch.stack(fits, dim=-2).unsqueeze(0)  # (1, B, N + 1, d)
    return weights


def _ols(x, y, prefix):
    return alg.least_squares(x, y, prefix=prefix).unsqueeze(0)


def _averaging(x, y, prefix):
    """w = X^T y / n: the averaging estimator (Garg et al.; one GD step of size 1 from 0)."""
    return alg.statistics(x, y, prefix=prefix)[1].unsqueeze(0)


def _zero(x, y, prefix):
    shape = (1, x.shape[0]) + ((x.shape[1] + 1,) if prefix else ()) + (x.shape[-1],)
    return torch.zeros(shape, dtype=x.dtype)


def nonlinear(name: str, fn: Callable[[Tensor, Tensor, Tensor, bool], Tensor]) -> Reference:
    """A Reference for ``fn(x, y, x_query, prefix) -> (B, [N + 1])``, a baseline not linear in x_q."""
    def no_weights(x, y, prefix):
        raise ValueError(f"{name} is not linear in the query and has no weights: read it through "
                         "Reference.predictions or prefix_predictions")
    return Reference(name, no_weights, iterative=False, predict=lambda x, y, q, prefix: fn(x, y, q, prefix)[None])


def _count(name: str, key: str, value, default: int) -> int:
    """An integer option >= 1 (None: ``default``); a ValueError names the reference and option."""
    if value is None:
        return default
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name}: {key} must be an integer >= 1, got {value!r}")
    return int(value)


def _nonlinear_table(k, depth, trees, width, steps, lr, lam) -> dict:
    """name -> fn(x, y, x_query, prefix) of the nonlinear baselines, with their options resolved."""
    k = _count("knn", "k", k, 3)
    _positive("logistic", "lam", lam)
    _positive("nn_gd", "lr", lr)
    lr = 5e-3 if lr is None else lr
    width, steps = _count("nn_gd", "width", width, 100), _count("nn_gd", "steps", steps, 100)
    tree_depth, boost_depth = _count("tree", "depth", depth, 4), _count("boosting", "depth", depth, 6)
    n_trees = _count("boosting", "trees", trees, 100)
    return {
        "knn": lambda x, y, q, prefix: nl.knn(x, y, q, k=k, prefix=prefix),
        "knn_distance": lambda x, y, q, prefix: nl.knn(x, y, q, k=k, weights="distance", prefix=prefix),
        "tree": lambda x, y, q, prefix: tr.decision_tree(x, y, q, max_depth=tree_depth, prefix=prefix),
        "deep_tree": lambda x, y, q, prefix: tr.decision_tree(x, y, q, max_depth=None, prefix=prefix),
        "boosting": lambda x, y, q, prefix: tr.gradient_boosting(x, y, q, n_estimators=n_trees, max_depth=boost_depth,
                                                                 prefix=prefix),
        "nn_gd": lambda x, y, q, prefix: nl.nn_gd(x, y, q, width=width, steps=steps, lr=lr, prefix=prefix,
                                                  dtype=torch.float32),  # Garg's precision, 3x faster
        "logistic": lambda x, y, q, prefix: nl.logistic(x, y, q, lam=lam, output="label", prefix=prefix),
        "logistic_mean": lambda x, y, q, prefix: nl.logistic(x, y, q, lam=lam, output="mean", prefix=prefix),
    }


NONLINEAR_NAMES = ("knn", "knn_distance", "tree", "deep_tree", "boosting", "nn_gd", "logistic", "logistic_mean")
REFERENCE_NAMES = ("zero", "averaging", "ols", "ridge", "lasso", "gd", "gd_plus_plus", "newton",
                   "bayes_ridge", "mixture_posterior", "pool_posterior", "bayes_mixture") + NONLINEAR_NAMES


def reference(name: str, *, n_iter: int = 8, eta: float | None = None, alpha: float | None = None,
              gamma: float | None = None, lam: float = 0.1, sigma: float | None = None,
              task=None, k: int | None = None, depth: int | None = None, trees: int | None = None,
              width: int | None = None, steps: int | None = None, lr: float | None = None) -> Reference:
    """A reference by name; options that do not apply to it are ignored.

    gd            w_{k+1} = w_k - eta (S w_k - b), w_0 = 0 (eta=None: 1 / lambda_max(S) per prompt)
    gd_plus_plus  GD with x <- (I - gamma S) x after every step (eta=None: 1 / E[lambda_max(S)];
                  gamma=None: eta / 4; gamma=0 is plain GD)
    newton        Newton-Schulz w_k = M_k b (alpha=None: 1 / lambda_max(S)^2 per prompt)
    ols           minimum-norm least squares;  ridge  (X^T X + lam I)^{-1} X^T y
    lasso         1/(2n) |X w - y|^2 + alpha |w|_1 (alpha=None: 0.1, Garg et al.'s sparse baseline)

    eta, alpha and lam, when given, must be > 0 (a ValueError names the one that is not): None, not
    0, asks for the default.
    zero          the zero predictor (normalized error 1 on the isotropic task)
    bayes_ridge, mixture_posterior, pool_posterior, bayes_mixture   need the run's ``task`` (see
                  analysis_icl; bayes_ridge takes sigma, default the task's noise_std)
    knn (k = 3), knn_distance, tree (depth 4), deep_tree, boosting (trees 100, depth 6), nn_gd
                  (width 100, steps 100, lr 5e-3), logistic, logistic_mean (lam, sum convention, as
                  given: ``ttb compare`` passes ridge's): nonlinear baselines, defaults as in Garg et
                  al.'s src/models.py (constructions.reference.nonlinear and .trees say which)
    """
    if name in TASK_REFERENCE_NAMES:
        return task_reference(name, task, sigma=sigma)
    if name in NONLINEAR_NAMES:
        return nonlinear(name, _nonlinear_table(k, depth, trees, width, steps, lr, lam)[name])
    table = {
        "zero": lambda: Reference("zero", _zero, iterative=False),
        "averaging": lambda: Reference("averaging", _averaging, iterative=False),
        "ols": lambda: Reference("ols", _ols, iterative=False),
        "ridge": lambda: Reference("ridge", _ridge(lam), iterative=False),
        "lasso": lambda: Reference("lasso", _lasso(alpha), iterative=False),
        "gd": lambda: Reference("gd", _gd(eta, n_iter)),
        "gd_plus_plus": lambda: Reference("gd_plus_plus", _gd_plus_plus(eta, gamma, n_iter)),
        "newton": lambda: Reference("newton", _newton(alpha, n_iter)),
    }
    if name not in table:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(REFERENCE_NAMES)}")
    return table[name]()


def best_eta(p: Prompts, n_steps: int = 1) -> float:
    """The GD step size with the smallest squared error on the prompts' queries after n_steps.
    One step is linear in eta (w_1 = eta b), so its best eta is <a, y> / <a, a> with a = b . x_q;
    more steps are searched on a log grid of 61 points in [0.01, 3] / E[lambda_max(S)]."""
    if n_steps == 1:
        a = alg.predict(alg.statistics(p.x, p.y)[1], p.x_query)
        return float((a * p.y_query).sum() / (a * a).sum().clamp(min=1e-300))
    grid = torch.logspace(-2, float(torch.log10(torch.tensor(3.0))), 61, dtype=F64) * default_eta(p.x)
    errs = [(alg.gd(p.x, p.y, eta=float(e), n_steps=n_steps)[-1] * p.x_query).sum(-1).sub(p.y_query).pow(2).mean()
            for e in grid]
    return float(grid[int(torch.stack(errs).nan_to_num(float("inf")).argmin())])


OPTION_KEYS = ("eta", "alpha", "gamma", "lam", "n_iter", "sigma", "k", "depth", "trees", "width", "steps", "lr")


def option_number(name: str, key: str, value) -> float | int:
    """The number an --algorithms option gives: n_iter an integer >= 0, the others finite."""
    try:
        number = int(value) if key == "n_iter" else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or (key == "n_iter" and number < 0):
        kind = "an integer >= 0" if key == "n_iter" else "a finite number" + (" or 'best'" if key == "eta" else "")
        raise ValueError(f"--algorithms: {name}'s option {key} must be {kind}, got {value!r}")
    return number


def parse_references(spec: str, *, n_iter: dict[str, int] | None = None, lam: float = 0.1,
                     fit: Prompts | None = None, task=None) -> list[Reference]:
    """"gd,newton:alpha=0.3,ols" -> references; options after ':' as key=value (OPTION_KEYS:
    eta, alpha, gamma, lam, n_iter, sigma; k, depth, trees, width, steps, lr for the nonlinear
    baselines). ``n_iter`` gives per-name defaults for the iteration count.
    ``gd:eta=best`` takes :func:`best_eta` for n_iter steps on the prompts ``fit``. A reference
    given options is named with them: "gd[eta=0.7937,n_iter=1]". ``task`` (default ``fit.task``)
    is the run's TaskSpec, for the task references."""
    task = getattr(fit, "task", None) if task is None else task
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, *opts = item.split(":")
        kwargs = {"n_iter": (n_iter or {}).get(name, 8), "lam": lam}
        for opt in opts:
            key, _, value = opt.partition("=")
            if key not in OPTION_KEYS or not value:
                raise ValueError(f"--algorithms: bad option {opt!r} in {item!r}; use key=value with key in "
                                 f"{', '.join(OPTION_KEYS)}")
            kwargs[key] = value
        for key, value in list(kwargs.items()):
            if key == "eta" and value == "best":
                if fit is None:
                    raise ValueError("--algorithms: eta=best needs prompts to fit the step size on")
                kwargs[key] = best_eta(fit, int(kwargs["n_iter"]))
            else:
                kwargs[key] = option_number(name, key, value)
        ref = reference(name, task=task, **kwargs)
        shown = [f"{o.partition('=')[0]}={kwargs[o.partition('=')[0]]:.4g}" for o in opts]
        out.append(replace(ref, name=f"{name}[{','.join(shown)}]") if opts else ref)
    if not out:
        raise ValueError("--algorithms: name at least one algorithm")
    return out


# ----------------------------------------------------------------------------------------------
# References that need the task


def noise_floor(sigma: float, w_std: float) -> float:
    return max(float(sigma), SIGMA_FLOOR * w_std)


def _bayes(task, sigma: float | None):
    if sigma is None and task.kind == "noise_mixture":
        raise ValueError("bayes_ridge on a noise mixture needs a level: bayes_ridge:sigma=VALUE "
                         "(or use mixture_posterior)")
    s = task.noise_std if sigma is None else sigma

    def weights(x, y, prefix):
        return bl.bayes_ridge(x, y, noise_std=s, w_std=task.w_std, prefix=prefix).unsqueeze(0)
    return weights


def _mixture(task):
    if task.kind != "noise_mixture":
        raise ValueError(f"mixture_posterior needs task.kind = 'noise_mixture', got {task.kind!r}")
    levels = [noise_floor(s, task.w_std) for s in task.noise_levels]

    def weights(x, y, prefix):
        w, _ = bl.noise_mixture_posterior(x, y, noise_levels=levels, probs=task.noise_probs or None,
                                          w_std=task.w_std, prefix=prefix)
        return w.unsqueeze(0)
    return weights


def _pool(task):
    if task.kind != "pool":
        raise ValueError(f"pool_posterior needs task.kind = 'pool', got {task.kind!r}")
    pool = T.synthetic_task(task).pool()
    sigma = noise_floor(task.noise_std, task.w_std)

    def weights(x, y, prefix):
        return bl.pool_posterior(x, y, pool, noise_std=sigma, prefix=prefix).mean.unsqueeze(0)
    return weights


def mixture_families(task) -> tuple[list, list[float] | None]:
    """(families, prior) of constructions.reference.nonlinear for the task's kinds: a mixture's
    components (prior task.mixture_probs, uniform when empty) or the task's own kind. isotropic ->
    GaussianFamily, sparse -> SparseFamily (task.k), quadratic "squares" -> GaussianFamily on x*x/sqrt 3,
    logistic -> SignFamily (lam = 1 / w_std^2: the MAP under w's prior; output E[y]); noise levels
    of 0 enter as SIGMA_FLOOR * w_std. Any other kind: a ValueError naming it."""
    kinds = tuple(task.mixture) if task.kind == "mixture" else (task.kind,)
    probs = list(task.mixture_probs) or None if task.kind == "mixture" else None
    sigma = noise_floor(task.noise_std, task.w_std)
    makers = {"isotropic": lambda: nl.GaussianFamily(sigma, task.w_std),
              "sparse": lambda: nl.SparseFamily(task.k, sigma, task.w_std),
              "logistic": lambda: nl.SignFamily(lam=1 / task.w_std**2, output="mean")}
    if getattr(task, "quadratic_form", None) == "squares":
        makers["quadratic"] = lambda: nl.GaussianFamily(sigma, task.w_std, features="squares")
    bad = [kind for kind in kinds if kind not in makers]
    if bad:
        raise ValueError(f"bayes_mixture has no exact posterior for task kind {bad[0]!r}; it supports "
                         "isotropic, sparse, quadratic (quadratic_form 'squares') and logistic")
    return [makers[kind]() for kind in kinds], probs


def _bayes_mixture(task):
    families, probs = mixture_families(task)

    def predict(x, y, x_query, prefix):
        return nl.bayes_mixture(x, y, x_query, families, probs=probs, prefix=prefix).prediction
    return predict


# Baselines drawn by default for the nonlinear kinds (Garg et al.'s get_relevant_baselines, with
# logistic regression (Bai et al.) for classification and the Bayes selector where it is exact).
# Left out for their cost on a CPU (name them in --algorithms): boosting (~100 scikit-learn tree
# fits per prompt and prefix) and, outside relu2nn, nn_gd.
TASK_BASELINES = {
    "tree": "ols,averaging,knn,tree,deep_tree,zero",
    "relu2nn": "ols,averaging,knn,nn_gd,zero",
    "quadratic": "ols,averaging,knn,bayes_mixture,zero",
    "logistic": "averaging,knn,logistic,logistic_mean,zero",
    "mixture": "ols,averaging,knn,bayes_mixture,zero",
}


def default_spec(task, fallback: str) -> str:
    """The --algorithms spec drawn by default for ``task``: TASK_BASELINES for its kind (without
    bayes_mixture where :func:`mixture_families` refuses the task), else ``fallback``."""
    spec = TASK_BASELINES.get(getattr(task, "kind", None))
    if spec is None:
        return fallback
    try:
        mixture_families(task)
    except ValueError:
        spec = ",".join(name for name in spec.split(",") if name != "bayes_mixture")
    return spec


def task_reference(name: str, task, *, sigma: float | None = None) -> Reference:
    """One of TASK_REFERENCE_NAMES for ``task`` (a TaskSpec; see the module docstring)."""
    if task is None:
        raise ValueError(f"{name} needs the run's task (prompts drawn by analysis.prompts_for_task)")
    if name == "bayes_mixture":
        return nonlinear(name, _bayes_mixture(task))
    makers = {"bayes_ridge": lambda: _bayes(task, sigma), "mixture_posterior": lambda: _mixture(task),
              "pool_posterior": lambda: _pool(task)}
    if name not in makers:
        raise KeyError(f"unknown task reference {name!r}; known: {', '.join(TASK_REFERENCE_NAMES)}")
    return Reference(name, makers[name](), iterative=False)
