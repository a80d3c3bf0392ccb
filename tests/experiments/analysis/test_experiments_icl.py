"""Training on the in-context task kinds (noise mixture, sparse, pool, representation) and the
Bayes-optimal baselines the analysis compares trained models with."""

from __future__ import annotations

import pytest
import torch

from constructions.reference import baselines as bl
from experiments.analysis import core as an
from experiments.analysis import icl as ai
from experiments.analysis import prompts, references
from experiments.common.validate import ConfigError
from experiments.training.config import RunConfig
from experiments.training.regression import RegressionProblem, train_runs
from synthetic import tasks as icl_tasks

KIND_TASKS = {
    "noise_mixture": {"kind": "noise_mixture", "noise_levels": [0.0, 0.5], "noise_probs": [0.25, 0.75]},
    "sparse": {"kind": "sparse", "k": 2, "noise_std": 0.1},
    "pool": {"kind": "pool", "pool_size": 4, "pool_seed": 3},
    "representation": {"kind": "representation", "phi_depth": 2, "phi_width": 5, "noise_std": 0.1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def run_config(task: dict, **train) -> RunConfig:
    """A tiny float64 run: 1 layer, width 8, d = 3, 6 points, 4 prompts per step."""
    return RunConfig.from_dict({
        "task": {"d": 3, "n_points": 6, "eval_batch_size": 8, "format": "example", **task},
        "model": {"n_layers": 1, "d_model": 8, "n_heads": 2},
        "train": {"steps": 4, "batch_size": 4, "dtype": "float64", "log_every": 2, **train},
    })


# ----------------------------------------------------------------------------------------------
# Config


def test_configs_without_the_new_fields_keep_their_run_ids():
    """The id of the all-defaults config, computed before the in-context kinds existed."""
    assert RunConfig.from_dict({}).run_id == "d235ea971ed5"
    assert "k" not in RunConfig.from_dict({}).to_dict()["task"]


def test_new_kind_configs_round_trip_through_their_dict():
    for task in KIND_TASKS.values():
        cfg = run_config(task)
        again = RunConfig.from_dict(cfg.to_dict())
        assert again == cfg and again.run_id == cfg.run_id


@pytest.mark.parametrize("task, field", [
    ({"kind": "sparse", "k": 4}, "task.k"),
    ({"kind": "sparse"}, "task.k"),
    ({"kind": "pool", "pool_size": 0}, "task.pool_size"),
    ({"kind": "representation", "phi_width": 0}, "task.phi_width"),
    ({"kind": "representation", "phi_depth": 0}, "task.phi_depth"),
    ({"kind": "noise_mixture", "noise_levels": [0.5, -0.1]}, "task.noise_levels[1]"),
    ({"kind": "noise_mixture", "noise_levels": []}, "task.noise_levels"),
    ({"kind": "noise_mixture", "noise_levels": [0.1, 1.0], "noise_probs": [0.5, 0.6]}, "task.noise_probs"),
    ({"kind": "noise_mixture", "noise_levels": [0.1], "noise_std": 0.5}, "task.noise_std"),
    ({"kind": "isotropic", "k": 2}, "task.k"),
    ({"kind": "pool", "pool_size": 2, "phi_width": 3}, "task.phi_width"),
])
def test_bad_task_fields_raise_config_errors_naming_the_field(task, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        run_config(task)


def test_a_dimension_curriculum_is_refused_for_the_new_kinds():
    with pytest.raises(ConfigError, match="train.curriculum.dims_start"):
        run_config(KIND_TASKS["pool"], curriculum={"dims_start": 1, "points_start": 2})


# ----------------------------------------------------------------------------------------------
# Trainer


def test_trainer_batches_come_from_the_task_sampler_with_the_models_own_generator():
    cfg = run_config(KIND_TASKS["pool"], seed=5)
    problem = RegressionProblem([cfg], device="cpu")
    tokens, targets = problem.prompts(problem.generators(1), 4, 6, 3)
    expect = icl_tasks.sample(icl_tasks.TaskPoolTask(d=3, n_points=6, pool_size=4, pool_seed=3),
                              problem.generators(1), 4, dtype=torch.float64)
    assert torch.equal(targets[..., 0], expect.y[..., -1])
    assert torch.equal(tokens[0, :, -1, :3], expect.x[0, :, -1])


def test_a_batch_of_every_new_kind_trains_like_each_model_alone():
    """Four models of four kinds in one batch: each model's weights after 4 steps equal its weights
    trained alone (float64; the summed loss separates, and each kind samples from its own
    generator). Not vacuous: the kinds' data differ, so a mixed-up group would change the result."""
    runs = [run_config(task, seed=k, lr=1e-2) for k, task in enumerate(KIND_TASKS.values())]
    _, state = train_runs(runs, device="cpu")
    for k, run in enumerate(runs):
        _, alone_state = train_runs([run], device="cpu")
        torch.testing.assert_close(state.theta[k], alone_state.theta[0], rtol=1e-10, atol=1e-12)
    losses = [m[-1]["loss"] for m in state.metrics]
    assert len(set(losses)) == 4


# ----------------------------------------------------------------------------------------------
# Baselines and tables


def mixture_spec(**extra) -> RunConfig:
    return run_config({"kind": "noise_mixture", "noise_levels": [0.1, 1.0], "d": 4, "n_points": 9, **extra}).task


def test_prompts_for_a_new_kind_carry_their_task_and_shapes():
    task = mixture_spec()
    p = prompts.prompts_for_task(task, 16, seed=1)
    assert p.task is task and p.x.shape == (16, 8, 4) and p.x_query.shape == (16, 4)


def test_a_model_that_is_the_per_noise_bayes_ridge_scores_zero_difference_to_it():
    """Hand-made 'model' predictions: the oracle Bayes ridge at each prompt's own sigma, and the
    mixture posterior. Each scores 0 difference to itself and a positive one to the other."""
    task = mixture_spec()
    p, extras = prompts.task_prompts(task, 256, seed=0)
    sig = extras["noise_std"]
    oracle = torch.stack([(bl.bayes_ridge(p.x[b:b + 1], p.y[b:b + 1], noise_std=float(sig[b])) * p.x_query[b]).sum()
                          for b in range(p.B)])
    mix = references.task_reference("mixture_posterior", task)
    table = ai.noise_level_table(oracle, p, sig, [mix])
    diff = table[table.metric == "prediction_difference"].set_index(["algorithm", "noise_std"]).value
    assert set(table.noise_std) == {0.1, 1.0}
    assert diff["bayes_oracle"].max() < 1e-20
    assert diff["mixture_posterior"].min() > 1e-6
    again = ai.noise_level_table(mix.predictions(p)[-1], p, sig, [mix])
    assert again[(again.algorithm == "mixture_posterior") & (again.metric == "prediction_difference")].value.max() < 1e-20


def test_bayes_ridge_has_the_lowest_error_among_ridges_on_its_own_prior():
    """sigma = 1, w_std = 1, d = 4, 8 examples: the Bayes lam = 1 against lam = 0.01 and 10.
    The gaps (~0.1 and ~0.3 in nmse) are many standard errors (~0.02 at 4000 prompts)."""
    task = run_config({"d": 4, "n_points": 9, "noise_std": 1.0}).task
    refs = [references.task_reference("bayes_ridge", task)] + references.parse_references("ridge:lam=0.01,ridge:lam=10")
    curves = ai.baseline_curves(task, refs, n_prompts=4000)
    final = curves[curves.n_examples == 8].set_index("algorithm").value
    assert final["bayes_ridge"] < final["ridge[lam=0.01]"] and final["bayes_ridge"] < final["ridge[lam=10]"]


def test_a_model_that_is_the_pool_posterior_matches_it_on_pool_and_gaussian_prompts():
    task = run_config({"kind": "pool", "pool_size": 3, "noise_std": 0.25}).task
    ref = references.task_reference("pool_posterior", task)
    table = ai.pool_table(lambda p: ref.predictions(p)[-1], task, n_prompts=256)
    diff = table[table.metric == "prediction_difference"].set_index(["algorithm", "prompts"]).value
    assert diff["pool_posterior"].max() < 1e-20 and diff["bayes_ridge"].min() > 1e-4
    nmse = table[table.metric == "nmse"].set_index(["algorithm", "prompts"]).value
    assert nmse[("pool_posterior", "pool")] < nmse[("pool_posterior", "gaussian")]


def test_task_references_are_parsed_from_fit_prompts_that_know_their_task():
    task = run_config({"kind": "pool", "pool_size": 3}).task
    fit = prompts.prompts_for_task(task, 8)
    names = [r.name for r in references.parse_references("pool_posterior,bayes_ridge:sigma=0.5", fit=fit)]
    assert names == ["pool_posterior", "bayes_ridge[sigma=0.5]"]
    with pytest.raises(ValueError, match="needs the run's task"):
        references.parse_references("pool_posterior")


def test_representation_table_probes_every_layer_and_feature_ridge_beats_ridge_on_x():
    """Ridge on Phi(x) is the posterior mean (up to the noise floor) so it beats ridge on x."""
    cfg = run_config({"kind": "representation", "phi_depth": 1, "phi_width": 6, "noise_std": 0.1,
                      "n_points": 21}, steps=2)
    trainer, state = train_runs([cfg], device="cpu")
    learner = an.Learner(cfg.model_config(), trainer.weights(state, 0), "example")
    table = ai.representation_table(learner, cfg.task, n_prompts=256)
    probes = table[table.metric == "probe_r2[phi]"]
    assert sorted(probes.layer.tolist()) == [0, 1]
    nmse = table[(table.metric == "nmse") & table.layer.isna()].set_index("algorithm").value
    assert nmse["feature_ridge"] < nmse["bayes_ridge"]
