"""Start-up repairs of a sweep directory, made under its lock before the sweep is planned.

A crash, a kill, a full disk or a careless hand can leave a directory in a state the resume logic
does not expect. Each repair turns one such state back into one it handles, warns on stderr where
something was lost (naming the file), and leaves a whole finished run alone:

- rows left "running" by a process that died go back to "pending" (they resume from their
  checkpoints, as before);
- a finished run whose weights file is missing or does not load loses its result.json and its
  row goes back to "pending": it is trained again;
- a batch killed while it staged its final results is finished if every run was staged, else its
  staged results are dropped and it resumes from its checkpoints;
- a checkpoint that does not load is moved to ``checkpoint.safetensors.corrupt`` and its run starts
  from scratch. So do its batch-mates (the runs its chunk trained with, which each checkpoint
  names under "chunk"): their good checkpoints are dropped, so that the chunk trains together
  again as it did uninterrupted, rather than splitting into smaller batches for good;
- a batch killed between two runs' checkpoint writes goes back to the newest step all its runs
  hold (each write keeps the run's previous checkpoint until the whole batch has written), so it
  resumes together, as it trained, and reproduces the uninterrupted run bit for bit.

The other two defences sit where the thing is opened: a store that does not read as SQLite is
rebuilt in :class:`experiments.sweeps.store.Store`, and only dead writers' temporaries are removed
(:func:`experiments.sweeps.store.remove_temp_files`).
"""

from __future__ import annotations

import os
from pathlib import Path

from experiments.common.validate import read_json
from experiments.sweeps import store as st
from experiments.sweeps.spec import Sweep


def repair(sweep: Sweep, out: Path, store: st.Store) -> None:
    """All start-up repairs for the runs of ``sweep`` in ``out``. Call only under its lock."""
    reset_interrupted(store)
    commit_staged_results(sweep, out)
    retrain_lost_results(sweep, out, store)
    restart_corrupt_checkpoints(sweep, out, store)
    restart_batches_together(sweep, out, store)


def reset_interrupted(store: st.Store) -> list[str]:
    """Rows still "running" belong to a process that died (we hold the lock): back to "pending"."""
    running = [run_id for run_id, status in store.statuses().items() if status == "running"]
    store.mark_pending(running)
    return running


def retrain_lost_results(sweep: Sweep, out: Path, store: st.Store) -> list[str]:
    """Finished runs (by row or by result.json) whose weights are missing or unreadable: warn,
    remove result.json (else the plan would adopt it again), mark pending. Returns their ids."""
    status = store.statuses()
    lost = []
    for run in sweep.runs:
        directory = st.run_dir(out, run.run_id)
        if status.get(run.run_id) not in st.FINISHED and not (directory / "result.json").exists():
            continue
        problem = st.weights_problem(directory)
        if problem is not None:
            st.warn(f"{directory / 'weights.safetensors'} is {problem}; run {run.run_id} will be trained again")
            (directory / "result.json").unlink(missing_ok=True)
            lost.append(run.run_id)
    store.mark_pending(lost)
    return lost


def commit_staged_results(sweep: Sweep, out: Path) -> list[str]:
    """Staged final results (``result.staged.json``, written before result.json) of a batch whose
    runs were all staged become result.json (a kill came while they were committed); those of a
    batch cut short while staging are dropped, and the batch resumes together from its checkpoints.
    Returns the ids committed."""
    committed = []
    for run in sweep.runs:
        staged = st.staged_result_path(st.run_dir(out, run.run_id))
        if not staged.exists():
            continue
        try:
            chunk = list(read_json(staged, "staged result")["chunk"])
        except (OSError, ValueError, KeyError, TypeError):
            chunk = []  # not ours or damaged by hand: drop it, the run trains on
        dirs = [st.run_dir(out, m) for m in chunk]
        if chunk and all((d / "result.json").exists() or st.staged_result_path(d).exists() for d in dirs):
            st.commit_finals(dirs)
            committed += chunk
        else:
            staged.unlink()
    for run in sweep.runs:  # a kill after result.json and before the checkpoint went
        directory = st.run_dir(out, run.run_id)
        if (directory / "result.json").exists():
            for path in st.checkpoint_files(directory):
                path.unlink()
    return committed


def _unfinished_dirs(sweep: Sweep, out: Path, store: st.Store) -> dict[str, Path]:
    status = store.statuses()
    dirs = {r.run_id: st.run_dir(out, r.run_id) for r in sweep.runs}
    return {i: d for i, d in dirs.items() if status.get(i) not in st.FINISHED and not (d / "result.json").exists()}


def _batch_of(run_id: str, directory: Path) -> list[str]:
    """The run ids of the run's batch, from its checkpoint's header (or the previous one's)."""
    for path in st.checkpoint_files(directory):
        return list(st.checkpoint_header(path).get("chunk", [run_id]))
    return [run_id]


def restart_corrupt_checkpoints(sweep: Sweep, out: Path, store: st.Store) -> list[str]:
    """Set aside the checkpoints of unfinished runs that do not load, and drop those of their
    batch-mates; every one of these runs starts from scratch. Returns the ids set aside."""
    dirs = _unfinished_dirs(sweep, out, store)
    corrupt = []
    for run_id, directory in dirs.items():
        for path in st.checkpoint_files(directory):
            problem = st.checkpoint_problem(directory, path)
            if problem is not None:
                aside = st.set_aside(path)
                st.warn(f"{path} does not load ({problem}); moved to {aside.name}, "
                        f"run {run_id} starts again from step 0")
                corrupt.append(run_id)
    for run_id, directory in dirs.items():
        mates = set(_batch_of(run_id, directory)) & set(corrupt)
        for path in st.checkpoint_files(directory) if mates else []:
            path.unlink()
            st.warn(f"dropped {path}: it trained in one batch with run "
                    f"{sorted(mates)[0]}, whose checkpoint was lost, and a batch restarts together")
    return corrupt


def restart_batches_together(sweep: Sweep, out: Path, store: st.Store) -> list[str]:
    """Every run of a batch back to the newest checkpoint step all of them hold (current or
    previous file); a batch with none in common starts from step 0, all its runs together, with a
    warning. Leaves each run one checkpoint file at most. Returns the ids restarted from scratch."""
    dirs = _unfinished_dirs(sweep, out, store)
    held = {i: {int(st.checkpoint_header(p)["step"]): p for p in reversed(st.checkpoint_files(d))}
            for i, d in dirs.items()}
    scratch, seen = [], set()
    for run_id, directory in dirs.items():
        if run_id in seen or not held[run_id]:
            continue
        members = [m for m in dict.fromkeys([run_id, *_batch_of(run_id, directory)]) if m in dirs]
        seen.update(members)
        step = max(set.intersection(*(set(held[m]) for m in members)), default=None)
        for m in members:
            _keep_only(dirs[m], held[m].get(step))
        if step is None:
            scratch += members
            st.warn(f"runs {', '.join(members)} trained in one batch but hold no common checkpoint step; "
                    f"the batch starts again from step 0, together")
    return scratch


def _keep_only(directory: Path, path: Path | None) -> None:
    """Make ``path`` (one of the run's checkpoint files, or None: none) its only checkpoint."""
    if path is not None and path != st.checkpoint_path(directory):
        os.replace(path, st.checkpoint_path(directory))
    for other in st.checkpoint_files(directory):
        if other != st.checkpoint_path(directory) or path is None:
            other.unlink()
