"""Checking an in-context regression construction layer by layer against its reference algorithm.

These constructions claim more than a final prediction: after every layer l, named slots of the
residual stream hold the reference's state after l steps (GD's residuals in the y slots, Newton's
u = M_t x, the Sherman-Morrison scratch, ...), and the readout is that state's prediction. A
:class:`Claim` says what one slot holds at some tokens; :func:`layer_errors` runs the model once,
keeping the stream after every layer, reads each claimed slot and reports per layer the worst
:func:`scaled_error` over that layer's claims. So a perturbed weight is seen in the first layer whose
claims it breaks, not only if it moves the last prediction.

Token rows follow :func:`constructions.tokens.example_tokens`: the examples, then the query last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from constructions import model as M
from constructions.check.contract import Built, Case, scaled_error

READOUT = "readout"  # a claim about the readout's first column rather than about a slot
QUERY, EXAMPLES, EVERY = -1, slice(None, -1), slice(None)  # token rows of the example format


@dataclass(frozen=True)
class Claim:
    """After some layer, ``slot`` (a layout name, or READOUT) at the tokens ``rows`` holds ``want``:
    (B, [rows,] width), or (B, [rows]) for one number per token (a one-wide slot, the readout)."""

    slot: str
    rows: int | slice | list[int]
    want: Tensor


def read(built: Built, h: Tensor, slot: str, rows: int | slice | list[int]) -> Tensor:
    """What model 0's stream h (1, B, T, D) holds in ``slot`` at the tokens ``rows``: (B, [rows,] width)."""
    if slot == READOUT:
        return M.readout(built.cfg, built.weights, h)[0][:, rows]
    return h[0][:, rows][..., built.cfg.layout[slot]]


def claim_error(built: Built, h: Tensor, claim: Claim) -> float:
    """scaled_error of the claimed slot against ``claim.want``; a want without the width axis is
    compared with the slot's one column (another width then fails on the shapes)."""
    got = read(built, h, claim.slot, claim.rows)
    return scaled_error(got.squeeze(-1) if got.dim() == claim.want.dim() + 1 else got, claim.want)


def layer_errors(built: Built, tokens: Tensor, claims: Sequence[Sequence[Claim]]) -> dict[str, float]:
    """Run the model on ``tokens``; claims[l] is what the stream holds after layer l (l = 0: the
    embedding). Returns {"layer l": the worst scaled error over claims[l]}."""
    run = M.forward(built.cfg, built.weights, tokens, residuals=True)
    if len(claims) != len(run.residuals):
        raise ValueError(f"{len(claims)} layers of claims for {len(run.residuals)} residual streams")
    return {f"layer {layer}": max(claim_error(built, h, c) for c in layer_claims)
            for layer, (h, layer_claims) in enumerate(zip(run.residuals, claims))}


def every_input(x: Tensor, x_query: Tensor) -> Tensor:
    """The inputs of every token, the examples' x (B, N, d) then the query's (B, d): (B, N + 1, d)."""
    return torch.cat([x, x_query.unsqueeze(-2)], dim=-2)


def require_examples(name: str, case: Case) -> None:
    """A construction built for n_examples examples (its positions, scalings or regulariser tokens
    depend on it) refuses a prompt of another length."""
    n = case.x.shape[-2]
    if n != case.params["n_examples"]:
        raise ValueError(f"{name} was built for n_examples={case.params['n_examples']}, prompt has N={n}")
