"""The Ray backend: chunks as Ray tasks on a local, loopback-only Ray instance, same store as local."""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend is an optional extra (pip install ray)")

from experiments.sweeps import spec as sw  # noqa: E402
from experiments.sweeps.runner import run_sweep  # noqa: E402
from experiments.sweeps.store import Store  # noqa: E402

SWEEP = """
[sweep]
name = "ray-tiny"
max_models_per_batch = 3
[task]
d = 3
n_points = 5
eval_batch_size = 16
[model]
n_layers = 1
d_model = 16
n_heads = 2
[train]
steps = 10
batch_size = 8
log_every = 10
checkpoint_every = 10
dtype = "float64"
[grid]
"train.seed" = [0, 1, 2]
"""

COMPARED = ("status", "steps_done", "final_loss", "final_nmse", "eval_mse", "eval_nmse", "label", "config")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # A fresh single-node instance inside this test process's machine; nothing joins from outside.
    # (Ray 2.x replaces a 127.0.0.1 node address by the machine's own, so none is passed.)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def stored(out) -> dict:
    with Store(out) as store:
        return {r["run_id"]: {f: r[f] for f in COMPARED} for r in store.rows()}


def test_ray_backend_fills_the_same_store_as_the_local_backend(tmp_path, local_ray):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    sweep = sw.load_sweep(path)
    run_sweep(sweep, tmp_path / "ray", backend="ray", device="cpu", progress=False)
    run_sweep(sweep, tmp_path / "local", backend="local", device="cpu", progress=False)
    via_ray, local = stored(tmp_path / "ray"), stored(tmp_path / "local")
    assert via_ray.keys() == local.keys() and len(local) == 3
    for run_id, row in local.items():
        for field, value in row.items():
            got = via_ray[run_id][field]
            # Ray workers may run with another thread count: float64 round-off only.
            assert got == pytest.approx(value, rel=1e-9) if isinstance(value, float) else got == value
    names = sorted(p.name for p in (tmp_path / "ray" / "runs" / next(iter(local))).iterdir())
    assert names == ["config.json", "eval.csv", "metrics.csv", "result.json", "weights.safetensors"]
