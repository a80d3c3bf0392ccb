"""Atomic files: a reader sees the old file or the new one, never half of one.

Every write goes to a temporary name beside the target (``.NAME.tmp-PID``), is flushed and fsynced,
and is renamed over the target (``os.replace`` is atomic); the directory is fsynced after. The PID
in the name is the writer's, so a cleaner can tell a dead writer's leftover from a file being
written right now (:func:`stale_temp_files`). JSON has no inf / nan, so non-finite floats are
written as null.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from safetensors.torch import save as st_save


def atomic_write_with(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync the result, then rename it over ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def temp_path(path: Path) -> Path:
    """Where this process writes ``path`` before renaming it: ``.NAME.tmp-PID`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>[0-9]+)")


def stale_temp_files(root: Path) -> list[Path]:
    """Temporaries of :func:`temp_path`'s naming under ``root`` whose writer process is dead.

    Anything else is left alone: files of another naming (a user's ``.notes.tmp-draft``) and files a
    live process is writing now (it will rename or remove them itself)."""
    found = []
    for path in Path(root).rglob(".*.tmp-*"):
        match = TEMP_NAME.fullmatch(path.name)
        if match and path.is_file() and not pid_alive(int(match["pid"])):
            found.append(path)
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0 checks without signalling).

    When it cannot be told (a pid out of range, or 0 which names our own process group) the answer
    is "alive": the caller then keeps the file, the safe side."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or a pid no process can have
    return True


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(finite_json(obj), indent=1, sort_keys=True) + "\n")


def atomic_save_tensors(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def finite_json(obj):
    """JSON has no inf/nan: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj
