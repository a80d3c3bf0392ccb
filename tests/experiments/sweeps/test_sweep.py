"""Sweep files: grid expansion, validation, grouping, resume after kill -9, and the CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import TINY_SWEEP

from experiments.commands.main import main as ttb
from experiments.common.validate import ConfigError
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep
from experiments.sweeps.store import FINISHED, Store, status_rows
from experiments.training.config import RunConfig

TINY = TINY_SWEEP.replace("{name}", "tiny").replace("{seeds}", "[0, 1]")

RESULT_FIELDS = ("status", "steps_done", "diverged_step", "stopped_step", "final_loss", "final_nmse",
                 "eval_mse", "eval_nmse", "label", "config")


pytestmark = pytest.mark.usefixtures("one_thread")


def write_sweep(tmp_path: Path, steps: int = 40, extra: str = "") -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(TINY.format(steps=steps) + extra)
    return path


def results(out: Path) -> dict:
    with Store(out) as store:
        return {r["run_id"]: {f: r[f] for f in RESULT_FIELDS} for r in store.rows()}


def assert_same_results(a: dict, b: dict, rel: float) -> None:
    assert a.keys() == b.keys()
    for run_id in a:
        for field in RESULT_FIELDS:
            x, y = a[run_id][field], b[run_id][field]
            assert x == pytest.approx(y, rel=rel, abs=1e-300) if isinstance(x, float) else x == y, (run_id, field)


# ----------------------------------------------------------------------------------------------
# Expansion and validation (pure)


def test_grid_is_the_product_of_lists_with_zip_groups_varied_together():
    points = sw.expand_grid({"train": {"seed": [0, 1, 2]}, "task.noise_std": [0.0, 0.5],
                             "zip": [{"train.lr": [1e-3, 1e-2], "train.warmup_steps": [0, 10]}]})
    assert len(points) == 3 * 2 * 2
    assert {(p["train.lr"], p["train.warmup_steps"]) for p in points} == {(1e-3, 0), (1e-2, 10)}
    assert points[0] == {"train.seed": 0, "task.noise_std": 0.0, "train.lr": 1e-3, "train.warmup_steps": 0}


def test_run_ids_hash_the_resolved_config(tmp_path):
    sweep = sw.load_sweep(write_sweep(tmp_path))
    assert len(sweep.runs) == 4 and len({r.run_id for r in sweep.runs}) == 4
    again = sw.load_sweep(write_sweep(tmp_path))
    assert [r.run_id for r in again.runs] == [r.run_id for r in sweep.runs]
    explicit_default = sw.load_sweep(write_sweep(tmp_path, extra='"train.dtype" = ["float64"]\n'))
    assert [r.run_id for r in explicit_default.runs] == [r.run_id for r in sweep.runs]


def test_uniform_inputs_are_part_of_a_runs_identity_and_the_default_is_not(tmp_path):
    """Leaving the new fields at their defaults keeps every old run id (test_run_ids pins them);
    setting them gives another run."""
    base = sw.load_sweep(write_sweep(tmp_path)).runs[0]
    uniform = RunConfig.from_dict({**base.to_dict(), "task": {**base.to_dict()["task"], "x_dist": "uniform",
                                                             "x_range": 0.5}})
    assert "x_dist" not in base.to_dict()["task"] and uniform.run_id != base.run_id
    assert RunConfig.from_dict(uniform.to_dict()) == uniform


def test_runs_group_by_shape_and_chunk_by_max_models(tmp_path):
    sweep = sw.load_sweep(write_sweep(tmp_path, extra='"model.d_model" = [16, 32]\n'))
    chunks = sw.chunks(sweep.runs, {}, max_models=3)
    assert [len(c.runs) for c in chunks] == [3, 1, 3, 1]
    assert all(len({r.model.d_model for r in c.runs}) == 1 for c in chunks)
    assert "4 batches" in sw.describe(sweep)


@pytest.mark.parametrize("text, names", [
    ("[train]\nlr = -1.0", ["train.lr", ">"]),
    ("[model]\nattention = 'cosine'", ["model.attention", "'softmax'", "'linear'", "'relu'"]),
    ("[task]\nformat = 'pairs'", ["task.format", "'interleaved'", "'example'"]),
    ("[train]\nlearning_rate = 0.1", ["train.learning_rate", "allowed fields", "'lr'"]),
    ("[sweep]\nbackend = 'slurm'", ["sweep.backend", "'local'", "'ray'"]),
    ("[optim]\nlr = 0.1", ["optim", "allowed"]),
    ("[grid]\n'train.seed' = 3", ["grid.train.seed", "list"]),
    ("[grid]\n'train.sed' = [1, 2]", ["train.sed", "allowed fields"]),
    ("[grid]\n'train.lr' = [1e-3, -1.0]", ["train.lr", "grid point 1"]),
    ("[[grid.zip]]\n'train.lr' = [1e-3, 1e-2]\n'train.seed' = [1]", ["zip", "equal lengths"]),
    ("[train]\nlog_every = 10\ncheckpoint_every = 15", ["train.checkpoint_every", "train.log_every"]),
    ("[model]\nd_model = 10\nn_heads = 3", ["model.d_head", "model.n_heads"]),
    ("[train]\ndtype = 'float16'", ["train.dtype", "'float32'", "'float64'"]),
    # an explicit 0 used to mean "1 / sqrt(d_head)" silently (the stored encoding of the default)
    ("[model]\nbeta = 0.0", ["model.beta", "positive", "leave model.beta out"]),
    ("[grid]\n'model.beta' = [0.5, 0]", ["model.beta", "grid point 1"]),
    ("[sweep]\ndevice = 'cpu:banana'", ["sweep.device", "cuda:N"]),
    ("[task]\nkind = 'pool'\npool_size = 4\nx_dist = 'uniform'", ["task.x_dist", "'gaussian'", "'pool'"]),
    ("[task]\nx_range = 2.0", ["task.x_range", "'uniform' only"]),
    ("[task]\nx_dist = 'laplace'", ["task.x_dist", "'uniform'"]),
])
def test_a_bad_sweep_file_names_the_field_and_allowed_values_before_anything_runs(tmp_path, text, names, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        sw.load_sweep(path)
    for name in names:
        assert name in str(err.value)
    assert ttb(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Running and resuming


def test_a_second_sweep_call_skips_finished_runs(tmp_path):
    sweep = sw.load_sweep(write_sweep(tmp_path, steps=20))
    out = tmp_path / "out"
    first = run_sweep(sweep, out, device="cpu", progress=False)
    assert [r["status"] for r in first] == ["done"] * 4
    second = run_sweep(sweep, out, device="cpu", progress=False)
    assert [r["attempts"] for r in second] == [1] * 4
    assert results(out) == {r["run_id"]: {f: r[f] for f in RESULT_FIELDS} for r in first}
    run = out / first[0]["path"]
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "eval.csv", "metrics.csv", "result.json",
                                                     "weights.safetensors"]


def files_are_whole(out: Path) -> None:
    """Every file a killed sweep left behind parses completely; no temporaries are visible as targets."""
    for path in out.rglob("*"):
        if path.name.startswith("."):
            continue  # a writer's temporary, removed on restart
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".csv":
            lines = path.read_text().splitlines()
            assert all(line.count(",") == lines[0].count(",") for line in lines)


def test_a_sweep_killed_with_sigkill_resumes_to_the_same_results(tmp_path):
    """Kill -9 while the second batch trains (the first is stored), restart, compare with a clean run.
    float64: a run resumed in a different batch composition differs only by round-off (~1e-14)."""
    path = write_sweep(tmp_path, steps=100)
    clean = tmp_path / "clean"
    run_sweep(sw.load_sweep(path), clean, device="cpu", progress=False)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "experiments.commands.main", "sweep", str(path), "--out", str(out), "--device", "cpu",
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        # A checkpoint of a run without a result: the second batch is training (a finished run's
        # checkpoint may linger for a moment before it is removed, so it does not count).
        wait_for(lambda: len(list(out.glob("runs/*/result.json"))) == 2
                 and any(not (c.parent / "result.json").exists() for c in out.glob("runs/*/checkpoint.safetensors")),
                 proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    files_are_whole(out)
    assert any(r["status"] not in FINISHED for r in status_rows(out))
    assert subprocess.run(cmd, capture_output=True, timeout=120, env=env).returncode == 0
    assert_same_results(results(out), results(clean), rel=1e-9)
    rows = status_rows(out)
    assert {r["attempts"] for r in rows} == {1, 2}  # the finished batch was not trained again
    assert not list(out.rglob(".*.tmp-*")) and not list(out.rglob("checkpoint.safetensors"))


def wait_for(condition, proc, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail("the sweep ended (or hung) before it could be killed mid-way")
        time.sleep(0.005)


# ----------------------------------------------------------------------------------------------
# CLI


def test_cli_dry_run_prints_runs_and_batches_and_writes_nothing(tmp_path, capsys):
    assert ttb(["sweep", str(write_sweep(tmp_path)), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "4 runs" in text and "2 batches" in text and "train.lr=0.003" in text
    assert not (tmp_path / "out").exists()


def test_cli_runs_and_export_read_a_finished_sweep(tmp_path, capsys):
    out = tmp_path / "out"
    assert ttb(["sweep", str(write_sweep(tmp_path, steps=10)), "--out", str(out), "--device", "cpu",
                "--no-progress"]) == 0
    capsys.readouterr()
    assert ttb(["runs", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and all(r["status"] == "done" and r["step"] == 10 for r in rows)
    assert ttb(["runs", str(out)]) == 0
    assert "4 done" in capsys.readouterr().out
    assert ttb(["export", str(out), "--format", "csv"]) == 0
    import pandas as pd

    table = pd.read_csv(out / "metrics.csv")
    assert {"run_id", "train.seed", "train.lr", "kind", "step", "metric", "value"} <= set(table.columns)
    assert set(table["kind"]) == {"train", "eval"} and table["run_id"].nunique() == 4
    pytest.importorskip("pyarrow")
    assert ttb(["export", str(out), "--format", "parquet", "--output", str(tmp_path / "m.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "m.parquet")) == len(table)


def test_weights_of_a_run_load_into_the_forward_pass(tmp_path):
    from constructions.model import forward, load_weights

    rows = run_sweep(sw.load_sweep(write_sweep(tmp_path, steps=10)), tmp_path / "o", device="cpu",
                        progress=False)
    cfg, w = load_weights(tmp_path / "o" / rows[0]["path"] / "weights.safetensors")
    out = forward(cfg, w, torch.zeros(2, 10, cfg.d_in, dtype=w.W_E.dtype)).out
    assert out.shape == (1, 2, 10, 1) and math.isfinite(float(out.sum()))
