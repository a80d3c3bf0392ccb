"""The command line's error boundary: which exceptions are the user's to fix, and their one line.

An expected failure (a bad config field, a missing or unwritable file, an unreadable store or
weights file, text that is not UTF-8 or JSON, a device this machine lacks, memory it does not have)
becomes one line naming the file or field; :func:`describe` returns ``None`` for anything else, a
bug, whose traceback ``main`` keeps. Exception types of torch, sqlite3 and safetensors are told
apart by their module and name, so this module imports none of them (``ttb --help`` stays fast).
"""

from __future__ import annotations

import errno
import json

from experiments.common.validate import UserError

# errno -> what it means for a path given on the command line or in a config file
OS_HINTS = {
    errno.EEXIST: "exists and is not a directory",
    errno.ENOTDIR: "a part of this path is a file, not a directory",
    errno.EISDIR: "is a directory, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.ENOENT: "no such file or directory",
}
MEMORY_WORDS = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")
DEVICE_WORDS = ("not compiled with cuda", "not linked with support for mps", "invalid device string",
                "device type at start of device string", "no cuda-capable device", "cuda driver", "no nvidia driver")
MEMORY_FIELDS = "train.batch_size, task.eval_batch_size, the model's size or sweep.max_models_per_batch"


def one_line(text: str) -> str:
    """``text`` with its lines joined: the boundary prints exactly one."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def type_name(err: BaseException) -> str:
    """"sqlite3.DatabaseError": the module and name of ``err``'s type, or of a base type that says
    more (torch.OutOfMemoryError is found whatever module torch defines it in)."""
    for cls in type(err).__mro__:
        if cls.__module__.split(".")[0] in ("sqlite3", "safetensors", "torch"):
            return f"{cls.__module__.split('.')[0]}.{cls.__name__}"
    return f"{type(err).__module__}.{type(err).__name__}"


def os_message(err: OSError) -> str:
    """"runs/x: exists and is not a directory": the path first, then what is wrong with it."""
    if err.filename is None:
        return one_line(err)
    what = OS_HINTS.get(err.errno, err.strerror or str(err))
    other = f" -> {err.filename2}" if err.filename2 is not None else ""
    return f"{err.filename}{other}: {what}"


def memory_message(err: BaseException) -> str:
    """torch's message (cut to 200 characters: CUDA's goes on about allocator settings) and what to lower."""
    said = one_line(err)
    return f"out of memory ({said if len(said) <= 200 else said[:197] + '...'}); lower {MEMORY_FIELDS}"


def key_message(err: KeyError) -> str:
    """A KeyError raised with a sentence says it; a bare key ('ttb_config') is a missing key."""
    said = err.args[0] if len(err.args) == 1 else None
    return one_line(said) if isinstance(said, str) and " " in said else f"missing key {one_line(err)}"


def describe(err: BaseException) -> str | None:
    """The one line for an expected failure, or None for a bug (keep its traceback)."""
    name, text = type_name(err), str(err).lower()
    if isinstance(err, UserError):
        return one_line(err)
    if name == "torch.OutOfMemoryError" or (isinstance(err, RuntimeError) and any(w in text for w in MEMORY_WORDS)):
        return memory_message(err)
    if isinstance(err, MemoryError):
        return f"out of memory; lower {MEMORY_FIELDS}"
    if isinstance(err, (RuntimeError, AssertionError)) and any(w in text for w in DEVICE_WORDS):
        return f"device: {one_line(err)}"
    if name.startswith("sqlite3."):
        return f"the sweep store (store.sqlite) cannot be read or written: {one_line(err)}"
    if name.startswith("safetensors."):
        return f"a weights or checkpoint file (safetensors) does not load: {one_line(err)}"
    if isinstance(err, json.JSONDecodeError):
        return f"a file is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
    if isinstance(err, OSError):
        return os_message(err)
    if isinstance(err, KeyError):
        return key_message(err)
    if isinstance(err, (ValueError, TypeError)):
        return one_line(err)
    return None
