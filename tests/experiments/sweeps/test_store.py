"""The results store: atomic files, checkpoints without pickle, transactional rows."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys

import pytest
import torch

from constructions.model import ModelConfig, init, load_weights, save_weights, to_state_dict
from experiments.common import atomic
from experiments.sweeps import store as st


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic.atomic_write_json(target, {"x": 1})
    atomic.atomic_write_json(target, {"x": 2, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"x": 2, "nan": None}  # JSON has no NaN: null
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "w.bin"
    atomic.atomic_write_bytes(target, b"old")

    def half_then_crash(path):
        path.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.atomic_write_with(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_leftover_temporaries_of_a_killed_writer_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names a writer that is surely gone (pids are not reused this fast)
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / f".weights.safetensors.tmp-{dead.pid}").write_bytes(b"half")
    (tmp_path / "runs" / "r" / "config.json").write_text("{}")
    assert st.remove_temp_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "runs" / "r").iterdir()] == ["config.json"]


def test_checkpoint_round_trips_tensors_rng_state_and_metadata_without_pickle(tmp_path):
    gen = torch.Generator().manual_seed(7)
    torch.randn(3, generator=gen)
    tensors = {"theta": torch.randn(5, dtype=torch.float64), "rng": gen.get_state()}
    meta = {"step": 40, "best": float("inf"), "metrics": [{"step": 20, "loss": 0.5}]}
    st.save_checkpoint(tmp_path, tensors, meta)
    loaded, got_meta = st.load_checkpoint(tmp_path)
    assert st.checkpoint_step(tmp_path) == 40
    assert torch.equal(loaded["theta"], tensors["theta"]) and loaded["rng"].dtype == torch.uint8
    assert got_meta == {"step": 40, "best": None, "metrics": [{"step": 20, "loss": 0.5}]}
    restored = torch.Generator()
    restored.set_state(loaded["rng"])
    assert torch.equal(torch.randn(3, generator=restored), torch.randn(3, generator=gen))
    assert not (tmp_path / "checkpoint.safetensors").read_bytes().startswith(b"\x80")  # not a pickle


def test_write_final_writes_result_last_and_drops_the_checkpoint(tmp_path):
    cfg = ModelConfig(d_model=8, n_layers=1, n_heads=2, d_head=4, d_in=3, d_mlp=16)
    w = init(cfg, [torch.Generator().manual_seed(0)])
    st.save_checkpoint(tmp_path, {"theta": torch.zeros(1)}, {"step": 1})
    metrics = [{c: 1 if c in ("step", "n_points", "n_dims") else 0.25 for c in st.METRIC_COLUMNS}]
    st.write_final(tmp_path, lambda p: save_weights(p, cfg, w), metrics,
                   [{"n_examples": 0, "nmse": 1.0}], {"run_id": "r", "status": "done"})
    assert not (tmp_path / "checkpoint.safetensors").exists()
    digest = hashlib.sha256((tmp_path / "weights.safetensors").read_bytes()).hexdigest()
    assert st.read_result(tmp_path) == {"run_id": "r", "status": "done", "weights_sha256": digest}
    cfg2, w2 = load_weights(tmp_path / "weights.safetensors")
    assert cfg2 == cfg and all(torch.equal(a, b) for a, b in zip(to_state_dict(w).values(), to_state_dict(w2).values()))
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1] == "1,0.25,0.25,0.25,0.25,1,1"


def row(run_id: str) -> dict:
    return {"run_id": run_id, "label": "", "group_key": "g", "config": "{}", "path": f"runs/{run_id}"}


def test_register_is_idempotent_and_finishing_updates_one_row(tmp_path):
    with st.Store(tmp_path) as store:
        store.register([row("a"), row("b")])
        store.mark_running(["a"])
        store.register([row("a")])  # a restart registers again: nothing changes
        store.mark_finished([{"run_id": "a", "status": "done", "final_loss": 0.5, "steps_done": 10}])
        rows = {r["run_id"]: r for r in store.rows()}
    assert rows["a"]["status"] == "done" and rows["a"]["attempts"] == 1 and rows["a"]["final_loss"] == 0.5
    assert rows["b"]["status"] == "pending" and rows["b"]["attempts"] == 0


def test_a_failing_transaction_leaves_no_partial_rows(tmp_path):
    with st.Store(tmp_path) as store:
        broken = {k: v for k, v in row("b").items() if k != "path"}
        with pytest.raises(sqlite3.ProgrammingError):
            store.register([row("a"), broken])  # the second row fails after the first was inserted
        assert store.rows() == []


def test_varying_fields_names_only_what_differs():
    configs = [{"train": {"seed": s, "lr": 0.1}, "task": {"d": 3}} for s in (0, 1)]
    assert st.varying_fields(configs) == ["train.seed"]
