"""Token formats for in-context regression, and where the prediction is read.

Two formats, both with Din = d + 1 features per token (x in the first d, y in the last):

``example`` (one token per example, as in the linear-self-attention papers)
    z_i = (x_i, y_i) for the N examples, then the query z_q = (x_q, 0): T = N + 1 tokens.
    The prediction is the readout at the last token (:func:`query_prediction`).

``interleaved`` (as in the GPT-2 in-context regression setup)
    x_1, y_1, x_2, y_2, ...: an x token is (x_i, 0), a y token is (0, y_i): T = 2 N tokens.
    A causal model predicts y_i at the x_i token, i.e. at every even position, from the examples
    before it (:func:`interleaved_predictions`).

``interleaved_y0`` (Garg et al. 2022's own layout)
    the same sequence with d features per token: an x token is x_i, a y token is (y_i, 0, ..., 0),
    y in the first coordinate (:func:`interleaved_y0_tokens`); predictions as ``interleaved``.

Constructions put their sign conventions into W_U, so the prediction is always ``+readout``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def example_tokens(x: Tensor, y: Tensor, x_query: Tensor) -> Tensor:
    """x (..., N, d), y (..., N), x_query (..., d) -> tokens (..., N + 1, d + 1)."""
    if x.shape[:-1] != y.shape:
        raise ValueError(f"example_tokens: x {tuple(x.shape)} and y {tuple(y.shape)} disagree on (..., N)")
    if x_query.shape != x.shape[:-2] + x.shape[-1:]:
        raise ValueError(f"example_tokens: x_query must have shape {tuple(x.shape[:-2] + x.shape[-1:])}, "
                         f"got {tuple(x_query.shape)}")
    examples = torch.cat([x, y.unsqueeze(-1)], dim=-1)
    query = torch.cat([x_query, torch.zeros_like(x_query[..., :1])], dim=-1)
    return torch.cat([examples, query.unsqueeze(-2)], dim=-2)


def query_prediction(out: Tensor) -> Tensor:
    """Readout (..., T, Dout) of the ``example`` format -> the query's prediction (...)."""
    return out[..., -1, 0]


def interleaved_tokens(x: Tensor, y: Tensor) -> Tensor:
    """x (..., N, d), y (..., N) -> tokens (..., 2 N, d + 1): x_1, y_1, x_2, y_2, ..."""
    if x.shape[:-1] != y.shape:
        raise ValueError(f"interleaved_tokens: x {tuple(x.shape)} and y {tuple(y.shape)} disagree on (..., N)")
    x_tok = torch.cat([x, torch.zeros_like(x[..., :1])], dim=-1)
    y_tok = torch.cat([torch.zeros_like(x), y.unsqueeze(-1)], dim=-1)
    return torch.stack([x_tok, y_tok], dim=-2).flatten(-3, -2)


def interleaved_y0_tokens(x: Tensor, y: Tensor) -> Tensor:
    """x (..., N, d), y (..., N) -> tokens (..., 2 N, d): x_1, (y_1, 0, ..., 0), x_2, ..."""
    if x.shape[:-1] != y.shape:
        raise ValueError(f"interleaved_y0_tokens: x {tuple(x.shape)} and y {tuple(y.shape)} disagree on (..., N)")
    y_tok = torch.cat([y.unsqueeze(-1), torch.zeros_like(x[..., 1:])], dim=-1)
    return torch.stack([x, y_tok], dim=-2).flatten(-3, -2)


def interleaved_predictions(out: Tensor) -> Tensor:
    """Readout (..., 2 N, Dout) -> predictions (..., N): entry i predicts y_i from examples < i."""
    return out[..., 0::2, 0]
