"""What a reproduction is, how it runs, and the rows it reports.

A :class:`Reproduction` names a paper, the claim it reproduces, one sweep (TOML-shaped dict) per
scale ("cpu": the same phenomenon on 2 cores in minutes; "paper": the published setup), a
``measure`` function from the finished runs to :class:`Row` s (the paper's number beside the
measured one, with its spread over seeds), and the fidelity table: every field of the paper's own
code beside the preset's value, and why they differ where they do.

:func:`run` trains through the sweep engine (store, resume, batching) into ``out/sweep`` and
measures; :mod:`experiments.reproduce.report` writes the page.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments.analysis import runs as ar
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep

SCALES = ("cpu", "paper")


@dataclass(frozen=True)
class Row:
    """One reported number: the paper's (``published``; None where the paper states a relation, not
    a value, then ``claim`` says it) beside the measured mean over seeds and its spread."""

    name: str
    scale: str
    metric: str
    published: float | None
    measured: float
    spread: float  # standard deviation over seeds (0 with one seed)
    seeds: int
    source: str  # where the published number comes from: figure / table, or the paper's code path
    claim: str = ""
    holds: bool | None = None  # does the measured number support the claim (None: no test stated)

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Fidelity:
    """One field of the published setup: the paper's code, the cpu and paper presets, and why."""

    field: str
    paper: str
    paper_preset: str
    cpu_preset: str
    note: str = ""


@dataclass(frozen=True)
class Reproduction:
    """A paper's claim made runnable. ``presets[scale]()`` is the sweep dict of that scale (the
    in-context regression family; other families set ``execute``); ``measure(rep, scale, runs,
    figures)`` turns the finished runs into rows and figures."""

    name: str
    paper: str  # authors, year, title (arXiv id)
    claim: str  # the phenomenon, in a sentence
    code: str  # the paper's repository and the files the presets follow
    presets: dict[str, Callable[[], dict]]  # scale -> sweep dict
    measure: Callable | None = None  # (rep, scale, runs, figures dir) -> (rows, figure paths)
    fidelity: Sequence[Fidelity] = field(default_factory=tuple)
    minutes_cpu: float = 10.0  # what the cpu scale takes on 2 cores
    execute: Callable | None = None  # (rep, scale, out, device, progress) -> (rows, figures): other families


def stats(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard deviation) over seeds (0 spread for one value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def row(rep: Reproduction, scale: str, metric: str, published: float | None, values: Sequence[float], source: str,
        claim: str = "", holds: bool | None = None) -> Row:
    mean, spread = stats(values)
    return Row(rep.name, scale, metric, published, mean, spread, len(values), source, claim, holds)


def run(rep: Reproduction, scale: str, out, *, device=None, progress: bool = True) -> tuple[list[Row], list[Path]]:
    """Train the preset of ``scale`` into ``out`` (resuming what is there) and measure it."""
    if scale not in rep.presets:
        raise ValueError(f"--scale must be one of {list(rep.presets)} for {rep.name}, got {scale!r}")
    execute = rep.execute or train_and_measure
    return execute(rep, scale, Path(out), device=device, progress=progress)


def train_and_measure(rep: Reproduction, scale: str, out: Path, *, device=None, progress: bool = True):
    """The regression family: the preset's sweep into ``out/sweep``, then ``rep.measure``."""
    sweep = sw.parse_sweep(rep.presets[scale]())
    run_sweep(sweep, out / "sweep", device=device, progress=progress)
    ids = {r.run_id for r in sweep.runs}
    runs = [ar.load_run(d) for d in ar.find_runs(out / "sweep") if d.name in ids]
    return rep.measure(rep, scale, runs, out / "figures")
