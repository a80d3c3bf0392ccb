"""Backends that train the chunks of a sweep: local (one process) and Ray (chunks as Ray tasks).

Both call :func:`run_chunk`, which trains one chunk (resuming from its runs' checkpoints), writes
each run's directory and returns the results; only the driver (the process that owns the sweep)
writes the SQLite store, one transaction per chunk, so a Ray cluster needs nothing but a shared
directory. The driver holds the directory's lock for the whole sweep and repairs what a crash left
behind before planning (:mod:`experiments.sweeps.repair`). With ``[sweep] tensorboard = true`` every
logged row also goes to TensorBoard scalars (:class:`TensorBoardLog`, under
``<out>/tensorboard/<run_id>/``) beside metrics.csv and the store.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from experiments.common.validate import choice
from experiments.sweeps import store as st
from experiments.sweeps.lock import directory_lock
from experiments.sweeps.repair import repair
from experiments.sweeps.spec import BACKENDS, Chunk, Family, Sweep, plan, register
from experiments.training.memory import check_batches


def run_chunk(out, runs: list, family: Family, device=None, compile: bool = False, on_log=None,
              autocast: str | None = None, tensorboard: bool = False) -> list[dict]:
    """Train ``runs`` (one chunk) from their checkpoints or from scratch; write their directories
    (and, with ``tensorboard``, every logged row as TensorBoard scalars: :class:`TensorBoardLog`)."""
    out = Path(out)
    started = time.time()
    trainer = family.make_trainer(runs, device=device, compile=compile, autocast=autocast)
    dirs = [st.run_dir(out, r.run_id) for r in runs]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    saved = [st.load_checkpoint(d) for d in dirs]
    if all(c is not None for c in saved):
        state = trainer.state_from_slices(saved)
        prior = [c[1].get("wall_s", 0.0) for c in saved]
    elif any(c is not None for c in saved):
        raise RuntimeError("run_chunk: some runs of the chunk have checkpoints and some not; re-plan the sweep")
    else:
        state, prior = trainer.initial_state(), [0.0] * len(runs)

    chunk = [r.run_id for r in runs]  # in each checkpoint: its batch-mates restart with it if it is lost

    def on_checkpoint(s):
        elapsed = time.time() - started
        for k, d in enumerate(dirs):
            tensors, meta = trainer.checkpoint_slice(s, k)
            st.save_checkpoint(d, tensors, {**meta, "wall_s": prior[k] + elapsed, "chunk": chunk})
        st.drop_previous_checkpoints(dirs)  # the batch's checkpoints are whole: one step for all

    board = TensorBoardLog(out, chunk) if tensorboard else None
    try:
        trainer.fit(state, on_log=on_log if board is None else board.wrap(on_log), on_checkpoint=on_checkpoint)
    finally:
        if board is not None:
            board.close()
    return _finish(trainer, state, dirs, [p + time.time() - started for p in prior])


def _finish(trainer, state, dirs: list[Path], wall: list[float]) -> list[dict]:
    """Stage every run's final files, then commit them together (the batch finishes as one unit)."""
    results, chunk = [], [r.run_id for r in trainer.runs]
    for k, (summary, directory) in enumerate(zip(trainer.summary(state), dirs)):
        curve = summary.pop("curve", [])
        result = {"run_id": trainer.runs[k].run_id, **summary, "wall_s": wall[k], "finished_at": time.time()}
        st.stage_final(directory, lambda p, k=k: trainer.save_weights(p, state, k), state.metrics[k], curve,
                       result, chunk)
        results.append(result)
    st.commit_finals(dirs)
    return results


TENSORBOARD_EXTRA = 'pip install -e ".[tensorboard]"'


def summary_writer_class():
    """torch's SummaryWriter, or a one-line ValueError naming the extra when tensorboard is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # the `tensorboard` extra: only this option needs it
    except ImportError:
        raise ValueError(f"sweep.tensorboard = true needs the optional dependency tensorboard: "
                         f"{TENSORBOARD_EXTRA}") from None
    return SummaryWriter


class TensorBoardLog:
    """One SummaryWriter per run of a chunk, under ``<out>/tensorboard/<run_id>/``: each logged row's
    numbers (loss, grad_norm, lr, ...) as scalars at the row's step. It only reads the rows the trainer
    already brought to the host at its log steps, so it adds no device sync."""

    def __init__(self, out, run_ids: list[str]):
        writer = summary_writer_class()
        self.writers = [writer(log_dir=str(Path(out) / "tensorboard" / run_id)) for run_id in run_ids]

    def write(self, rows: list[dict | None]) -> None:
        for writer, row in zip(self.writers, rows):
            if row is None:  # a diverged or stopped model logs nothing
                continue
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(name, value, global_step=row["step"])

    def wrap(self, on_log):
        """An ``on_log(state, rows)`` that writes the rows, then calls ``on_log`` (if any)."""
        def log(state, rows):
            self.write(rows)
            if on_log is not None:
                on_log(state, rows)

        return log

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class Progress:
    """One tqdm bar over the sweep: model-steps done, rate, ETA, mean loss of the last log."""

    def __init__(self, chunks: list[Chunk], enabled: bool = True):
        total = sum(len(c.runs) * (c.runs[0].steps - c.start_step) for c in chunks)
        self.bar = tqdm(total=total, unit="model-step", unit_scale=True, disable=not enabled, dynamic_ncols=True)
        self.last_step = 0

    def start(self, chunk: Chunk) -> None:
        self.last_step = chunk.start_step
        self.K = len(chunk.runs)

    def on_log(self, state, rows) -> None:
        losses = [r["loss"] for r in rows if r is not None]
        self.bar.update(self.K * (state.step - self.last_step))
        self.last_step = state.step
        if losses:
            self.bar.set_postfix(loss=f"{sum(losses) / len(losses):.4g}", alive=len(losses), refresh=False)

    def chunk_done(self, chunk: Chunk) -> None:
        """Account for steps skipped by early stopping (and whole chunks done elsewhere)."""
        self.bar.update(len(chunk.runs) * (chunk.runs[0].steps - self.last_step))

    def close(self) -> None:
        self.bar.close()


def run_local(chunks: list[Chunk], out: Path, store: st.Store, family_of, *, device=None, compile=False,
              progress=True, autocast=None, tensorboard=False) -> None:
    bar = Progress(chunks, enabled=progress)
    try:
        for chunk in chunks:
            store.mark_running([r.run_id for r in chunk.runs])
            bar.start(chunk)
            results = run_chunk(out, chunk.runs, family_of(chunk.runs[0]), device=device, compile=compile,
                                on_log=bar.on_log, autocast=autocast, tensorboard=tensorboard)
            store.mark_finished(results)
            bar.chunk_done(chunk)
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------
# Ray


def _ray_chunk(out: str, runs: list, family: Family, device, compile: bool, autocast, tensorboard=False) -> list[dict]:
    return run_chunk(out, runs, family, device=_ray_device(device), compile=compile, autocast=autocast,
                     tensorboard=tensorboard)


def _ray_device(device):
    """Inside a Ray task: the requested device, or the GPU Ray assigned, or the CPU."""
    import ray  # optional dependency (the `ray` extra): imported only where the Ray backend runs

    if device not in (None, "auto"):
        return device
    return "cuda" if ray.get_gpu_ids() else "cpu"


def run_ray(chunks: list[Chunk], out: Path, store: st.Store, family_of, *, device=None, compile=False,
            progress=True, autocast=None, tensorboard=False) -> None:
    """Each chunk is a Ray task (one GPU each when the cluster has GPUs); results land in the store."""
    try:
        import ray  # optional dependency (the `ray` extra)
    except ModuleNotFoundError:
        raise ValueError("--backend ray needs the optional dependency ray: pip install 'ray[default]'") from None
    if not ray.is_initialized():
        ray.init()  # joins the cluster named by RAY_ADDRESS, else starts a local one
    wants_gpu = device in (None, "auto") or str(device).startswith("cuda")
    gpus = 1 if wants_gpu and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)(_ray_chunk)
    pending = {}
    for chunk in chunks:
        store.mark_running([r.run_id for r in chunk.runs])
        ref = task.remote(str(Path(out).resolve()), list(chunk.runs), family_of(chunk.runs[0]), device, compile,
                           autocast, tensorboard)
        pending[ref] = chunk
    bar = Progress(chunks, enabled=progress)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(done[0])
            store.mark_finished(ray.get(done[0]))
            bar.start(chunk)
            bar.chunk_done(chunk)
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------
# Running


def run_sweep(sweep: Sweep, out, *, backend: str | None = None, device: str | None = None,
              compile: bool | None = None, progress: bool = True, autocast: str | None = None,
              wait: bool = False, tensorboard: bool | None = None) -> list[dict]:
    """Train every unfinished run of ``sweep`` into ``out``; returns the store's rows. ``tensorboard``
    (default: the sweep's ``[sweep] tensorboard``) also writes TensorBoard scalars per run.

    Holds ``out``'s lock throughout: another process on it raises
    :class:`~experiments.sweeps.lock.DirectoryLocked`, or with ``wait`` blocks until it is free."""
    out = Path(out)
    opts = sweep.options
    backend = choice("--backend", backend or opts.backend, BACKENDS)
    device = device or opts.device
    compile = opts.compile if compile is None else compile
    tensorboard = opts.tensorboard if tensorboard is None else tensorboard
    if tensorboard:
        summary_writer_class()  # the extra is missing: say so before anything trains
    out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, wait=wait):
        st.remove_temp_files(out)
        with st.Store(out) as store:
            register(sweep, out, store)
            repair(sweep, out, store)
            todo, adopt = plan(sweep, out, store)
            if backend == "local":  # every batch fits before the first trains (a Ray worker's device is its own)
                check_batches([c.runs for c in todo], device)
            if adopt:
                store.mark_finished(adopt)
            started = time.time()
            execute = run_local if backend == "local" else run_ray
            execute(todo, out, store, sweep.family_of, device=device, compile=compile, progress=progress,
                    autocast=autocast or opts.autocast, tensorboard=tensorboard)
            rows = store.rows()
    if progress:
        print(f"sweep {opts.name}: {len(todo)} batches in {time.time() - started:.1f}s -> {out}", file=sys.stderr)
    return rows
