"""Trained versus constructed: the objects every comparison shares, and the tidy-frame contract.

Analysis is pure: (weights, prompts) -> tidy ``pandas`` DataFrames, one row per observation, with
the columns of :data:`COLUMNS`

    run         run id of a trained model ("" for a construction or a baseline)
    model       what produced the row: a run label, a construction name, or "" for baselines
    layer       the layer read out (0 = embedding, L = output); <NA> for reference algorithms
    algorithm   the reference algorithm compared with ("gd", "newton", "ols", ...), or "model"
    iteration   the algorithm's iteration (<NA> for closed forms and for model rows)
    n_examples  in-context examples the prediction saw
    metric      what ``value`` measures (each metric is defined in the docstring of the function
                that computes it; see analysis_metrics and analysis_probes)
    value       a float

A frame may carry one more coordinate when a metric needs it (``t`` for interpolation, ``x`` for a
construction's swept parameter); it is documented where it appears.

The pieces here: :class:`Prompts` (a batch of regression prompts, float64), :class:`Learner` (a
model.py transformer, trained or constructed, with its token format) and :class:`Reference` (an
algorithm that maps a prompt to regression weights at every iteration). Every reference here is
linear in the query, prediction = w . x_q, so its gradient with respect to x_q is its weight vector.

Glossary: B prompts, N context examples, d input dimension, L layers, I + 1 iterates (0 .. I).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor

from constructions import model as M
from constructions.reference import algorithms as alg
from constructions.tokens import example_tokens, interleaved_tokens

COLUMNS = ("run", "model", "layer", "algorithm", "iteration", "n_examples", "metric", "value")
FORMATS = ("example", "interleaved")
F64 = torch.float64


def frame(rows: list[dict], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows (dicts; missing keys are <NA>) -> a DataFrame with COLUMNS (+ extra) and integer
    coordinates as nullable Int64."""
    out = pd.DataFrame(rows, columns=list(COLUMNS) + list(extra))
    for col in ("layer", "iteration", "n_examples"):
        out[col] = pd.array(out[col].tolist(), dtype="Int64")
    out["value"] = out["value"].astype(float)
    for col in ("run", "model", "algorithm", "metric"):
        out[col] = out[col].astype(object).where(out[col].notna(), "").astype(str)
    return out


# ----------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class Prompts:
    """B regression prompts: N context examples and one query each (float64)."""

    x: Tensor  # (B, N, d)
    y: Tensor  # (B, N)
    x_query: Tensor  # (B, d)
    y_query: Tensor  # (B,)
    w: Tensor | None = None  # (B, d) the weights that made y, when known
    task: object = None  # the experiments.training.config.TaskSpec that drew them, when known

    @property
    def B(self) -> int:
        return self.x.shape[0]

    @property
    def n(self) -> int:
        return self.x.shape[1]

    @property
    def d(self) -> int:
        return self.x.shape[2]

    def crop(self, n: int) -> Prompts:
        """The same prompts with only the first n context examples (same queries)."""
        return replace(self, x=self.x[:, :n], y=self.y[:, :n])

    def split(self, fraction: float = 0.5) -> tuple[Prompts, Prompts]:
        """(first part, rest) along the prompt axis: a fit set and a held-out set."""
        cut = max(1, min(self.B - 1, int(round(self.B * fraction))))
        part = lambda s: Prompts(self.x[s], self.y[s], self.x_query[s], self.y_query[s],  # noqa: E731
                                 None if self.w is None else self.w[s])
        return part(slice(0, cut)), part(slice(cut, None))


def sample_prompts(d: int, n: int, n_prompts: int, *, seed: int = 0, noise_std: float = 0.0,
                   kind: str = "isotropic", condition_number: float = 1.0, basis_seed: int = 0,
                   w_std: float = 1.0) -> Prompts:
    """n_prompts prompts of the synthetic regression task (n context examples + 1 query)."""
    from synthetic.regression import RegressionTask, sample

    task = RegressionTask(d=d, n_points=n + 1, noise_std=noise_std, kind=kind,
                          condition_number=condition_number, basis_seed=basis_seed, w_std=w_std)
    batch = sample(task, [torch.Generator().manual_seed(seed)], n_prompts, dtype=F64)
    x, y = batch.x[0], batch.y[0]
    return Prompts(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], batch.w[0])


def prompts_for_task(task, n_prompts: int, seed: int = 0) -> Prompts:
    """Prompts for an ``experiments.training.config.TaskSpec``: n_points - 1 examples and the query (the
    in-context kinds of ``analysis_icl.KINDS`` are drawn there)."""
    from experiments.analysis import icl as analysis_icl

    if task.kind in analysis_icl.KINDS:
        return analysis_icl.task_prompts(task, n_prompts, seed)[0]
    p = sample_prompts(task.d, task.n_points - 1, n_prompts, seed=seed, noise_std=task.noise_std,
                       kind=task.kind, condition_number=task.condition_number,
                       basis_seed=task.basis_seed, w_std=task.w_std)
    return replace(p, task=task)


# ----------------------------------------------------------------------------------------------
# Learners: a model.py transformer and its token format


def tokens(fmt: str, x: Tensor, y: Tensor, x_query: Tensor) -> Tensor:
    """Tokens whose LAST token is the query, in either format.

    example:      z_1 .. z_N, (x_q, 0)                      T = N + 1
    interleaved:  x_1, y_1, .., x_N, y_N, x_q               T = 2 N + 1 (a causal model predicts
                  the query's y at its x token, so the trailing y token is left off)
    """
    if fmt == "example":
        return example_tokens(x, y, x_query)
    if fmt == "interleaved":
        xs = torch.cat([x, x_query.unsqueeze(-2)], dim=-2)
        ys = torch.cat([y, torch.zeros_like(y[..., :1])], dim=-1)
        return interleaved_tokens(xs, ys)[..., :-1, :]
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


@dataclass(frozen=True)
class Learner:
    """One transformer (K = 1) run in float64, with the token format it reads."""

    cfg: M.ModelConfig
    weights: M.Weights
    format: str = "example"
    model: str = "model"
    run: str = ""

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"Learner.format must be one of {FORMATS}, got {self.format!r}")
        if self.weights.K != 1:
            raise ValueError(f"Learner holds one model (K = 1), got K = {self.weights.K}")
        M.check_weights(self.cfg, self.weights)
        object.__setattr__(self, "weights", self.weights.map(lambda t: t.detach().to(F64)))

    @property
    def n_layers(self) -> int:
        return self.cfg.n_layers


def layer_states(learner: Learner, x: Tensor, y: Tensor, x_query: Tensor) -> tuple[Tensor, Tensor]:
    """(residuals at the query token (L+1, B, D), the model's readout of each (L+1, B))."""
    run = M.forward(learner.cfg, learner.weights, tokens(learner.format, x, y, x_query), residuals=True)
    h = torch.stack([r[0, :, -1, :] for r in run.residuals])  # (L+1, B, D)
    read = M.readout(learner.cfg, learner.weights, h.unsqueeze(0))[0, :, :, 0]  # (L+1, B)
    return h, read


def layer_predictions(learner: Learner, p: Prompts) -> Tensor:
    """The model's own readout applied to every layer's residual at the query: (L+1, B)."""
    return layer_states(learner, p.x, p.y, p.x_query)[1]


def prediction_gradients(learner: Learner, p: Prompts) -> Tensor:
    """d y_hat / d x_q of every layer's readout, by autograd: (L+1, B, d).

    Prompt b's prediction depends on its own query only, so the gradient of the sum over prompts
    is every prompt's gradient at once.
    """
    with torch.enable_grad():
        xq = p.x_query.detach().clone().requires_grad_(True)
        preds = layer_states(learner, p.x, p.y, xq)[1]
        grads = [torch.autograd.grad(pr.sum(), xq, retain_graph=True, allow_unused=True)[0]
                 for pr in preds]
    return torch.stack([torch.zeros_like(xq) if g is None else g for g in grads]).detach()


# ----------------------------------------------------------------------------------------------
# Reference algorithms: prompt -> regression weights at every iteration


@dataclass(frozen=True)
class Reference:
    """``weights(x, y, prefix)`` -> (I + 1, B, [N + 1,] d): iterate k's weights (I = 0 for closed
    forms). ``prefix=True`` fits every prefix at once (entry n uses the first n examples)."""

    name: str
    weights: Callable[[Tensor, Tensor, bool], Tensor]
    iterative: bool = True

    def predictions(self, p: Prompts) -> Tensor:
        """(I + 1, B) predictions w_k . x_q for the full context."""
        return alg.predict(self.weights(p.x, p.y, False), p.x_query)


def top_eigenvalue(x: Tensor, prefix: bool = False) -> Tensor:
    """lambda_max(S), S = X^T X / N, per prompt (and per prefix)."""
    return torch.linalg.eigvalsh(alg.statistics(x, prefix=prefix)[0])[..., -1]


def default_eta(x: Tensor) -> float:
    """1 / E[lambda_max(S)] over the prompts: one step size for every prompt, stable for any prompt
    whose lambda_max(S) is below twice the average."""
    return float(1.0 / top_eigenvalue(x).mean())


def _gd(eta, n_iter):
    """GD with step eta; eta=None uses eta = 1 / lambda_max(S) per prompt (and per prefix), the
    largest step that keeps every eigenvalue of I - eta S in [0, 1): GD then never diverges nor
    oscillates, whatever the number of examples."""
    def weights(x, y, prefix):
        if eta:
            return alg.gd(x, y, eta=eta, n_steps=n_iter, prefix=prefix)
        S, b = alg.statistics(x, y, prefix=prefix)
        step = 1.0 / top_eigenvalue(x, prefix).clamp(min=1e-12)  # (B, [N+1])
        w, out = torch.zeros_like(b), [torch.zeros_like(b)]
        for _ in range(n_iter):
            w = w - step[..., None] * ((S @ w.unsqueeze(-1)).squeeze(-1) - b)
            out.append(w)
        return torch.stack(out)
    return weights


def _newton(alpha, n_iter):
    """Newton-Schulz weights M_k b; alpha=None uses alpha = 1 / lambda_max(S)^2 per prompt (and
    per prefix), inside the convergence range 0 < alpha < 2 / lambda_max^2."""
    def weights(x, y, prefix):
        S, b = alg.statistics(x, y, prefix=prefix)
        a = alpha if alpha else 1.0 / top_eigenvalue(x, prefix).clamp(min=1e-12).pow(2)[..., None, None]
        return (alg.newton_schulz(S, alpha=a, n_iter=n_iter) @ b.unsqueeze(-1)).squeeze(-1)
    return weights


def _ridge(lam):
    """w = (X^T X + lam I)^{-1} X^T y = (S + lam / n I)^{-1} b for n examples (lam = sigma^2 /
    tau^2 is the Bayes-optimal choice for w ~ N(0, tau^2 I) and noise sigma)."""
    def weights(x, y, prefix):
        S, b = alg.statistics(x, y, prefix=prefix)
        n = torch.arange(x.shape[-2] + 1, dtype=x.dtype) if prefix else torch.tensor(float(x.shape[-2]))
        A = S + (lam / n.clamp(min=1))[..., None, None] * torch.eye(x.shape[-1], dtype=x.dtype)
        return torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1).unsqueeze(0)
    return weights


def _gd_plus_plus(eta, gamma, n_iter):
    """GD++'s prediction is linear in x_q; its weights are its predictions on the basis vectors."""
    def one(x, y):
        e = eta if eta else default_eta(x)
        g = gamma if gamma is not None else 0.25 * e
        d = x.shape[-1]
        xs, ys = x.expand(d, *x.shape), y.expand(d, *y.shape)
        basis = torch.eye(d, dtype=x.dtype)[:, None, :].expand(d, x.shape[0], d)
        return alg.gd_plus_plus(xs, ys, basis, eta=e, gamma=g, n_steps=n_iter).prediction.movedim(1, -1)

    def weights(x, y, prefix):
        if not prefix:
            return one(x, y)
        first = torch.zeros(n_iter + 1, x.shape[0], x.shape[-1], dtype=x.dtype)
        return torch.stack([first] + [one(x[:, :n], y[:, :n]) for n in range(1, x.shape[1] + 1)], dim=-2)
    return weights


def _ols(x, y, prefix):
    return alg.least_squares(x, y, prefix=prefix).unsqueeze(0)


def _zero(x, y, prefix):
    shape = (1, x.shape[0]) + ((x.shape[1] + 1,) if prefix else ()) + (x.shape[-1],)
    return torch.zeros(shape, dtype=x.dtype)


REFERENCE_NAMES = ("zero", "ols", "ridge", "gd", "gd_plus_plus", "newton",
                   "bayes_ridge", "mixture_posterior", "pool_posterior")


def reference(name: str, *, n_iter: int = 8, eta: float | None = None, alpha: float | None = None,
              gamma: float | None = None, lam: float = 0.1, sigma: float | None = None,
              task=None) -> Reference:
    """A reference by name; options that do not apply to it are ignored.

    gd            w_{k+1} = w_k - eta (S w_k - b), w_0 = 0 (eta=None: 1 / lambda_max(S) per prompt)
    gd_plus_plus  GD with x <- (I - gamma S) x after every step (gamma=None: eta / 4)
    newton        Newton-Schulz w_k = M_k b (alpha=None: 1 / lambda_max(S)^2 per prompt)
    ols           minimum-norm least squares (pinv);  ridge  (X^T X + lam I)^{-1} X^T y
    zero          the zero predictor (normalized error 1 on the isotropic task)
    bayes_ridge, mixture_posterior, pool_posterior   need the run's ``task`` (see analysis_icl;
                  bayes_ridge takes sigma, default the task's noise_std)
    """
    from experiments.analysis import icl as analysis_icl

    if name in analysis_icl.TASK_REFERENCE_NAMES:
        return analysis_icl.task_reference(name, task, sigma=sigma)
    table = {
        "zero": lambda: Reference("zero", _zero, iterative=False),
        "ols": lambda: Reference("ols", _ols, iterative=False),
        "ridge": lambda: Reference("ridge", _ridge(lam), iterative=False),
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


def parse_references(spec: str, *, n_iter: dict[str, int] | None = None, lam: float = 0.1,
                     fit: Prompts | None = None) -> list[Reference]:
    """"gd,newton:alpha=0.3,ols" -> references; options after ':' as key=value (eta, alpha,
    gamma, lam, n_iter, sigma). ``n_iter`` gives per-name defaults for the iteration count.
    ``gd:eta=best`` takes :func:`best_eta` for n_iter steps on the prompts ``fit``. A reference
    given options is named with them: "gd[eta=0.7937,n_iter=1]"."""
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, *opts = item.split(":")
        kwargs = {"n_iter": (n_iter or {}).get(name, 8), "lam": lam}
        for opt in opts:
            key, _, value = opt.partition("=")
            if key not in ("eta", "alpha", "gamma", "lam", "n_iter", "sigma") or not value:
                raise ValueError(f"--algorithms: bad option {opt!r} in {item!r}; use key=value with key in "
                                 "eta, alpha, gamma, lam, n_iter, sigma")
            kwargs[key] = value
        for key, value in list(kwargs.items()):
            if key == "eta" and value == "best":
                if fit is None:
                    raise ValueError("--algorithms: eta=best needs prompts to fit the step size on")
                kwargs[key] = best_eta(fit, int(kwargs["n_iter"]))
            else:
                kwargs[key] = int(value) if key == "n_iter" else float(value)
        ref = reference(name, task=getattr(fit, "task", None), **kwargs)
        shown = [f"{o.partition('=')[0]}={kwargs[o.partition('=')[0]]:.4g}" for o in opts]
        out.append(replace(ref, name=f"{name}[{','.join(shown)}]") if opts else ref)
    if not out:
        raise ValueError("--algorithms: name at least one algorithm")
    return out
