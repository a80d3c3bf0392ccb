"""Every lemma, by name (an explicit table of the lemma modules), and the runner ``ttb check --symbolic`` uses."""

from __future__ import annotations

import time
from collections.abc import Callable

from proofs_check import lemmas, lemmas_approx, lemmas_icl
from proofs_check.lemmas import LemmaFailed

MODULES = (lemmas, lemmas_icl, lemmas_approx)


def all_lemmas() -> dict[str, Callable[..., None]]:
    """The LEMMAS of every module in MODULES, by name (read at call time)."""
    return {name: lemma for module in MODULES for name, lemma in module.LEMMAS.items()}


def run_all(names: list[str] | None = None) -> list[dict]:
    """Run the named lemmas (all by default): one {"name", "passed", "seconds", "message"} each.

    LemmaFailed is a failed lemma (passed False, its message kept); any other exception is a bug in
    the check and propagates.
    """
    table = all_lemmas()
    names = list(table) if names is None else list(names)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise KeyError(f"no lemma named {unknown}; known: {', '.join(table)}")
    results = []
    for name in names:
        start, message = time.perf_counter(), ""
        try:
            table[name]()
        except LemmaFailed as err:
            message = str(err)
        results.append({"name": name, "passed": not message, "seconds": time.perf_counter() - start,
                        "message": message})
    return results
