"""Hypothesis strategies over construction domains (library code; needs the `test` extra).

``cases(construction)`` draws the sizes the property tests must cover (d in 1..8, N in 1..32,
depth in 1..6) and a seed, and lets the construction's own sampler draw the rest (step sizes,
lam, alpha, inputs) from that seed, so a shrunk failure reads as four integers.
"""

from __future__ import annotations

import torch
from hypothesis import note
from hypothesis import strategies as st

from constructions.check.contract import Case, Construction
from constructions.check.domains import D_RANGE, DEPTH_RANGE, N_RANGE


@st.composite
def cases(draw, construction: Construction, max_d: int = D_RANGE[1], max_n: int = N_RANGE[1],
          max_depth: int = DEPTH_RANGE[1]) -> Case:
    d = draw(st.integers(D_RANGE[0], max_d))
    n = draw(st.integers(N_RANGE[0], max_n))
    depth = draw(st.integers(DEPTH_RANGE[0], max_depth))
    seed = draw(st.integers(0, 2**31 - 1))
    note(f"{construction.name}: d={d} n={n} depth={depth} seed={seed}")
    return construction.sample(torch.Generator().manual_seed(seed), d=d, n=n, depth=depth)
