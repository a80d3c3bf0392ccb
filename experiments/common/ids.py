"""Run ids: 12 hex digits of the SHA-256 of a run's resolved config, as canonical JSON.

A run's resolved config (every default filled in) is its identity: the same config always gets the
same id, on any machine, and any change to a field that shapes its training gives a new one.
"""

from __future__ import annotations

import hashlib
import json


def run_id(resolved: dict) -> str:
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class RunSpec:
    """What a frozen run dataclass shares: its id from ``to_dict()`` (which the class defines), and a
    group key (equal keys train in one batch) from the same dict without the per-model fields."""

    PER_MODEL: tuple[str, ...] = ("seed", "hyper")

    @property
    def run_id(self) -> str:
        return run_id(self.to_dict())

    def group_key(self) -> str:
        return json.dumps({k: v for k, v in self.to_dict().items() if k not in self.PER_MODEL}, sort_keys=True)
