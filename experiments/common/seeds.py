"""Seeds: independent streams of one run seed, so model k draws the same numbers alone or in a batch.

A run seed s gives a 63-bit seed per stream (init, training data, evaluation, ...) through numpy's
``SeedSequence``; every family names its streams with the constants below (or its own, above them).
"""

from __future__ import annotations

import numpy as np

INIT_STREAM, DATA_STREAM, EVAL_STREAM, TARGET_STREAM = 0, 1, 2, 3


def derive_seed(seed: int, stream: int) -> int:
    """Independent 63-bit seeds for a run's init, data and evaluation streams."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> np.uint64(1))
