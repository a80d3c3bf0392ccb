"""`ttb bench algorithms`: the batched reference algorithms against a per-sample numpy loop.

Both sides fit every prefix 0 .. n of every prompt on the same float64 data: the batched side in one
call of :mod:`constructions.reference.algorithms` (``prefix=True``), the loop one prompt and one
prefix at a time (:mod:`constructions.reference.naive`). Each is timed best of ``repeats`` runs,
in one process, so that the ratio loop_s / batched_s compares the two under the same conditions.

Data: x ~ N(0, I / d), w ~ N(0, I), y = w.x without noise (so n >= d prefixes are interpolated).

Row keys: algorithm, prompts, d, n, batched_s, loop_s, ratio (loop_s / batched_s), max_abs_diff
(largest |batched - loop| over all prompts, prefixes and coordinates), threads (torch's), and load
(the 1-minute load average when the row was measured; other work on the machine slows both sides
but not always equally, so a ratio measured under load is less certain).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from constructions.reference import algorithms as A
from constructions.reference import naive


class Pair(NamedTuple):
    """One algorithm both ways: batched (x, y) -> (B, n + 1, d), and naive's per-prefix function."""

    batched: Callable
    loop: Callable
    settings: dict


ALGORITHMS = {
    "least_squares": Pair(lambda x, y: A.least_squares(x, y, prefix=True), naive.least_squares, {}),
    "ridge": Pair(lambda x, y: A.ridge(x, y, lam=0.1, prefix=True), naive.ridge, {"lam": 0.1}),
    "ridge_sum": Pair(lambda x, y: A.ridge(x, y, lam=1.0, prefix=True, convention="sum"), naive.ridge_sum,
                      {"lam": 1.0}),
    "gd": Pair(lambda x, y: A.gd(x, y, eta=0.5, n_steps=10, prefix=True)[-1], naive.gd, {"eta": 0.5, "n_steps": 10}),
    "newton": Pair(lambda x, y: A.newton(x, y, alpha=0.05, n_iter=10, prefix=True)[-1], naive.newton,
                   {"alpha": 0.05, "n_iter": 10}),
}


def sample(prompts: int, d: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The benchmark's data: x (prompts, n, d), y (prompts, n), float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(prompts, n, d, generator=gen, dtype=torch.float64) / d**0.5
    w = torch.randn(prompts, d, generator=gen, dtype=torch.float64)
    return x, (x @ w.unsqueeze(-1)).squeeze(-1)


def _best_time(fn: Callable, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _check(names: list[str], prompts: int, d: int, n: int, repeats: int) -> None:
    for name in names:
        if name not in ALGORITHMS:
            raise ValueError(f"--algorithms: unknown {name!r}; choose from {', '.join(ALGORITHMS)}")
    for arg, value in (("--prompts", prompts), ("--d", d), ("--n", n), ("--repeats", repeats)):
        if value < 1:
            raise ValueError(f"{arg} must be >= 1, got {value}")


def bench(prompts: int, d: int, n: int, names: list[str] | None = None, seed: int = 0,
          repeats: int = 3) -> list[dict]:
    """One row per algorithm (all of ALGORITHMS by default); see the module docstring."""
    names = list(ALGORITHMS) if names is None else names
    _check(names, prompts, d, n, repeats)
    x, y = sample(prompts, d, n, seed)
    x_np, y_np = x.numpy(), y.numpy()
    rows = []
    for name in names:
        pair, load = ALGORITHMS[name], _load()
        batched_s, got = _best_time(lambda: pair.batched(x, y), repeats)
        loop_s, want = _best_time(lambda: naive.every_prefix(pair.loop, x_np, y_np, **pair.settings), repeats)
        rows.append({"algorithm": name, "prompts": prompts, "d": d, "n": n, "batched_s": batched_s,
                     "loop_s": loop_s, "ratio": loop_s / batched_s,
                     "max_abs_diff": float(np.abs(got.numpy() - want).max()),
                     "threads": torch.get_num_threads(), "load": load})
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a table under a line naming the data, the threads and the load."""
    if not rows:
        return "no algorithms"
    first = rows[0]
    loads = ", ".join(f"{r['load']:.2f}" for r in rows)
    lines = [f"{first['prompts']} prompts, d={first['d']}, every prefix 0..{first['n']} "
             f"(float64, {first['threads']} threads, load average {loads})",
             f"{'algorithm':15} {'loop s':>9} {'batched s':>10} {'ratio':>8} {'max |diff|':>11}"]
    lines += [f"{r['algorithm']:15} {r['loop_s']:9.3f} {r['batched_s']:10.4f} {r['ratio']:7.1f}x "
              f"{r['max_abs_diff']:11.1e}" for r in rows]
    return "\n".join(lines)
