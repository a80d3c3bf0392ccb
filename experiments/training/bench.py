"""`ttb bench train`: K models trained one after another vs K models batched, in one run.

Both ways use the same trainer and forward pass on the same settings: the loop trains K separate
K = 1 trainers (own parameters, own optimiser state) one after another; the batched way is one
trainer with K models. Warm-up steps are not timed; on a GPU the device is synchronised before
each clock read. Reported: model-steps per second for both and their ratio; on CUDA also the
achieved model FLOP/s of the batched way and its fraction of the card's peak, where model FLOPs per
model-step = 6 * params * tokens (forward + backward) + 12 * layers * B * T^2 * width (attention
scores and mixing, forward + backward), tokens = B * T.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from experiments.common.devices import pick_device
from experiments.training.config import RunConfig
from experiments.training.regression import make_trainer
from experiments.training.trainer import Trainer

# name -> (layers, width, tokens, batch): an overhead-bound and a compute-bound shape.
SHAPES = {
    "tiny": {"n_layers": 2, "d_model": 64, "n_tokens": 40, "batch_size": 4},
    "compute": {"n_layers": 4, "d_model": 64, "n_tokens": 80, "batch_size": 64},
}
D_INPUT = 20  # regression dimension d (tokens carry d + 1 features)
WARMUP_STEPS = 3

# Dense peak FLOP/s by card (vendor data sheets); "tf32" = float32 matmuls on tensor cores.
PEAK_FLOPS = {
    "H100 PCIe": {"float32": 51e12, "tf32": 378e12, "bfloat16": 756e12},
    "H100 NVL": {"float32": 60e12, "tf32": 417.5e12, "bfloat16": 835e12},
    "H100": {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12},  # SXM
    "H200": {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12},
    "A100": {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12},
}


def shape_runs(shape: str, K: int) -> list[RunConfig]:
    s = SHAPES[shape]
    n_points = s["n_tokens"] // 2  # interleaved: two tokens per point
    return [RunConfig.from_dict({
        "task": {"d": D_INPUT, "n_points": n_points, "format": "interleaved"},
        "model": {"n_layers": s["n_layers"], "d_model": s["d_model"], "n_heads": 4},
        "train": {"steps": 10**6, "batch_size": s["batch_size"], "seed": k, "lr": 1e-4, "log_every": 10**6},
    }) for k in range(K)]


def model_flops(run: RunConfig, n_params: int) -> float:
    """Model FLOPs of one training step of one model (see the module docstring)."""
    B, T = run.train.batch_size, run.task.n_tokens
    return 6.0 * n_params * B * T + 12.0 * run.model.n_layers * B * T * T * run.model.d_model


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[str, float | None]:
    """(card name, dense peak FLOP/s for dtype) or (name, None) for cards not in the table."""
    if device.type != "cuda":
        return str(device), None
    name = torch.cuda.get_device_name(device)
    kind = "bfloat16" if dtype == torch.bfloat16 else (
        "tf32" if torch.backends.cuda.matmul.allow_tf32 else "float32")
    for card, peaks in PEAK_FLOPS.items():  # most specific names first
        if card in name:
            return name, peaks[kind]
    return name, None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed_steps(trainers: list[Trainer], steps: int, device: torch.device) -> float:
    """Warm each trainer up, then time ``steps`` steps of each, one trainer after another."""
    states = [t.initial_state() for t in trainers]
    for t, s in zip(trainers, states):
        for _ in range(WARMUP_STEPS):
            t.step(s)
    _sync(device)
    start = time.perf_counter()
    for t, s in zip(trainers, states):
        for _ in range(steps):
            t.step(s)
    _sync(device)
    return time.perf_counter() - start


def measure(shape: str, K: int, steps: int, device: torch.device) -> dict:
    runs = shape_runs(shape, K)
    loop_s = _timed_steps([make_trainer([r], device=device) for r in runs], steps, device)
    batched = make_trainer(runs, device=device)
    batched_s = _timed_steps([batched], steps, device)
    row = {"shape": shape, "K": K, "steps": steps, "device": str(device),
           "loop_steps_per_s": K * steps / loop_s, "batched_steps_per_s": K * steps / batched_s}
    row["ratio"] = row["batched_steps_per_s"] / row["loop_steps_per_s"]
    name, peak = peak_flops(device)
    if device.type == "cuda":
        flops = model_flops(runs[0], batched.spec.n_params)
        row.update(device_name=name, model_flops_per_step=flops,
                   achieved_flops_per_s=flops * row["batched_steps_per_s"], peak_flops_per_s=peak,
                   fraction_of_peak=None if peak is None else flops * row["batched_steps_per_s"] / peak)
    return row


def run(ks=(1, 8, 32), steps: int = 20, device: str | None = None, shapes: list[str] | None = None,
        progress: bool = True) -> list[dict]:
    """One row per (shape, K): loop and batched model-steps per second, their ratio (and FLOP/s on CUDA)."""
    shapes = list(SHAPES) if shapes is None else shapes
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"shape must be one of {list(SHAPES)}, got {s!r}")
    if steps < 1 or any(int(k) < 1 for k in ks):
        raise ValueError(f"steps and every K must be >= 1, got steps={steps}, ks={tuple(ks)}")
    dev = pick_device(device)
    jobs = [(s, int(k)) for s in shapes for k in ks]
    return [measure(s, k, steps, dev) for s, k in tqdm(jobs, desc="bench train", disable=not progress)]


def format_table(rows: list[dict]) -> str:
    on_gpu = any("achieved_flops_per_s" in r for r in rows)
    head = f"{'shape':8} {'K':>4} {'loop model-steps/s':>19} {'batched model-steps/s':>22} {'ratio':>7}"
    lines = [head + (f" {'TFLOP/s':>8} {'of peak':>8}" if on_gpu else "")]
    for r in rows:
        line = (f"{r['shape']:8} {r['K']:4d} {r['loop_steps_per_s']:19.1f} {r['batched_steps_per_s']:22.1f} "
                f"{r['ratio']:6.1f}x")
        if on_gpu:
            frac = r.get("fraction_of_peak")
            line += f" {r['achieved_flops_per_s'] / 1e12:8.2f} " + ("       -" if frac is None else f"{frac:8.1%}")
        lines.append(line)
    device = rows[0].get("device_name", rows[0]["device"]) if rows else "-"
    lines.append(f"device: {device}; {rows[0]['steps'] if rows else 0} timed steps after {WARMUP_STEPS} warm-up")
    return "\n".join(lines)
