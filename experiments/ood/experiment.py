"""Out-of-distribution value generalisation: positional versus standard transformers (`ttb ood`).

The config (:mod:`experiments.ood.config`) expands into one :class:`SeqRun` per (n, task, model
kind, seed); they train through the sweep engine (run ids, the SQLite store, resume after a kill,
`ttb runs` / `ttb export`, local or Ray backend), the seeds of one (n, task, kind) as one batch.
Then every finished model is evaluated at the training range (c = c_train, in distribution) and at
every test c: its relative squared error (``sequences.evaluate``: mse / mean target^2, so 1 means
no better than predicting 0). The table holds, per (model kind, task, n, c), the median and the
worst error over seeds.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from constructions.model import load_weights
from experiments.common.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from experiments.common.devices import pick_device
from experiments.ood import sequences as S
from experiments.ood.config import OODConfig, load_config, parse_config  # noqa: F401  (the command reads them here)
from experiments.plots.ood import error_vs_c
from experiments.sweeps import store as st
from experiments.sweeps.runner import run_sweep
from experiments.sweeps.spec import Sweep, SweepOptions
from synthetic.algorithmic import SubIntervals, ValueRange

TABLE_COLUMNS = ("model_kind", "task", "n", "c", "median_error", "worst_error")


def sweep(cfg: OODConfig) -> Sweep:
    """The config's runs as a sweep of the sequence family (every seed group one batch)."""
    runs = cfg.runs()
    options = SweepOptions(name=cfg.name, max_models_per_batch=max(len(cfg.seeds), 1), device=cfg.device,
                           backend=cfg.backend)
    return Sweep(options, runs, [r.label for r in runs], (S.SEQUENCE,))


def evaluation_ranges(cfg: OODConfig) -> list[tuple[float, ValueRange | SubIntervals]]:
    """(c, range): the training range first (in distribution), then every test range (with
    ``sub_intervals``: sub-intervals of [-c_train, c_train], then sub-intervals of [-c, c] not inside it)."""
    protocol = cfg.protocol()
    return [(cfg.c_train, protocol.train_range)] + list(zip(cfg.test_cs, protocol.test_ranges()))


def run(cfg: OODConfig, out, *, device=None, backend: str | None = None, progress: bool = True,
        autocast: str | None = None) -> pd.DataFrame:
    """Train every run of ``cfg`` into ``out`` (resuming what is there), then evaluate every model:
    one row per (model kind, task, n, seed, c) with error, mse, final training loss and whether c is
    the training range."""
    plan = sweep(cfg)
    run_sweep(plan, out, backend=backend, device=device, progress=progress, autocast=autocast)
    device = pick_device(device or cfg.device)
    groups: dict[str, list[S.SeqRun]] = {}
    for r in plan.runs:
        groups.setdefault(r.group_key(), []).append(r)
    return pd.DataFrame([row for runs in groups.values() for row in _eval_rows(cfg, runs, Path(out), device)])


def _eval_rows(cfg: OODConfig, runs: list[S.SeqRun], out: Path, device) -> list[dict]:
    """Evaluate the finished models of one (n, task, kind) group, read back from their run directories."""
    first = runs[0]
    dirs = [st.run_dir(out, r.run_id) for r in runs]
    theta = torch.cat([S.FlatSpec.of(first.model_config()).flatten(load_weights(d / "weights.safetensors")[1])
                       for d in dirs]).to(device=device, dtype=S.DTYPES[first.dtype])
    losses = [st.read_result(d)["final_loss"] for d in dirs]
    rows = []
    for i, (c, values) in enumerate(evaluation_ranges(cfg)):
        ev = S.evaluate(first.model_config(), first.algorithmic_task(), first.model_kind, first.shape.scratch, theta,
                        [r.seed for r in runs], values, cfg.eval_batch_size)
        rows += [{"model_kind": r.model_kind, "task": r.task, "n": r.n, "c": c, "seed": r.seed, "in_distribution": i == 0,
                  "error": float(ev["error"][k]), "mse": float(ev["mse"][k]),
                  "final_train_loss": float("nan") if losses[k] is None else float(losses[k])}
                 for k, r in enumerate(runs)]
    return rows


def summarize(per_model: pd.DataFrame) -> pd.DataFrame:
    """Median and worst (largest) error over seeds per (model kind, task, n, c)."""
    g = per_model.groupby(["model_kind", "task", "n", "c"], sort=True)["error"]
    table = g.agg(median_error="median", worst_error="max").reset_index()
    return table[list(TABLE_COLUMNS)]


def figure(table: pd.DataFrame):
    return error_vs_c(table)


def write(out: Path, table: pd.DataFrame, per_model: pd.DataFrame, cfg: OODConfig) -> list[Path]:
    """table.csv, per_model.csv, config.json and the figure (PNG, SVG and its CSV), each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "table.csv", out / "per_model.csv", out / "config.json", out / "error_vs_c.png",
             out / "error_vs_c.svg", out / "error_vs_c.csv"]
    atomic_write_text(paths[0], table.to_csv(index=False))
    atomic_write_text(paths[1], per_model.to_csv(index=False))
    plateau = None if cfg.plateau is None else cfg.plateau._asdict()
    atomic_write_json(paths[2], {**cfg.__dict__, "shape": dict(cfg.shape), "plateau": plateau})
    fig = figure(table)
    fig.tight_layout()
    for path, fmt in ((paths[3], "png"), (paths[4], "svg")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=110)
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
    atomic_write_text(paths[5], table.to_csv(index=False))
    return paths
