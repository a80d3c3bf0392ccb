"""`ttb reproduce deluca`: a tiny preset runs end to end through `ttb ood`'s machinery into rows with the
paper's numbers beside the measured ones, the figures and the page."""

import dataclasses

import pytest

from experiments.ood import experiment as ood
from experiments.reproduce import core, deluca, report
from experiments.training.trainer import Plateau


def tiny() -> dict:
    preset = deluca.cpu()
    return {**preset, "task": {**preset["task"], "kinds": ["cumsum"], "n": 4, "test_cs": [20.0]},
            "model": {**preset["model"], "width": 8, "d_mlp": 8, "n_layers": 2},
            "train": {**preset["train"], "seeds": 2, "steps": 4, "batch_size": 4, "train_size": 8, "log_every": 2},
            "eval": {"batch_size": 16}}


def test_a_tiny_deluca_run_gives_rows_beside_the_papers_numbers_and_the_page(tmp_path, close_figures):
    rep = dataclasses.replace(deluca.DELUCA, presets={"cpu": tiny})
    rows, figures = core.run(rep, "cpu", tmp_path, progress=False)
    assert all({"name", "scale", "metric", "published", "measured", "seeds"} <= set(r.to_json()) for r in rows)
    assert [r.metric for r in rows] == [
        "cumsum, positional: mse at c = 2 (in distribution)", "cumsum, positional: mse at c = 20",
        "cumsum, standard: mse at c = 2 (in distribution)", "cumsum, standard: mse at c = 20",
        "cumsum: standard / positional mse at c = 20"]
    published = [r.published for r in rows]
    assert published[:4] == [4.62e-05, 0.0914, 4.55e-05, 103]  # results/fixed_length/sum/scale, mean of 10 runs
    assert published[4] == pytest.approx(103 / 0.0914)
    assert all(r.seeds == 2 and r.scale == "cpu" for r in rows) and isinstance(rows[4].holds, bool)
    assert all(p.exists() and p.is_relative_to(tmp_path) for p in figures)
    assert (tmp_path / "ood" / "table.csv").exists() and (tmp_path / "sweep" / "store.sqlite").exists()
    page = report.markdown(rep, "cpu", rows, figures, tmp_path, 0.1)
    assert "ReduceLROnPlateau" in page and "deluca_mse_vs_c.png" in page


def test_the_paper_preset_is_the_gpu_config_and_the_cpu_preset_keeps_its_protocol():
    paper = ood.parse_config(deluca.paper())
    cpu = ood.parse_config(deluca.cpu())
    assert paper.train_size == 30000 and paper.sub_intervals and len(paper.seeds) == 10
    assert cpu.sub_intervals and cpu.plateau == paper.plateau == Plateau(0.9, 50, 1e-4)
    assert cpu.test_cs == paper.test_cs and cpu.shape_for(8).n_layers == paper.shape_for(8).n_layers == 4
    assert cpu.train_size // cpu.batch_size == cpu.log_every  # one log per epoch, as their scheduler steps
    assert set(cpu.test_cs) <= set(deluca.PAPER_CS)  # every measured c has a published number


def test_published_numbers_exist_only_for_their_tasks_and_ranges():
    assert deluca.published("cummin", "standard", 20.0) == 20
    assert deluca.published("cummin", "standard", 5.0) is None
    assert deluca.published("cummax", "positional", 20.0) is None  # not one of their tasks
