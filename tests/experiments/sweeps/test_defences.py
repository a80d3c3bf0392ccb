"""A sweep directory defends itself (issue 16): one sweep at a time (an OS lock, real processes),
and start-up repairs of what a crash or a hand left behind: rows left "running", temporaries of dead
writers (and only those), a checkpoint that does not load, a store that does not open, and finished
runs whose weights were lost. Each test fails on the code before these defences."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import TINY_SWEEP

from experiments.commands.main import main as ttb
from experiments.sweeps import runner
from experiments.sweeps import spec as sw
from experiments.sweeps import store as st
from experiments.sweeps.runner import run_sweep

SWEEP = TINY_SWEEP.replace("{name}", "defences")

RESULT_FIELDS = ("status", "steps_done", "final_loss", "final_nmse", "eval_mse", "eval_nmse", "label", "config")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one intra-op thread (see tests/experiments/conftest.py)."""


def write_sweep(tmp_path: Path, steps: int = 20, seeds: str = "[0, 1]") -> Path:
    path = tmp_path / f"sweep_{steps}_{len(json.loads(seeds))}.toml"
    path.write_text(SWEEP.format(steps=steps, seeds=seeds))
    return path


def sweep_into(tmp_path: Path, out: Path, **kw) -> list[dict]:
    return run_sweep(sw.load_sweep(write_sweep(tmp_path, **kw)), out, device="cpu", progress=False)


def run_ids(tmp_path: Path, **kw) -> list[str]:
    """The sweep's run ids in its order: [0:2] train as batch 1, [2:4] as batch 2."""
    return [r.run_id for r in sw.load_sweep(write_sweep(tmp_path, **kw)).runs]


def store_rows(out: Path) -> dict[str, dict]:
    """The store's rows as written (not as `ttb runs` shows them)."""
    with st.Store(out) as store:
        return {r["run_id"]: r for r in store.rows()}


def finals(rows) -> dict[str, dict]:
    return {r["run_id"]: {f: r[f] for f in RESULT_FIELDS} for r in rows}


def runs_json(out: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert ttb(["runs", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def dead_pid() -> int:
    """The pid of a process that has exited (pids are not reused this fast)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------------------
# 1. A lock per output directory (real processes)


def test_a_second_sweep_on_a_busy_directory_fails_at_once_naming_the_holder_and_wait_waits(tmp_path):
    """Before: both processes trained every run (attempts 2). Now the second exits 2 with one line
    naming the first's pid, a third with --wait waits and then finds everything done."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "experiments.commands.main", "sweep", str(write_sweep(tmp_path, steps=1500)),
           "--out", str(out), "--device", "cpu", "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    waiter = None
    try:
        wait_for(lambda: training(out), first)
        waiter = subprocess.Popen([*cmd, "--wait"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        started = time.time()
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert second.returncode == 2, (f"the second sweep exited {second.returncode} (the first still running: "
                                        f"{first.poll() is None}): {second.stderr[-300:]}")
        assert time.time() - started < 30 and first.poll() is None
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and str(first.pid) in lines[0] and str(out) in lines[0] and "--wait" in lines[0], lines
        assert first.wait(timeout=120) == 0
        assert waiter.wait(timeout=60) == 0
        assert "waiting for process" in waiter.stderr.read()
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    rows = store_rows(out).values()
    assert [r["attempts"] for r in rows] == [1] * 4 and {r["status"] for r in rows} == {"done"}


def training(out: Path) -> bool:
    """Whether the sweep writing ``out`` has marked a batch running (read-only, as the writer
    goes: a store that is not there yet or moves under the reader means "not yet")."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{out / st.STORE_NAME}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def wait_for(condition, proc, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail("the first sweep ended (or hung) before it started training")
        time.sleep(0.01)


# ----------------------------------------------------------------------------------------------
# 2. Rows left "running"


def crash_in_second_batch(monkeypatch) -> None:
    """run_chunk trains the first batch, then raises (a crash with the second batch's rows running)."""
    real, calls = runner.run_chunk, []

    def run_chunk(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("crash")
        return real(*args, **kw)

    monkeypatch.setattr(runner, "run_chunk", run_chunk)


def test_rows_left_running_by_a_dead_process_show_interrupted_and_a_start_resets_them(tmp_path, monkeypatch, capsys):
    """Before: `ttb runs` said "running" with no process alive, and a later sweep on the same
    directory (here one with only seed 0's runs) left those rows "running" for good."""
    out = tmp_path / "out"
    crash_in_second_batch(monkeypatch)
    with pytest.raises(RuntimeError, match="crash"):
        sweep_into(tmp_path, out)
    monkeypatch.undo()
    shown = [r["status"] for r in runs_json(out, capsys)]
    assert sorted(shown) == ["done", "done", "interrupted", "interrupted"]
    sweep_into(tmp_path, out, seeds="[0]")  # trains nothing, but repairs the rows at start
    assert sorted(r["status"] for r in store_rows(out).values()) == ["done", "done", "pending", "pending"]


# ----------------------------------------------------------------------------------------------
# 3. Temporary files


def test_start_up_removes_only_our_temporaries_whose_writer_is_dead(tmp_path):
    """Before: every `.*.tmp-*` under --out was deleted, a user's draft and a live writer's file
    included. Now only `.NAME.tmp-PID` with PID dead goes."""
    out = tmp_path / "out"
    (out / "runs" / "r").mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = [out / f".store.sqlite.tmp-{dead_pid()}", out / "runs" / "r" / f".weights.safetensors.tmp-{dead_pid()}"]
        kept = [out / ".notes.tmp-draft", out / "runs" / "r" / f".result.json.tmp-{live.pid}",
                out / ".tmp-123", out / ".notes.tmp-12a"]
        for path in dead + kept:
            path.write_bytes(b"half")
        sweep_into(tmp_path, out)
    finally:
        live.kill()
        live.wait()
    assert [p.exists() for p in kept] == [True] * len(kept)
    assert [p.exists() for p in dead] == [False] * len(dead)


# ----------------------------------------------------------------------------------------------
# 4. A checkpoint that does not load


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "zeroed": bytes(len(data)),
                      "garbage": b"not a safetensors file at all" * 3}[how])


def stop_after_second_batch_checkpoints(monkeypatch, last_run: str) -> None:
    """A kill right after the second batch wrote its step-20 checkpoints (both runs)."""
    real = st.save_checkpoint

    def save_checkpoint(directory, tensors, meta):
        real(directory, tensors, meta)
        if meta["run_id"] == last_run and meta["step"] == 20:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(st, "save_checkpoint", save_checkpoint)


@pytest.mark.parametrize("how", ["truncated", "zeroed", "garbage"])
def test_a_corrupt_checkpoint_is_set_aside_and_its_batch_restarts_to_the_uninterrupted_result(tmp_path, monkeypatch,
                                                                                            capsys, how):
    """Before: every resume failed with a SafetensorError that named no file. Now the checkpoint
    goes to checkpoint.safetensors.corrupt with a warning naming it, its batch-mate's good
    checkpoint is dropped too (a batch restarts together), and the sweep finishes. Restarted from
    scratch in the same batch, the runs reproduce an uninterrupted sweep exactly (float64, CPU)."""
    clean = finals(sweep_into(tmp_path, tmp_path / "clean", steps=60))
    out = tmp_path / "out"
    ids = run_ids(tmp_path, steps=60)
    stop_after_second_batch_checkpoints(monkeypatch, last_run=ids[-1])
    with pytest.raises(KeyboardInterrupt):
        sweep_into(tmp_path, out, steps=60)
    monkeypatch.undo()
    bad, mate = (st.checkpoint_path(st.run_dir(out, i)) for i in ids[2:])
    assert bad.exists() and mate.exists()
    damage(bad, how)
    capsys.readouterr()
    rows = sweep_into(tmp_path, out, steps=60)
    err = capsys.readouterr().err
    assert str(bad) in err and "checkpoint.safetensors.corrupt" in err and str(mate) in err
    assert bad.with_name("checkpoint.safetensors.corrupt").exists() and not bad.exists() and not mate.exists()
    assert finals(rows) == clean


# ----------------------------------------------------------------------------------------------
# 5. A store that does not open


@pytest.mark.parametrize("how", ["garbage", "zero bytes", "half"])
def test_an_unreadable_store_is_set_aside_and_rebuilt_from_the_run_directories(tmp_path, capsys, how):
    """Before: `ttb runs` failed with sqlite3.DatabaseError (or, zero bytes, listed no run). Now it
    warns naming the file, keeps it as store.sqlite.corrupt, and lists every run done with its
    metrics; a sweep afterwards trains nothing."""
    out = tmp_path / "out"
    before = finals(sweep_into(tmp_path, out))
    path = out / st.STORE_NAME
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x13 this is not SQLite " * 200, "zero bytes": b"", "half": data[: len(data) // 2]}[how])
    capsys.readouterr()
    assert ttb(["runs", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert str(path) in captured.err and (out / "store.sqlite.corrupt").exists()
    assert finals(rows) == before
    weights = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/weights.safetensors")}
    attempts = {r["run_id"]: r["attempts"] for r in rows}
    again = sweep_into(tmp_path, out)
    assert {r["run_id"]: r["attempts"] for r in again} == attempts and finals(again) == before
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # nothing was trained again


# ----------------------------------------------------------------------------------------------
# 6. Finished runs whose weights were lost


def test_a_finished_run_whose_weights_are_gone_or_cut_short_is_trained_again(tmp_path, capsys):
    """Before: such a run still counted as done ("4/4 runs finished"). Now the start warns, naming
    the file, and trains those runs again (attempts 2); the whole ones are left alone. The two are
    batch 2's runs, so they train again in the same batch, to the same numbers."""
    out = tmp_path / "out"
    before = finals(sweep_into(tmp_path, out))
    removed, cut = (st.run_dir(out, i) / "weights.safetensors" for i in run_ids(tmp_path)[2:])
    removed.unlink()
    cut.write_bytes(cut.read_bytes()[:100])
    capsys.readouterr()
    rows = {r["run_id"]: r for r in sweep_into(tmp_path, out)}
    err = capsys.readouterr().err
    assert str(removed) in err and str(cut) in err
    assert sorted(r["attempts"] for r in rows.values()) == [1, 1, 2, 2]
    assert rows[removed.parent.name]["attempts"] == rows[cut.parent.name]["attempts"] == 2
    assert finals(rows.values()) == before  # float64, same batches: the same numbers again
    assert all(torch.isfinite(t).all() for p in (removed, cut) for t in load_file(str(p)).values())


def test_a_busy_directory_is_one_line_from_every_command_that_trains(tmp_path, capsys):
    """ttb ood, approx and reproduce reach the lock through run_sweep too: the boundary in main
    prints its message as one line (a UserError), not a traceback."""
    from experiments.commands.errors import describe
    from experiments.sweeps.lock import DirectoryLocked

    message = describe(DirectoryLocked(f"{tmp_path} is in use by process 1234 (another ttb sweep)"))
    assert message == f"{tmp_path} is in use by process 1234 (another ttb sweep)"
