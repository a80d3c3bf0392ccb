"""`ttb ood` and `ttb approx` train through the one sweep engine: their runs are in the store
(`ttb runs --json`), and a command killed with SIGKILL mid-way resumes without training a finished
run again, to the same numbers as a run that was never killed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from experiments.commands.main import main as ttb
from experiments.sweeps.store import FINISHED, status_rows

OOD = """
name = "kill"
device = "cpu"
dtype = "float64"
[task]
kinds = ["cumsum", "cummin"]
n = 4
test_cs = [4.0]
[model]
kinds = ["positional"]
width = 8
n_heads = 2
n_layers = 2
d_mlp = 8
[train]
seeds = 2
steps = {steps}
batch_size = 8
log_every = 10
checkpoint_every = 10
[eval]
batch_size = 16
"""

APPROX = """
name = "kill"
device = "cpu"
[transformer]
n = 3
d = 1
targets = ["cosine"]
widths = [4, 8]
construction_widths = [4]
lams = [40.0]
seeds = [0, 1]
steps = {steps}
batch_size = 8
eval_inputs = 32
"""


def _killed_then_resumed(tmp_path: Path, command: str, text: str, steps: int, table: str) -> None:
    """Run ``ttb COMMAND`` to completion into clean/, and once killed mid-way (once the first batch's
    runs have a result and the second batch has started) then resumed into killed/; compare."""
    path = tmp_path / "config.toml"
    path.write_text(text.format(steps=steps))
    clean, out = tmp_path / "clean", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "experiments.commands.main", command, str(path), "--no-progress"]
    assert subprocess.run([*base, "--out", str(clean)], capture_output=True, timeout=900, env=env).returncode == 0
    proc = subprocess.Popen([*base, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: _started_second_batch(out), proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    rows = status_rows(out)
    assert any(r["status"] not in FINISHED for r in rows) and any(r["status"] in FINISHED for r in rows)
    assert subprocess.run([*base, "--out", str(out)], capture_output=True, timeout=900, env=env).returncode == 0
    rows = status_rows(out)
    assert {r["status"] for r in rows} == {"done"}
    assert sorted(r["attempts"] for r in rows) == [1, 1, 2, 2]  # the first batch was not trained again
    pd.testing.assert_frame_equal(pd.read_csv(out / table), pd.read_csv(clean / table))


def _started_second_batch(out: Path) -> bool:
    """The first batch's two results are written and the second batch is marked running (read
    while the command writes: a file or row that moves under the reader means "not yet")."""
    if len(list(out.glob("runs/*/result.json"))) != 2 or not (out / "store.sqlite").exists():
        return False
    try:
        return any(r["status"] == "running" for r in status_rows(out))
    except (OSError, sqlite3.Error, ValueError):
        return False


def wait_for(condition, proc, timeout: float = 600.0) -> None:
    """Poll ``condition`` while ``proc`` runs (generous deadline: on a loaded 2-core machine the first
    batch alone, with torch's import, has taken over 2 minutes)."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the command ended before it could be killed mid-way"
        assert time.time() < deadline, f"the first batch did not finish within {timeout:.0f} s"
        time.sleep(0.01)


def test_ood_runs_are_in_the_store_and_resume_after_sigkill(tmp_path, capsys):
    """float64, checkpoints every 10 steps: the killed batch resumes from its checkpoint with the same
    batch composition, so every number equals the uninterrupted run's."""
    _killed_then_resumed(tmp_path, "ood", OOD, steps=400, table="per_model.csv")
    assert ttb(["runs", str(tmp_path / "killed"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and {json.loads(r["config"])["kind"] for r in rows} == {"sequence"}


def test_approx_runs_are_in_the_store_and_resume_after_sigkill(tmp_path, capsys):
    _killed_then_resumed(tmp_path, "approx", APPROX, steps=600, table="comparison.csv")
    assert ttb(["runs", str(tmp_path / "killed"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and {json.loads(r["config"])["kind"] for r in rows} == {"approx_transformer"}
