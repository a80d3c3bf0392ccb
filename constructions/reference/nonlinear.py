"""Baselines for the nonlinear in-context tasks (Garg et al. 2022; Bai et al. 2023): estimators that
are not linear in the query, so each returns predictions at a query rather than weights.

Conventions as in :mod:`constructions.reference.algorithms`: x (..., N, d), y (..., N), one query
x_query (..., d) per prompt; the result is (...), or (..., N + 1) with ``prefix=True``, entry n being
the prediction at x_query from the first n examples (n = 0 predicts 0, as Garg et al.'s baselines
do for the first point). Batched over every leading axis and every prefix; float64-capable.

Functions (which of Garg et al.'s ``src/models.py`` defaults each follows is said in its docstring;
Garg et al.'s LeastSquaresModel and LassoModel are algorithms.least_squares and baselines.lasso_cd)
    averaging(x, y, x_query)              (1/n) sum_i y_i x_i . x_q          (AveragingModel)
    knn(x, y, x_query, k, weights)        k nearest neighbours, uniform or 1/distance (NNModel)
    init_two_layer / two_layer / train_two_layer / nn_gd
                                          a 2-layer ReLU net fitted by Adam on each prompt (GDModel)
    logistic_regression(x, y, lam)        L2-regularised logistic regression by damped Newton
    logistic_predict(w, x_query, output)  its label, probability or expected label
    logistic(x, y, x_query, lam, output)  the two at once
    bayes_mixture(x, y, x_query, families)  the Bayes selector for a mixture of task families
                                          (GaussianFamily, SparseFamily, SignFamily)

Decision trees and gradient boosting (scikit-learn, a per-prompt loop) are in
:mod:`constructions.reference.trees`.

Glossary: N examples, d input dimension, h hidden width, P = the leading shape (prompts[, prefixes]).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from constructions.reference import algorithms, baselines

KNN_WEIGHTS = ("uniform", "distance")
LOGISTIC_OUTPUTS = ("label", "probability", "mean")


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return value


def _check_positive(name: str, value) -> float:
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def prefix_mask(N: int, like: Tensor) -> Tensor:
    """(N + 1, N): entry [n, i] is 1 when example i is among the first n (i < n), else 0."""
    idx = torch.arange(N, device=like.device)
    return (idx[None, :] < torch.arange(N + 1, device=like.device)[:, None]).to(like.dtype)


# ----------------------------------------------------------------------------------------------
# Averaging and nearest neighbours


def averaging(x: Tensor, y: Tensor, x_query: Tensor, *, prefix: bool = False) -> Tensor:
    """Garg et al.'s AveragingModel: w = (1/n) sum_i y_i x_i, prediction w . x_q. The same estimator
    as the existing "averaging" reference (algorithms.statistics' b), here applied at the query."""
    b = algorithms.statistics(x, y, prefix=prefix)[1]  # (..., [N+1,] d)
    return algorithms.predict(b, x_query.unsqueeze(-2) if prefix else x_query)


def knn(x: Tensor, y: Tensor, x_query: Tensor, *, k: int = 3, weights: str = "uniform",
        prefix: bool = False) -> Tensor:
    """k-nearest-neighbour regression, Garg et al.'s NNModel (k = 3 in their baselines).

    ``weights="uniform"`` (NNModel's default, the one their get_relevant_baselines uses): the mean y
    of the k nearest examples; this is :func:`constructions.reference.baselines.knn`, reused.
    ``weights="distance"``: y weighted by 1 / |x_i - x_q| over the k nearest; when the query equals
    an example exactly, the exact matches among the k nearest share the weight equally (NNModel's
    handling of an infinite weight). Fewer than k examples: all of them; none: 0.

    Every prefix at once: the distances of the first n examples, the others set to +inf, and one
    top-k per prefix (..., N + 1, k)."""
    _check_int("k", k, 1)
    if weights not in KNN_WEIGHTS:
        raise ValueError(f"weights must be one of {KNN_WEIGHTS}, got {weights!r}")
    if weights == "uniform":
        return baselines.knn(x, y, x_query, k=k, prefix=prefix)
    N = x.shape[-2]
    dist = (x - x_query.unsqueeze(-2)).pow(2).sum(-1).sqrt()  # (..., N)
    if prefix:
        dist = dist.unsqueeze(-2).masked_fill(prefix_mask(N, dist) == 0, math.inf)  # (..., N+1, N)
    near, idx = dist.topk(min(k, N), dim=-1, largest=False)  # (..., [N+1,] k')
    ys = y.unsqueeze(-2).expand(*dist.shape[:-1], N).gather(-1, idx) if prefix else y.gather(-1, idx)
    inv = torch.where(torch.isfinite(near), 1.0 / near, torch.zeros_like(near))
    exact = (near == 0).to(near.dtype)
    w = torch.where(exact.sum(-1, keepdim=True) > 0, exact, inv)
    total = w.sum(-1)
    return torch.where(total > 0, (w * ys).sum(-1) / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)


# ----------------------------------------------------------------------------------------------
# A two-layer ReLU network fitted by Adam on each prompt


class TwoLayer(NamedTuple):
    """f(x) = relu(x W1 + b1) . W2 + b2, one network per leading index P."""

    W1: Tensor  # (*P, d, h)
    b1: Tensor  # (*P, h)
    W2: Tensor  # (*P, h)
    b2: Tensor  # (*P,)


def init_two_layer(shape: tuple[int, ...], d: int, width: int, generator: torch.Generator, *,
                   dtype=torch.float64, device=None) -> TwoLayer:
    """PyTorch's nn.Linear initialisation (Garg et al.'s NeuralNetwork): every weight and bias of a
    layer with fan-in m uniform in [-1/sqrt(m), 1/sqrt(m)]. Drawn in the order W1, b1, W2, b2, each
    over the whole leading ``shape`` at once, from ``generator`` alone."""
    def uniform(size, fan_in):
        u = torch.rand(size, generator=generator, dtype=torch.float64, device=device)
        return ((2 * u - 1) / math.sqrt(fan_in)).to(dtype)

    shape = tuple(shape)
    return TwoLayer(uniform(shape + (d, width), d), uniform(shape + (width,), d),
                    uniform(shape + (width,), width), uniform(shape, width))


def two_layer(params: TwoLayer, x: Tensor) -> Tensor:
    """params over (*P), x (*P, M, d) (or broadcasting to it) -> f(x) (*P, M)."""
    hidden = torch.relu(x @ params.W1 + params.b1.unsqueeze(-2))  # (*P, M, h)
    return (hidden * params.W2.unsqueeze(-2)).sum(-1) + params.b2.unsqueeze(-1)


def train_two_layer(params: TwoLayer, x: Tensor, y: Tensor, mask: Tensor, *, steps: int, lr: float,
                    betas=(0.9, 0.999), eps: float = 1e-8) -> TwoLayer:
    """``steps`` full-batch Adam steps (torch.optim.Adam's update, per network) on each network's
    mean squared error over its examples: loss_P = sum_i mask_Pi (f(x_i) - y_i)^2 / max(sum_i mask_Pi, 1).
    x (*P, N, d), y (*P, N), mask (*P, N) (all broadcasting to P). The loss summed over networks has
    per-network gradients, and Adam is elementwise, so every network trains exactly as it would alone."""
    params = TwoLayer(*(p.detach().clone().requires_grad_(True) for p in params))
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    count = mask.sum(-1).clamp(min=1)
    for t in range(1, steps + 1):
        with torch.enable_grad():
            loss = ((mask * (two_layer(params, x) - y).pow(2)).sum(-1) / count).sum()
            grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            c1, c2 = 1 - betas[0] ** t, math.sqrt(1 - betas[1] ** t)
            for p, g, mp, vp in zip(params, grads, m, v):
                mp.mul_(betas[0]).add_(g, alpha=1 - betas[0])
                vp.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                p.addcdiv_(mp, vp.sqrt() / c2 + eps, value=-lr / c1)
    return TwoLayer(*(p.detach() for p in params))


def nn_gd(x: Tensor, y: Tensor, x_query: Tensor, *, width: int = 100, steps: int = 100, lr: float = 5e-3,
          generator: torch.Generator | None = None, prefix: bool = False, chunk: int = 64,
          dtype: torch.dtype | None = None) -> Tensor:
    """A 2-layer ReLU network of ``width`` hidden units fitted to each prompt's examples by full-batch
    Adam, then evaluated at the query: Garg et al.'s GDModel as their get_relevant_baselines sets it
    for relu_2nn_regression (hidden 100, Adam, lr 5e-3, batch 100 >= N so the whole prompt, 100 steps,
    squared loss, nn.Linear init), which are the defaults here. (Their GDModel's own defaults, SGD
    with lr 1e-3 and 1000 steps, are not what they evaluate with.) Cost: about 6 width (d + 2) N
    steps flops per network, N + 1 networks per prompt with ``prefix``; measured on one CPU thread
    in float32, ~50 s for 512 prompts of d = 5, N = 30 with every prefix. More steps fit closer.

    One network per prompt (and per prefix with ``prefix``: network n sees examples 0 .. n-1 through
    a mask; n = 0 predicts 0), all trained in one batched loop. A prompt's networks share one
    initialisation (from ``generator``, seed 0 by default; :func:`init_two_layer` over the prompts),
    so the full prefix is exactly the ``prefix=False`` fit. ``chunk`` prompts at a time bound the
    memory; the result does not depend on it. ``dtype`` (default x's) is the training precision:
    float32, Garg et al.'s, is about three times faster on a CPU than float64; the result is cast
    back to x's dtype."""
    _check_int("width", width, 1)
    _check_int("steps", steps, 0)
    _check_int("chunk", chunk, 1)
    lr = _check_positive("lr", lr)
    generator = torch.Generator(device=x.device).manual_seed(0) if generator is None else generator
    out_dtype, dtype = x.dtype, x.dtype if dtype is None else dtype
    x, y, x_query = x.to(dtype), y.to(dtype), x_query.to(dtype)
    lead, (N, d) = x.shape[:-2], x.shape[-2:]
    nets = lead + ((N + 1,) if prefix else ())
    params = init_two_layer(lead, d, width, generator, dtype=dtype, device=x.device)
    mask = prefix_mask(N, x) if prefix else torch.ones(N, dtype=x.dtype, device=x.device)
    flat = [t.reshape(-1, *t.shape[len(lead):]) for t in (x, y, x_query)]
    flat_params = TwoLayer(*(p.reshape(-1, *p.shape[len(lead):]) for p in params))
    out = []
    for s in range(0, flat[0].shape[0], chunk):
        xs, ys, qs = (t[s:s + chunk] for t in flat)
        ps = TwoLayer(*(p[s:s + chunk] for p in flat_params))
        if prefix:  # one copy of the prompt's data and initial network per prefix
            xs, ys, qs = xs.unsqueeze(1), ys.unsqueeze(1), qs.unsqueeze(1)
            ps = TwoLayer(*(p.unsqueeze(1).expand(p.shape[0], N + 1, *p.shape[1:]) for p in ps))
        fitted = train_two_layer(ps, xs, ys, mask, steps=steps, lr=lr)
        pred = two_layer(fitted, qs.unsqueeze(-2)).squeeze(-1)
        out.append(pred * (mask.sum(-1) > 0) if prefix else pred)
    if not out:  # no prompts
        return torch.zeros(nets, dtype=out_dtype, device=x.device)
    return torch.cat(out).reshape(nets).to(out_dtype)


# ----------------------------------------------------------------------------------------------
# Logistic regression (labels +-1)


def _logistic_objective(margins: Tensor, w: Tensor, mask: Tensor, lam: float) -> Tensor:
    """sum_i mask_mi log(1 + exp(-margin_mi)) + lam/2 |w_m|^2: margins (..., M, N) = y_i w_m.x_i,
    w (..., M, d), mask (M, N) -> (..., M)."""
    return (mask * torch.nn.functional.softplus(-margins)).sum(-1) + 0.5 * lam * w.pow(2).sum(-1)


def logistic_regression(x: Tensor, y: Tensor, *, lam: float = 1.0, n_iter: int = 20, prefix: bool = False) -> Tensor:
    """The minimiser of sum_i log(1 + exp(-y_i w.x_i)) + (lam / 2) |w|^2 for labels y_i in {-1, +1}
    (the sum convention: the MAP estimate under w ~ N(0, I / lam); sklearn's LogisticRegression with
    C = 1 / lam and no intercept). Bai et al. 2023 compare in-context logistic regression with it.

    Damped Newton from w = 0: direction H^{-1} g (H = X^T diag(p(1 - p)) X + lam I, positive
    definite), step the largest of 1, 1/2, .., 2^-9 meeting Armijo's condition (all ten objectives
    computed at once; the smallest if none does), ``n_iter`` times. lam > 0 keeps the minimiser
    finite on separable data. Returns w (..., [N+1,] d); prefix n = 0 gives w = 0."""
    lam = _check_positive("lam", lam)
    _check_int("n_iter", n_iter, 0)
    N, d = x.shape[-2:]
    # M fits per prompt: one per prefix (mask row n keeps the first n examples), or one with all.
    mask = prefix_mask(N, x) if prefix else torch.ones(1, N, dtype=x.dtype, device=x.device)  # (M, N)
    w = torch.zeros(x.shape[:-2] + (mask.shape[0], d), dtype=x.dtype, device=x.device)  # (..., M, d)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    steps = 2.0 ** -torch.arange(10, dtype=x.dtype, device=x.device)  # (T,)
    yx = y.unsqueeze(-1) * x  # (..., N, d): margins are yx . w
    outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2)  # (..., N, d*d): x_i x_i^T
    for _ in range(n_iter):
        margins = torch.einsum("...nd,...md->...mn", yx, w)  # (..., M, N)
        p = torch.sigmoid(margins)  # probability of the observed label
        g = lam * w - torch.einsum("...nd,...mn->...md", yx, mask * (1 - p))
        H = ((mask * p * (1 - p)) @ outer).unflatten(-1, (d, d)) + lam * eye  # (..., M, d, d)
        direction = -torch.linalg.solve(H, g)  # (..., M, d)
        t = steps.view(-1, *([1] * w.dim()))  # (T, 1, .., 1): margins and w are affine in the step
        trial = w + t * direction  # (T, ..., M, d)
        ft = _logistic_objective(margins + t * torch.einsum("...nd,...md->...mn", yx, direction), trial, mask, lam)
        f0 = _logistic_objective(margins, w, mask, lam)  # (..., M)
        ok = ft <= f0 + 1e-4 * t[..., 0] * (g * direction).sum(-1)  # Armijo, (T, ..., M)
        first = torch.where(ok.any(0), ok.to(torch.int64).argmax(0), len(steps) - 1)  # (..., M)
        w = trial.gather(0, first.unsqueeze(0).unsqueeze(-1).expand(1, *w.shape)).squeeze(0)
    w = w if prefix else w.squeeze(-2)
    return w


def logistic_predict(w: Tensor, x_query: Tensor, *, output: str = "label") -> Tensor:
    """From z = w . x_q: ``label`` sign(z) in {-1, +1} (0 when z = 0, e.g. with no examples),
    ``probability`` P(y = +1) = sigmoid(z), or ``mean`` E[y] = 2 sigmoid(z) - 1 = tanh(z / 2) (what
    a squared-error learner of +-1 labels should predict)."""
    if output not in LOGISTIC_OUTPUTS:
        raise ValueError(f"output must be one of {LOGISTIC_OUTPUTS}, got {output!r}")
    z = algorithms.predict(w, x_query)
    return {"label": torch.sign, "probability": torch.sigmoid, "mean": lambda t: torch.tanh(t / 2)}[output](z)


def logistic(x: Tensor, y: Tensor, x_query: Tensor, *, lam: float = 1.0, n_iter: int = 20, output: str = "label",
             prefix: bool = False) -> Tensor:
    """:func:`logistic_regression` then :func:`logistic_predict` at the query: (..., [N+1])."""
    w = logistic_regression(x, y, lam=lam, n_iter=n_iter, prefix=prefix)
    return logistic_predict(w, x_query.unsqueeze(-2) if prefix else x_query, output=output)


# ----------------------------------------------------------------------------------------------
# The Bayes selector for task mixtures (Bai et al. 2023's algorithm selection)

FEATURES = ("linear", "squares")
MAX_SUPPORTS = 5000


@dataclass(frozen=True)
class GaussianFamily:
    """y = w . phi(x) + noise_std eps, w ~ N(0, w_std^2 I): phi(x) = x ("linear": the isotropic and
    noisy kinds) or x * x / sqrt(3) ("squares": Garg et al.'s quadratic task). Exact evidence and
    posterior mean (Bayes ridge on phi). noise_std must be > 0 (no density otherwise)."""

    noise_std: float
    w_std: float = 1.0
    features: str = "linear"

    def __post_init__(self):
        _check_positive("GaussianFamily.noise_std", self.noise_std)
        _check_positive("GaussianFamily.w_std", self.w_std)
        if self.features not in FEATURES:
            raise ValueError(f"GaussianFamily.features must be one of {FEATURES}, got {self.features!r}")


@dataclass(frozen=True)
class SparseFamily:
    """y = w . x + noise_std eps, w ~ N(0, w_std^2) on k coordinates chosen uniformly, 0 elsewhere
    (the sparse kind). Exact, by enumerating the C(d, k) supports (at most MAX_SUPPORTS)."""

    k: int
    noise_std: float
    w_std: float = 1.0

    def __post_init__(self):
        _check_int("SparseFamily.k", self.k, 1)
        _check_positive("SparseFamily.noise_std", self.noise_std)
        _check_positive("SparseFamily.w_std", self.w_std)


@dataclass(frozen=True)
class SignFamily:
    """Labels y in {-1, +1} (classification: sign(w . x) or Bernoulli-logistic labels). Its posterior
    weight is exact against continuous families (they give +-1 labels probability 0, so prompts whose
    labels are all +-1 come from it); its prediction is a plug-in, :func:`logistic` with ``lam`` and
    ``output``, not the Bayes posterior mean (no closed form)."""

    lam: float = 1.0
    output: str = "mean"

    def __post_init__(self):
        _check_positive("SignFamily.lam", self.lam)
        if self.output not in LOGISTIC_OUTPUTS:
            raise ValueError(f"SignFamily.output must be one of {LOGISTIC_OUTPUTS}, got {self.output!r}")


FAMILIES = (GaussianFamily, SparseFamily, SignFamily)


def _gaussian_fit(fam: GaussianFamily, x, y, x_query, prefix):
    if fam.features == "squares":
        x, x_query = x * x / math.sqrt(3), x_query * x_query / math.sqrt(3)
    ev = baselines.gaussian_log_evidence(x, y, fam.noise_std, fam.w_std, prefix=prefix)
    w = baselines.bayes_ridge(x, y, noise_std=fam.noise_std, w_std=fam.w_std, prefix=prefix)
    return ev, algorithms.predict(w, x_query.unsqueeze(-2) if prefix else x_query)


def _sparse_fit(fam: SparseFamily, x, y, x_query, prefix, chunk: int = 256):
    """Log-sum-exp over supports S (uniform prior) of log p(y | S) and the posterior-weighted
    prediction x_q,S . E[w_S | y, S], from X^T X, X^T y and |y|^2 computed once: with
    A_S = G_SS + (sigma^2 / tau^2) I_k,
        log p(y | S) = -1/2 (n log 2 pi + n log sigma^2 + log det A_S - k log(sigma^2 / tau^2)
                             + (|y|^2 - c_S^T A_S^{-1} c_S) / sigma^2),   E[w_S | y, S] = A_S^{-1} c_S
    (the d x d form of :func:`baselines.gaussian_log_evidence` on the columns S). ``chunk``
    supports at a time."""
    d, k = x.shape[-1], fam.k
    count = math.comb(d, k) if k <= d else 0
    if not 0 < count <= MAX_SUPPORTS:
        raise ValueError(f"SparseFamily.k = {k} with d = {d} gives {count} supports; exact enumeration "
                         f"needs 1 to {MAX_SUPPORTS}")
    G, c, n = baselines.sums(x, y, prefix=prefix)  # (..., [M,] d, d), (..., [M,] d), ([M])
    yy = torch.cat([torch.zeros_like(y[..., :1]), (y * y).cumsum(-1)], -1) if prefix else (y * y).sum(-1)
    q = x_query.unsqueeze(-2) if prefix else x_query
    s2, ratio = fam.noise_std**2, fam.noise_std**2 / fam.w_std**2
    const = n * math.log(2 * math.pi * s2) - k * math.log(ratio)  # ([M])
    supports = torch.tensor(list(itertools.combinations(range(d), k)), device=x.device)  # (C, k)
    log_z = pred = None
    for part in supports.split(chunk):
        A = G[..., part[:, :, None], part[:, None, :]] + ratio * torch.eye(k, dtype=x.dtype, device=x.device)
        L = torch.linalg.cholesky(A)  # (..., [M,] C, k, k)
        cs = c[..., part]  # (..., [M,] C, k)
        w = torch.cholesky_solve(cs.unsqueeze(-1), L).squeeze(-1)
        logdet = 2 * torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)
        ev = -0.5 * (const.unsqueeze(-1) + logdet + (yy.unsqueeze(-1) - (cs * w).sum(-1)) / s2)  # (..., [M,] C)
        p_s = (q[..., part] * w).sum(-1)
        part_z = torch.logsumexp(ev, -1)
        part_pred = (torch.softmax(ev, -1) * p_s).sum(-1)
        if log_z is None:
            log_z, pred = part_z, part_pred
            continue
        new = torch.logaddexp(log_z, part_z)
        pred = pred * (log_z - new).exp() + part_pred * (part_z - new).exp()
        log_z = new
    return log_z - math.log(count), pred


def family_fit(family, x: Tensor, y: Tensor, x_query: Tensor, *, prefix: bool = False):
    """(log evidence log p(y | X, family) (..., [N+1]), posterior-mean prediction at x_query
    (..., [N+1])); the evidence is None for :class:`SignFamily` (a probability, not a density)."""
    if isinstance(family, GaussianFamily):
        return _gaussian_fit(family, x, y, x_query, prefix)
    if isinstance(family, SparseFamily):
        return _sparse_fit(family, x, y, x_query, prefix)
    if isinstance(family, SignFamily):
        return None, logistic(x, y, x_query, lam=family.lam, output=family.output, prefix=prefix)
    raise ValueError(f"bayes_mixture supports {', '.join(f.__name__ for f in FAMILIES)}; got {family!r}")


class Selection(NamedTuple):
    prediction: Tensor  # (..., [N+1])   posterior-weighted (or MAP family's) prediction
    posterior: Tensor  # (..., [N+1], M) p(family m | the examples)


def bayes_mixture(x: Tensor, y: Tensor, x_query: Tensor, families, *, probs=None, select: str = "mean",
                  prefix: bool = False) -> Selection:
    """The Bayes selector for a mixture: each prompt comes from family m with prior ``probs[m]``
    (uniform by default); p(m | data) ~ probs_m p(y | X, m), and the prediction is
    sum_m p(m | data) yhat_m (``select="mean"``, the Bayes-optimal prediction under squared loss when
    every yhat_m is its family's posterior mean) or the most probable family's yhat_m ("map").

    Supported families: :class:`GaussianFamily` (linear or squared features, any noise > 0 and
    w_std), :class:`SparseFamily`, and at most one :class:`SignFamily`; exact except for the sign
    family's plug-in prediction. With no examples the posterior is the prior."""
    families = list(families)
    if not families:
        raise ValueError("families must list at least one family")
    for f in families:
        if not isinstance(f, FAMILIES):
            raise ValueError(f"bayes_mixture supports {', '.join(c.__name__ for c in FAMILIES)}; got {f!r}")
    if sum(isinstance(f, SignFamily) for f in families) > 1:
        raise ValueError("bayes_mixture takes at most one SignFamily (two label families have no exact "
                         "evidence ratio)")
    if select not in ("mean", "map"):
        raise ValueError(f"select must be 'mean' or 'map', got {select!r}")
    probs = [1.0 / len(families)] * len(families) if probs is None else [float(p) for p in probs]
    if len(probs) != len(families) or not all(p > 0 and math.isfinite(p) for p in probs):
        raise ValueError(f"probs must be {len(families)} positive numbers, got {probs!r}")
    prior = torch.tensor(probs, dtype=x.dtype, device=x.device)
    prior = prior / prior.sum()
    fits = [family_fit(f, x, y, x_query, prefix=prefix) for f in families]
    preds = torch.stack([p for _, p in fits], dim=-1)  # (..., [N+1], M)
    continuous = torch.tensor([ev is not None for ev, _ in fits], device=x.device)
    logits = torch.stack([ev if ev is not None else torch.zeros_like(p) for ev, p in fits], dim=-1)
    logits = (logits + prior.log()).masked_fill(~continuous, -math.inf)
    post = torch.softmax(logits, dim=-1) if bool(continuous.any()) else torch.zeros_like(logits)
    if not bool(continuous.all()):
        post = _with_sign_family(post, y, prior, continuous, prefix)
    pred = (post * preds).sum(-1) if select == "mean" else preds.gather(-1, post.argmax(-1, keepdim=True)).squeeze(-1)
    return Selection(pred, post)


def _with_sign_family(post: Tensor, y: Tensor, prior: Tensor, continuous: Tensor, prefix: bool) -> Tensor:
    """Give the sign family its weight: its prior with no examples, 1 when every label seen is
    +-1 (or when it is the only family), else 0; the continuous families share the rest."""
    ok = (y.abs() == 1).to(y.dtype)
    if prefix:
        ok = torch.cat([torch.ones_like(ok[..., :1]), ok.cumprod(-1)], dim=-1)  # (..., N+1)
        n = torch.arange(y.shape[-1] + 1, device=y.device)
    else:
        ok, n = ok.prod(-1), torch.tensor(y.shape[-1], device=y.device)
    j = int((~continuous).nonzero()[0])
    weight = torch.where(n == 0, prior[j], ok) if bool(continuous.any()) else torch.ones_like(ok)
    post = post * (1 - weight).unsqueeze(-1)
    post[..., j] = weight
    return post
