"""The sequence trainer and `ttb ood`: batching changes nothing, positional patterns ignore the
input, the command writes its table and figure, and bad config fields are named."""

import copy
import json

import pandas as pd
import pytest
import torch
from support import ROOT, toml_text

from constructions.model import forward
from experiments.commands.main import main
from experiments.common.validate import ConfigError
from experiments.ood import experiment as ood
from experiments.ood import sequences as TS
from synthetic.algorithmic import AlgorithmicTask, ValueRange

SHAPE = TS.SeqShape(width=8, n_heads=2, n_layers=2, d_mlp=8)
TINY = {
    "name": "tiny", "device": "cpu",
    "task": {"kinds": ["cumsum", "cummin"], "n": 4, "c_train": 2.0, "test_cs": [4.0, 8.0]},
    "model": {"width": 8, "n_heads": 2, "n_layers": 2, "d_mlp": 8},
    "train": {"seeds": 2, "steps": 3, "batch_size": 4},
    "eval": {"batch_size": 8},
}


@pytest.mark.parametrize("kind", TS.MODEL_KINDS)
def test_batched_sequence_training_equals_separate_runs(kind):
    """Three models with different learning rates, trained together and one at a time (same seeds),
    end with the same weights. Float64: the only differences are summation orders inside batched
    matmuls (~1e-16 relative per op), amplified by a few AdamW steps (whose m / sqrt(v) is O(1)
    per coordinate), far below 1e-9."""
    task = AlgorithmicTask("cumsum", 4)
    seeds, hypers = [0, 1, 2], [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-2, "weight_decay": 0.1}]
    run = lambda s, h: TS.train(kind, task, SHAPE, s, h, steps=4, batch_size=6, dtype=torch.float64)
    together = run(seeds, hypers)
    alone = torch.cat([run([s], [h]).theta for s, h in zip(seeds, hypers)])
    torch.testing.assert_close(together.theta, alone, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(together.theta[0], together.theta[1])  # the lrs (and seeds) differ


def test_positional_attention_pattern_is_input_independent_after_training():
    """After training, two batches with values from different ranges give the same attention
    patterns in every layer for the positional model. Not vacuous: the standard model, trained
    the same way, gives different patterns on the same two batches."""
    task = AlgorithmicTask("cummin", 4)
    patterns = {}
    for kind in TS.MODEL_KINDS:
        r = TS.train(kind, task, SHAPE, [0], [{"lr": 1e-2}], steps=20, batch_size=8)
        x1 = ValueRange(2.0).values(torch.rand(1, 5, 4, generator=torch.Generator().manual_seed(1)))
        x2 = ValueRange(20.0).values(torch.rand(1, 5, 4, generator=torch.Generator().manual_seed(2)))
        patterns[kind] = [forward(r.cfg, r.weights(), TS.make_tokens(kind, x, SHAPE.scratch),
                                  attention_patterns=True).attention for x in (x1, x2)]
    for a, b in zip(*patterns["positional"]):
        assert torch.equal(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(*patterns["standard"]))


def test_standard_tokens_concatenate_one_hot_positions_and_positional_tokens_are_values():
    x = torch.tensor([[[1.0, -2.0]]])  # (K=1, B=1, n=2)
    pos = TS.make_tokens("positional", x, scratch=True)
    std = TS.make_tokens("standard", x, scratch=True)
    assert pos.shape == (1, 1, 3, 1) and pos[0, 0, :, 0].tolist() == [0.0, 1.0, -2.0]
    assert std.shape == (1, 1, 3, 4) and std[0, 0, 2].tolist() == [-2.0, 0.0, 0.0, 1.0]


def test_summary_holds_median_and_worst_error_over_seeds():
    rows = pd.DataFrame({"model_kind": "positional", "task": "cumsum", "n": 8, "c": 4.0, "seed": [0, 1, 2],
                         "error": [0.1, 0.3, 0.2]})
    table = ood.summarize(rows)
    assert list(table.columns) == list(ood.TABLE_COLUMNS)
    assert table["median_error"].tolist() == [0.2] and table["worst_error"].tolist() == [0.3]


def test_ood_command_writes_table_and_figure_and_json_has_the_keys(tmp_path, capsys, close_figures):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(toml_text(TINY))
    out = tmp_path / "out"
    assert main(["ood", str(cfg), "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"model_kind", "task", "c", "median_error", "worst_error"} <= set(rows[0])
    # 2 kinds x 2 tasks x (training range + 2 test ranges)
    assert len(rows) == 12 and {r["c"] for r in rows} == {2.0, 4.0, 8.0}
    for name in ("table.csv", "error_vs_c.png", "error_vs_c.svg", "error_vs_c.csv", "per_model.csv"):
        assert (out / name).stat().st_size > 0
    assert len(pd.read_csv(out / "table.csv")) == 12
    assert not list(out.glob(".*.tmp-*"))  # atomic writes left nothing behind


def test_figure_puts_the_model_kinds_side_by_side_on_log_axes(close_figures):
    table = pd.DataFrame({"model_kind": ["positional"] * 2 + ["standard"] * 2, "task": "cumsum", "n": 8,
                          "c": [2.0, 4.0] * 2, "median_error": [1e-3, 2e-3, 1e-3, 1e-1],
                          "worst_error": [2e-3, 3e-3, 2e-3, 3e-1]})
    axes = ood.figure(table).axes
    assert [ax.get_title() for ax in axes] == ["positional attention", "standard attention"]
    assert all(ax.get_yscale() == "log" for ax in axes)
    assert axes[1].lines[0].get_xydata().tolist() == [[2.0, 1e-3], [4.0, 1e-1]]  # median, then worst


@pytest.mark.parametrize("path, value, field", [
    (("task", "kinds"), ["cumsum", "bogus"], "task.kinds"),
    (("task", "n"), 0, "task.n"),
    (("task", "test_cs"), [1.0, 4.0], "task.test_cs"),  # 1.0 lies inside the training range
    (("task", "c_train"), -1.0, "task.c_train"),
    (("model", "kinds"), ["recurrent"], "model.kinds"),
    (("model", "n_heads"), 3, "model.width"),  # 8 is not a multiple of 3
    (("model", "n_layers"), "log3", "model.n_layers"),
    (("model", "wdth"), 8, "model.wdth"),
    (("train", "lr"), 0.0, "train.lr"),
    (("train", "beta2"), 1.5, "train.beta2"),
    (("train", "steps"), 1.5, "train.steps"),
    (("eval", "batch_size"), 0, "eval.batch_size"),
    (("dtype",), "float16", "dtype"),
])
def test_bad_config_field_is_named_before_anything_runs(tmp_path, capsys, path, value, field):
    data = copy.deepcopy(TINY)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ood.parse_config(data)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml_text(data))
    assert main(["ood", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_config_positional_model_generalises_better_at_large_c(tmp_path):
    """The shipped CPU experiment (a few minutes): at c = 20, ten times the training range, the
    positional model's median error on cumsum is below the standard model's (measured: 1.5e-3
    against 0.47, so the margin is wide)."""

    cfg = ood.load_config(ROOT / "experiments/configs/positional_ood_cpu.toml")
    table = ood.summarize(ood.run(cfg, tmp_path, progress=False)).set_index(["model_kind", "task", "c"])["median_error"]
    assert table["positional", "cumsum", 20.0] < table["standard", "cumsum", 20.0] / 10
