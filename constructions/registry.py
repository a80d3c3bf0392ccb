"""Every construction, by name. An explicit table: adding one is one module and one line here."""

from __future__ import annotations

from constructions.approx import mpnn_attention, mpnn_selection, norm_equivalence
from constructions.approx import universal as universal_approx
from constructions.check.contract import Construction
from constructions.icl import (
    gd,
    gd_plus_plus,
    gd_relu,
    gd_softmax,
    looped,
    looped_newton,
    newton,
    preconditioned_gd,
    ridge_newton,
    ridge_sherman_morrison,
)
from constructions.positional import scan as positional_scan
from constructions.positional import sort as positional_sort

CONSTRUCTIONS: dict[str, Construction] = {
    c.name: c
    for c in (
        gd.CONSTRUCTION,
        gd_plus_plus.CONSTRUCTION,
        preconditioned_gd.CONSTRUCTION,
        newton.CONSTRUCTION,
        ridge_newton.CONSTRUCTION,
        ridge_sherman_morrison.CONSTRUCTION,
        gd_relu.CONSTRUCTION,
        gd_softmax.CONSTRUCTION,
        *looped.CONSTRUCTIONS,  # gd_looped / preconditioned_gd_looped / gd_plus_plus_looped
        looped_newton.CONSTRUCTION,  # newton_looped
        *positional_scan.CONSTRUCTIONS,  # positional_prefix_sum / _min / _max
        positional_sort.CONSTRUCTION,  # positional_bitonic_sort
        universal_approx.LAMBDA_SWEEP,
        universal_approx.WIDTH_SWEEP,
        mpnn_attention.LINEAR_EXACT,
        mpnn_attention.LINEAR_RELU,
        mpnn_attention.SOFTMAX_TAYLOR,
        mpnn_selection.SELECTION,
        norm_equivalence.RMS,
        norm_equivalence.CRMS,
    )
}


def get(name: str) -> Construction:
    """The construction called ``name``; a KeyError lists the known names."""
    try:
        return CONSTRUCTIONS[name]
    except KeyError:
        raise KeyError(f"no construction named {name!r}; known: {', '.join(CONSTRUCTIONS)}") from None
