"""One config reader and one set of field validators for every config file (sweeps, ood, approx).

Every check raises :class:`ConfigError` naming the field as the user wrote it (``train.lr``,
``task.test_cs[2]``) and what it allows, so a bad file fails before anything runs. The checks
return the value (converted where that is lossless: an int given for a float field becomes a
float), so a parser reads ``lr = real("train.lr", data.get("lr", 1e-3), 0.0, open_lo=True)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

try:  # Python 3.11+; the tomli backport on 3.10
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ConfigError(ValueError):
    """A config field is wrong; the message names it and the allowed values."""


class UserError(Exception):
    """A failure the user can fix that is not a config field (a busy output directory, ...): the
    command line prints its message as one line."""


def read_text(path, what: str = "file") -> str:
    """The UTF-8 text of the file at ``path``: FileNotFoundError if it is missing, ConfigError if it
    is a directory or not UTF-8 (both messages name the file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory; give the file itself")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                          f"{err.start}); save it as UTF-8") from None


def read_toml(path, what: str = "config file") -> dict:
    """The TOML file at ``path`` as a dict: FileNotFoundError if it is missing, ConfigError (with
    the parser's line and column) if it is not TOML."""
    text = read_text(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None


def read_json(path, what: str = "JSON file"):
    """The JSON file at ``path``, parsed; a file that is not JSON is a ConfigError naming it."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno} column "
                          f"{err.colno})") from None


def integer(where: str, value, lo: int, hi: int | None = None) -> int:
    """An int (not a bool) in [lo, hi]."""
    bound = f">= {lo}" + ("" if hi is None else f" and <= {hi}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer {bound}, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{where} must be an integer {bound}, got {value}")
    return value


def real(where: str, value, lo: float = -math.inf, hi: float = math.inf, *, open_lo: bool = False,
         open_hi: bool = False) -> float:
    """A finite number (int or float, not a bool) in [lo, hi], either end open on request."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    v = float(value) if ok else math.nan
    inside = ok and math.isfinite(v) and (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
    if not inside:
        parts = [] if lo == -math.inf else [f"{'>' if open_lo else '>='} {lo:g}"]
        parts += [] if hi == math.inf else [f"{'<' if open_hi else '<='} {hi:g}"]
        raise ConfigError(f"{where} must be a finite number{' ' + ' and '.join(parts) if parts else ''}, got {value!r}")
    return v


def choice(where: str, value, allowed: Iterable):
    """One of ``allowed``."""
    allowed = tuple(allowed)
    if not isinstance(value, (str, int, float, bool, type(None))) or value not in allowed:
        raise ConfigError(f"{where} must be one of {list(allowed)}, got {value!r}")
    return value


def choices(where: str, value, allowed: Iterable) -> tuple:
    """One of ``allowed`` or a non-empty list of them, as a tuple."""
    allowed = tuple(allowed)
    items = value if isinstance(value, list) else [value]
    if not items or any(not isinstance(x, str) or x not in allowed for x in items):
        raise ConfigError(f"{where} must be one or a list of {list(allowed)}, got {value!r}")
    return tuple(items)


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")


def check_device_name(where: str, name) -> str:
    """``name`` is a well-formed device string: auto, cpu, cuda, cuda:N or mps (whether this machine
    has it is :func:`experiments.common.devices.pick_device`'s check). Free of torch, so the command
    line can check ``--device`` as it parses."""
    kind, _, index = name.partition(":") if isinstance(name, str) else ("", "", "")
    if kind not in DEVICE_KINDS or (index and (kind in ("auto", "cpu") or not index.isdigit())):
        raise ConfigError(f"{where} must be one of ['auto', 'cpu', 'cuda', 'cuda:N', 'mps'], got {name!r}")
    return name


def boolean(where: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def string(where: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value


def integers(where: str, value, lo: int, *, distinct: bool = False) -> tuple[int, ...]:
    """An int or a non-empty list of ints >= lo, as a tuple."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where} must be an integer or a non-empty list of integers >= {lo}, got {value!r}")
    out = tuple(integer(f"{where}[{i}]" if isinstance(value, list) else where, v, lo) for i, v in enumerate(items))
    if distinct and len(set(out)) != len(out):
        raise ConfigError(f"{where} must not repeat a value, got {list(out)}")
    return out


def reals(where: str, value, lo: float = -math.inf, *, open_lo: bool = False) -> tuple[float, ...]:
    """A number or a non-empty list of numbers, as a tuple of floats."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where} must be a number or a non-empty list of numbers, got {value!r}")
    return tuple(real(f"{where}[{i}]" if isinstance(value, list) else where, v, lo, open_lo=open_lo)
                 for i, v in enumerate(items))


def table(where: str, data, allowed: Iterable[str]) -> dict:
    """``data`` is a table whose keys are all in ``allowed``; returns a copy."""
    allowed = list(allowed)
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table, got {data!r}")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown field {where + '.' if where else ''}{key}; allowed fields"
                              f"{' of [' + where + ']' if where else ''} are {allowed}")
    return dict(data)


def section(cls, where: str, data) -> dict:
    """``data`` is a table whose keys are fields of the dataclass ``cls``; returns a copy."""
    return table(where, data, [f.name for f in fields(cls)])
