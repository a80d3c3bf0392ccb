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
