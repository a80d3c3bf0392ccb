"""Every reproduction, by name (an explicit table: one module per paper, one line here)."""

from __future__ import annotations

from experiments.reproduce.akyurek import AKYUREK
from experiments.reproduce.core import Reproduction
from experiments.reproduce.deluca import DELUCA
from experiments.reproduce.fu import FU
from experiments.reproduce.garg import GARG
from experiments.reproduce.oswald import OSWALD
from experiments.reproduce.raventos import RAVENTOS

REPRODUCTIONS: dict[str, Reproduction] = {r.name: r for r in (
    OSWALD,
    GARG,
    FU,
    AKYUREK,
    RAVENTOS,
    DELUCA,
)}


def get(name: str) -> Reproduction:
    if name not in REPRODUCTIONS:
        raise ValueError(f"no reproduction named {name!r}; known: {', '.join(REPRODUCTIONS)} (ttb reproduce --list)")
    return REPRODUCTIONS[name]
