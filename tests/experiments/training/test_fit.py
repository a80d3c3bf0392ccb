"""experiments.training.fit: the generic batched fit trains each row on its own loss, freezes a row whose loss
turns non-finite, reports progress, and rejects a mismatched batch of hyperparameters."""

import pytest
import torch

from experiments.training.fit import fit


def _quadratic(theta, target):
    """Model k's loss: |theta_k - target_k|^2 / P (minimum at the target)."""
    return (theta - target).pow(2).mean(1)


def test_each_model_descends_its_own_loss_and_progress_is_reported():
    """Two rows pulled toward different targets: both get closer; progress reports the steps done
    every log_every steps and at the end."""
    target = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    theta = torch.zeros(2, 2, dtype=torch.float64)
    seen = []
    res = fit(_quadratic, theta, [{"lr": 0.1}, {"lr": 0.05}], steps=5, batches=lambda s: (target,),
              decay=torch.ones(2, dtype=torch.float64), log_every=2, progress=seen.append)
    assert seen == [2, 4, 5]
    assert ((res.theta - target).norm(dim=1) < target.norm(dim=1)).all()
    assert res.alive.all() and res.final_loss.shape == (2,)


def test_a_model_whose_loss_is_not_finite_is_frozen_and_the_others_train_on():
    target = torch.tensor([[1.0], [float("nan")]], dtype=torch.float64)
    theta = torch.zeros(2, 1, dtype=torch.float64)
    res = fit(_quadratic, theta, [{"lr": 0.1}] * 2, steps=3, batches=lambda s: (target,),
              decay=torch.ones(1, dtype=torch.float64))
    assert res.alive.tolist() == [True, False]
    assert res.theta[1, 0] == 0.0 and res.theta[0, 0] > 0.0


def test_one_hyperparameter_dict_per_model_and_positive_steps_are_required():
    theta = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="one hyperparameter dict per model"):
        fit(_quadratic, theta, [{}], steps=1, batches=lambda s: (theta,), decay=torch.ones(1))
    with pytest.raises(ValueError, match="steps"):
        fit(_quadratic, theta, [{}, {}], steps=0, batches=lambda s: (theta,), decay=torch.ones(1))
