"""Trained MPNN + virtual node models against the constructions, on one attention layer.

The question of Cai et al. (2023) asked of gradient descent: how close does an MPNN + VN with small
ReLU-MLP updates, *trained* to imitate an attention layer, get, as its width and depth grow, beside
the hand-set MPNNs of :mod:`constructions.approx.mpnn_attention` and :mod:`constructions.approx.mpnn_selection`
on the same layer? Everything is pinned to one :class:`MPNNStudy`:

    reference    one random attention layer of :mod:`constructions.model` (``reference_layer``),
                 drawn from ``reference_seed``'s REFERENCE stream; linear attention (A = q.k / n,
                 ``heads`` heads) or softmax attention (one head, beta = 1 / max |q_i . k_j| over
                 the evaluation graphs, so the largest |score| there is 1, as the constructions'
                 sampler sets it)
    evaluation   ``eval_graphs`` graphs of n nodes from ``reference_seed``'s EVAL stream, shared by
                 every trained model and every construction
    trained      for each shape (width, depth) of the two sweeps (widths at ``depth_at``, depths at
                 ``width_at``), K = len(seeds) MPNN + VN models (ReLU units) in ONE batched fit:
                 model k draws its init from seed k's INIT stream and fresh graphs every step from
                 its DATA stream, and minimises the mean squared error to the reference output
    constructed  linear: ReLU products of m pieces (and the exact multiply/divide layer);
                 softmax: power sums to order T, and node selection at temperature tau

:func:`errors` is the one measurement for both (float64, the same graphs): ``error`` = sup over
graphs, nodes and output dims of |out - reference|, ``rmse`` = the root mean square of the same
differences. The frames are tidy, one row per model and swept value, with the columns COLUMNS:

    family "mpnn"; target "linear attention" | "softmax attention"; model "trained" or
    "construction: <name>"; seed (NaN for constructions); parameter / value: the swept quantity
    ("width" / "depth" for trained models, "m" / "T" / "tau" for constructions, "width" for the
    exact layer); width (units per update), depth (layers), n_params (mpnn.n_parameters);
    error, rmse; bound (the construction's stated bound on these graphs, NaN for trained);
    final_loss (mean training loss over the last 50 steps, NaN for constructions); alive.

The trained models see the graph edges (every node update reads its neighbours' sum); attention
ignores them (mask "full"), so the models must learn to. Training graphs come from the same
distribution as the evaluation graphs; softmax's beta is fixed on the latter, so a training graph
may hold a score slightly above 1.

Glossary of shapes: K models; B graphs; n nodes; d features (= the layer's width); P parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from safetensors.torch import save_file
from torch import Tensor

from constructions import model as M
from constructions import mpnn
from constructions.approx import mpnn_attention as A
from constructions.approx import mpnn_selection as S
from constructions.check.contract import Built, Case
from experiments.approx.mpnn_study import ATTENTIONS, MPNNStudy, study_from  # noqa: F401  (re-exported)
from experiments.common.devices import DTYPES, pick_device
from experiments.common.ids import RunSpec
from experiments.common.seeds import DATA_STREAM, EVAL_STREAM, INIT_STREAM, derive_seed
from experiments.sweeps.spec import Family
from experiments.training.optim import FlatSpec, hyper_rows
from experiments.training.trainer import Loop, SeededProblem, Trainer
from synthetic import graphs

REFERENCE_STREAM = 3
COLUMNS = ("family", "target", "model", "seed", "parameter", "value", "width", "depth", "n_params", "error",
           "rmse", "bound", "final_loss", "alive")
RELU_PRODUCTS, POWER_SUMS, SELECTION, EXACT_UNITS = ("construction: relu products", "construction: power sums",
                                                      "construction: selection", "construction: exact units")


# ----------------------------------------------------------------------------------------------
# The reference layer and the evaluation graphs


@dataclass
class Reference:
    """The layer to imitate (float64, K = 1) and the evaluation graphs with its output on them."""

    cfg: M.ModelConfig
    attn: M.Attention
    features: Tensor  # (B, n, d)
    adjacency: Tensor  # (B, n, n)
    ids: Tensor  # (B, n), a permutation of 1..n per graph
    target: Tensor  # (B, n, d): the layer's output on the evaluation graphs

    def heads(self) -> list[dict]:
        """Per head {W_Q, W_K, W_V, W_O} as numpy arrays: what the builders read."""
        return [{k: getattr(self.attn, k)[0, h].numpy() for k in ("W_Q", "W_K", "W_V", "W_O")}
                for h in range(self.cfg.n_heads)]

    def case(self, **params) -> Case:
        """The same layer and graphs as a :class:`Case` of the registered constructions (for their
        bounds and their own measurement)."""
        data = {"x": self.features, "adjacency": self.adjacency, "ids": self.ids, "reference": (self.cfg, self.attn)}
        return Case({"n": self.features.shape[1], **params}, data=data)


def task(study: MPNNStudy) -> graphs.GraphTask:
    return graphs.GraphTask(study.n, study.d, edge_prob=study.edge_prob)


def cast_attention(attn: M.Attention, like: Tensor) -> M.Attention:
    """The layer's weights in ``like``'s dtype and device."""
    return M.Attention(**{f.name: None if getattr(attn, f.name) is None else getattr(attn, f.name).to(like)
                          for f in dataclasses.fields(attn)})


def attention_output(cfg: M.ModelConfig, attn: M.Attention, features: Tensor) -> Tensor:
    """The layer (K = 1 weights) on features (..., B, n, d), in the features' dtype and device."""
    flat = features.reshape(1, -1, *features.shape[-2:])
    return M.attention(cfg, cast_attention(attn, features), flat).reshape(features.shape)


def reference(study: MPNNStudy) -> Reference:
    """Draw the layer (REFERENCE stream) and the evaluation graphs (EVAL stream) of reference_seed;
    softmax gets beta = 1 / max |q_i . k_j| over the evaluation graphs."""
    gen = torch.Generator().manual_seed(derive_seed(study.reference_seed, REFERENCE_STREAM))
    cfg, attn = A.reference_layer(gen, study.d, study.heads, study.d_head, study.attention)
    eval_gen = torch.Generator().manual_seed(derive_seed(study.reference_seed, EVAL_STREAM))
    batch = graphs.sample(task(study), [eval_gen], study.eval_graphs).model(0)
    x = batch.features[0]
    if study.attention == "softmax":
        scores = (x @ attn.W_Q[0, 0]) @ (x @ attn.W_K[0, 0]).transpose(-1, -2)
        cfg = dataclasses.replace(cfg, beta=1.0 / float(scores.abs().max()))
    return Reference(cfg, attn, x, batch.adjacency[0], batch.ids[0], attention_output(cfg, attn, x))


# ----------------------------------------------------------------------------------------------
# The one measurement


@torch.no_grad()
def errors(cfg: mpnn.MPNNConfig, weights: dict[str, Tensor], features: Tensor, adjacency: Tensor,
           target: Tensor) -> dict[str, Tensor]:
    """Per model (K,), float64 on the host: ``error`` = max over graphs, nodes and output dims of
    |out - target|, ``rmse`` = sqrt(mean (out - target)^2); a non-finite output counts as inf.
    ``weights`` (K, ...) are cast to float64, as are features (B, n, Din) and target (B, n, d)."""
    w = {k: v.detach().to(torch.float64) for k, v in weights.items()}
    device = w["W_E"].device
    out = mpnn.forward(cfg, w, features.to(device, torch.float64), adjacency.to(device, torch.float64)).out
    diff = (out - target.to(device, torch.float64)).flatten(1)
    diff = torch.where(torch.isfinite(diff), diff, torch.full_like(diff, math.inf))
    return {"error": diff.abs().max(1).values.cpu(), "rmse": diff.pow(2).mean(1).sqrt().cpu()}


# ----------------------------------------------------------------------------------------------
# Trained models


def mpnn_config(study: MPNNStudy, width: int, depth: int) -> mpnn.MPNNConfig:
    """The trained model's shape: ReLU units of ``width``, node features only, d outputs."""
    return mpnn.MPNNConfig(d_in=study.d, d_node=study.d_node, d_vn=study.d_vn, n_layers=depth, width=width,
                           d_out=study.d, update="relu")


@dataclass(frozen=True)
class MPNNRun(RunSpec):
    """One trained MPNN + VN: the study (only the fields that shape its training enter its
    identity), its shape (width, depth), seed and training dtype."""

    study: MPNNStudy
    width: int
    depth: int
    seed: int
    dtype: str = "float32"

    def to_dict(self) -> dict:
        s = self.study
        shared = ("attention", "n", "d", "d_head", "heads", "reference_seed", "d_node", "d_vn", "steps", "batch_size",
                  "init_std", "eval_graphs", "edge_prob")
        return {"kind": "approx_mpnn", **{k: getattr(s, k) for k in shared}, "width": self.width, "depth": self.depth,
                "seed": self.seed, "hyper": s.hypers(), "dtype": self.dtype}

    @property
    def steps(self) -> int:
        return self.study.steps

    @property
    def label(self) -> str:
        return f"mpnn {self.study.attention} width={self.width} depth={self.depth} seed={self.seed}"

    def shape_text(self) -> str:
        return f"MPNN+VN ({self.study.target}) width={self.width} depth={self.depth} steps={self.study.steps}"


def runs(study: MPNNStudy, dtype: str = "float32") -> list[MPNNRun]:
    """One run per (shape of the two sweeps, seed); a shape in both sweeps is one run."""
    return [MPNNRun(study, width, depth, seed, dtype) for width, depth in study.shapes() for seed in study.seeds]


class MPNNProblem(SeededProblem):
    """K MPNN + VN models of one shape imitating the study's attention layer, for THE trainer: fresh
    graphs every step from each model's own DATA generator (on the CPU, then moved), the layer's
    output as the target, the mean squared error as the loss, float64 evaluation on the study's
    evaluation graphs."""

    def __init__(self, runs: Sequence[MPNNRun], device=None):
        self.runs, first = list(runs), runs[0]
        self.study, self.device, self.dtype = first.study, pick_device(device), DTYPES[first.dtype]
        self.cfg = mpnn_config(self.study, first.width, first.depth)
        self.spec = FlatSpec.of_shapes(mpnn.weight_shapes(self.cfg, 1))
        self.ref = reference(self.study)
        self.graph_task = task(self.study)
        self.attn = cast_attention(self.ref.attn, torch.empty(0, dtype=self.dtype, device=self.device))

    def init_theta(self) -> Tensor:
        return torch.cat([self.spec.flatten_dict(mpnn.init(self.cfg, [g], std=self.study.init_std, dtype=self.dtype))
                          for g in self.seeded(INIT_STREAM)]).to(self.device)

    def hypers(self) -> list[dict]:
        return hyper_rows([self.study.hypers()] * len(self.runs), self.study.steps)

    def generators(self) -> list[torch.Generator]:
        return self.seeded(DATA_STREAM)

    @torch.no_grad()
    def batch(self, gens: list[torch.Generator], step: int) -> tuple[Tensor, Tensor, Tensor]:
        b = graphs.sample(self.graph_task, gens, self.study.batch_size, dtype=self.dtype, device=self.device)
        return b.features, b.adjacency, attention_output(self.ref.cfg, self.attn, b.features)

    def losses(self, theta: Tensor, features: Tensor, adjacency: Tensor, target: Tensor) -> Tensor:
        out = mpnn.forward(self.cfg, self.spec.views(theta), features, adjacency).out
        return (out - target).pow(2).flatten(1).mean(1)

    def evaluate(self, theta: Tensor) -> list[dict]:
        measured = errors(self.cfg, self.spec.views(theta), self.ref.features, self.ref.adjacency, self.ref.target)
        return [{"error": float(e), "rmse": float(r)} for e, r in zip(measured["error"], measured["rmse"])]

    def save_weights(self, path, theta_k: Tensor) -> None:
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.spec.views(theta_k).items()}
        save_file(tensors, str(path), metadata={"ttb_mpnn_config": json.dumps(dataclasses.asdict(self.cfg))})


def make_trainer(runs: Sequence[MPNNRun], device=None, compile: bool = False, autocast: str | None = None) -> Trainer:
    return Trainer(MPNNProblem(runs, device), Loop(runs[0].study.steps, 50), compile=compile, autocast=autocast)


MPNN = Family("approx_mpnn", make_trainer)


def _row(study: MPNNStudy, cfg: mpnn.MPNNConfig, model: str, parameter: str, value: float, measured: dict,
         k: int = 0, **rest) -> dict:
    """One tidy row: model k of ``measured`` (the output of :func:`errors`); ``rest``: seed, bound,
    final_loss, alive."""
    return {"family": "mpnn", "target": study.target, "model": model, "parameter": parameter, "value": float(value),
            "width": cfg.width, "depth": cfg.n_layers, "n_params": mpnn.n_parameters(cfg),
            "error": float(measured["error"][k]), "rmse": float(measured["rmse"][k]), **rest}


def trained_rows(runs: Sequence[MPNNRun], results: Sequence[dict]) -> pd.DataFrame:
    """One row per (trained model, sweep its shape belongs to), from its result (``Trainer.summary``
    / result.json)."""
    rows = []
    for r, res in zip(runs, results):
        sweeps = r.study.shapes()[(r.width, r.depth)]
        measured = {"error": [res["error"]], "rmse": [res["rmse"]]}
        rows += [_row(r.study, mpnn_config(r.study, r.width, r.depth), "trained", parameter, value, measured,
                      seed=r.seed, bound=math.nan, final_loss=res["final_loss"], alive=res["status"] == "done")
                 for parameter, value in sweeps]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def train_shape(study: MPNNStudy, width: int, depth: int, seeds=None, *, device="cpu", dtype=torch.float32):
    """K = len(seeds) (default: the study's) models of one shape in one batch, in memory:
    (trainer, final state)."""
    seeds = study.seeds if seeds is None else tuple(seeds)
    trainer = make_trainer([MPNNRun(study, width, depth, s, _dtype_name(dtype)) for s in seeds], device=device)
    return trainer, trainer.fit(trainer.initial_state())


def trained_frame(study: MPNNStudy, *, device="cpu", dtype=torch.float32) -> pd.DataFrame:
    """Train every shape of the two sweeps in memory (one batch of K = len(seeds) models each) and
    measure them on the evaluation graphs in float64 (tests, notebooks; the command trains through
    the sweep engine instead). One row per (shape, seed, sweep it belongs to)."""
    frames = []
    for width, depth in study.shapes():
        trainer, state = train_shape(study, width, depth, device=device, dtype=dtype)
        frames.append(trained_rows(trainer.runs, trainer.summary(state)))
    return pd.concat(frames, ignore_index=True)


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


# ----------------------------------------------------------------------------------------------
# Constructions


def constructions(study: MPNNStudy, ref: Reference) -> list[tuple[str, str, float, Built, bool, Callable]]:
    """(model, parameter, value, built, reads ids, bound(case)) for every construction row."""
    heads, n = ref.heads(), study.n
    if study.attention == "linear":
        exact = A.build_linear_exact(heads)
        rows = [(EXACT_UNITS, "width", float(exact.cfg.width), exact, False, lambda case: 1e-12)]
        return rows + [(RELU_PRODUCTS, "m", float(m), A.build_linear_relu(heads, n, m), False, A.relu_bound)
                       for m in study.relu_widths]
    beta = ref.cfg.softmax_beta
    rows = [(POWER_SUMS, "T", float(T), A.build_softmax_taylor(heads[0], beta, T), False, A.taylor_bound)
            for T in study.taylor_orders]
    return rows + [(SELECTION, "tau", float(tau), S.build_selection(heads[0], beta, n, float(tau)), True,
                    S.selection_bound) for tau in study.taus]


def construction_features(ref: Reference, with_ids: bool) -> Tensor:
    """The features a construction reads: x, or [x, id] for the selection construction."""
    return torch.cat([ref.features, ref.ids[..., None]], dim=-1) if with_ids else ref.features


def construction_frame(study: MPNNStudy) -> pd.DataFrame:
    """Every construction on the study's layer and evaluation graphs, measured by :func:`errors`;
    ``bound`` is the construction's stated bound on those graphs (its parameter in the case)."""
    ref = reference(study)
    rows = []
    for model, parameter, value, built, with_ids, bound in constructions(study, ref):
        measured = errors(built.cfg, built.weights, construction_features(ref, with_ids), ref.adjacency, ref.target)
        rows.append(_row(study, built.cfg, model, parameter, value, measured, seed=math.nan,
                         bound=float(bound(ref.case(**{parameter: value}))), final_loss=math.nan, alive=True))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def comparison_frame(study: MPNNStudy, **kw) -> pd.DataFrame:
    """Trained rows (``kw`` go to :func:`trained_frame`) and construction rows, one frame."""
    return pd.concat([trained_frame(study, **kw), construction_frame(study)], ignore_index=True)


# ----------------------------------------------------------------------------------------------
# For configs (experiments.approx.study)


def stated_slopes(study: MPNNStudy) -> dict[tuple[str, str], float]:
    """(target, model) -> the slope the construction's theorem states for its curve: log error vs
    log m, -2 (ReLU products); vs T, that of log 1/(T+1)! over the orders swept (power sums at
    rho = 1); vs tau, -1 (selection leak ~ e^-tau). Trained models and the exact layer: none."""
    if study.attention == "linear":
        return {(study.target, RELU_PRODUCTS): -2.0}
    out = {(study.target, SELECTION): -1.0}
    if len(study.taylor_orders) >= 2:
        out[(study.target, POWER_SUMS)] = A.remainder_slope(tuple(map(float, study.taylor_orders)))
    return out
