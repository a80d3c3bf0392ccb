"""Trained one-layer transformers beside the single-layer universal-approximation construction.

The construction (:mod:`constructions.approx.universal`) is one softmax attention layer (n heads,
inverse temperature lam) and one ReLU MLP of width m, with hand-set weights, for a ridge target of
:mod:`synthetic.targets`. The comparison trains the same architecture (same residual width, n heads
of width d, one ReLU MLP of width m, biases, no norm, tokens [x_i; e_i]) from a random init on the
same target, and measures both with one function on one fixed set of inputs:

    error   sup over the evaluation sequences and tokens of |model(X)_i - f(X)_i|   (the construction's
            check measures the same sup; for the non-smooth "abs" target the kink probes of
            synthetic.targets are added, because random inputs rarely land on a kink)
    rmse    the root mean square of the same differences

Training: for each MLP width m, every (target kind, seed) model trains in ONE batched fit
(:func:`experiments.training.fit.fit`): model k has its own init and data generators (``derive_seed(seed,
stream)``), fresh inputs uniform in [-1, 1]^(n x d) every step, and the mean squared error over
tokens as its loss. The targets are drawn once per kind from ``target_seed``, shared by the trained
models and the construction. Trained weights are evaluated in float64.

Rows (:func:`comparison_frame`), one per (model, target, seed, m): ``family`` "transformer",
``target`` (the profile: cosine, relu, abs), ``model`` ("trained" or "construction (lam=L)"),
``seed``, ``parameter`` "m", ``value`` = m, ``width`` = m, ``depth`` 1, ``n_params``, ``error``,
``rmse``, ``bound`` (the construction's stated bound eps_MLP(m) + attention term; NaN for trained
models), ``final_loss`` and ``alive`` (trained models), ``target_std`` (the target's standard
deviation over the evaluation inputs: the rmse of the best constant prediction, for scale).
Pure functions; no files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from constructions import model as M
from constructions.approx import universal as U
from experiments.common.seeds import derive_seed
from experiments.training.fit import fit
from experiments.training.optim import HYPER_DEFAULTS, FlatSpec
from synthetic.targets import PROFILES, RidgeTarget, kink_probes, sample_inputs, sample_target

INIT_STREAM, DATA_STREAM, EVAL_STREAM, TARGET_STREAM = 0, 1, 2, 3
HYPER_FIELDS = tuple(k for k in HYPER_DEFAULTS if k != "total")


@dataclass(frozen=True)
class TransformerStudy:
    """What to train and build; validates itself (a bad field raises ValueError naming it)."""

    n: int = 4
    d: int = 2
    targets: tuple[str, ...] = ("cosine", "relu", "abs")
    n_ridges: int = 2
    frequency: float = 2.0
    target_seed: int = 0
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    construction_widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
    lams: tuple[float, ...] = (8.0, 40.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 2000
    batch_size: int = 128
    init_std: float = 0.2
    eval_inputs: int = 2048
    hyper: tuple[tuple[str, float], ...] = (("lr", 3e-3), ("warmup", 100.0), ("min_lr_ratio", 0.05))

    def __post_init__(self):
        for name in ("n", "d", "n_ridges", "steps", "batch_size", "eval_inputs"):
            _positive_int(f"transformer.{name}", getattr(self, name))
        if self.n < 2:
            raise ValueError(f"transformer.n must be >= 2 (a sequence), got {self.n}")
        bad = [t for t in self.targets if t not in PROFILES]
        if not self.targets or bad:
            raise ValueError(f"transformer.targets must be a non-empty list of {PROFILES}, got {list(self.targets)}")
        for name in ("widths", "construction_widths"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"transformer.{name} must not be empty")
            for m in values:
                _positive_int(f"transformer.{name}", m)
                if m < self.n_ridges:
                    raise ValueError(f"transformer.{name}: every width must be >= n_ridges={self.n_ridges}, got {m}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"transformer.seeds must be distinct ints, got {list(self.seeds)}")
        for name in ("frequency", "init_std"):
            _positive_real(f"transformer.{name}", getattr(self, name))
        for lam in self.lams:
            _positive_real("transformer.lams", lam)
        unknown = sorted({k for k, _ in self.hyper} - set(HYPER_FIELDS))
        if unknown:
            raise ValueError(f"transformer: unknown training fields {unknown}; known: {HYPER_FIELDS}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def _positive_int(where: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{where} must be an int >= 1, got {v!r}")


def _positive_real(where: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where} must be a finite number > 0, got {v!r}")


# ----------------------------------------------------------------------------------------------
# Targets, inputs, the model shape


def targets(study: TransformerStudy) -> dict[str, RidgeTarget]:
    """One target per kind, from target_seed's own stream (the same whatever else the study holds)."""
    out = {}
    for kind in study.targets:
        gen = torch.Generator().manual_seed(derive_seed(study.target_seed, TARGET_STREAM * 16 + PROFILES.index(kind)))
        out[kind] = sample_target(gen, kind, study.n, study.d, study.n_ridges, study.frequency)
    return out


def eval_inputs(study: TransformerStudy, target: RidgeTarget) -> Tensor:
    """The fixed evaluation sequences (B, n, d) float64, with the kink probes for a non-smooth target."""
    gen = torch.Generator().manual_seed(derive_seed(study.target_seed, EVAL_STREAM))
    X = sample_inputs(gen, study.n, study.d, study.eval_inputs)
    return torch.cat([X, kink_probes(target)]) if target.kind == "abs" else X


def model_config(study: TransformerStudy, m: int) -> M.ModelConfig:
    """The construction's architecture (universal_approx.config) without its slot names."""
    cfg = U.config(study.n, study.d, m)
    return M.ModelConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, "layout": None, "beta": None})


# ----------------------------------------------------------------------------------------------
# One measurement for trained and constructed models


@torch.no_grad()
def measure(cfg: M.ModelConfig, weights: M.Weights, target: RidgeTarget, X: Tensor) -> tuple[Tensor, Tensor]:
    """(sup error, rmse), each (K,), of K models (float64 weights) on sequences X (B, n, d)."""
    got = M.forward(cfg, weights, U.tokens(X)).out[..., 0]  # (K, B, n)
    diff = got - target(X)
    return diff.abs().flatten(1).max(1).values, diff.pow(2).flatten(1).mean(1).sqrt()


def construction_frame(study: TransformerStudy) -> pd.DataFrame:
    rows = []
    for kind, target in targets(study).items():
        X = eval_inputs(study, target)
        for lam in study.lams:
            for m in study.construction_widths:
                built = U.build(target, lam, m)
                error, rmse = (float(v[0]) for v in measure(built.cfg, built.weights, target, X))
                stated = U.mlp_error(target, m) + U.attention_error(target, lam, U.diameter(X))
                rows.append(_row(kind, f"construction (lam={lam:g})", math.nan, m, built.cfg, error, rmse, stated)
                            | {"target_std": float(target(X).std())})
    return pd.DataFrame(rows)


def _row(kind: str, model: str, seed, m: int, cfg: M.ModelConfig, error: float, rmse: float, bound: float,
         final_loss: float = math.nan, alive: bool = True) -> dict:
    return {"family": "transformer", "target": kind, "model": model, "seed": seed, "parameter": "m",
            "value": float(m), "width": m, "depth": cfg.n_layers, "n_params": FlatSpec.of(cfg).n_params, "error": error,
            "rmse": rmse, "bound": bound, "final_loss": final_loss, "alive": alive}


# ----------------------------------------------------------------------------------------------
# Training


def make_loss(cfg: M.ModelConfig, spec: FlatSpec):
    def per_model(theta: Tensor, tokens: Tensor, y: Tensor) -> Tensor:
        out = M.forward(cfg, spec.unflatten(theta), tokens).out[..., 0]  # (K, B, n)
        return (out - y).pow(2).flatten(1).mean(1)

    return per_model


def train_width(study: TransformerStudy, m: int, *, device="cpu", dtype=torch.float32,
                progress: Callable[[int], None] | None = None):
    """Every (target, seed) model of MLP width m in one batch: (cfg, spec, FitResult, members), where
    members[k] = (target kind, seed) of model k; ``progress(steps done)`` is fit's callback."""
    cfg, device = model_config(study, m), torch.device(device)
    spec, kinds = FlatSpec.of(cfg), targets(study)
    members = [(kind, seed) for kind in study.targets for seed in study.seeds]
    gens = [torch.Generator().manual_seed(derive_seed(seed, INIT_STREAM)) for _, seed in members]
    theta = torch.cat([spec.flatten(M.init(cfg, [g], std=study.init_std, dtype=dtype, device=device)) for g in gens])
    data = [torch.Generator().manual_seed(derive_seed(seed, DATA_STREAM)) for _, seed in members]
    fs = [kinds[kind] for kind, _ in members]

    def batches(_step: int) -> tuple:
        X = torch.stack([sample_inputs(g, study.n, study.d, study.batch_size) for g in data])  # (K, B, n, d)
        y = torch.stack([f(x) for f, x in zip(fs, X)])
        tokens = U.tokens(X.flatten(0, 1)).view(*X.shape[:2], study.n, -1)  # (K, B, n, d + n)
        return tokens.to(device, dtype), y.to(device, dtype)

    hypers = [dict(study.hyper)] * len(members)
    res = fit(make_loss(cfg, spec), theta, hypers, steps=study.steps, batches=batches,
              decay=spec.decay_mask(dtype, device), progress=progress)
    return cfg, spec, res, members


def trained_frame(study: TransformerStudy, *, device="cpu", dtype=torch.float32,
                  progress: Callable[[str], None] | None = None,
                  tick: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Train every width (one batch each) and measure in float64; ``progress(message)`` as each
    width starts, ``tick(steps done)`` from inside the fit."""
    rows, kinds = [], targets(study)
    for m in study.widths:
        if progress:
            progress(f"transformer: training width m={m} ({len(study.targets) * len(study.seeds)} models)")
        cfg, spec, res, members = train_width(study, m, device=device, dtype=dtype, progress=tick)
        weights = spec.unflatten(res.theta.double().cpu())
        for kind in study.targets:
            X = eval_inputs(study, kinds[kind])
            error, rmse = measure(cfg, weights, kinds[kind], X)
            spread = float(kinds[kind](X).std())
            for k, (member_kind, seed) in enumerate(members):
                if member_kind == kind:
                    rows.append(_row(kind, "trained", seed, m, cfg, float(error[k]), float(rmse[k]), math.nan,
                                     float(res.final_loss[k]), bool(res.alive[k])) | {"target_std": spread})
    return pd.DataFrame(rows)


def comparison_frame(study: TransformerStudy, **kw) -> pd.DataFrame:
    """Trained and constructed rows together (``kw`` go to :func:`trained_frame`)."""
    return pd.concat([construction_frame(study), trained_frame(study, **kw)], ignore_index=True)


def study_from(values: dict, hyper: Sequence[tuple[str, float]] = ()) -> TransformerStudy:
    """A study from plain values (lists become tuples), with training fields merged into ``hyper``."""
    base = dict(TransformerStudy.hyper)
    base.update(dict(hyper))
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return TransformerStudy(**kw, hyper=tuple(sorted(base.items())))


def stated_slopes(study: TransformerStudy) -> dict[tuple[str, str], float]:
    """(target, model) -> the construction's stated log-log slope in m where the whole swept range lies
    before the plateau (plateau_width beyond the widest m): -2 for the C^2 cosine target, -1 for
    the kinked abs target, 0 for the ReLU target (its MLP is exact: the error is the attention term,
    flat in m, or round-off). Curves that reach their plateau inside the range have no single
    stated slope and are left out."""
    out, widest = {}, max(study.construction_widths)
    for kind, target in targets(study).items():
        for lam in study.lams:
            if kind == "relu" or U.plateau_width(target, lam) > widest:
                out[(kind, f"construction (lam={lam:g})")] = {"cosine": -2.0, "abs": -1.0, "relu": 0.0}[kind]
    return out
