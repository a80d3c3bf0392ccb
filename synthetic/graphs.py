"""Random graphs with node features, sampled for K models at once.

A graph has n nodes; its adjacency is Erdos-Renyi (each unordered pair an edge with probability
``edge_prob``, symmetric, no self loops); node features are uniform in the ball of radius
``radius`` in R^d; every node also carries an id, a random permutation of 1..n (distinct integers:
the separability the depth-O(n) MPNN construction assumes, and positional ids for the others).

Glossary of shapes
    K   models (one torch.Generator each)
    B   graphs per model (``batch_size``)
    n   nodes per graph;  d  feature width

Draw order, for each model k from ``generators[k]`` alone, in float64: feature directions
(B, n, d), feature radii (B, n, 1), edge coins (B, n, n) (the upper triangle is used), then the id
permutations (B rows of n keys, argsorted). So model k of a batch sees exactly the graphs it would
see alone, and a float32 batch is the float64 batch rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GraphTask:
    """Graphs of ``n_nodes`` nodes with ``d_features`` features each (see the module docstring)."""

    n_nodes: int
    d_features: int
    edge_prob: float = 0.3
    radius: float = 1.0

    def __post_init__(self):
        for name in ("n_nodes", "d_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GraphTask.{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.edge_prob, (int, float)) or not 0.0 <= self.edge_prob <= 1.0:
            raise ValueError(f"GraphTask.edge_prob must be in [0, 1], got {self.edge_prob!r}")
        if not isinstance(self.radius, (int, float)) or not self.radius > 0:
            raise ValueError(f"GraphTask.radius must be > 0, got {self.radius!r}")


@dataclass
class GraphBatch:
    """features (K, B, n, d), adjacency (K, B, n, n) 0/1 symmetric, ids (K, B, n) in 1..n."""

    features: Tensor
    adjacency: Tensor
    ids: Tensor

    def model(self, k: int) -> GraphBatch:
        """Model k's graphs, keeping the K axis (of size 1)."""
        return GraphBatch(self.features[k:k + 1], self.adjacency[k:k + 1], self.ids[k:k + 1])


def _one_model(task: GraphTask, gen: torch.Generator, B: int) -> tuple[Tensor, Tensor, Tensor]:
    n, d, f64 = task.n_nodes, task.d_features, torch.float64
    g = torch.randn(B, n, d, generator=gen, dtype=f64)
    r = task.radius * torch.rand(B, n, 1, generator=gen, dtype=f64) ** (1.0 / d)
    features = g / g.norm(dim=-1, keepdim=True).clamp(min=1e-300) * r
    coins = torch.rand(B, n, n, generator=gen, dtype=f64) < task.edge_prob
    upper = torch.triu(coins, diagonal=1)
    adjacency = (upper | upper.transpose(-1, -2)).to(f64)
    ids = torch.rand(B, n, generator=gen, dtype=f64).argsort(-1).to(f64) + 1
    return features, adjacency, ids


def sample(task: GraphTask, generators: list[torch.Generator], batch_size: int, *,
           dtype=torch.float64, device=None) -> GraphBatch:
    """B graphs for each of K = len(generators) models."""
    if not generators:
        raise ValueError("sample: need at least one generator (one per model)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    parts = [_one_model(task, gen, batch_size) for gen in generators]
    stack = lambda i: torch.stack([p[i] for p in parts]).to(dtype=dtype, device=device)
    return GraphBatch(stack(0), stack(1), stack(2))
