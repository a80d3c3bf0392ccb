"""The baseline that counts: one model trained the way people write it by hand.

``PlainTransformer`` is an ``nn.Module`` of ``nn.Linear`` / ``nn.LayerNorm`` layers (attention
through ``F.scaled_dot_product_attention`` for softmax, as nanoGPT does), holding the same weights
as a :mod:`constructions.model` model of one config, so that both compute the same function (a test
checks it to round-off). :func:`plain_trainer` trains it with ``torch.optim.AdamW``,
``loss.backward()``, ``clip_grad_norm_`` and a ``LambdaLR`` schedule, on the same data and with the
same hyperparameters as THE trainer would use for the same run: this is what ``ttb bench train``
compares against.

Supported: attention softmax or linear; masks causal or exclude_query; MLP none, relu, gelu,
gelu_tanh; norm none or layernorm; learned positions; with or without biases (what the benchmark
shapes need). Anything else is a ValueError naming the field.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from constructions.model import ModelConfig, Weights
from experiments.training.config import RunConfig
from experiments.training.regression import RegressionProblem, predictions

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda a: F.gelu(a, approximate="tanh")}


def _check(cfg: ModelConfig) -> None:
    for name, value, allowed in (("attention", cfg.attention, ("softmax", "linear")),
                                 ("mask", cfg.mask, ("causal", "exclude_query")),
                                 ("mlp", cfg.mlp, ("none", *ACTIVATIONS)), ("norm", cfg.norm, ("none", "layernorm")),
                                 ("qk_source", cfg.qk_source, ("residual",)), ("residual", cfg.residual, (True,)),
                                 ("mlp_input", cfg.mlp_input, ("residual",)), ("layer_attention", cfg.layer_attention,
                                                                               (None,))):
        if value not in allowed:
            raise ValueError(f"the plain baseline supports ModelConfig.{name} in {allowed}, got {value!r}")


def _linear(W: Tensor, b: Tensor | None) -> nn.Linear:
    """nn.Linear computing x @ W + b for W (in, out)."""
    layer = nn.Linear(W.shape[0], W.shape[1], bias=b is not None, dtype=W.dtype)
    with torch.no_grad():
        layer.weight.copy_(W.T)
        if b is not None:
            layer.bias.copy_(b)
    return layer


def _norm(cfg: ModelConfig, p) -> nn.Module:
    if cfg.norm == "none" or p is None:
        return nn.Identity()
    layer = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=p.b is not None, dtype=p.w.dtype)
    with torch.no_grad():
        layer.weight.copy_(p.w[0])
        if p.b is not None:
            layer.bias.copy_(p.b[0])
    return layer


def _heads(W: Tensor) -> Tensor:
    """(1, H, D, Dh) -> (D, H * Dh): every head's projection side by side."""
    return W[0].permute(1, 0, 2).flatten(1)


def _flat(b: Tensor | None) -> Tensor | None:
    return None if b is None else b[0].flatten()


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, p):
        super().__init__()
        self.cfg, a = cfg, p.attn
        self.ln1, self.ln2 = _norm(cfg, p.ln1), _norm(cfg, p.ln2)
        self.q, self.k, self.v = (_linear(_heads(W), _flat(b)) for W, b in ((a.W_Q, a.b_Q), (a.W_K, a.b_K),
                                                                             (a.W_V, a.b_V)))
        self.o = _linear(a.W_O[0].flatten(0, 1), _flat(a.b_O))
        self.fc = self.proj = None
        if cfg.mlp != "none":
            self.fc, self.proj = _linear(p.mlp.W_in[0], _flat(p.mlp.b_in)), _linear(p.mlp.W_out[0], _flat(p.mlp.b_out))

    def attention(self, x: Tensor, mask: Tensor) -> Tensor:
        B, T, _ = x.shape
        H, Dh = self.cfg.n_heads, self.cfg.d_head
        q, k, v = (f(x).view(B, T, H, Dh).transpose(1, 2) for f in (self.q, self.k, self.v))  # (B, H, T, Dh)
        if self.cfg.attention == "softmax":
            causal = self.cfg.mask == "causal"
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=None if causal else mask, is_causal=causal,
                                               scale=self.cfg.softmax_beta)
        else:
            z = ((q @ k.transpose(-1, -2)) * mask / mask.sum(-1, keepdim=True)) @ v
        return self.o(z.transpose(1, 2).reshape(B, T, H * Dh))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attention(self.ln1(x), mask)
        if self.fc is not None:
            x = x + self.proj(ACTIVATIONS[self.cfg.mlp](self.fc(self.ln2(x))))
        return x


class PlainTransformer(nn.Module):
    """One model of ``cfg`` as an nn.Module, initialised from typed weights (K = 1)."""

    def __init__(self, cfg: ModelConfig, w: Weights):
        super().__init__()
        _check(cfg)
        if w.K != 1:
            raise ValueError(f"PlainTransformer holds one model (K = 1), got K = {w.K}")
        self.cfg = cfg
        self.embed = _linear(w.W_E[0], _flat(w.b_E))
        self.pos = None if w.W_pos is None else nn.Parameter(w.W_pos[0].clone())
        self.blocks = nn.ModuleList(Block(cfg, p) for p in w.blocks)
        self.ln_f = _norm(cfg, w.ln_f) if cfg.final_norm else nn.Identity()
        self.unembed = _linear(w.W_U[0], _flat(w.b_U))

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T, Din) -> readout (B, T, Dout)."""
        T = tokens.shape[1]
        i = torch.arange(T, device=tokens.device)
        mask = (i[None, :] <= i[:, None]) if self.cfg.mask == "causal" else (i[None, :] < T - 1).expand(T, T)
        mask = mask if self.cfg.attention == "softmax" else mask.to(tokens.dtype)
        h = self.embed(tokens) + (0.0 if self.pos is None else self.pos[:T])
        for block in self.blocks:
            h = block(h, mask)
        return self.unembed(self.ln_f(h))


# ----------------------------------------------------------------------------------------------
# Training it by hand


def schedule(run: RunConfig):
    """The learning-rate factor of THE trainer's schedule (warmup, then ``train.schedule``: cosine or
    a straight line down to min_lr_ratio)."""
    tr = run.train
    shapes = {"cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)), "linear": lambda p: 1 - p}

    def factor(step: int) -> float:
        if step < tr.warmup_steps:
            return (step + 1) / max(tr.warmup_steps, 1)
        progress = min(max((step - tr.warmup_steps) / max(tr.steps - tr.warmup_steps, 1), 0.0), 1.0)
        return tr.min_lr_ratio + (1 - tr.min_lr_ratio) * shapes[tr.schedule](progress)

    return factor


class PlainTrainer:
    """One regression run trained by hand: nn.Module, AdamW, backward, clipping, LambdaLR. The model
    starts from THE trainer's init for the run and sees the same data stream."""

    def __init__(self, run: RunConfig, device=None, autocast: str | None = None):
        self.problem = problem = RegressionProblem([run], device)
        self.autocast = autocast
        self.run, self.fmt = run, run.task.format
        w = problem.spec.unflatten(problem.init_theta())
        self.model = PlainTransformer(problem.cfg, w).to(problem.device)
        params = list(self.model.named_parameters())
        tr = run.train
        groups = [{"params": [p for _, p in params if p.dim() >= 2], "weight_decay": tr.weight_decay},
                  {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=tr.lr, betas=(tr.beta1, tr.beta2), eps=tr.eps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule(run))
        self.gens = problem.generators()
        self.step_index = 0

    def step(self) -> Tensor:
        tokens, targets = self.problem.batch(self.gens, self.step_index)
        with torch.autocast(self.problem.device.type, dtype=torch.bfloat16, enabled=self.autocast is not None):
            out = self.model(tokens[0])[None].to(targets.dtype)
        loss = (predictions(self.fmt, out) - targets).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.run.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.train.grad_clip)
        self.opt.step()
        self.sched.step()
        self.step_index += 1
        return loss.detach()
