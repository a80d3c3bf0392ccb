"""The nonlinear task kinds (tree, relu2nn, quadratic, logistic, mixture) as sweep configs: field
validation, run ids, the logistic loss, and one tiny training run per kind."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.common.validate import ConfigError
from experiments.training import tasks
from experiments.training.config import RunConfig, TaskSpec
from experiments.training.regression import pointwise_loss, train_runs
from synthetic.functions import FunctionBatch

KINDS = {
    "tree": {"kind": "tree", "tree_depth": 2, "noise_std": 0.1},
    "relu2nn": {"kind": "relu2nn", "relu_width": 8, "relu_scale": 0.5},
    "quadratic": {"kind": "quadratic", "quadratic_form": "inner"},
    "logistic": {"kind": "logistic", "labels": "bernoulli", "logistic_scale": 2.0, "loss": "logistic"},
    "mixture": {"kind": "mixture", "mixture": ["isotropic", "sparse", "tree", "logistic"], "k": 2,
                "mixture_probs": [0.4, 0.2, 0.2, 0.2], "tree_depth": 3},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (tests/experiments/conftest.py)


def run_config(task: dict, **train) -> RunConfig:
    """A tiny float64 run: 1 layer, width 16, d = 3, 6 points, 8 prompts per step, 5 steps."""
    train = {"steps": 5, "batch_size": 8, "dtype": "float64", "log_every": 5, **train}
    return RunConfig.from_dict({"task": {"d": 3, "n_points": 6, "eval_batch_size": 16, **task},
                                "model": {"n_layers": 1, "d_model": 16, "n_heads": 2}, "train": train})


# ----------------------------------------------------------------------------------------------
# Config validation


@pytest.mark.parametrize("task, field", [
    ({"kind": "tree", "tree_depth": 0}, "task.tree_depth"),
    ({"kind": "relu2nn", "relu_width": 0}, "task.relu_width"),
    ({"kind": "relu2nn", "relu_scale": -1.0}, "task.relu_scale"),
    ({"kind": "quadratic", "quadratic_form": "cubes"}, "task.quadratic_form"),
    ({"kind": "logistic", "labels": "probit"}, "task.labels"),
    ({"kind": "logistic", "logistic_scale": 0.0}, "task.logistic_scale"),
    ({"kind": "logistic", "loss": "hinge"}, "task.loss"),
    ({"kind": "logistic", "noise_std": 0.1}, "task.noise_std"),
    ({"kind": "mixture"}, "task.mixture"),
    ({"kind": "mixture", "mixture": ["isotropic", "anisotropic"]}, "task.mixture[1]"),
    ({"kind": "mixture", "mixture": ["tree", "relu2nn"], "mixture_probs": [1.0]}, "task.mixture_probs"),
    ({"kind": "mixture", "mixture": ["tree", "relu2nn"], "mixture_probs": [0.5, 0.6]}, "task.mixture_probs"),
    ({"kind": "mixture", "mixture": ["isotropic", "sparse"]}, "task.k"),
    ({"kind": "isotropic", "tree_depth": 3}, "task.tree_depth"),  # a field of another kind
    ({"kind": "tree", "relu_width": 8}, "task.relu_width"),
    ({"kind": "isotropic", "loss": "logistic"}, "task.loss"),
    ({"kind": "mixture", "mixture": ["logistic"], "loss": "logistic"}, "task.loss"),  # not a mixture's
    ({"kind": "mixture", "mixture": ["tree"], "relu_width": 8}, "task.relu_width"),  # not a component's
    ({"kind": "tree", "x_dist": "uniform", "x_range": 2.0}, "task.x_dist"),
])
def test_a_bad_or_misplaced_field_is_a_config_error_naming_it(task, field):
    with pytest.raises(ConfigError) as err:
        TaskSpec(**task)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_a_mixture_reads_the_fields_of_its_components():
    spec = TaskSpec(kind="mixture", mixture=("tree", "relu2nn"), tree_depth=2, relu_width=5)
    mixture = tasks.synthetic_task(spec)
    assert [c.depth if hasattr(c, "depth") else c.width for c in mixture.components] == [2, 5]


def test_default_fields_stay_out_of_the_run_id():
    """Existing run ids are pinned (tests/experiments/sweeps/test_run_ids.py); the new fields must
    not enter the resolved config at their defaults, and a stated default is the same run."""
    assert run_config({}).to_dict()["task"].keys() == run_config({"kind": "isotropic"}).to_dict()["task"].keys()
    assert not {"tree_depth", "loss", "mixture", "labels"} & run_config({}).to_dict()["task"].keys()
    assert run_config({"kind": "tree"}).run_id == run_config({"kind": "tree", "tree_depth": 4}).run_id
    assert run_config({"kind": "tree"}).run_id != run_config({"kind": "tree", "tree_depth": 3}).run_id


def test_the_dimension_curriculum_applies_to_the_function_kinds_only():
    cur = {"dims_start": 2, "points_start": 3, "interval": 2}
    for kind in ("tree", "relu2nn", "quadratic", "logistic"):
        run_config({"kind": kind}, curriculum=cur)
    run_config({"kind": "mixture", "mixture": ["isotropic", "sparse"], "k": 1}, curriculum=cur)
    with pytest.raises(ConfigError, match="train.curriculum.dims_start"):
        run_config({"kind": "sparse", "k": 1}, curriculum=cur)


def test_runs_with_different_losses_do_not_share_a_batch():
    squared = run_config({"kind": "logistic"})
    logistic = run_config({"kind": "logistic", "loss": "logistic"})
    assert squared.group_key() != logistic.group_key()
    assert squared.group_key() == run_config({"kind": "isotropic"}).group_key()  # the default adds nothing


# ----------------------------------------------------------------------------------------------
# The loss


def test_logistic_loss_is_log_one_plus_exp_minus_margin():
    pred, y = torch.tensor([0.0, 2.0, 2.0, -30.0]), torch.tensor([1.0, 1.0, -1.0, 1.0])
    expected = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(2)), 30 + math.log(1 + math.exp(-30))]
    torch.testing.assert_close(pointwise_loss("logistic", pred, y), torch.tensor(expected))
    torch.testing.assert_close(pointwise_loss("squared", pred, y), (pred - y) ** 2)


@pytest.mark.parametrize("loss, expected", [("logistic", math.log(2)), ("squared", 1.0)])
def test_an_untrained_model_scores_what_a_zero_prediction_scores(loss, expected):
    """At init (std 0.02) the readout is ~0, so the logistic loss on +-1 labels is ~log 2 and the
    squared error ~1; 0.05 is several times the spread a near-zero readout leaves."""
    run = run_config({"kind": "logistic", "loss": loss}, steps=1, log_every=1, batch_size=64)
    trainer, state = train_runs([run])
    assert abs(state.metrics[0][0]["loss"] - expected) < 0.05


# ----------------------------------------------------------------------------------------------
# Data and training through the trainer's tables


def test_mixture_batches_record_the_family_of_every_prompt():
    spec = run_config(KINDS["mixture"]).task
    batch = tasks.sample(tasks.synthetic_task(spec), [torch.Generator().manual_seed(0)], 50)
    assert isinstance(batch, FunctionBatch) and batch.family.shape == (1, 50)
    assert set(batch.family.unique().tolist()) <= {0, 1, 2, 3} and batch.family.dtype == torch.int64


def test_mixture_probs_reach_the_sampler():
    spec = TaskSpec(kind="mixture", mixture=("tree", "quadratic"), mixture_probs=(0.9, 0.1))
    family = tasks.sample(tasks.synthetic_task(spec), [torch.Generator().manual_seed(0)], 2000).family
    # 5 binomial standard deviations around 0.1 (uniform would give 0.5)
    assert abs(float(family.double().mean()) - 0.1) < 5 * math.sqrt(0.09 / 2000)


def test_probes_of_w_refuse_kinds_without_a_linear_weight():
    tasks.require_linear_w("logistic")
    with pytest.raises(ValueError, match="task.kind = 'tree'"):
        tasks.require_linear_w("tree", "probe_r2[w]")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_trains_a_few_steps_to_a_finite_loss(kind):
    runs = [run_config(KINDS[kind], seed=0), run_config(KINDS[kind], seed=1, lr=3e-3)]
    trainer, state = train_runs(runs)
    summary = trainer.summary(state)
    assert all(s["status"] == "done" and math.isfinite(s["final_loss"]) for s in summary)
    assert ("eval_accuracy" in summary[0]) == (kind == "logistic")
    if kind == "logistic":
        assert 0.0 <= summary[0]["eval_accuracy"] <= 1.0
