"""Devices and dtypes: one meaning of ``device = "auto"`` and one dtype table for every command.

``auto`` picks CUDA, then Apple's MPS, then the CPU. A device string names a device this torch
build can use (``cpu``, ``cuda``, ``cuda:N``, ``mps``); anything else is a :class:`ConfigError`
naming the field, before anything runs.
"""

from __future__ import annotations

import torch

from experiments.common.validate import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


def dtype_of(where: str, name) -> torch.dtype:
    """The torch dtype called ``name`` (a key of DTYPES)."""
    if name not in DTYPES:
        raise ConfigError(f"{where} must be one of {list(DTYPES)}, got {name!r}")
    return DTYPES[name]


def check_device_name(where: str, name) -> str:
    """``name`` is a well-formed device string (not whether the machine has it: see pick_device)."""
    kind, _, index = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind not in DEVICE_KINDS or (index and (kind in ("auto", "cpu") or not index.isdigit())):
        raise ConfigError(f"{where} must be one of ['auto', 'cpu', 'cuda', 'cuda:N', 'mps'], got {name!r}")
    return name


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` if given (and not "auto"), else cuda, then mps, then cpu."""
    if isinstance(name, torch.device):
        return name
    if name and name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
