"""Trained runs under test-time distribution shifts (Garg et al. 2022): ``--shift`` of ``ttb compare``
and ``ttb plot errors``.

The shifts themselves are :mod:`synthetic.shifts`; here they meet the analysis. Prompts are the run's
own task drawn as in :mod:`experiments.analysis.prompts` (float64, seed ``seed``, n_points - 1
examples and a query), then shifted. Nothing here trains or writes.

    compare_shifted(path, spec, shifts)   ``ttb compare`` per (run, shift): the summaries gain a
                                          ``shift`` key ("skewed", "scale_x:2"), the frames a column
    shift_curves(run, shift)              nmse of the model and the baselines against n_examples
                                          (tidy, COLUMNS plus ``shift``), the data of the figure

Curves. Where the shift leaves the query independent of the context (skewed, orthant, scales, noise)
one batch of prompts serves every n, cropped to its first n examples, as in the unshifted figure. The
query shifts (orthogonal_query, query_in_context) define the query by the examples in context, so the
point at n examples comes from prompts drawn with exactly n examples (one draw per n). From n = d
examples on they span R^d and no query is orthogonal to them all, so orthogonal_query's curves stop at
n = d - 1 (``ttb compare`` at a full context of d or more examples gets synthetic.shifts' fallback: a
query orthogonal to the first d - 1 examples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from experiments.analysis import metrics as am
from experiments.analysis import prompts
from experiments.analysis import runs as ar
from synthetic import shifts as S


def parse_shifts(values: Sequence[str] | None) -> list[S.Shift]:
    """``--shift`` values (repeatable, each comma-separated, "NAME" or "NAME:FACTOR") -> Shifts in
    order, without repeats; [] for None. A ValueError naming the known shifts for an unknown name."""
    found: list[S.Shift] = []
    for value in values or ():
        for part in value.split(","):
            if not part.strip():
                raise ValueError(f"--shift {value!r}: empty shift name; known shifts are {', '.join(S.SHIFTS)}")
            shift = S.parse_shift(part)
            if shift not in found:
                found.append(shift)
    return found


def compare_shifted(path, spec: str | None, shifts: Sequence[S.Shift], *, n_prompts: int = 512, seed: int = 0,
                    probes: bool = False) -> tuple[list[dict], dict[str, pd.DataFrame]]:
    """:func:`experiments.analysis.runs.compare_runs` once per shift, on shifted prompts (the
    references' fit prompts are shifted too): (summaries with a ``shift`` key, frames with a
    ``shift`` column), runs outer, shifts inner."""
    summaries, frames = [], {}
    for directory in ar.find_runs(path):
        run = ar.load_run(directory)
        for shift in shifts:
            p = prompts.prompts_for_task(run.config.task, n_prompts, seed=seed, shift=shift)
            fit = prompts.prompts_for_task(run.config.task, n_prompts, seed=seed + 1, shift=shift)
            refs = ar.references_for(run.config.task, run.learner.n_layers, spec, fit)
            result = ar.analyze(run.learner, p, refs, probes=probes)
            summaries.append({**ar.summary(result), "shift": str(shift)})
            for key, f in result.items():
                frames.setdefault(key, []).append(f.assign(shift=str(shift)))
    return summaries, {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}


def shift_curves(run: ar.Run, shift: S.Shift, *, n_prompts: int = 512, seed: int = 0,
                 spec: str | None = None) -> pd.DataFrame:
    """nmse against n_examples under ``shift``: the model at the sizes it was trained on
    (``runs.trained_sizes``) and every reference of ``spec`` at n = 1 .. N (metrics.baseline_curves),
    with a ``shift`` column. See the module docstring for how prompts are drawn per n."""
    task, sizes = run.config.task, ar.trained_sizes(run.config)
    refs = ar.references_for(task, run.learner.n_layers, spec)
    if shift.name not in S.QUERY_SHIFTS:
        p = prompts.prompts_for_task(task, n_prompts, seed=seed, shift=shift)
        parts = [am.model_curve(run.learner, p, n_values=sizes), am.baseline_curves(p, refs)]
    else:
        parts = []
        last = task.n_points - 1 if shift.name != "orthogonal_query" else min(task.n_points - 1, task.d - 1)
        for n in range(1, last + 1):
            p = prompts.prompts_for_task(replace(task, n_points=n + 1), n_prompts, seed=seed, shift=shift)
            base = am.baseline_curves(p, refs)
            parts.append(base[base.n_examples == n])
            if n in sizes:
                parts.append(am.model_curve(run.learner, p, n_values=[n]))
    return pd.concat(parts, ignore_index=True).assign(shift=str(shift))
