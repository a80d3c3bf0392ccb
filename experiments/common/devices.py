"""Devices and dtypes: one meaning of ``device = "auto"`` and one dtype table for every command.

``auto`` picks CUDA, then Apple's MPS, then the CPU. A device string names a device this torch
build can use (``cpu``, ``cuda``, ``cuda:N``, ``mps``); a malformed one is a :class:`ConfigError`
naming the field as the config is read (:func:`check_device_name`), and one this machine lacks is a
ConfigError from :func:`pick_device`, before anything is allocated on it.
"""

from __future__ import annotations

import torch

from experiments.common.validate import DEVICE_KINDS, ConfigError, check_device_name

__all__ = ["DEVICE_KINDS", "DTYPES", "check_device_name", "dtype_of", "pick_device"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype_of(where: str, name) -> torch.dtype:
    """The torch dtype called ``name`` (a key of DTYPES)."""
    if name not in DTYPES:
        raise ConfigError(f"{where} must be one of {list(DTYPES)}, got {name!r}")
    return DTYPES[name]


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def check_available(name: str) -> None:
    """A well-formed device string this torch build and machine have; else a ConfigError saying
    what is missing and what is there."""
    kind, _, index = name.partition(":")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: this torch ({torch.__version__}) has no CUDA device "
                          f"(torch.cuda.is_available() is False); use device 'cpu' or 'auto'")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if kind == "mps" and not mps_available():
        raise ConfigError(f"device {name!r}: this torch ({torch.__version__}) has no Apple MPS device "
                          f"(torch.backends.mps.is_available() is False); use device 'cpu' or 'auto'")


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` if given (and not "auto"), else cuda, then mps, then cpu. A name this machine cannot
    use is a ConfigError saying why (not a failure deep inside the first allocation)."""
    if isinstance(name, torch.device):
        return name
    if name and name != "auto":
        check_available(check_device_name("device", name))
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")
