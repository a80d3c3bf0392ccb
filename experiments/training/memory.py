"""Will a batch of runs fit in memory? A rough estimate, checked before anything is allocated.

For K models of P parameters each, in the runs' dtype (e bytes), with batch size B, evaluation
batch size B_eval, T tokens, L layers, width D, MLP width M and H heads, the estimate counts

    parameters and optimiser state   K P e x 4                 (weights, gradients, Adam's two moments)
    training activations             K B T L (6 D + 2 M + 2 H T) e
                                     (kept for the backward pass: residual stream, norms, queries, keys
                                     and values, attention scores and weights, the MLP's hidden layer)
    evaluation activations           K B_eval T (4 D + M + H T) e   (no gradients: one layer live)

It is meant to catch sizes that cannot run at all (``model.d_model = 10**9``, ``train.batch_size =
10**9``) or cannot run now, not to tune a batch: a batch is refused when its estimate exceeds the
device's free memory (the machine's available RAM, /proc/meminfo's MemAvailable, for the CPU and
MPS, else its whole RAM; the GPU's free memory for CUDA). The error names the fields to lower:
those whose part is at least a tenth of the estimate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from experiments.common.devices import pick_device
from experiments.common.validate import ConfigError
from experiments.training.config import RunConfig
from experiments.training.optim import FlatSpec

# part of the estimate -> (what it is, the fields that make it smaller)
PARTS = {
    "state": ("parameters and optimiser state", "model.d_model, model.n_layers or model.d_mlp"),
    "train": ("training activations", "train.batch_size"),
    "eval": ("evaluation activations", "task.eval_batch_size"),
}


def estimate(runs: Sequence) -> dict[str, int]:
    """Bytes per part (keys of PARTS) for ``runs`` (RunConfigs of one batch group) trained together."""
    first = runs[0]
    cfg, task, K = first.model_config(), first.task, len(runs)
    e = torch.finfo(first.train.torch_dtype).bits // 8
    T, D, M, H = task.n_tokens, cfg.d_model, cfg.d_mlp, cfg.n_heads
    per_token_train = cfg.n_layers * cfg.n_loops * (6 * D + 2 * M + 2 * H * T)  # every applied block keeps its own
    per_token_eval = 4 * D + M + H * T
    return {"state": K * FlatSpec.of(cfg).n_params * e * 4,
            "train": K * first.train.batch_size * T * per_token_train * e,
            "eval": K * task.eval_batch_size * T * per_token_eval * e}


def device_memory(device: torch.device) -> int | None:
    """Free bytes of ``device``'s memory (the machine's available RAM unless CUDA); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a platform without these sysconf names
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_fits(runs: Sequence, device: torch.device) -> None:
    """ConfigError naming the fields to lower if ``runs`` cannot fit on ``device`` (see the module)."""
    parts, available = estimate(runs), device_memory(device)
    total = sum(parts.values())
    if available is None or total <= available:
        return
    lower = [PARTS[k][1] for k, v in parts.items() if v >= total / 10]
    if len(runs) > 1:
        lower.append(f"sweep.max_models_per_batch ({len(runs)} models train together)")
    shown = ", ".join(f"{PARTS[k][0]} {gib(v)}" for k, v in parts.items())
    raise ConfigError(f"lower {'; or '.join(lower)}: this batch needs about {gib(total)} ({shown}) but the "
                      f"{device.type} device has {gib(available)} free")


def check_batches(batches: Sequence[Sequence], device=None) -> None:
    """:func:`check_fits` for every batch (a list of runs) of a sweep on ``device`` (a name, as in
    ``--device``, or a torch.device), so a batch that cannot fit fails before the first one trains.
    Batches of other run kinds than RunConfig (no estimate for them yet) pass."""
    where = pick_device(device)
    for runs in batches:
        if runs and isinstance(runs[0], RunConfig):
            check_fits(runs, where)
