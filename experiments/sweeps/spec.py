"""Sweeps: a TOML file -> runs (grid expansion) -> batch groups -> trained, stored results.

Sweep file schema (every section optional except what the runs need; unknown keys are errors)::

    [sweep]                      how to run (not part of any run's identity)
    name = "demo"
    max_models_per_batch = 32    models per batched step
    device = "auto"              auto | cpu | cuda | cuda:1 | mps
    compile = false              torch.compile the training step
    backend = "local"            local | ray
    tensorboard = false          also write TensorBoard scalars per run under <out>/tensorboard/<run_id>/
                                 (the `tensorboard` extra)

    [task]   d, n_points, noise_std, kind, condition_number, basis_seed, w_std, format,
             eval_batch_size                                  (experiments.training.config.TaskSpec)
    [model]  n_layers, d_model, n_heads, d_head, d_mlp, attention, beta, mlp, norm,
             final_norm, residual, bias, mask, init_std       (ModelSpec)
    [train]  steps, batch_size, lr, beta1, beta2, eps, weight_decay, warmup_steps, min_lr_ratio,
             grad_clip, seed, data_seed, dtype, log_every, checkpoint_every, early_stop_patience,
             early_stop_min_delta, early_stop_target, data_on  (TrainSpec)
    [train.curriculum]  dims_start, dims_inc, points_start, points_inc, interval

    [grid]                       "section.field" = [values]: the product of all lists
    "train.seed" = [0, 1, 2]
    "task.noise_std" = [0.0, 0.5]
    [[grid.zip]]                 lists of equal length, varied together (one axis of the product)
    "train.lr" = [1e-3, 3e-4]
    "train.warmup_steps" = [10, 50]

Every expanded run is validated before anything trains. A run's id is the hash of its resolved
config; runs with equal ``RunConfig.group_key`` (and equal checkpoint step) train batched, in chunks
of at most ``max_models_per_batch``.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from experiments.common.devices import check_device_name
from experiments.common.validate import ConfigError, boolean, choice, integer, read_toml, string
from experiments.sweeps import store as st
from experiments.training import regression
from experiments.training.config import RunConfig
from experiments.training.trainer import AUTOCAST

BACKENDS = ("local", "ray")
SECTIONS = ("sweep", "task", "model", "train", "grid")


@dataclass(frozen=True)
class SweepOptions:
    name: str = "sweep"
    max_models_per_batch: int = 32
    device: str = "auto"
    compile: bool = False
    backend: str = "local"
    autocast: str | None = None  # "bfloat16": mixed precision on accelerators (not part of any run's identity)
    tensorboard: bool = False  # also write TensorBoard scalars (not part of any run's identity)

    def __post_init__(self):
        string("sweep.name", self.name)
        integer("sweep.max_models_per_batch", self.max_models_per_batch, 1)
        check_device_name("sweep.device", self.device)
        boolean("sweep.compile", self.compile)
        choice("sweep.backend", self.backend, BACKENDS)
        choice("sweep.autocast", self.autocast, (None, *AUTOCAST))
        boolean("sweep.tensorboard", self.tensorboard)


@dataclass(frozen=True)
class Family:
    """A kind of run the engine trains. Its run specs are frozen dataclasses with ``run_id``,
    ``to_dict()`` (the resolved config, hashed into the id), ``group_key()`` (equal keys train in
    one batch), ``steps`` and ``shape_text()``; ``make_trainer(runs, device=, compile=)`` gives the
    :class:`experiments.training.trainer.Trainer` of one batch group."""

    kind: str
    make_trainer: Callable


REGRESSION = Family("regression", regression.make_trainer)


def kind_of(run) -> str:
    """A run's family kind: its resolved config's "kind" ("regression" when absent: the in-context
    regression configs predate the other kinds, and their run ids must not change)."""
    return run.to_dict().get("kind", REGRESSION.kind)


@dataclass(frozen=True)
class Sweep:
    options: SweepOptions
    runs: Sequence  # run specs (of the families below)
    labels: list[str]  # per run: its grid values, "train.seed=0 task.noise_std=0.5"
    families: tuple[Family, ...] = (REGRESSION,)

    def family_of(self, run) -> Family:
        kind = kind_of(run)
        for family in self.families:
            if family.kind == kind:
                return family
        raise ValueError(f"run {run.run_id} is of kind {kind!r}, which this sweep has no family for")


@dataclass(frozen=True)
class Chunk:
    """Runs that train together: one group key, one starting step, at most max_models_per_batch."""

    group_key: str
    start_step: int
    runs: list


# ----------------------------------------------------------------------------------------------
# Parsing and grid expansion (pure)


def load_sweep(path) -> Sweep:
    data = read_toml(path, "sweep file")
    return parse_sweep(data)


def parse_sweep(data: dict) -> Sweep:
    """Validate a parsed sweep file and expand it; raises ConfigError naming the field."""
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; allowed are {list(SECTIONS)}")
    options = _options(data.get("sweep", {}))
    base = {name: data.get(name, {}) for name in ("task", "model", "train")}
    runs, labels = [], []
    for i, point in enumerate(expand_grid(data.get("grid", {}))):
        label = " ".join(f"{k}={v!r}" for k, v in point.items())
        try:
            runs.append(RunConfig.from_dict(_explicit_beta(_override(base, point))))
        except ConfigError as err:
            raise ConfigError(f"{err}" + (f" (in grid point {i}: {label})" if point else "")) from None
        labels.append(label)
    return _deduplicated(Sweep(options, runs, labels))


def _explicit_beta(data: dict) -> dict:
    """A resolved run stores "1 / sqrt(d_head)" as model.beta = 0 (the encoding its run id hashes),
    so a user's explicit 0 would silently mean that default: refuse it instead."""
    beta = data.get("model", {}).get("beta") if isinstance(data.get("model"), dict) else None
    if beta is not None and not isinstance(beta, bool) and beta == 0:
        raise ConfigError("model.beta must be a positive inverse temperature, got 0 (leave model.beta out "
                          "for the usual 1 / sqrt(d_head))")
    return data


def _options(data) -> SweepOptions:
    if not isinstance(data, dict):
        raise ConfigError(f"[sweep] must be a table, got {data!r}")
    allowed = [f.name for f in fields(SweepOptions)]
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown field sweep.{key}; allowed fields of [sweep] are {allowed}")
    return SweepOptions(**data)


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _axis(where: str, table: dict) -> list[dict]:
    """One axis of the product: a plain key's list, or a zip group's paired lists."""
    flat = _flatten(table)
    for key, values in flat.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key} must be a non-empty list of values, got {values!r}")
    lengths = {len(v) for v in flat.values()}
    if len(lengths) > 1:
        raise ConfigError(f"{where}: zipped lists must have equal lengths, got "
                          f"{ {k: len(v) for k, v in flat.items()} }")
    return [dict(zip(flat, combo)) for combo in zip(*flat.values())]


def expand_grid(grid: dict) -> list[dict]:
    """[grid] -> one dict of dotted overrides per run (product over keys; zip groups paired)."""
    if not isinstance(grid, dict):
        raise ConfigError(f"[grid] must be a table, got {grid!r}")
    grid = dict(grid)
    zips = grid.pop("zip", [])
    zips = [zips] if isinstance(zips, dict) else zips
    if not isinstance(zips, list) or not all(isinstance(z, dict) for z in zips):
        raise ConfigError("grid.zip must be a table or an array of tables ([[grid.zip]])")
    axes = [_axis("grid", {k: v}) for k, v in _flatten(grid).items()]
    axes += [_axis(f"grid.zip[{i}]", z) for i, z in enumerate(zips)]
    points = [dict(kv for part in combo for kv in part.items()) for combo in itertools.product(*axes)]
    keys = [k for p in points[:1] for k in p]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"grid: a field appears twice in the grid: {keys}")
    return points


def _override(base: dict, point: dict) -> dict:
    out = copy.deepcopy(base)
    for dotted, value in point.items():
        parts = dotted.split(".")
        if parts[0] not in ("task", "model", "train") or len(parts) < 2:
            raise ConfigError(f"grid key {dotted!r} must be 'task.FIELD', 'model.FIELD' or 'train.FIELD'")
        table = out
        for part in parts[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"grid key {dotted!r}: {part} is not a table")
        table[parts[-1]] = value
    return out


def _deduplicated(sweep: Sweep) -> Sweep:
    seen, runs, labels = set(), [], []
    for run, label in zip(sweep.runs, sweep.labels):
        if run.run_id not in seen:
            seen.add(run.run_id)
            runs.append(run)
            labels.append(label)
    return replace(sweep, runs=runs, labels=labels)


def chunks(runs: Sequence, start_steps: dict[str, int], max_models: int) -> list[Chunk]:
    """Group by (group key, checkpoint step) in first-seen order; split groups into chunks."""
    groups: dict[tuple[str, int], list] = {}
    for run in runs:
        groups.setdefault((run.group_key(), start_steps.get(run.run_id, 0)), []).append(run)
    return [Chunk(key, step, members[i:i + max_models])
            for (key, step), members in groups.items() for i in range(0, len(members), max_models)]


# ----------------------------------------------------------------------------------------------
# Planning against a store (reads the disk)


def register(sweep: Sweep, out: Path, store: st.Store) -> None:
    """Create run directories and pending rows (idempotent)."""
    rows = []
    for run, label in zip(sweep.runs, sweep.labels):
        directory = st.run_dir(out, run.run_id)
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "config.json").exists():
            st.atomic_write_json(directory / "config.json", run.to_dict())
        rows.append({"run_id": run.run_id, "label": label, "group_key": run.group_key(),
                     "config": json.dumps(run.to_dict(), sort_keys=True),
                     "path": str(directory.relative_to(out))})
    store.register(rows)
    st.atomic_write_json(out / "sweep.json", {"options": sweep.options.__dict__,
                                              "runs": [{"run_id": r.run_id, "label": lab, "group_key": r.group_key()}
                                                       for r, lab in zip(sweep.runs, sweep.labels)]})


def plan(sweep: Sweep, out: Path, store: st.Store) -> tuple[list[Chunk], list[dict]]:
    """(chunks still to train, results found on disk but not yet in the store)."""
    status = store.statuses()
    todo, adopt = [], []
    for run in sweep.runs:
        if status.get(run.run_id) in st.FINISHED:
            continue
        result = st.read_result(st.run_dir(out, run.run_id))
        if result is not None:
            adopt.append(result)
        else:
            todo.append(run)
    steps = {r.run_id: st.checkpoint_step(st.run_dir(out, r.run_id)) for r in todo}
    return chunks(todo, steps, sweep.options.max_models_per_batch), adopt


def describe(sweep: Sweep) -> str:
    """The expanded runs and the batch groups (``ttb sweep --dry-run``)."""
    lines = [f"{len(sweep.runs)} runs"]
    lines += [f"  {r.run_id}  {label or '(no grid)'}" for r, label in zip(sweep.runs, sweep.labels)]
    groups = chunks(sweep.runs, {}, sweep.options.max_models_per_batch)
    lines.append(f"{len(groups)} batches (max_models_per_batch = {sweep.options.max_models_per_batch})")
    for i, c in enumerate(groups):
        lines.append(f"  batch {i}: K={len(c.runs)}  {c.runs[0].shape_text()}  runs {' '.join(r.run_id for r in c.runs)}")
    return "\n".join(lines)
