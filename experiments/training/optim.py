"""Per-model optimisation math over one flat parameter buffer per batch of models.

K models of one shape keep all their weights in a single tensor ``theta`` of shape (K, P): row k is
model k's parameters, flattened in the fixed key order of ``constructions.model.weight_shapes``.
The typed ``Weights`` the forward pass reads are views of it (one ``split``, so the backward pass
is one concatenation, not one full-size buffer per tensor). Every optimiser quantity is then a
(K, P) tensor or a (K,) vector, and nothing couples two rows:

    clipping     g_k <- g_k * min(1, c_k / (||g_k|| + 1e-6))   (the norm of model k's slice only)
    schedule     linear warmup to lr_k over w_k steps, then cosine (or, per model, a straight line) to
                 lr_k * r_k at step T_k
    AdamW        torch.optim.AdamW's update, written with (K, 1) hyperparameters

Glossary: K models, P parameters per model. Pure functions; no I/O, no loops over models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from constructions.model import ModelConfig, Weights, from_state_dict, to_state_dict, weight_shapes

CLIP_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_
HYPER_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "warmup": 0,
                  "total": 1, "min_lr_ratio": 0.1, "clip": 1.0}


@dataclass(frozen=True)
class FlatSpec:
    """Where each named weight lives in a row of ``theta`` (K, P)."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # per-model shapes (no K axis)

    @classmethod
    def of(cls, cfg: ModelConfig) -> FlatSpec:
        return cls.of_shapes(weight_shapes(cfg, 1))

    @classmethod
    def of_shapes(cls, shapes: dict[str, tuple[int, ...]]) -> FlatSpec:
        """From any ``{key: (1, ...)}`` shape contract (e.g. ``constructions.mpnn.weight_shapes``)."""
        return cls(tuple(shapes), tuple(s[1:] for s in shapes.values()))

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def n_params(self) -> int:
        return sum(self.sizes)

    def flatten(self, w: Weights) -> Tensor:
        """Typed weights (K, ...) -> theta (K, P)."""
        return self.flatten_dict(to_state_dict(w))

    def views(self, theta: Tensor) -> dict[str, Tensor]:
        """theta (K, P) -> {key: (K, ...)} views of theta (a flat weight dict)."""
        K = theta.shape[0]
        pieces = theta.split(self.sizes, dim=1)
        return {k: p.view(K, *s) for k, p, s in zip(self.keys, pieces, self.shapes)}

    def flatten_dict(self, w: dict[str, Tensor]) -> Tensor:
        """{key: (K, ...)} -> theta (K, P)."""
        K = w[self.keys[0]].shape[0]
        return torch.cat([w[key].reshape(K, -1) for key in self.keys], dim=1)

    def unflatten(self, theta: Tensor) -> Weights:
        """theta (K, P) -> typed weights whose tensors are views of theta."""
        return from_state_dict(self.views(theta))

    def key_mask(self, frozen: tuple[str, ...], dtype=torch.float32, device=None) -> Tensor:
        """(P,) 0 on the weights named in ``frozen``, 1 elsewhere."""
        return torch.cat([torch.full((n,), float(key not in frozen), dtype=dtype, device=device)
                          for key, n in zip(self.keys, self.sizes)])

    def decay_mask(self, dtype=torch.float32, device=None) -> Tensor:
        """(P,) 1 on weight matrices (decayed, as in GPT-2 training), 0 on biases and norm gains. A
        matrix is a tensor whose name starts with ``W`` (W_E, W_Q, W_pos, W_in, ...); telling them by
        shape would decay the per-head attention biases b_Q, b_K, b_V, which are (H, Dh) per model."""
        parts = [torch.full((n,), float(key.rsplit(".", 1)[-1].startswith("W")), dtype=dtype, device=device)
                 for key, n in zip(self.keys, self.sizes)]
        return torch.cat(parts)


SCHEDULES = ("cosine", "linear")  # the decay after the warmup; Hyper.schedule holds the index


@dataclass(frozen=True)
class Hyper:
    """Per-model hyperparameters, each a (K,) tensor on the training device."""

    lr: Tensor
    beta1: Tensor
    beta2: Tensor
    eps: Tensor
    weight_decay: Tensor
    warmup: Tensor  # steps of linear warmup
    total: Tensor  # total steps (the cosine reaches its floor here)
    min_lr_ratio: Tensor
    clip: Tensor  # max grad norm; <= 0 means no clipping
    schedule: Tensor  # index into SCHEDULES: 0 cosine, 1 linear decay

    @classmethod
    def stack(cls, rows: list[dict], *, dtype, device) -> Hyper:
        """One dict per model with a value for every field -> (K,) tensors. ``schedule`` is a name in
        SCHEDULES and may be left out (cosine): the families whose settings are ``HYPER_DEFAULTS``
        keys alone (approximation fits, sequence tasks) keep the schedule they always had."""
        def value(r: dict, name: str) -> float:
            return float(SCHEDULES.index(r.get(name, "cosine"))) if name == "schedule" else float(r[name])
        return cls(**{f.name: torch.tensor([value(r, f.name) for r in rows], dtype=dtype, device=device)
                      for f in fields(cls)})


def hyper_rows(hypers: Sequence[dict], steps: int) -> list[dict]:
    """Fill each model's hyperparameters with the defaults (``total`` defaults to ``steps``)."""
    unknown = {k for h in hypers for k in h} - set(HYPER_DEFAULTS)
    if unknown:
        raise ValueError(f"hyperparameters: unknown fields {sorted(unknown)}; known: {sorted(HYPER_DEFAULTS)}")
    return [{**HYPER_DEFAULTS, "total": steps, **h} for h in hypers]


def lr_at(hp: Hyper, t: Tensor) -> Tensor:
    """Learning rate (K,) for step index t (0-based, a 0-dim tensor): warmup, then per model either
    the cosine or the straight line from lr down to lr * min_lr_ratio at step ``total``.

    With progress p in [0, 1] after the warmup, the factor is r + (1 - r) (1 + cos(pi p)) / 2
    (cosine) or r + (1 - r) (1 - p) (linear: with r = 0 and the warmup, the "triangle" of Raventos
    et al.). Both start at 1 and end at r, so the two differ only in the shape between."""
    t = t.to(hp.lr.dtype)
    warm = hp.lr * (t + 1) / hp.warmup.clamp(min=1)
    progress = ((t - hp.warmup) / (hp.total - hp.warmup).clamp(min=1)).clamp(0, 1)
    floor = hp.min_lr_ratio
    cosine = hp.lr * (floor + (1 - floor) * 0.5 * (1 + torch.cos(math.pi * progress)))
    linear = hp.lr * (floor + (1 - floor) * (1 - progress))
    decay = torch.where(hp.schedule == SCHEDULES.index("linear"), linear, cosine)
    return torch.where(t < hp.warmup, warm, decay)


def grad_norms(g: Tensor) -> Tensor:
    """Per-model gradient norms (K,) of g (K, P)."""
    return g.pow(2).sum(dim=1).sqrt()


def clip_coef(norms: Tensor, clip: Tensor) -> Tensor:
    """(K,) factors that bring each model's gradient norm down to its clip (1 where no clip)."""
    coef = (clip / (norms + CLIP_EPS)).clamp(max=1.0)
    return torch.where(clip > 0, coef, torch.ones_like(coef))


def adamw(theta: Tensor, m: Tensor, v: Tensor, g: Tensor, t: Tensor, lr: Tensor, hp: Hyper,
          decay: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One AdamW step for every model (torch.optim.AdamW's formula); returns new theta, m, v.

    theta, m, v, g: (K, P); t: 0-dim step index (0-based); lr: (K,); decay: (P,) weight-decay mask.
    """
    col = lambda x: x[:, None]  # noqa: E731  (K,) -> (K, 1)
    n = (t + 1).to(theta.dtype)
    theta = theta * (1 - col(lr * hp.weight_decay) * decay)
    m = col(hp.beta1) * m + col(1 - hp.beta1) * g
    v = col(hp.beta2) * v + col(1 - hp.beta2) * g * g
    bias1 = 1 - hp.beta1.pow(n)
    bias2 = 1 - hp.beta2.pow(n)
    denom = v.sqrt() / col(bias2.sqrt()) + col(hp.eps)
    return theta - col(lr / bias1) * m / denom, m, v


def adamw_(theta: Tensor, m: Tensor, v: Tensor, g: Tensor, t: Tensor, lr: Tensor, hp: Hyper, decay: Tensor,
           ok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`adamw` for the rows where ``ok`` (K,) holds, in place on theta, m and v (no copies of
    the (K, P) buffers); rows where it does not keep theta, m and v bit for bit. ``g`` must be zero
    on those rows. The arithmetic of a live row is the same as :func:`adamw`'s (a factor 1.0 is
    exact), so the two agree to the last bit."""
    live = ok.to(theta.dtype)
    col = lambda x: x[:, None]  # noqa: E731  (K,) -> (K, 1)
    n = (t + 1).to(theta.dtype)
    theta.mul_(1 - col(lr * hp.weight_decay * live) * decay)
    m.mul_(col(torch.where(ok, hp.beta1, 1.0))).add_(g * col((1 - hp.beta1) * live))
    v.mul_(col(torch.where(ok, hp.beta2, 1.0))).add_(g.mul(col((1 - hp.beta2) * live)).mul_(g))
    bias1 = 1 - hp.beta1.pow(n)
    bias2 = 1 - hp.beta2.pow(n)
    denom = v.sqrt().div_(col(bias2.sqrt())).add_(col(hp.eps))
    theta.sub_(m.mul(col(lr * live / bias1)).div_(denom))
    return theta, m, v
