"""Every reproduction, by name (an explicit table: one module per paper, one line here)."""

from __future__ import annotations

from experiments.reproduce.core import Reproduction
from experiments.reproduce.oswald import OSWALD

REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (OSWALD,)}


def get(name: str) -> Reproduction:
    if name not in REPRODUCTIONS:
        raise ValueError(f"no reproduction named {name!r}; known: {', '.join(REPRODUCTIONS)} (ttb reproduce --list)")
    return REPRODUCTIONS[name]
