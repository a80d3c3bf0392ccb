"""A batch's checkpoints and final results are one unit: killed between two runs' writes, the batch
resumes together from one step and reproduces the uninterrupted sweep bit for bit (float32, CPU).

float32 is the demanding case: a run trained in a one-model batch differs in the last bits from
the same run trained beside another, so a batch split by a kill would show here, where float64's
round-off might hide it. Results are compared exactly: weights with ``torch.equal``, metrics and
evaluation files as text, result fields with ``==``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import TINY_SWEEP

from experiments.sweeps import runner
from experiments.sweeps import spec as sw
from experiments.sweeps import store as st
from experiments.sweeps.runner import run_sweep

pytestmark = pytest.mark.usefixtures("one_thread")

TIMING_FIELDS = ("wall_s", "finished_at")  # the only result fields a resume may change
FAULT = "TTB_FAULT_AFTER_CHECKPOINT_WRITES"  # st.FAULT_AFTER_WRITES, spelled out for readers


def write_sweep(tmp_path: Path, steps: int, seeds: str, checkpoint_every: int = 20) -> Path:
    """TINY_SWEEP in float32 (two runs per seed, one batch per seed)."""
    text = TINY_SWEEP.format(name="unit", steps=steps, seeds=seeds).replace('dtype = "float64"', 'dtype = "float32"')
    path = tmp_path / "sweep.toml"
    path.write_text(text.replace("checkpoint_every = 20", f"checkpoint_every = {checkpoint_every}"))
    return path


def sweep_cmd(path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.commands.main", "sweep", str(path), "--out", str(out),
            "--device", "cpu", "--no-progress"]


def env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}  # PYTHONPATH and the rest inherited


def outcome(out: Path) -> dict:
    """Every run's weights tensors, metrics.csv and eval.csv text, and result.json less its timings."""
    found = {}
    for directory in sorted(out.glob("runs/*")):
        result = json.loads((directory / "result.json").read_text())
        found[directory.name] = {"weights": load_file(str(directory / "weights.safetensors")),
                                 "metrics": (directory / "metrics.csv").read_text(),
                                 "eval": (directory / "eval.csv").read_text(),
                                 "result": {k: v for k, v in result.items() if k not in TIMING_FIELDS}}
    return found


def assert_bit_identical(got: dict, want: dict) -> None:
    assert got.keys() == want.keys() and want
    for run_id in want:
        a, b = got[run_id], want[run_id]
        assert a["weights"].keys() == b["weights"].keys()
        for name in b["weights"]:
            assert torch.equal(a["weights"][name], b["weights"][name]), (run_id, name)
        assert (a["metrics"], a["eval"], a["result"]) == (b["metrics"], b["eval"], b["result"]), run_id


def record_batches(monkeypatch) -> list[tuple[list[str], list[int]]]:
    """Patch run_chunk to note each batch it trains: (run ids, their checkpoint steps at start)."""
    real, seen = runner.run_chunk, []

    def run_chunk(out, runs, *args, **kw):
        seen.append(([r.run_id for r in runs], [st.checkpoint_step(st.run_dir(out, r.run_id)) for r in runs]))
        return real(out, runs, *args, **kw)

    monkeypatch.setattr(runner, "run_chunk", run_chunk)
    return seen


@pytest.mark.parametrize("writes, resume_step", [
    (1, 0),    # after the first run's step-20 checkpoint: no step common to both, restart from 0
    (3, 20),   # after the first run's step-40 checkpoint: both hold step 20
    (7, 60),   # after the first run's staged result: both hold their step-60 checkpoints
])
def test_a_batch_killed_between_two_runs_writes_resumes_together_bit_for_bit(tmp_path, monkeypatch, writes,
                                                                             resume_step):
    """Before: the runs came back at different steps (or one finished and one not), the plan split
    them into one-model batches, and float32 results differed from the uninterrupted sweep. Now the
    resumed batch has both runs, starts from one step, and every number is identical."""
    path = write_sweep(tmp_path, steps=60, seeds="[0]")
    clean = tmp_path / "clean"
    run_sweep(sw.load_sweep(path), clean, device="cpu", progress=False)
    out = tmp_path / "killed"
    killed = subprocess.run(sweep_cmd(path, out), capture_output=True, timeout=120,
                            env=env(**{FAULT: str(writes)}))
    assert killed.returncode == 137, killed.stderr.decode()[-2000:]
    assert not list(out.glob("runs/*/result.json"))  # killed mid-batch: nothing of it finished
    batches = record_batches(monkeypatch)
    rows = run_sweep(sw.load_sweep(path), out, device="cpu", progress=False)
    assert [len(ids) for ids, _ in batches] == [2] and batches[0][1] == [resume_step] * 2
    assert [r["attempts"] for r in rows] == [2, 2]
    assert_bit_identical(outcome(out), outcome(clean))
    assert not list(out.rglob("checkpoint*.safetensors")) and not list(out.rglob("result.staged.json"))


def test_a_batch_whose_runs_were_all_staged_is_committed_at_start_without_training(tmp_path, monkeypatch):
    """Killed after the last run's staged result (before any result.json): the next start turns the
    staged results into result.json and trains nothing."""
    path = write_sweep(tmp_path, steps=40, seeds="[0]")
    out = tmp_path / "out"
    killed = subprocess.run(sweep_cmd(path, out), capture_output=True, timeout=120,
                            env=env(**{FAULT: "6"}))  # 2 runs x 2 checkpoints, then 2 staged
    assert killed.returncode == 137 and len(list(out.glob("runs/*/result.staged.json"))) == 2
    staged = {p.parent.name: json.loads(p.read_text())["result"] for p in out.glob("runs/*/result.staged.json")}
    batches = record_batches(monkeypatch)
    rows = run_sweep(sw.load_sweep(path), out, device="cpu", progress=False)
    assert batches == [] and {r["status"] for r in rows} == {"done"}
    assert {i: json.loads((st.run_dir(out, i) / "result.json").read_text()) for i in staged} == staged


def test_old_checkpoints_of_one_step_still_resume(tmp_path, monkeypatch):
    """Checkpoints written before batches were units (no previous file, one step across the batch)
    resume from that step, as before."""
    path = write_sweep(tmp_path, steps=60, seeds="[0]")
    clean = tmp_path / "clean"
    run_sweep(sw.load_sweep(path), clean, device="cpu", progress=False)
    out = tmp_path / "out"
    killed = subprocess.run(sweep_cmd(path, out), capture_output=True, timeout=120,
                            env=env(**{FAULT: "4"}))  # both runs at step 40, previous kept
    assert killed.returncode == 137
    for old in out.glob("runs/*/checkpoint.prev.safetensors"):
        old.unlink()  # what the old writer left: one file per run
    batches = record_batches(monkeypatch)
    run_sweep(sw.load_sweep(path), out, device="cpu", progress=False)
    assert [steps for _, steps in batches] == [[40, 40]]
    assert_bit_identical(outcome(out), outcome(clean))


# ----------------------------------------------------------------------------------------------
# Torture


def finished_at(out: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["finished_at"] for p in out.glob("runs/*/result.json")}


@pytest.mark.slow
def test_a_sweep_killed_at_thirty_random_moments_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    """Four float32 runs in two batches, checkpoints every 10 steps. 30 kills: 20 SIGKILLs after
    seeded random delays (at start-up, mid-training, mid-write) and 10 through the fault hook
    between two runs' writes of a checkpoint or a result. Then it runs to the end. Every number
    equals an uninterrupted sweep's, and no run was finished twice: a result.json once written
    never changes (its finished_at is stamped when the run finishes training)."""
    path = write_sweep(tmp_path, steps=5000, seeds="[0, 1]", checkpoint_every=10)
    clean = tmp_path / "clean"
    assert subprocess.run(sweep_cmd(path, clean), capture_output=True, timeout=300, env=env()).returncode == 0
    out, rng, seen, landed = tmp_path / "out", random.Random(16), {}, 0
    for i in range(30):
        hook = {FAULT: str(rng.randint(1, 8))} if i % 3 == 2 else {}
        proc = subprocess.Popen(sweep_cmd(path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env(**hook))
        try:
            proc.wait(timeout=None if hook else rng.uniform(1.0, 4.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        assert rc in (0, -signal.SIGKILL, 137), f"the sweep failed (exit {rc}) after {i} kills"
        landed += rc != 0
        now = finished_at(out)
        assert {i: now[i] for i in seen} == seen  # a result once written is never written again
        seen = now
    assert landed >= 25, f"only {landed} of 30 kills found the sweep unfinished"
    assert subprocess.run(sweep_cmd(path, out), capture_output=True, timeout=300, env=env()).returncode == 0
    assert {i: finished_at(out)[i] for i in seen} == seen
    assert_bit_identical(outcome(out), outcome(clean))
    assert not list(out.rglob("checkpoint*.safetensors")) and not list(out.rglob(".*.tmp-*"))


def test_the_torture_test_would_notice_a_difference(tmp_path):
    """The comparison is not vacuous: one changed bit in one weight fails it."""
    path = write_sweep(tmp_path, steps=20, seeds="[0]")
    run_sweep(sw.load_sweep(path), tmp_path / "a", device="cpu", progress=False)
    want = outcome(tmp_path / "a")
    got = outcome(tmp_path / "a")
    run_id, name = next(iter(got)), next(iter(next(iter(got.values()))["weights"]))
    flat = got[run_id]["weights"][name].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf"), dtype=flat.dtype))
    with pytest.raises(AssertionError):
        assert_bit_identical(got, want)
