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

Training: one :class:`TransformerRun` per (target kind, seed, MLP width m); for each m every
(target, seed) model trains in ONE batch of THE trainer (:class:`TransformerProblem`), through the
sweep engine in `ttb approx`: model k has its own init and data generators (``derive_seed(seed,
stream)``), fresh inputs uniform in [-1, 1]^(n x d) every step, and the mean squared error over
tokens as its loss. The targets are drawn once per kind from ``target_seed``, shared by the trained
models and the construction. Trained weights are evaluated in float64.

Rows (:func:`comparison_frame`), one per (model, target, seed, m): ``family`` "transformer",
``target`` (the profile: cosine, relu, abs), ``model`` ("trained" or "construction (lam=L)"),
``seed``, ``parameter`` "m", ``value`` = m, ``width`` = m, ``depth`` 1, ``n_params``, ``error``,
``rmse``, ``bound`` (the construction's stated bound eps_MLP(m) + attention term; NaN for trained
models), ``final_loss`` and ``alive`` (trained models), ``target_std`` (the target's standard
deviation over the evaluation inputs: the rmse of the best constant prediction, for scale).
No files here (the sweep engine writes the runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import pandas as pd
import torch
from torch import Tensor

from constructions import model as M
from constructions.approx import universal as U
from experiments.approx.transformer_study import HYPER_FIELDS, TransformerStudy, study_from  # noqa: F401  (re-exported)
from experiments.common.devices import DTYPES, pick_device
from experiments.common.ids import RunSpec
from experiments.common.seeds import DATA_STREAM, EVAL_STREAM, INIT_STREAM, TARGET_STREAM, derive_seed
from experiments.sweeps.spec import Family
from experiments.training.optim import FlatSpec, hyper_rows
from experiments.training.trainer import Loop, SeededProblem, Trainer
from synthetic.targets import PROFILES, RidgeTarget, kink_probes, sample_inputs, sample_target

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
# Training: one run per (target, seed, width m); the runs of one width train as one batch


@dataclass(frozen=True)
class TransformerRun(RunSpec):
    """One trained one-layer transformer: the study (only the fields that shape its training enter
    its identity), its target kind, MLP width m, seed and training dtype."""

    study: TransformerStudy
    target: str
    m: int
    seed: int
    dtype: str = "float32"

    def to_dict(self) -> dict:
        s = self.study
        return {"kind": "approx_transformer", "n": s.n, "d": s.d, "target": self.target, "n_ridges": s.n_ridges,
                "frequency": s.frequency, "target_seed": s.target_seed, "m": self.m, "seed": self.seed,
                "steps": s.steps, "batch_size": s.batch_size, "init_std": s.init_std, "eval_inputs": s.eval_inputs,
                "hyper": dict(s.hyper), "dtype": self.dtype}

    PER_MODEL = ("target", "seed", "hyper")  # the models of one width train together

    @property
    def steps(self) -> int:
        return self.study.steps

    @property
    def label(self) -> str:
        return f"transformer {self.target} m={self.m} seed={self.seed}"

    def shape_text(self) -> str:
        return f"one-layer transformer n={self.study.n} d={self.study.d} m={self.m} steps={self.study.steps}"


def runs(study: TransformerStudy, dtype: str = "float32") -> list[TransformerRun]:
    return [TransformerRun(study, kind, m, seed, dtype) for m in study.widths for kind in study.targets
            for seed in study.seeds]


class TransformerProblem(SeededProblem):
    """K one-layer transformers of one width on their ridge targets, for THE trainer: fresh inputs
    uniform in [-1, 1]^(n x d) every step from each model's own DATA generator (on the CPU, then
    moved), the mean squared error over tokens as the loss, float64 evaluation on the fixed inputs."""

    def __init__(self, runs: Sequence[TransformerRun], device=None):
        self.runs, first = list(runs), runs[0]
        self.study, self.device, self.dtype = first.study, pick_device(device), DTYPES[first.dtype]
        self.cfg = model_config(self.study, first.m)
        self.spec = FlatSpec.of(self.cfg)
        kinds = targets(self.study)
        self.targets = [kinds[r.target] for r in self.runs]

    def init_theta(self) -> Tensor:
        return torch.cat([self.spec.flatten(M.init(self.cfg, [g], std=self.study.init_std, dtype=self.dtype,
                                                   device=self.device)) for g in self.seeded(INIT_STREAM)])

    def hypers(self) -> list[dict]:
        return hyper_rows([dict(self.study.hyper)] * len(self.runs), self.study.steps)

    def generators(self) -> list[torch.Generator]:
        return self.seeded(DATA_STREAM)

    def batch(self, gens: list[torch.Generator], step: int) -> tuple[Tensor, Tensor]:
        s = self.study
        X = torch.stack([sample_inputs(g, s.n, s.d, s.batch_size) for g in gens])  # (K, B, n, d)
        y = torch.stack([f(x) for f, x in zip(self.targets, X)])
        tokens = U.tokens(X.flatten(0, 1)).view(*X.shape[:2], s.n, -1)  # (K, B, n, d + n)
        return tokens.to(self.device, self.dtype), y.to(self.device, self.dtype)

    def losses(self, theta: Tensor, tokens: Tensor, y: Tensor) -> Tensor:
        out = M.forward(self.cfg, self.spec.unflatten(theta), tokens).out[..., 0]  # (K, B, n)
        return (out - y).pow(2).flatten(1).mean(1)

    def evaluate(self, theta: Tensor) -> list[dict]:
        """Sup error and rmse in float64 on the target's fixed evaluation inputs, per model."""
        weights = self.spec.unflatten(theta.double().cpu())
        out = []
        for k, target in enumerate(self.targets):
            X = eval_inputs(self.study, target)
            error, rmse = measure(self.cfg, weights.select(k), target, X)
            out.append({"error": float(error[0]), "rmse": float(rmse[0]), "target_std": float(target(X).std())})
        return out

    def save_weights(self, path, theta_k: Tensor) -> None:
        M.save_weights(path, self.cfg, self.spec.unflatten(theta_k))


def make_trainer(runs: Sequence[TransformerRun], device=None, compile: bool = False,
                 autocast: str | None = None) -> Trainer:
    return Trainer(TransformerProblem(runs, device), Loop(runs[0].study.steps, 50), compile=compile, autocast=autocast)


TRANSFORMER = Family("approx_transformer", make_trainer)


def trained_rows(runs: Sequence[TransformerRun], results: Sequence[dict]) -> pd.DataFrame:
    """One row per trained model from its run and its result (``Trainer.summary`` / result.json)."""
    rows = [_row(r.target, "trained", r.seed, r.m, model_config(r.study, r.m), res["error"], res["rmse"], math.nan,
                 res["final_loss"], res["status"] == "done") | {"target_std": res["target_std"]}
            for r, res in zip(runs, results)]
    return pd.DataFrame(rows)


def train_width(study: TransformerStudy, m: int, *, device="cpu", dtype=torch.float32):
    """Every (target, seed) model of MLP width m in one batch, in memory: (trainer, state, members),
    members[k] = (target kind, seed) of model k."""
    batch = [r for r in runs(study, _dtype_name(dtype)) if r.m == m]
    trainer = make_trainer(batch, device=device)
    return trainer, trainer.fit(trainer.initial_state()), [(r.target, r.seed) for r in batch]


def trained_frame(study: TransformerStudy, *, device="cpu", dtype=torch.float32) -> pd.DataFrame:
    """Train every width in memory (one batch each) and measure in float64 (tests, notebooks; the
    command trains through the sweep engine instead)."""
    frames = []
    for m in study.widths:
        trainer, state, _ = train_width(study, m, device=device, dtype=dtype)
        frames.append(trained_rows(trainer.runs, trainer.summary(state)))
    return pd.concat(frames, ignore_index=True)


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def comparison_frame(study: TransformerStudy, **kw) -> pd.DataFrame:
    """Trained and constructed rows together (``kw`` go to :func:`trained_frame`)."""
    return pd.concat([construction_frame(study), trained_frame(study, **kw)], ignore_index=True)


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
