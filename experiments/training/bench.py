"""`ttb bench train`: THE trainer against a plain PyTorch loop, in one run.

Three ways to train K models of one shape, on the same data with the same hyperparameters:

    plain     what people write by hand (:mod:`experiments.training.plain`): an ``nn.Module``,
              ``torch.optim.AdamW``, ``loss.backward()``, one model after another
    loop      THE trainer with K = 1, one model after another
    batched   THE trainer with all K models in one step

Reported per (shape, K): model-steps per second of each (``plain_steps_per_s``,
``loop_steps_per_s``, ``batched_steps_per_s``), ``ratio_vs_plain`` = batched / plain (the number
that counts) and ``ratio`` = batched / loop. Every model costs the same, so the two one-by-one
ways time min(K, ``LOOP_MODELS``) models and report their rate per model-step, and the batched
way times fewer steps when K > 8 (each does K models' work). The three are timed
in turn, ``ROUNDS`` times, and each keeps its fastest round (a background process slows a round,
never speeds one up). Warm-up steps are not timed; on a GPU the device is synchronised before each
clock read. On CUDA also the achieved
model FLOP/s of the batched way and its fraction of the card's peak, where model FLOPs per
model-step = 6 * params * tokens (forward + backward) + 12 * layers * B * T^2 * width (attention
scores and mixing, forward + backward), tokens = B * T.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from experiments.common.devices import pick_device
from experiments.training.config import RunConfig
from experiments.training.plain import PlainTrainer
from experiments.training.regression import make_trainer
from experiments.training.trainer import AUTOCAST

# name -> the run's task / model / train fields (d_model, n_heads, ... as in a sweep file).
SHAPES = {
    # one linear self-attention layer on one token per example (von Oswald et al.): overhead-bound
    "lsa": {"task": {"d": 10, "n_points": 11, "format": "example"},
            "model": {"n_layers": 1, "d_model": 11, "n_heads": 1, "d_head": 11, "attention": "linear", "mlp": "none",
                      "norm": "none", "final_norm": False, "bias": False},
            "train": {"batch_size": 512, "grad_clip": 0.0}},
    # the smallest GPT-2 of Garg et al.: 3 layers, width 64, 2 heads, d = 5, 11 points, batch 64
    "gpt2_small": {"task": {"d": 5, "n_points": 11, "format": "interleaved"},
                   "model": {"n_layers": 3, "d_model": 64, "n_heads": 2, "mlp": "gelu_tanh"},
                   "train": {"batch_size": 64}},
    # 2 layers, width 64, 4 heads, 40 tokens, batch 4: almost all overhead
    "tiny": {"task": {"d": 20, "n_points": 20, "format": "interleaved"},
             "model": {"n_layers": 2, "d_model": 64, "n_heads": 4}, "train": {"batch_size": 4}},
    # 4 layers, width 64, 80 tokens, batch 64: compute-bound on a CPU
    "compute": {"task": {"d": 20, "n_points": 40, "format": "interleaved"},
                "model": {"n_layers": 4, "d_model": 64, "n_heads": 4}, "train": {"batch_size": 64}},
}
WARMUP_STEPS = 3
LOOP_MODELS = 2
ROUNDS = 3

# Dense peak FLOP/s by card (vendor data sheets); "tf32" = float32 matmuls on tensor cores.
PEAK_FLOPS = {
    "H100 PCIe": {"float32": 51e12, "tf32": 378e12, "bfloat16": 756e12},
    "H100 NVL": {"float32": 60e12, "tf32": 417.5e12, "bfloat16": 835e12},
    "H100": {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12},  # SXM
    "H200": {"float32": 67e12, "tf32": 494.7e12, "bfloat16": 989.4e12},
    "A100": {"float32": 19.5e12, "tf32": 156e12, "bfloat16": 312e12},
}


def shape_runs(shape: str, K: int) -> list[RunConfig]:
    """K runs of the named shape (seeds 0 .. K-1), long enough that no schedule ends while timed."""
    s = SHAPES[shape]
    return [RunConfig.from_dict({"task": s["task"], "model": s["model"],
                                 "train": {"steps": 10**6, "lr": 1e-4, "log_every": 10**6, "seed": k, **s["train"]}})
            for k in range(K)]


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


def timed(steppers: list, steps: int, device: torch.device, warmup: int = WARMUP_STEPS) -> float:
    """Warm every stepper up, then seconds for ``steps`` steps of each, one after another."""
    for step in steppers:
        for _ in range(warmup):
            step()
    _sync(device)
    start = time.perf_counter()
    for step in steppers:
        for _ in range(steps):
            step()
    _sync(device)
    return time.perf_counter() - start


def _trainer_stepper(runs: list[RunConfig], device, compile: bool = False, autocast: str | None = None):
    trainer = make_trainer(runs, device=device, compile=compile, autocast=autocast)
    state = trainer.initial_state()
    return trainer, lambda: trainer.step(state)


def measure(shape: str, K: int, steps: int, device: torch.device, compile: bool = False,
            autocast: str | None = None) -> dict:
    runs = shape_runs(shape, K)
    few = runs[:LOOP_MODELS]
    plain = [PlainTrainer(r, device=device, autocast=autocast).step for r in few]
    loop = [_trainer_stepper([r], device, compile, autocast)[1] for r in few]
    batched, step = _trainer_stepper(runs, device, compile, autocast)
    best = {"plain": float("inf"), "loop": float("inf"), "batched": float("inf")}
    batched_steps = max(2, -(-steps * 8 // K))  # a K-model step does K models' work: fewer of them
    for i in range(ROUNDS):
        for name, steppers, n in (("plain", plain, steps), ("loop", loop, steps), ("batched", [step], batched_steps)):
            best[name] = min(best[name], timed(steppers, n, device, WARMUP_STEPS if i == 0 else 0) / n)
    plain_s, loop_s, batched_s = (best[k] * steps for k in ("plain", "loop", "batched"))
    row = {"shape": shape, "K": K, "steps": steps, "device": str(device), "autocast": autocast,
           "plain_steps_per_s": len(few) * steps / plain_s, "loop_steps_per_s": len(few) * steps / loop_s,
           "batched_steps_per_s": K * steps / batched_s}
    row["ratio"] = row["batched_steps_per_s"] / row["loop_steps_per_s"]
    row["ratio_vs_plain"] = row["batched_steps_per_s"] / row["plain_steps_per_s"]
    if device.type == "cuda":
        name, peak = peak_flops(device, AUTOCAST.get(autocast, torch.float32))
        flops = model_flops(runs[0], batched.spec.n_params)
        row.update(device_name=name, model_flops_per_step=flops,
                   achieved_flops_per_s=flops * row["batched_steps_per_s"], peak_flops_per_s=peak,
                   fraction_of_peak=None if peak is None else flops * row["batched_steps_per_s"] / peak)
    return row


def run(ks=(1, 8, 32), steps: int = 5, device: str | None = None, shapes: list[str] | None = None,
        progress: bool = True, compile: bool = False, autocast: str | None = None) -> list[dict]:
    """One row per (shape, K): see the module docstring."""
    shapes = list(SHAPES) if shapes is None else shapes
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"shape must be one of {list(SHAPES)}, got {s!r}")
    if steps < 1 or any(int(k) < 1 for k in ks):
        raise ValueError(f"steps and every K must be >= 1, got steps={steps}, ks={tuple(ks)}")
    dev = pick_device(device)
    jobs = [(s, int(k)) for s in shapes for k in ks]
    rows = []
    for s, k in tqdm(jobs, desc="bench train", disable=not progress):
        try:
            rows.append(measure(s, k, steps, dev, compile, autocast))
        except torch.OutOfMemoryError:  # the largest K that fits is the last row of this shape
            rows.append({"shape": s, "K": k, "device": str(dev), "autocast": autocast, "error": "out of memory"})
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def format_table(rows: list[dict]) -> str:
    on_gpu = any("achieved_flops_per_s" in r for r in rows)
    head = (f"{'shape':10} {'K':>4} {'plain':>9} {'loop':>9} {'batched':>9} {'vs plain':>9} {'vs loop':>8}"
            + (f" {'TFLOP/s':>8} {'of peak':>8}" if on_gpu else ""))
    lines = ["model-steps per second", head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['shape']:10} {r['K']:4d}  {r['error']}")
            continue
        line = (f"{r['shape']:10} {r['K']:4d} {r['plain_steps_per_s']:9.1f} {r['loop_steps_per_s']:9.1f} "
                f"{r['batched_steps_per_s']:9.1f} {r['ratio_vs_plain']:8.2f}x {r['ratio']:7.2f}x")
        if on_gpu:
            frac = r.get("fraction_of_peak")
            line += f" {r['achieved_flops_per_s'] / 1e12:8.2f} " + ("       -" if frac is None else f"{frac:8.1%}")
        lines.append(line)
    device = rows[0].get("device_name", rows[0]["device"]) if rows else "-"
    lines.append(f"device: {device}, {torch.get_num_threads()} threads; {rows[0]['steps'] if rows else 0} timed "
                 f"steps, best of {ROUNDS} rounds; plain and loop time {LOOP_MODELS} models one after another")
    return "\n".join(lines)
