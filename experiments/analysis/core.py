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

from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import Tensor

from constructions import model as M
from constructions.tokens import example_tokens, interleaved_tokens, interleaved_y0_tokens

COLUMNS = ("run", "model", "layer", "algorithm", "iteration", "n_examples", "metric", "value")
FORMATS = ("example", "interleaved", "interleaved_y0")
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
    if fmt in ("interleaved", "interleaved_y0"):
        xs = torch.cat([x, x_query.unsqueeze(-2)], dim=-2)
        ys = torch.cat([y, torch.zeros_like(y[..., :1])], dim=-1)
        make = interleaved_tokens if fmt == "interleaved" else interleaved_y0_tokens
        return make(xs, ys)[..., :-1, :]
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
        """Applied blocks: a looped model's n_layers blocks count once per loop."""
        return self.cfg.n_layers * self.cfg.n_loops


def layer_states(learner: Learner, x: Tensor, y: Tensor, x_query: Tensor) -> tuple[Tensor, Tensor]:
    """(residuals at the query token (L+1, B, D), the model's readout of each (L+1, B))."""
    run = M.forward(learner.cfg, learner.weights, tokens(learner.format, x, y, x_query), residuals=True)
    h = torch.stack([r[0, :, -1, :] for r in run.residuals])  # (L+1, B, D)
    read = M.readout(learner.cfg, learner.weights, h.unsqueeze(0))[0, :, :, 0]  # (L+1, B)
    return h, read


def query_nmse(pred: Tensor, p: Prompts) -> float:
    """Squared error of predictions ``pred`` (B,) at the queries, averaged over prompts, over d."""
    return float((pred - p.y_query).pow(2).mean() / p.d)


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
