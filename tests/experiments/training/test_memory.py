"""The per-batch memory estimate: its parts by hand, the fields it names, and no false refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.common.validate import ConfigError
from experiments.sweeps import spec as sw
from experiments.training import memory
from experiments.training.config import RunConfig
from experiments.training.optim import FlatSpec

CONFIGS = Path(__file__).resolve().parents[3] / "experiments" / "configs"


def tiny(**task) -> RunConfig:
    """d = 2, 3 points interleaved (T = 6 tokens), one layer of width 8 (MLP 32), one head, float64."""
    return RunConfig.from_dict({"task": {"d": 2, "n_points": 3, "eval_batch_size": 4, **task},
                                "model": {"n_layers": 1, "d_model": 8, "n_heads": 1},
                                "train": {"batch_size": 4, "dtype": "float64"}})


def test_estimate_counts_state_and_activations_as_the_docstring_says():
    """8 bytes a number; T = 6, D = 8, M = 32, H = 1, L = 1, B = B_eval = 4, K = 2 models:
    training 2 * 4 * 6 * (48 + 64 + 12) * 8, evaluation 2 * 4 * 6 * (32 + 32 + 6) * 8."""
    run = tiny()
    parts = memory.estimate([run, run])
    assert parts["state"] == 2 * FlatSpec.of(run.model_config()).n_params * 8 * 4
    assert parts["train"] == 2 * 4 * 6 * 124 * 8 == 47616
    assert parts["eval"] == 2 * 4 * 6 * 70 * 8 == 26880


def test_a_looped_model_keeps_the_activations_of_every_applied_block():
    """One block applied 3 times keeps three blocks' activations: 3x the training term of one pass."""
    one = tiny()
    looped = RunConfig.from_dict({**one.to_dict(), "model": {**one.to_dict()["model"], "n_loops": 3}})
    assert memory.estimate([looped])["train"] == 3 * memory.estimate([one])["train"]
    assert memory.estimate([looped])["eval"] == memory.estimate([one])["eval"]


def test_a_batch_over_the_device_memory_is_refused_naming_the_field_to_lower(monkeypatch):
    monkeypatch.setattr(memory, "device_memory", lambda device: 10**6)
    with pytest.raises(ConfigError, match=r"lower task\.eval_batch_size:.*cpu device has"):
        memory.check_fits([tiny(eval_batch_size=10**4)], torch.device("cpu"))
    with pytest.raises(ConfigError, match="sweep.max_models_per_batch"):
        memory.check_fits([tiny(eval_batch_size=10**4)] * 2, torch.device("cpu"))
    memory.check_fits([tiny()], torch.device("cpu"))  # about 70 kB: fits


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*_cpu.toml")), ids=lambda p: p.stem)
def test_every_shipped_cpu_sweep_is_estimated_under_a_gib(path):
    """No false refusal on a laptop: the CPU presets need well under 1 GiB a batch by the estimate."""
    try:
        sweep = sw.load_sweep(path)
    except ConfigError:
        pytest.skip("not a sweep file (an ood or approx experiment)")
    for chunk in sw.chunks(sweep.runs, {}, sweep.options.max_models_per_batch):
        assert sum(memory.estimate(chunk.runs).values()) < 2**30
