"""Optional TensorBoard scalars of a sweep (``[sweep] tensorboard = true``): what they hold, where
they go, that run ids ignore the option, and the one-line error when the extra is missing."""

from __future__ import annotations

import csv
import sys

import pytest

from experiments.common.validate import ConfigError
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**sweep_options) -> sw.Sweep:
    """Two runs (seeds 0, 1) of a tiny float64 model, 20 steps logged every 10, with ``sweep_options``
    in its ``[sweep]`` table."""
    return sw.parse_sweep({
        "sweep": {"name": "tb", "max_models_per_batch": 2, **sweep_options},
        "task": {"d": 3, "n_points": 5, "eval_batch_size": 16},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2},
        "train": {"steps": 20, "batch_size": 8, "log_every": 10, "dtype": "float64"},
        "grid": {"train.seed": [0, 1]}})


def logged_losses(path) -> dict[int, float]:
    with open(path) as f:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}


def test_tensorboard_scalars_hold_each_runs_logged_loss_as_in_its_metrics_csv(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tiny(tensorboard=True)
    run_sweep(sweep, tmp_path, device="cpu", progress=False)
    for run in sweep.runs:
        events = EventAccumulator(str(tmp_path / "tensorboard" / run.run_id)).Reload()
        board = {e.step: e.value for e in events.Scalars("loss")}
        csv_losses = logged_losses(tmp_path / "runs" / run.run_id / "metrics.csv")
        assert sorted(board) == sorted(csv_losses) == [10, 20]
        # TensorBoard stores a scalar as float32: equal to the CSV's float64 up to one float32 rounding
        assert board == {step: pytest.approx(loss, rel=2**-23) for step, loss in csv_losses.items()}
        assert {"grad_norm", "lr"} <= set(events.Tags()["scalars"])


def test_without_the_option_a_sweep_writes_no_tensorboard_folder(tmp_path):
    run_sweep(tiny(), tmp_path, device="cpu", progress=False)
    assert (tmp_path / "runs").is_dir() and not (tmp_path / "tensorboard").exists()


def test_the_tensorboard_option_does_not_change_run_ids():
    assert [r.run_id for r in tiny(tensorboard=True).runs] == [r.run_id for r in tiny().runs]
    assert tiny(tensorboard=True).options.tensorboard and not tiny().options.tensorboard


def test_a_non_boolean_tensorboard_option_is_an_error_naming_the_field():
    with pytest.raises(ConfigError, match="sweep.tensorboard"):
        tiny(tensorboard="yes")


def test_without_the_tensorboard_package_the_sweep_stops_before_training_with_the_extra_named(tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it now raises ImportError
    with pytest.raises(ValueError, match=r'pip install -e "\.\[tensorboard\]"') as err:
        run_sweep(tiny(tensorboard=True), tmp_path, device="cpu", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_ttb_sweep_tensorboard_flag_writes_the_scalars_of_a_file_without_the_option(tmp_path):
    pytest.importorskip("tensorboard")
    from experiments.commands.main import main

    config = tmp_path / "tb.toml"
    config.write_text('[sweep]\nname = "tb"\n[task]\nd = 3\nn_points = 5\neval_batch_size = 16\n'
                      '[model]\nn_layers = 1\nd_model = 16\nn_heads = 2\n'
                      '[train]\nsteps = 10\nbatch_size = 8\nlog_every = 10\ndtype = "float64"\n')
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), "--device", "cpu", "--tensorboard",
                 "--no-progress"]) == 0
    (run_id,) = [p.name for p in (tmp_path / "out" / "runs").iterdir()]
    assert any((tmp_path / "out" / "tensorboard" / run_id).iterdir())
