"""Results store: an SQLite table of runs, and one directory per run. The only module that writes.

Layout of a sweep directory::

    store.sqlite                 one row per run (status, timings, final metrics, path)
    sweep.json                   the sweep as resolved (options, run ids, grid values, group keys)
    runs/<run_id>/config.json    the resolved run config
    runs/<run_id>/checkpoint.safetensors   while training: weights, AdamW moments, RNG state;
                                 the JSON header holds step, curriculum position, logged metrics
    runs/<run_id>/weights.safetensors      final weights (config in the header; no pickle anywhere)
    runs/<run_id>/metrics.csv    one row per log: step, loss, nmse, grad_norm, lr, n_points, n_dims
    runs/<run_id>/eval.csv       squared error / d per number of in-context examples
    runs/<run_id>/checkpoint.prev.safetensors  the run's previous checkpoint, while its batch writes the next
    runs/<run_id>/result.json    written last: the run's final metrics (its presence = finished)
    runs/<run_id>/result.staged.json       the same, while the rest of its batch finishes writing

Crash safety. Every file is written to a temporary name in the same directory (``.NAME.tmp-PID``),
flushed, fsynced and renamed over the target (``os.replace`` is atomic), so a reader sees the old
file or the new one, never half of one. Every store update is one transaction. A run's row says
"done" only after its result.json exists, and a result.json without a "done" row is adopted on
restart, so kill -9 at any point loses nothing that had finished and repeats nothing that had.

A batch (the runs one chunk trains together) is one unit on disk, so that a resumed batch
restarts together, from one step, and reproduces the uninterrupted run bit for bit. Its runs'
checkpoints are written one after another, each keeping the file it replaces as
``checkpoint.prev.safetensors``; only when every run has written its new one are the previous ones
dropped. A kill in between leaves each run holding the old step (and perhaps the new one): at
start-up every run of the batch goes back to the newest step all of them hold, or all start from
step 0 when none is common (a checkpoint names its batch-mates under "chunk"). Final results are
staged likewise (``result.staged.json``, naming the batch) and become ``result.json`` only once the
whole batch is staged; a start-up finishes a batch whose every run was staged and discards a
partial one. Checkpoints written before this (no previous file, one step across the batch) load as
they did. For tests, ``TTB_FAULT_AFTER_CHECKPOINT_WRITES=N`` kills the process right after its
N-th per-run write of such a unit.

Defences. One sweep at a time trains into a directory (``experiments.sweeps.lock``). At start, under
that lock: temporaries whose writer process is dead are removed (nothing else is), and the repairs
of ``experiments.sweeps.repair`` run (rows left "running" go back to "pending"; a finished run whose
weights are gone is retrained; a checkpoint that does not load is set aside). A store that does not
open as SQLite (garbage, zero bytes, cut short) is moved to ``store.sqlite.corrupt`` with a warning,
and a fresh one is rebuilt from the run directories: each ``config.json`` gives a row, and each
``result.json`` is adopted as above. Without a live lock holder, ``status_rows`` reports a
"running" row as "interrupted".
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import pandas as pd
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from experiments.common.atomic import (
    atomic_save_tensors,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    finite_json,
    stale_temp_files,
)
from experiments.common.validate import read_json
from experiments.sweeps.lock import is_locked

STORE_NAME = "store.sqlite"
FINISHED = ("done", "diverged")
METRIC_COLUMNS = ("step", "loss", "nmse", "grad_norm", "lr", "n_points", "n_dims")
RESULT_COLUMNS = ("steps_done", "diverged_step", "stopped_step", "final_loss", "final_nmse", "eval_mse", "eval_nmse")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    group_key TEXT NOT NULL,
    config TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    steps_done INTEGER, diverged_step INTEGER, stopped_step INTEGER,
    final_loss REAL, final_nmse REAL, eval_mse REAL, eval_nmse REAL,
    started_at REAL, finished_at REAL, wall_s REAL
);
"""


def remove_temp_files(root: Path) -> int:
    """Delete leftovers of writers killed mid-write (``.NAME.tmp-PID`` whose PID is dead); returns
    how many. Other files, and the temporaries of live writers, stay."""
    stale = stale_temp_files(root)
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def warn(message: str) -> None:
    """A repair the user should know of (something was lost or set aside), on stderr."""
    print(f"ttb: warning: {message}", file=sys.stderr)


def set_aside(path: Path) -> Path:
    """Rename an unreadable ``path`` to ``path.corrupt`` (kept for inspection); returns the new path."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    return aside


UNREADABLE = (SafetensorError, OSError, ValueError, KeyError, TypeError)  # what a damaged header raises


def _csv_text(rows: list[dict], columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: repr(row[c]) if isinstance(row[c], float) else row[c] for c in columns})
    return buf.getvalue()



# ----------------------------------------------------------------------------------------------
# Run directories


def run_dir(root: Path, run_id: str) -> Path:
    return Path(root) / "runs" / run_id


def checkpoint_path(directory: Path) -> Path:
    return Path(directory) / "checkpoint.safetensors"


def previous_checkpoint_path(directory: Path) -> Path:
    """Where a run's checkpoint waits while its batch-mates write their next ones."""
    return Path(directory) / "checkpoint.prev.safetensors"


def checkpoint_files(directory: Path) -> list[Path]:
    """The run's checkpoint files on disk: the current one, then the previous one."""
    return [p for p in (checkpoint_path(directory), previous_checkpoint_path(directory)) if p.exists()]


FAULT_AFTER_WRITES = "TTB_FAULT_AFTER_CHECKPOINT_WRITES"
_unit_writes = 0  # per-run writes of a batch unit by this process, for the fault hook


def _fault_point() -> None:
    """Fault injection for tests: with ``TTB_FAULT_AFTER_CHECKPOINT_WRITES=N`` in the environment the
    process dies (``os._exit(137)``, no clean-up, as after SIGKILL) right after its N-th per-run
    write of a batch unit (a checkpoint, or a staged final result): between two runs' writes."""
    global _unit_writes
    _unit_writes += 1
    if os.environ.get(FAULT_AFTER_WRITES) == str(_unit_writes):
        os._exit(137)


def save_checkpoint(directory: Path, tensors: dict, meta: dict) -> None:
    """One file: tensors plus a JSON header, so a checkpoint is replaced in one rename. The file it
    replaces stays as checkpoint.prev.safetensors until the whole batch has written its new ones
    (:func:`drop_previous_checkpoints`), so a batch cut short between two runs' writes still holds
    one step common to all its runs (:func:`experiments.sweeps.repair.restart_batches_together`)."""
    path = checkpoint_path(directory)
    if path.exists():
        os.replace(path, previous_checkpoint_path(directory))
    atomic_save_tensors(path, tensors, {"ttb_checkpoint": json.dumps(finite_json(meta))})
    _fault_point()


def drop_previous_checkpoints(directories: list[Path]) -> None:
    """Every run of the batch wrote its new checkpoint: the previous ones are no longer needed."""
    for directory in directories:
        previous_checkpoint_path(directory).unlink(missing_ok=True)


def checkpoint_header(path: Path) -> dict:
    """The JSON header of one checkpoint file, reading only the header."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["ttb_checkpoint"])


def checkpoint_meta(directory: Path) -> dict | None:
    """The JSON header of the run's checkpoint (None if none), reading only the header."""
    path = checkpoint_path(directory)
    return checkpoint_header(path) if path.exists() else None


def checkpoint_step(directory: Path) -> int:
    """The step of the run's checkpoint (0 if none), reading only the header."""
    meta = checkpoint_meta(directory)
    return 0 if meta is None else int(meta["step"])


def checkpoint_problem(directory: Path, path: Path | None = None) -> str | None:
    """Why the run's checkpoint (or its file ``path``) cannot be resumed from (its header does not
    load, does not cover the file, or has no step), or None (a whole one, or none at all)."""
    path = checkpoint_path(directory) if path is None else path
    try:
        if path.exists():
            int(checkpoint_header(path)["step"])
    except UNREADABLE as err:
        return f"{type(err).__name__}: {err}"
    return None


def load_checkpoint(directory: Path) -> tuple[dict, dict] | None:
    meta = checkpoint_meta(directory)
    return None if meta is None else (load_file(str(checkpoint_path(directory))), meta)


def weights_problem(directory: Path) -> str | None:
    """Why a finished run's weights are lost ("missing", "unreadable (...)"), or None. Reads the
    header only: it must parse and cover the whole file (so a truncated file shows), and big files
    are not hashed."""
    path = Path(directory) / "weights.safetensors"
    if not path.exists():
        return "missing"
    try:
        with safe_open(str(path), framework="pt") as f:
            f.metadata()
    except UNREADABLE as err:
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def metric_columns(metrics: list[dict]) -> list[str]:
    """The columns of metrics.csv: the regression ones in their usual order, then any others."""
    keys = list(metrics[0]) if metrics else list(METRIC_COLUMNS)
    return [c for c in METRIC_COLUMNS if c in keys] + [c for c in keys if c not in METRIC_COLUMNS]


def staged_result_path(directory: Path) -> Path:
    """A finished run's result.json before its whole batch has finished writing (with the batch's run ids)."""
    return Path(directory) / "result.staged.json"


def stage_final(directory: Path, write_weights, metrics: list[dict], curve: list[dict], result: dict,
                chunk: list[str]) -> None:
    """Weights (``write_weights(path)``), metrics and evaluation, then the result (with the weights'
    sha256, so that a later reader can tell the file it finds from the one written) staged beside
    the ids of the batch (``chunk``). It becomes result.json in :func:`commit_finals`."""
    directory = Path(directory)
    atomic_write_with(directory / "weights.safetensors", write_weights)
    result["weights_sha256"] = file_sha256(directory / "weights.safetensors")
    atomic_write_text(directory / "metrics.csv", _csv_text(metrics, metric_columns(metrics)))
    if curve:
        atomic_write_text(directory / "eval.csv", _csv_text(curve, ("n_examples", "nmse")))
    atomic_write_json(staged_result_path(directory), {"chunk": chunk, "result": result})
    _fault_point()


def commit_finals(directories: list[Path]) -> None:
    """A batch whose runs are all staged finishes: each staged result becomes result.json (a run
    already committed is skipped), then the checkpoints go. A kill in between is finished at the
    next start (:func:`experiments.sweeps.repair.commit_staged_results`)."""
    for directory in directories:
        staged = staged_result_path(directory)
        if staged.exists():
            atomic_write_json(Path(directory) / "result.json", read_json(staged, "staged result")["result"])
            staged.unlink()
    for directory in directories:
        for path in checkpoint_files(directory):
            path.unlink()


def write_final(directory: Path, write_weights, metrics: list[dict], curve: list[dict],
                result: dict) -> None:
    """One run that is a batch of its own: :func:`stage_final` then :func:`commit_finals`
    (weights, metrics, evaluation, result.json last; the checkpoint dropped)."""
    stage_final(directory, write_weights, metrics, curve, result, [result.get("run_id", Path(directory).name)])
    commit_finals([directory])


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_result(directory: Path) -> dict | None:
    path = Path(directory) / "result.json"
    return read_json(path, "run result") if path.exists() else None


# ----------------------------------------------------------------------------------------------
# The SQLite store


class Store:
    """The runs table of one sweep directory. Every method is one transaction.

    Opening it checks the database: one that does not read as SQLite is set aside and rebuilt
    from the run directories (:meth:`rebuild`), with a warning naming the file. ``repair=False``
    (a reader while another process's sweep holds the directory) leaves the file to its owner: a
    store that process has just created is zero bytes for an instant."""

    def __init__(self, root: Path, repair: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / STORE_NAME
        problem = database_problem(path) if repair else None
        if problem is not None:
            for name in (STORE_NAME, STORE_NAME + "-journal"):  # a hot journal belongs to the bad file
                if (self.root / name).exists():
                    set_aside(self.root / name)
            warn(f"{path} is not a readable store ({problem}); moved to {STORE_NAME}.corrupt, "
                 f"rebuilding it from {self.root / 'runs'}")
        self.conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA synchronous=FULL")
        with self.transaction():
            self.conn.execute(SCHEMA)
        if problem is not None:
            self.rebuild()

    def transaction(self):
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def register(self, runs: list[dict]) -> None:
        """Insert pending rows for new runs (dicts with run_id, label, group_key, config, path)."""
        with self.transaction():
            self.conn.executemany(
                "INSERT OR IGNORE INTO runs (run_id, label, group_key, config, path) "
                "VALUES (:run_id, :label, :group_key, :config, :path)", runs)

    def rebuild(self) -> None:
        """Rows from the run directories, after the database was lost: every ``runs/<id>/`` with a
        config.json is registered (its label and group key from sweep.json where it lists the run),
        and its result.json, if any, is adopted as a restart adopts one (status and metrics; the
        attempts and start times were in the lost file)."""
        rows, results = rows_on_disk(self.root)
        self.register(rows)
        self.mark_finished(results)

    def statuses(self) -> dict[str, str]:
        return {r["run_id"]: r["status"] for r in self.conn.execute("SELECT run_id, status FROM runs")}

    def mark_running(self, run_ids: list[str]) -> None:
        now = time.time()
        with self.transaction():
            self.conn.executemany(
                "UPDATE runs SET status='running', attempts=attempts+1, started_at=COALESCE(started_at, ?) "
                "WHERE run_id=?", [(now, i) for i in run_ids])

    def mark_finished(self, results: list[dict]) -> None:
        """Results as written to result.json (run_id, status, wall_s, finished_at and RESULT_COLUMNS)."""
        sets = ", ".join(f"{c}=:{c}" for c in RESULT_COLUMNS + ("status", "wall_s", "finished_at"))
        with self.transaction():
            self.conn.executemany(f"UPDATE runs SET {sets} WHERE run_id=:run_id",
                                  [{c: r.get(c) for c in RESULT_COLUMNS + ("run_id", "status", "wall_s",
                                                                          "finished_at")} for r in results])

    def mark_pending(self, run_ids: list[str]) -> None:
        """Back to "pending", results cleared: rows left "running" by a dead process, or finished
        runs whose files were lost (they are trained again)."""
        cleared = ", ".join(f"{c}=NULL" for c in RESULT_COLUMNS + ("finished_at", "wall_s"))
        with self.transaction():
            self.conn.executemany(f"UPDATE runs SET status='pending', {cleared} WHERE run_id=?",
                                  [(i,) for i in run_ids])

    def rows(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY run_id")]


def database_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable SQLite store (zero bytes, not a database, malformed), or None
    (a good one, or none yet). A busy or locked database is not a problem: that error propagates."""
    if not path.exists():
        return None
    if path.stat().st_size == 0:
        return "an empty file"
    conn = sqlite3.connect(path, timeout=60)
    try:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as err:
        if type(err) is not sqlite3.DatabaseError:  # OperationalError (locked, I/O) and the like
            raise
        return str(err)  # "file is not a database", "database disk image is malformed"
    finally:
        conn.close()
    return None if verdict == "ok" else verdict


def rows_on_disk(root: Path) -> tuple[list[dict], list[dict]]:
    """(rows to register, results to adopt) read back from ``runs/*/config.json`` and
    ``result.json``; a run directory whose files do not parse is skipped with a warning."""
    listed = _sweep_listing(root)
    rows, results = [], []
    for config in sorted(Path(root).glob("runs/*/config.json")):
        directory, run_id = config.parent, config.parent.name
        try:
            resolved, result = json.loads(config.read_text()), read_result(directory)
        except (OSError, ValueError) as err:
            warn(f"{directory} left out of the rebuilt store: {err}")
            continue
        entry = listed.get(run_id, {})
        rows.append({"run_id": run_id, "label": entry.get("label", ""), "group_key": entry.get("group_key", ""),
                     "config": json.dumps(resolved, sort_keys=True), "path": str(directory.relative_to(root))})
        if result is not None:
            results.append({**result, "run_id": run_id})
    return rows, results


def _sweep_listing(root: Path) -> dict[str, dict]:
    """sweep.json's runs by id ({} if it is missing or does not parse: labels are a nicety)."""
    try:
        runs = json.loads((Path(root) / "sweep.json").read_text())["runs"]
        return {r["run_id"]: r for r in runs}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


# ----------------------------------------------------------------------------------------------
# Reading a sweep back


def varying_fields(configs: list[dict]) -> list[str]:
    """Dotted config fields ("train.seed") whose values differ between runs."""
    flat = [{f"{s}.{k}": v for s, sec in c.items() for k, v in sec.items()} for c in configs]
    keys = sorted({k for f in flat for k in f})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]


def status_rows(root: Path) -> list[dict]:
    """The store's rows, with the checkpoint step of unfinished runs as ``step``, and "interrupted"
    for a "running" row when no live process holds the directory's lock."""
    root = Path(root)
    if not (root / STORE_NAME).exists():
        raise FileNotFoundError(f"{root} holds no {STORE_NAME}; is it a sweep output directory?")
    live = is_locked(root)
    with Store(root, repair=not live) as store:
        rows = store.rows()
    for row in rows:
        if row["status"] == "running" and not live:
            row["status"] = "interrupted"  # its process died; the next sweep resumes it
        finished = row["status"] in FINISHED
        row["step"] = row["steps_done"] if finished else _step_shown(root / row["path"])
    return rows


def _step_shown(directory: Path) -> int | None:
    """The checkpoint's step, or None where it does not load (the next sweep sets it aside)."""
    return None if checkpoint_problem(directory) else checkpoint_step(directory)


def tidy_metrics(root: Path):
    """One long table of every run's metrics: run_id, varying config fields, status, kind
    ("train" rows per log step, "eval" rows per number of in-context examples), step,
    n_examples, metric, value."""
    rows = status_rows(root)
    configs = [json.loads(r["config"]) for r in rows]
    params = varying_fields(configs)
    frames = []
    for row, cfg in zip(rows, configs):
        base = {"run_id": row["run_id"], "status": row["status"],
                **{p: cfg[p.split(".")[0]][p.split(".", 1)[1]] for p in params}}
        frames += _run_frames(Path(root) / row["path"], base, row["steps_done"])
    if not frames:
        return pd.DataFrame(columns=["run_id", *params, "status", "kind", "step", "n_examples", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def _run_frames(directory: Path, base: dict, steps_done) -> list:
    frames = []
    if (directory / "metrics.csv").exists():
        m = pd.read_csv(directory / "metrics.csv")
        ids = [c for c in ("step", "n_points") if c in m]
        values = [c for c in m if c not in ("step", "n_points", "n_dims")]
        long = m.melt(id_vars=ids, value_vars=values, var_name="metric", value_name="value")
        long = long.rename(columns={"n_points": "n_examples"})
        frames.append(long.assign(kind="train", **base))
    if (directory / "eval.csv").exists():
        e = pd.read_csv(directory / "eval.csv")
        frames.append(e.rename(columns={"nmse": "value"}).assign(kind="eval", metric="nmse", step=steps_done, **base))
    return frames
