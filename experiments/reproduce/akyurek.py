"""Akyürek et al. 2022: which learning algorithm a trained in-context learner matches moves with depth and noise.

The claim (abstract; Sec. 4): transformers trained on in-context linear regression "closely match
the predictors computed by gradient descent, ridge regression, and exact least-squares regression,
transitioning between different predictors as transformer depth and dataset noise vary, and
converging to Bayesian estimators for large widths and depths": shallow models behave like a step
of gradient descent, deeper ones like least squares; on noisy data (w ~ N(0, tau^2 I), noise sigma)
the Bayes estimator is ridge regression with lambda = sigma^2 / tau^2, and that is what a large
enough model matches.

Measured on fresh prompts of each run's own task (n_points - 1 examples in context, the model's
output) with metrics.compare's ``prediction_difference`` (mean (yhat - a)^2 / d, the paper's squared
prediction difference up to the 1/d) against: one GD step at the best step size (fitted on other
prompts), ridge at lambda in RIDGE_LAMBDAS (sum convention, (X^T X + lam I)^{-1} X^T y), Bayes
ridge (lambda = sigma^2 / tau^2; least squares at sigma = 0) and least squares:
    closest algorithm   per (depth, noise) cell, the algorithm with the smallest difference
                        averaged over seeds (metrics.closest_algorithm's rule applied to the mean
                        over seeds, so that a cell names one algorithm)
    best ridge lambda   per cell, the lambda of the grid that the model's predictions are closest to,
                        against the Bayes-optimal sigma^2 / tau^2 for the deepest models: depth
                        should lower it towards least squares, noise raise it to sigma^2 / tau^2
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from experiments.analysis import metrics, prompts, references
from experiments.plots import core as plots
from experiments.reproduce.core import Fidelity, Reproduction, row

PROMPTS = 2048
RIDGE_LAMBDAS = (1 / 16, 1 / 4, 1.0, 4.0)  # sum convention; 1 = sigma^2 / tau^2 at the cpu preset's noise
CODE = ("google-research/google-research, incontext/: incontext/main.py, model_trainer.py (flags: lr, Adam, "
        "cosine schedule, noise_std), transformer_lib_flax.py (flags: n_layers, n_heads, hidden_size, norm_first, "
        "final_layer_norm; the model), sampler_lib.py (tokens), predictor_flax.py (loss), algos.py (the baselines)")

# cpu: d = 4 with 2d examples in context; three cells of (depth, noise) that carry the claim (a
# one-layer and a three-layer model on noiseless data, the three-layer one again on noisy data), two
# seeds each, in minutes on 2 cores. Searched: width 32 (lr 5e-4 or 1e-3) left the noisy model near
# the zero predictor after 3000 steps, width 64 at lr 1e-3 too; width 64 at lr 3e-4 learns both.
# d = 3 is cheaper but its noisy model (signal-to-noise d / sigma^2 = 3) had not learned in 4000 steps.
CPU_D, CPU_NOISE, CPU_CELLS = 4, 1.0, ((1, 0.0), (3, 0.0), (3, 1.0))


def model(n_layers: int, d_model: int, n_heads: int) -> dict:
    """Their transformer (transformer_lib_flax.py): pre-LayerNorm blocks (norm_first), no final
    LayerNorm, tanh GELU MLP of width 4 * hidden, learned positions, linear read-in and read-out."""
    return {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "attention": "softmax", "mlp": "gelu_tanh",
            "norm": "layernorm", "final_norm": False, "bias": True, "init_std": 0.02}


def _optimizer(steps: int, warmup: int, lr: float) -> dict:
    """optax.adamw(b1 0.9, b2 0.98, eps 1e-9, wd 0), warmup then cosine to 0, no clipping (model_trainer.py)."""
    return {"steps": steps, "batch_size": 64, "lr": lr, "beta1": 0.9, "beta2": 0.98, "eps": 1e-9, "weight_decay": 0.0,
            "warmup_steps": warmup, "min_lr_ratio": 0.0, "grad_clip": 0.0}


def paper() -> dict:
    """The code's defaults (x_dim 20, 40 exemplars, hidden 512, 8 heads, 5001 epochs x 100 steps with
    a fifth of them warmup), over a grid of depths and noise levels."""
    return {"sweep": {"name": "akyurek", "max_models_per_batch": 6},
            "task": {"d": 20, "n_points": 40, "format": "interleaved", "eval_batch_size": 1024},
            "model": model(12, 512, 8),
            "train": {**_optimizer(500_100, 100_000, 1e-4), "log_every": 1000, "checkpoint_every": 10_000},
            "grid": {"model.n_layers": [1, 2, 4, 8, 12], "task.noise_std": [0.0, 0.5, 1.0], "train.seed": [0]}}


def cpu() -> dict:
    depths, noises = zip(*CPU_CELLS)
    return {"sweep": {"name": "akyurek_cpu", "max_models_per_batch": 6},
            "task": {"d": CPU_D, "n_points": 2 * CPU_D + 1, "format": "interleaved", "eval_batch_size": 512},
            "model": model(3, 64, 2),
            "train": {**_optimizer(4000, 500, 3e-4), "min_lr_ratio": 0.1, "log_every": 250},
            "grid": {"zip": [{"model.n_layers": list(depths), "task.noise_std": list(noises)}], "train.seed": [0, 1]}}


# ----------------------------------------------------------------------------------------------
# Measuring


def _named(ref: references.Reference, name: str) -> references.Reference:
    return replace(ref, name=name)


def algorithms(run) -> list[references.Reference]:
    """One GD step at its best step size, ridge at every lambda of the grid, Bayes ridge and least
    squares, under short names (the rows of different runs name the same algorithm alike)."""
    fit = prompts.prompts_for_task(run.config.task, PROMPTS, seed=1)
    gd = _named(references.reference("gd", eta=references.best_eta(fit, 1), n_iter=1), "gd (1 step)")
    ridges = [_named(references.reference("ridge", lam=lam), f"ridge lam={lam:g}") for lam in RIDGE_LAMBDAS]
    return [gd, *ridges, _named(references.task_reference("bayes_ridge", run.config.task), "bayes ridge"),
            _named(references.reference("ols"), "least squares")]


def differences(run) -> pd.DataFrame:
    """prediction_difference of the model's output to every algorithm (GD at its one step only),
    with the run's depth, noise and seed."""
    p = prompts.prompts_for_task(run.config.task, PROMPTS, seed=0)
    cmp = metrics.compare(run.learner, p, algorithms(run))
    out = cmp[(cmp.metric == "prediction_difference") & (cmp.layer == run.learner.n_layers) &
              (cmp.iteration.isna() | (cmp.iteration == 1))]
    return out.assign(n_layers=run.config.model.n_layers, noise_std=run.config.task.noise_std,
                      seed=run.config.train.seed)


def _cell_rows(rep, scale, cell: pd.DataFrame, depths, w_std: float) -> list:
    """One row per (depth, noise): the algorithm closest on average over seeds, and the claim of
    the paper where the cell carries one (ridge at lambda = sigma^2 / tau^2 and Bayes ridge are the
    same predictor, under either name)."""
    L, sigma = int(cell.n_layers.iloc[0]), float(cell.noise_std.iloc[0])
    mean = cell.groupby("algorithm", sort=False).value.mean()
    name = mean.idxmin()
    values = cell[cell.algorithm == name].value.tolist()
    claim, holds = "", None
    if sigma == 0 and L == min(depths):
        claim, holds = "a shallow model is closest to gradient descent", name.startswith("gd")
    elif sigma == 0 and L == max(depths):
        claim, holds = "a deep model is closest to least squares or ridge, no longer to GD", not name.startswith("gd")
    elif sigma > 0 and L == max(depths):
        claim = "on noisy data a deep model is closest to ridge at the Bayes-optimal lambda = sigma^2 / tau^2"
        holds = name in ("bayes ridge", f"ridge lam={sigma**2 / w_std**2:g}")
    return [row(rep, scale, f"L={L}, sigma={sigma:g}: prediction difference to the closest, {name}", None, values,
                "abstract and Sec. 4: GD for shallow models, least squares for deep ones, ridge at lambda = "
                "sigma^2 / tau^2 on noisy data", claim=claim, holds=holds)]


def _best_lambdas(diffs: pd.DataFrame) -> dict[tuple[float, int], list[float]]:
    """(noise, depth) -> per seed, the ridge lambda of the grid the model's predictions are closest to."""
    ridge = diffs[diffs.algorithm.str.startswith("ridge lam=")]
    return {(float(sigma), int(L)): [float(g.loc[g.value.idxmin()].algorithm.split("=")[1])
                                     for _, g in cell.groupby("seed", sort=True)]
            for (sigma, L), cell in ridge.groupby(["noise_std", "n_layers"], sort=True)}


def _best_lambda_rows(rep, scale, diffs: pd.DataFrame, w_std: float) -> list:
    """Per (depth, noise): the closest ridge lambda of the grid against the Bayes-optimal sigma^2 /
    tau^2 (0 without noise: least squares). The claims: without noise, depth lowers it (towards
    least squares); with noise, the deepest model sits at sigma^2 / tau^2."""
    best = _best_lambdas(diffs)
    shallow, deep = int(diffs.n_layers.min()), int(diffs.n_layers.max())
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    rows = []
    for (sigma, L), lams in best.items():
        bayes, claim, holds = sigma**2 / w_std**2, "", None
        if sigma == 0 and L == deep and (0.0, shallow) in best and shallow < deep:
            claim = f"smaller than the {shallow}-layer model's {mean(best[(0.0, shallow)]):g}: depth moves it to least squares"
            holds = mean(lams) < mean(best[(0.0, shallow)])
        elif sigma > 0 and L == deep:
            claim, holds = "the Bayes-optimal lambda = sigma^2 / tau^2", all(abs(b - bayes) < 1e-12 for b in lams)
        rows.append(row(rep, scale, f"L={L}, sigma={sigma:g}: ridge lambda closest to the model (grid "
                        f"{', '.join(f'{lam:g}' for lam in RIDGE_LAMBDAS)})", bayes if L == deep else None, lams,
                        "abstract and Sec. 4: deep models converge to the Bayes estimator, ridge at lambda = sigma^2 "
                        "/ tau^2 (least squares, lambda -> 0, without noise)", claim=claim, holds=holds))
    return rows


def measure(rep: Reproduction, scale: str, runs, figures: Path):
    diffs = pd.concat([differences(run) for run in runs], ignore_index=True)
    depths, w_std = sorted(diffs.n_layers.unique()), runs[0].config.task.w_std
    rows = []
    for _, cell in diffs.groupby(["noise_std", "n_layers"], sort=True):
        rows += _cell_rows(rep, scale, cell, depths, w_std)
    rows += _best_lambda_rows(rep, scale, diffs, w_std)
    return rows, [_figure(diffs, figures)]


def _figure(diffs: pd.DataFrame, figures: Path) -> Path:
    """Prediction difference to each algorithm, one panel per (depth, noise) cell, seeds as points."""
    cells = list(diffs.groupby(["noise_std", "n_layers"], sort=True))
    fig, axes = plt.subplots(1, len(cells), figsize=(3.6 * len(cells), 3.4), sharey=True, squeeze=False)
    order = list(pd.unique(diffs.algorithm))
    for ax, ((sigma, L), cell) in zip(axes[0], cells):
        mean = cell.groupby("algorithm").value.mean().reindex(order)
        ax.bar(range(len(order)), mean.to_numpy(), color="tab:blue", alpha=0.6)
        for i, name in enumerate(order):
            ax.plot([i] * int((cell.algorithm == name).sum()), cell[cell.algorithm == name].value, "k.", ms=4)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize="x-small")
        ax.set_yscale("log")
        ax.set_title(f"L = {L}, sigma = {sigma:g}", fontsize="small")
    axes[0][0].set_ylabel("prediction difference (mean (yhat - a)^2 / d)")
    fig.suptitle("Akyürek et al.: which algorithm the trained model is closest to", fontsize="small")
    return plots.save(fig, diffs, figures / "akyurek_closest_algorithm")[0]  # save closes the figure


FIDELITY = (
    Fidelity("task", "x ~ N(0, I), w ~ N(0, I) (normal*1+0), y = w.x + noise_std eps (sampler_lib.py)", "same",
             "same"),
    Fidelity("d, examples", "x_dim 20, num_exemplars 40 (main.py flags): 40 (x, y) pairs, a prediction at every x",
             "d 20, 40 points (39 in context at the last query)",
             f"d {CPU_D}, {2 * CPU_D + 1} points ({2 * CPU_D} in context)", "cpu: small d, 2d examples"),
    Fidelity("tokens", "x token (0, x), y token (y, 0, ..., 0), interleaved, causal; loss on y at every x token "
             "(sampler_lib.py, predictor_flax.py)", "format interleaved: (x, 0) and (0, y), the same up to the "
             "order of the input coordinates, which the learned read-in absorbs", "same"),
    Fidelity("model", "12 layers, hidden 512, 8 heads, MLP 4 x hidden, pre-LayerNorm, no final LayerNorm, tanh GELU, "
             "learned positions (transformer_lib_flax.py flags); the paper sweeps depth and width",
             "hidden 512, 8 heads; depths 1, 2, 4, 8, 12", "width 64, 2 heads; depths 1 and 3",
             "the grid values are this preset's (the paper's figures sweep depth, width and heads)"),
    Fidelity("init", "uniform_scaling: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases; positions the "
             "same (flags kernel_init, bias_init, posemb_init)", "GPT-2 init: normal(0, 0.02), zero biases",
             "same", "a different init scale"),
    Fidelity("optimiser", "optax.adamw lr 1e-4, b1 0.9, b2 0.98, eps 1e-9, wd 0, no clipping", "same",
             "lr 3e-4", "cpu: a small model trains faster at a larger step (1e-3 was too large)"),
    Fidelity("schedule", "warmup (n_epochs // 5) * 100 = 100,000 steps, then cosine to 0 at 500,100 steps",
             "same", "warmup 500, cosine to 0.1 lr at 4000", "cpu: minutes, not days"),
    Fidelity("batch", "64 (batch_size flag)", "64", "64"),
    Fidelity("noise", "noise_std flag 0 by default; the paper varies it (Sec. 4); evaluation also at x_dim / 20",
             "0, 0.5, 1", f"0 and {CPU_NOISE:g} (lambda = sigma^2 / tau^2 = {CPU_NOISE**2:g})",
             "the grid values are this preset's"),
    Fidelity("baselines", "least squares, ridge (sklearn alpha), k-NN, one-pass SGD and GD variants (algos.py)",
             f"one GD step at the best step size, ridge at {', '.join(f'{lam:g}' for lam in RIDGE_LAMBDAS)}, Bayes "
             "ridge, least squares", "same", "the linear baselines; k-NN is far from every trained model"),
    Fidelity("seeds", "1 (seed flag)", "1", "2"),
)

AKYUREK = Reproduction(
    name="akyurek", paper="Akyürek et al. 2022, What learning algorithm is in-context learning? Investigations with "
                          "linear models (2211.15661)",
    claim="A trained in-context learner's predictions move from gradient descent (shallow) to least squares (deep), "
          "and on noisy data to ridge regression at the Bayes-optimal lambda = sigma^2 / tau^2.",
    code=CODE, presets={"cpu": cpu, "paper": paper}, measure=measure, fidelity=FIDELITY, minutes_cpu=10.0)
