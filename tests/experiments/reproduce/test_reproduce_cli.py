"""`ttb reproduce`: the list, the JSON contract and the page on the von Oswald and Garg presets cut to
a few steps, the fidelity document kept current, and errors that say what is wrong."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
from support import ROOT

from experiments.commands.main import main as ttb
from experiments.reproduce import core, garg, oswald, report
from experiments.reproduce.registry import REPRODUCTIONS

JSON_KEYS = {"name", "scale", "metric", "published", "measured", "seeds"}  # the public contract


def cut(preset: dict, steps: int = 3) -> dict:
    sweep = {section: dict(values) for section, values in preset.items()}
    sweep["train"].update(steps=steps, batch_size=8, log_every=1, warmup_steps=0)
    sweep["task"].update(eval_batch_size=8)
    sweep["grid"] = {"train.seed": [0, 1]}
    return sweep


def test_list_names_every_reproduction_with_its_paper(capsys):
    assert ttb(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("oswald", "garg", "fu", "akyurek", "raventos", "deluca"):
        assert f"\n{name} " in "\n" + out
    assert "Garg et al. 2022" in out and "(cpu: ~" in out


def test_the_fidelity_document_is_the_presets_own_output():
    """experiments/reproduce/FIDELITY.md is regenerated with `ttb reproduce --fidelity`."""
    doc = (ROOT / "experiments" / "reproduce" / "FIDELITY.md").read_text()
    assert doc == report.fidelity_markdown(REPRODUCTIONS.values()), "regenerate: ttb reproduce --fidelity > FIDELITY.md"
    for rep in REPRODUCTIONS.values():
        assert f"## {rep.name}: " in doc and all(f.paper and f.cpu_preset for f in rep.fidelity)


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "nope"], "no reproduction named 'nope'; known: oswald, garg"),
    (["reproduce"], "name a reproduction (ttb reproduce --list names them)"),
])
def test_bad_names_are_one_line_errors(argv, message, capsys):
    assert ttb(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("rep", [oswald.OSWALD, garg.GARG], ids=lambda r: r.name)
def test_json_rows_keep_their_keys_and_the_page_opens_with_its_sentence(rep, tmp_path, monkeypatch, capsys,
                                                                        close_figures):
    monkeypatch.setattr(garg, "PROMPTS", 64)
    small = replace(rep, presets={"cpu": lambda: cut(rep.presets["cpu"]())})
    monkeypatch.setitem(REPRODUCTIONS, rep.name, small)
    assert ttb(["reproduce", rep.name, "--json", "--no-progress", "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(JSON_KEYS <= set(r) for r in rows)
    assert {(r["name"], r["scale"], r["seeds"]) for r in rows} == {(rep.name, "cpu", 2)}
    assert all(isinstance(r["measured"], float) for r in rows)
    html = (tmp_path / "report.html").read_text()
    assert "measured numbers support the claim" in html and "NaN" not in html
    assert (tmp_path / "report.md").read_text().startswith(f"# {rep.name}: ")
    # a second call resumes: nothing is trained again, the same numbers come out
    assert ttb(["reproduce", rep.name, "--json", "--no-progress", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == rows


def test_garg_draws_the_model_beside_least_squares_averaging_and_3nn(tmp_path, monkeypatch, close_figures):
    monkeypatch.setattr(garg, "PROMPTS", 64)
    rep = replace(garg.GARG, presets={"cpu": lambda: cut(garg.cpu())})
    rows, figures = core.run(rep, "cpu", tmp_path, progress=False)
    data = pd.read_csv(figures[0].with_suffix(".csv"))
    assert {"model", "ols", "averaging", "3-nn"} <= set(data.algorithm)
    assert sorted(data[data.algorithm == "model"].n_examples.unique()) == list(range(1, 11))
    assert rows[0].metric == "nmse at 10 examples (2d)" and rows[0].published == 0.0


def test_oswald_preset_is_their_setting():
    from experiments.sweeps.spec import parse_sweep

    run = parse_sweep(oswald.OSWALD.presets["paper"]()).runs[0]
    t, m, tr = run.task, run.model, run.train
    assert (t.d, t.n_points, t.x_dist, t.x_range) == (10, 11, "uniform", 0.5)
    assert (m.n_layers, m.attention, m.mlp, m.io, m.positions) == (1, "linear_sum", "none", "identity", False)
    assert (tr.lr, tr.beta2, tr.eps, tr.grad_clip, tr.batch_size, tr.steps) == (1e-3, 0.98, 1e-9, 0.001, 2048, 5000)


def test_lsa_one_layer_config_is_the_oswald_cpu_preset():
    """One setting, two doors: `ttb sweep lsa_one_layer.toml` and `ttb reproduce oswald` train the same runs."""
    from experiments.sweeps.spec import load_sweep, parse_sweep

    shipped = load_sweep(ROOT / "experiments" / "configs" / "lsa_one_layer.toml")
    preset = parse_sweep(oswald.OSWALD.presets["cpu"]())
    assert [r.run_id for r in shipped.runs] == [r.run_id for r in preset.runs]
    assert shipped.options == preset.options


def test_garg_paper_preset_is_seed_0_of_the_shipped_gpu_config():
    from experiments.sweeps.spec import load_sweep, parse_sweep

    shipped = load_sweep(ROOT / "experiments" / "configs" / "gpt2_interleaved_gpu.toml")
    preset = parse_sweep(garg.paper())
    assert [r.run_id for r in preset.runs] == [shipped.runs[0].run_id] and shipped.options == preset.options
    t, m, tr = preset.runs[0].task, preset.runs[0].model, preset.runs[0].train
    assert (t.d, t.n_points, t.format, m.n_layers, m.d_model, m.n_heads, m.mlp) == (
        20, 41, "interleaved_y0", 12, 256, 8, "gelu_tanh")
    assert (tr.lr, tr.batch_size, tr.grad_clip, tr.min_lr_ratio, tr.warmup_steps) == (1e-4, 64, 0.0, 1.0, 0)
