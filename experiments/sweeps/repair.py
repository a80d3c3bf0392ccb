"""Start-up repairs of a sweep directory, made under its lock before the sweep is planned.

A crash, a kill, a full disk or a careless hand can leave a directory in a state the resume logic
does not expect. Each repair turns one such state back into one it handles, warns on stderr where
something was lost (naming the file), and leaves a whole finished run alone:

- rows left "running" by a process that died go back to "pending" (they resume from their
  checkpoints, as before);
- a finished run whose weights file is missing or does not load loses its result.json and its
  row goes back to "pending": it is trained again;
- a checkpoint that does not load is moved to ``checkpoint.safetensors.corrupt`` and its run starts
  from scratch. So do its batch-mates (the runs its chunk trained with, which each checkpoint
  names under "chunk"): their good checkpoints are dropped, so that the chunk trains together
  again as it did uninterrupted, rather than splitting into smaller batches for good.

The other two defences sit where the thing is opened: a store that does not read as SQLite is
rebuilt in :class:`experiments.sweeps.store.Store`, and only dead writers' temporaries are removed
(:func:`experiments.sweeps.store.remove_temp_files`).
"""

from __future__ import annotations

from pathlib import Path

from experiments.sweeps import store as st
from experiments.sweeps.spec import Sweep


def repair(sweep: Sweep, out: Path, store: st.Store) -> None:
    """All start-up repairs for the runs of ``sweep`` in ``out``. Call only under its lock."""
    reset_interrupted(store)
    retrain_lost_results(sweep, out, store)
    restart_corrupt_checkpoints(sweep, out, store)


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


def restart_corrupt_checkpoints(sweep: Sweep, out: Path, store: st.Store) -> list[str]:
    """Set aside the checkpoints of unfinished runs that do not load, and drop those of their
    batch-mates; every one of these runs starts from scratch. Returns the ids set aside."""
    status = store.statuses()
    dirs = {r.run_id: st.run_dir(out, r.run_id) for r in sweep.runs
            if status.get(r.run_id) not in st.FINISHED and not (st.run_dir(out, r.run_id) / "result.json").exists()}
    corrupt = []
    for run_id, directory in dirs.items():
        problem = st.checkpoint_problem(directory)
        if problem is not None:
            aside = st.set_aside(st.checkpoint_path(directory))
            st.warn(f"{st.checkpoint_path(directory)} does not load ({problem}); moved to {aside.name}, "
                    f"run {run_id} starts again from step 0")
            corrupt.append(run_id)
    for directory in dirs.values():
        mates = set((st.checkpoint_meta(directory) or {}).get("chunk", [])) & set(corrupt)
        if mates:
            st.checkpoint_path(directory).unlink()
            st.warn(f"dropped {st.checkpoint_path(directory)}: it trained in one batch with run "
                    f"{sorted(mates)[0]}, whose checkpoint was lost, and a batch restarts together")
    return corrupt
