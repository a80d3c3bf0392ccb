"""The reproductions of Fu et al., Akyürek et al. and Raventós et al.: presets that validate, fidelity
tables that are filled in, and a measure that runs end to end on (tiny) trained runs."""

from dataclasses import replace

import pytest
import torch
from support import ROOT

from experiments.reproduce import akyurek, core, fu, raventos, report
from experiments.reproduce.registry import REPRODUCTIONS
from experiments.sweeps.spec import load_sweep, parse_sweep

REPS = {"fu": fu.FU, "akyurek": akyurek.AKYUREK, "raventos": raventos.RAVENTOS}
ROW_KEYS = {"name", "scale", "metric", "published", "measured", "spread", "seeds", "source", "claim", "holds"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(preset: dict) -> dict:
    """The cpu preset cut to 2 steps of 8 prompts (the same grid, so measure sees every cell)."""
    sweep = {section: dict(values) for section, values in preset.items()}
    sweep["train"].update(steps=2, batch_size=8, log_every=1, warmup_steps=1)
    sweep["task"].update(eval_batch_size=8)
    return sweep


def test_the_three_are_registered_after_oswald_and_garg_in_that_order():
    assert list(REPRODUCTIONS)[:5] == ["oswald", "garg", "fu", "akyurek", "raventos"]


@pytest.mark.parametrize("name", sorted(REPS))
def test_both_presets_expand_to_valid_runs(name):
    for scale in core.SCALES:
        assert parse_sweep(REPS[name].presets[scale]()).runs


@pytest.mark.parametrize("name", sorted(REPS))
def test_the_fidelity_table_names_the_papers_value_and_both_presets_for_every_field(name):
    fidelity = REPS[name].fidelity
    assert len(fidelity) >= 6
    for f in fidelity:
        assert f.field and f.paper and f.paper_preset and f.cpu_preset


def test_the_raventos_paper_preset_is_the_shipped_gpu_config():
    """One setting, two doors: `ttb sweep task_pool_gpu.toml` and `ttb reproduce raventos --scale paper`
    train the same runs (same ids) with the same options."""
    shipped = load_sweep(ROOT / "experiments" / "configs" / "task_pool_gpu.toml")
    preset = parse_sweep(raventos.paper())
    assert [r.run_id for r in preset.runs] == [r.run_id for r in shipped.runs]
    assert preset.options == shipped.options
    train = shipped.runs[0].train
    assert (train.schedule, train.min_lr_ratio, train.warmup_steps * 2) == ("linear", 0.0, train.steps)


@pytest.mark.parametrize("name", sorted(REPS))
def test_measure_runs_on_trained_runs_and_the_page_is_written(name, tmp_path, monkeypatch, close_figures):
    """Two training steps are enough to exercise every row and figure (the numbers mean nothing);
    fewer evaluation prompts and GD steps keep it quick."""
    monkeypatch.setattr(fu, "PROMPTS", 64)
    monkeypatch.setattr(fu, "GD_STEPS", 16)
    monkeypatch.setattr(akyurek, "PROMPTS", 64)
    monkeypatch.setattr(raventos, "PROMPTS", 32)
    rep = replace(REPS[name], presets={"cpu": lambda: tiny(REPS[name].presets["cpu"]())})
    rows, figures = core.run(rep, "cpu", tmp_path, progress=False)
    assert rows and all(set(r.to_json()) == ROW_KEYS for r in rows)
    assert all(r.name == name and r.scale == "cpu" for r in rows)
    assert max(r.seeds for r in rows) == 2 and min(r.seeds for r in rows) >= 0  # fu: seeds without a slope drop
    assert all(r.holds is None or r.claim for r in rows)  # a verdict always says what it tests
    assert all(p.exists() for p in figures)
    paths = report.write(rep, "cpu", rows, figures, tmp_path, 0.1)
    assert len(report.load_rows(tmp_path)) == len(rows) and paths[0].read_text().count("|") > 10


def test_fu_reads_each_layer_both_ways_and_fits_both_relations(tmp_path, monkeypatch):
    monkeypatch.setattr(fu, "PROMPTS", 64)
    monkeypatch.setattr(fu, "GD_STEPS", 16)
    rep = replace(fu.FU, presets={"cpu": lambda: tiny(fu.cpu())})
    rows, _ = core.run(rep, "cpu", tmp_path, progress=False)
    metrics = [r.metric for r in rows]
    for how in ("a linear probe per layer, as the paper", "the model's own read-out"):
        assert f"Newton iterations per layer ({how})" in metrics and f"log GD steps per layer ({how})" in metrics
    newton = next(r for r in rows if r.metric.startswith("Newton iterations per layer (a linear probe"))
    assert newton.published == fu.NEWTON_PER_LAYER


def _prompts(w: torch.Tensor, n_prompts: int, seed: int):
    from experiments.analysis.core import Prompts

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_prompts, 7, 3, generator=g, dtype=torch.float64)
    y = (x * w[:, None, :]).sum(-1)
    return Prompts(x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], w)


def test_a_layer_probe_reads_y_wherever_the_residual_holds_it_linearly_and_only_there():
    """The GD construction (2 layers) keeps x_q in the query token's stream. With one w for every
    prompt, y_q = w . x_q is linear in every layer's residual, so each layer's probe predicts the
    held-out y (to 1e-6: probes.fit_probe's ridge penalty, 1e-8 of the Gram matrix's mean diagonal,
    shrinks the fit by about that relative amount, and |y| reaches ~10); with a fresh w per prompt,
    the embedding (x_q alone) cannot (its error stays near E[y^2] = d: nmse near 1; 0.5 leaves room
    for 256 prompts' sampling error)."""
    from constructions.icl import gd
    from experiments.analysis import core as an

    built = gd.build(d=3, n_steps=2, eta=0.5)
    learner = an.Learner(built.cfg, built.weights, "example")
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).expand(256, 3)
    fit, held = _prompts(w, 256, seed=0), _prompts(w, 256, seed=1)
    preds = fu.probe_predictions(learner, fit, held)
    assert preds.shape == (3, 256)
    torch.testing.assert_close(preds, held.y_query.expand(3, -1), rtol=0, atol=1e-6)
    ws = [torch.randn(256, 3, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (2, 3)]
    fresh = fu.probe_predictions(learner, _prompts(ws[0], 256, seed=0), held := _prompts(ws[1], 256, seed=1))
    assert float((fresh[0] - held.y_query).pow(2).mean() / 3) > 0.5


MEASURED = {  # the runs behind the README's table of cpu numbers: a preset change must show here
    "oswald": ["27a0a097f835", "c12dff47faff", "16af5d3d8dfa"],
    "garg": ["46d6f0e0c29d", "6f3be11be28d", "ece0a3971a94"],
    "fu": ["26b71ba6eada", "c85ce59c679b"],
    "akyurek": ["0ae6e6ff2d2c", "8db49bed4083", "1057c7345e85", "853fe8848139", "11e6ca342613", "b511de754c66"],
    "raventos": ["99a00904d610", "724d9eefa4c4", "1ddda87e4b9f", "dafafcdf900f"],
}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_the_cpu_presets_train_the_runs_whose_numbers_the_readme_reports(name):
    assert [r.run_id for r in parse_sweep(REPRODUCTIONS[name].presets["cpu"]()).runs] == MEASURED[name]
