"""Bayes-optimal baselines for the in-context task kinds (noise mixture, sparse, task pool,
representation) and the tidy tables that compare trained models with them.

Pure: (task spec, model predictions or a Learner, seed) -> tidy frames with
``experiments.analysis.core.COLUMNS`` plus, where stated, one extra coordinate column. Prompts come from
the run's own task (``experiments.training.config.TaskSpec``) through the trainer's sampler, in float64,
with n_points - 1 examples in context and the last point as the query.

The task references (bayes_ridge, mixture_posterior, pool_posterior) are defined in
:mod:`experiments.analysis.references`.

Tables (metric definitions as in :mod:`experiments.analysis.metrics`: nmse = mean (yhat - y)^2 / d,
prediction_difference = mean (yhat - a)^2 / d):

    baseline_curves(task, refs)                 nmse of each reference vs n_examples
    noise_level_table(preds, p, task, refs)     per noise level (extra column ``noise_std``): model
                                                and references' nmse, model-reference difference;
                                                reference "bayes_oracle" knows each prompt's sigma
    pool_table(preds_of, task)                  on pool prompts and on fresh Gaussian ones (extra
                                                column ``prompts``): model vs pool_posterior and
                                                bayes_ridge
    representation_table(learner, task)         model vs ridge on Phi(x) and on x, and per-layer
                                                probes of Phi(x_q) and of the feature-ridge answer
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from constructions.reference import baselines as bl
from experiments.analysis import core as an
from experiments.analysis import probes as ap
from experiments.analysis import prompts, references
from experiments.analysis import runs as ar

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# Tables


def _nmse(pred: Tensor, target: Tensor, d: int) -> float:
    return float((pred - target).pow(2).mean() / d)


def baseline_curves(task, refs: list[references.Reference], *, n_prompts: int = 1024, seed: int = 0) -> pd.DataFrame:
    """nmse of each reference's last iterate on the query after n = 0 .. N examples."""
    p, _ = prompts.task_prompts(task, n_prompts, seed)
    rows = []
    for ref in refs:
        pred = ref.prefix_predictions(p)[-1]  # (B, N+1); also for references not linear in x_q
        err = (pred - p.y_query[:, None]).pow(2).mean(0) / p.d
        rows += [{"algorithm": ref.name, "n_examples": n, "metric": "nmse", "value": float(v)}
                 for n, v in enumerate(err)]
    return an.frame(rows)


def noise_level_table(preds: Tensor, p: an.Prompts, noise_std: Tensor, refs: list[references.Reference], *,
                      w_std: float = 1.0, run: str = "", model: str = "model") -> pd.DataFrame:
    """Per noise level (extra column ``noise_std``): nmse of the model predictions ``preds`` (B,),
    of every reference and of "bayes_oracle" (Bayes ridge at each prompt's own sigma), and the
    model's prediction_difference to each."""
    oracle = torch.zeros_like(p.y_query)
    for s in noise_std.unique():
        m = noise_std == s
        w = bl.bayes_ridge(p.x[m], p.y[m], noise_std=float(s), w_std=w_std)
        oracle[m] = (w * p.x_query[m]).sum(-1)
    answers = {"bayes_oracle": oracle, **{r.name: r.predictions(p)[-1] for r in refs}}
    rows, base = [], {"run": run, "model": model, "n_examples": p.n}
    for s in noise_std.unique():
        m, level = noise_std == s, float(s)
        rows.append({**base, "algorithm": "model", "metric": "nmse", "noise_std": level,
                     "value": _nmse(preds[m], p.y_query[m], p.d)})
        for name, a in answers.items():
            rows.append({**base, "algorithm": name, "metric": "nmse", "noise_std": level,
                         "value": _nmse(a[m], p.y_query[m], p.d)})
            rows.append({**base, "algorithm": name, "metric": "prediction_difference", "noise_std": level,
                         "value": _nmse(preds[m], a[m], p.d)})
    return an.frame(rows, extra=("noise_std",))


def pool_table(preds_of, task, *, n_prompts: int = 512, seed: int = 0, run: str = "",
               model: str = "model") -> pd.DataFrame:
    """``preds_of(prompts) -> (B,)`` against pool_posterior and bayes_ridge, on prompts from the
    pool and on fresh w ~ N(0, w_std^2 I) (extra column ``prompts``: "pool" | "gaussian"). A model
    that memorised the pool tracks pool_posterior on both; one that learned ridge tracks
    bayes_ridge and keeps its error on the Gaussian prompts."""
    pool_p, _ = prompts.task_prompts(task, n_prompts, seed)
    gauss = prompts.sample_prompts(task.d, task.n_points - 1, n_prompts, seed=seed, noise_std=task.noise_std,
                              w_std=task.w_std)
    refs = [references.task_reference("pool_posterior", task), references.task_reference("bayes_ridge", task)]
    rows, base = [], {"run": run, "model": model, "n_examples": task.n_points - 1}
    for label, p in (("pool", pool_p), ("gaussian", gauss)):
        preds = preds_of(p)
        rows.append({**base, "algorithm": "model", "metric": "nmse", "prompts": label,
                     "value": _nmse(preds, p.y_query, p.d)})
        for ref in refs:
            a = ref.predictions(p)[-1]
            rows.append({**base, "algorithm": ref.name, "metric": "nmse", "prompts": label,
                         "value": _nmse(a, p.y_query, p.d)})
            rows.append({**base, "algorithm": ref.name, "metric": "prediction_difference", "prompts": label,
                         "value": _nmse(preds, a, p.d)})
    return an.frame(rows, extra=("prompts",))


def feature_ridge_predictions(task, p: an.Prompts, features: Tensor, lam: float | None = None) -> Tensor:
    """Ridge on Phi(x) (lam = Bayes sigma^2 / w_std^2 with the noise floor by default): (B,)."""
    lam = lam if lam is not None else references.noise_floor(task.noise_std, task.w_std) ** 2 / task.w_std**2
    w = bl.feature_ridge(features[:, :-1], p.y, lam=lam)
    return (w * features[:, -1]).sum(-1)


def representation_table(learner: an.Learner, task, *, n_prompts: int = 1024, seed: int = 0) -> pd.DataFrame:
    """Model vs feature_ridge (ridge on Phi(x)) and bayes_ridge on x (nmse, prediction_difference
    at the output), and per layer the held-out R^2 of linear probes (``probe_r2[phi]`` of
    Phi(x_q), ``probe_r2[feature_ridge]`` of the feature-ridge answer): which layers compute
    Phi(x), which fit w."""
    p, extras = prompts.task_prompts(task, n_prompts, seed)
    h, read = an.layer_states(learner, p.x, p.y, p.x_query)
    fr = feature_ridge_predictions(task, p, extras["features"])
    lin = references.task_reference("bayes_ridge", task).predictions(p)[-1]
    base = {"run": learner.run, "model": learner.model, "n_examples": p.n}
    out = read[-1]
    rows = [{**base, "layer": learner.n_layers, "algorithm": "model", "metric": "nmse",
             "value": _nmse(out, p.y_query, p.d)}]
    for name, a in (("feature_ridge", fr), ("bayes_ridge", lin)):
        rows += [{**base, "algorithm": name, "metric": "nmse", "value": _nmse(a, p.y_query, p.d)},
                 {**base, "layer": learner.n_layers, "algorithm": name, "metric": "prediction_difference",
                  "value": _nmse(out, a, p.d)}]
    targets = {"phi": extras["features"][:, -1], "feature_ridge": fr[:, None]}
    cut = n_prompts // 2
    for name, target in targets.items():
        for layer in range(len(h)):
            coef = ap.fit_probe(h[layer, :cut], target[:cut])
            rows.append({**base, "layer": layer, "algorithm": "model", "metric": f"probe_r2[{name}]",
                         "value": ap.probe_r2(coef, h[layer, cut:], target[cut:])})
    return an.frame(rows)


def closest_table(summaries: list[dict], configs: dict) -> pd.DataFrame:
    """``ttb compare`` summaries joined with their runs' configs (run id -> RunConfig): one row per
    run with kind, noise, depth, pool size, closest algorithm and its prediction difference."""
    rows = []
    for s in summaries:
        c = configs[s["run"]]
        rows.append({"run": s["run"], "kind": c.task.kind, "noise_std": c.task.noise_std,
                     "n_layers": c.model.n_layers, "pool_size": c.task.pool_size, "seed": c.train.seed,
                     "closest_algorithm": s["closest_algorithm"], "prediction_difference": s["prediction_difference"],
                     "nmse": s["nmse"]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# Sweep directories (reads finished runs; writes nothing)

NOISY_ALGORITHMS = "bayes_ridge,ridge:lam=0.01,ridge:lam=0.1,ridge:lam=1,ridge:lam=4,ridge:lam=16,ols,zero"


def sweep_closest(path, spec: str = NOISY_ALGORITHMS, *, n_prompts: int = 512, seed: int = 0) -> pd.DataFrame:
    """:func:`closest_table` of every finished run under ``path`` (``ttb compare`` with ``spec``)."""
    summaries, _ = ar.compare_runs(path, spec, n_prompts=n_prompts, seed=seed)
    configs = {d.name: ar.load_run(d).config for d in ar.find_runs(path)}
    return closest_table(summaries, configs)


def run_table(run, *, n_prompts: int = 1024, seed: int = 0) -> pd.DataFrame:
    """The table of one loaded run (``analysis_runs.Run``) by its task kind: noise_level_table
    (noise mixture), pool_table (pool), representation_table (representation)."""
    task, learner = run.config.task, run.learner

    def preds_of(p):
        return an.layer_predictions(learner, p)[-1]

    if task.kind == "noise_mixture":
        p, extras = prompts.task_prompts(task, n_prompts, seed)
        return noise_level_table(preds_of(p), p, extras["noise_std"], [references.task_reference("mixture_posterior", task)],
                                 w_std=task.w_std, run=run.run_id, model=run.label)
    if task.kind == "pool":
        return pool_table(preds_of, task, n_prompts=n_prompts, seed=seed, run=run.run_id, model=run.label)
    if task.kind == "representation":
        return representation_table(learner, task, n_prompts=n_prompts, seed=seed)
    raise ValueError(f"run_table has no table for task.kind = {task.kind!r} (use sweep_closest)")


def sweep_tables(path, *, n_prompts: int = 1024, seed: int = 0) -> pd.DataFrame:
    """:func:`run_table` of every finished run under ``path``, with the run's config columns
    (n_layers, pool_size, phi_depth) added."""
    parts = []
    for directory in ar.find_runs(path):
        run = ar.load_run(directory)
        t = run_table(run, n_prompts=n_prompts, seed=seed)
        parts.append(t.assign(n_layers=run.config.model.n_layers, pool_size=run.config.task.pool_size,
                              phi_depth=run.config.task.phi_depth))
    return pd.concat(parts, ignore_index=True)
