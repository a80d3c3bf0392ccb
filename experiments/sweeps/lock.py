"""One sweep at a time per output directory: an OS file lock on ``OUT/.lock``.

Two processes training into one directory would each train every run, since a row says "running"
but not who runs it. The lock is ``fcntl.flock`` on ``OUT/.lock``, held for the whole sweep. The
OS drops it when its holder dies, however it dies (kill -9 included), so a crash never leaves a
stale lock to clean by hand: what counts is the lock, not the file, which stays. The file holds
the holder's pid, written after locking, only so that the error can name the holder.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from experiments.common.validate import UserError

LOCK_NAME = ".lock"


class DirectoryLocked(UserError, RuntimeError):
    """Another live process is training into this output directory."""


@contextmanager
def directory_lock(out: Path, wait: bool = False):
    """Hold ``OUT/.lock`` for the body. Busy: raise :class:`DirectoryLocked`, or with ``wait``
    block until its holder ends. ``out`` must exist."""
    path = Path(out) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, Path(out), wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)  # the lock is still ours here; after an error the stale pid is harmless
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, out: Path, wait: bool) -> None:
    """Take the lock now, or wait for it (``wait``), or raise :class:`DirectoryLocked`."""
    if _try_lock(fd):
        return
    time.sleep(0.1)  # is_locked() in `ttb runs` holds a shared lock for an instant: look once more
    if _try_lock(fd):
        return
    if not wait:
        raise DirectoryLocked(f"{out} is in use by {_holder(out)} (another ttb sweep); wait for it or use --wait")
    print(f"waiting for {_holder(out)} to finish with {out} ...", file=sys.stderr)
    fcntl.flock(fd, fcntl.LOCK_EX)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(out: Path) -> str:
    """The holder as the lock file names it: "process PID" ("another process" before it writes its pid)."""
    try:
        pid = (out / LOCK_NAME).read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def is_locked(out: Path) -> bool:
    """Whether a live process (this one included) holds ``OUT/.lock``. Creates nothing."""
    try:
        fd = os.open(Path(out) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # we got it, so nobody held it; closing below lets it go
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
