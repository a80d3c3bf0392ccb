"""Pre-LN = Pre-RMSNorm = Pre-CRMSNorm: a weight transformation with identical outputs.

Claim (Jiang et al. 2023). For any Pre-LN model of :mod:`constructions.model` (random or trained),
there are Pre-RMSNorm and Pre-CRMSNorm models computing the same function. With P = I - 11^T / D
(the projection onto zero-mean vectors) and LN(h) = g * (h - mean h) / sqrt(var h + eps) + b:

1. Recenter every writer to the residual stream: W_E, b_E, W_pos, and each residual branch's
   output projection W_O, b_O, W_out, b_out, times P on the model axis D. The stream h' of the new
   model is then h P at every layer (by induction: a sum of centred terms), and LN(h) = LN(h P)
   because LN subtracts the mean first.
2. On a zero-mean vector z, var z = mean z^2 and mean z = 0, so LN(z) = g * RMSNorm(z) + b with
   the same eps. Fold g and b into the linear map that reads the norm's output:
       (g * r + b) W + c = r (diag(g) W) + (b W + c)
   for W_Q, W_K (when queries and keys read the stream), W_V after ln1, W_in after ln2, W_U after
   the final norm. The RMSNorm gains are ones, and there are no norm biases.
   With softmax attention the folded key bias b_K is then set to zero: it adds q_i . b_K to every
   score of query i alike, which softmax ignores (so the weight could not be checked either).
3. CRMSNorm: a zero-mean D-vector z is determined by its first D - 1 coordinates (z_D = -sum of the
   others), so the stream stores only those. Writers drop their last column; a reader W of the
   normalized vector becomes W[:D-1] - W[D-1] (since z W = z[:D-1] W[:D-1] + z_D W[D-1]); the
   norm computes mean z^2 = (|z'|^2 + (sum z')^2) / D from the stored z' (model.norm, "crmsnorm").

Every step is an identity, so the outputs agree to float round-off: ~1e-15 relative in float64
(the check's bound is 1e-11 on the scaled error), and in float32 ~7e-7 (measured on 3-layer
random models; :data:`FLOAT32_TOLERANCE` = 1e-5 leaves room for deeper ones; the recentred weights
are computed in the weights' own dtype). Works on K models at once.

Preconditions (errors name them): norm = "layernorm"; final_norm = True (without a final norm the
readout sees the mean the transformation removes); mlp_input = "residual" (a concat MLP reads the
stream without a norm); bias = True unless every LayerNorm bias is zero (folding b needs biases).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from constructions import model as M
from constructions.check import domains
from constructions.check.contract import Built, Case, Construction, require, scaled_error

FLOAT32_TOLERANCE = 1e-5  # scaled error of the float32 transformation on O(1) random models (tests)
TARGETS = ("rmsnorm", "crmsnorm")


def _check(cfg: M.ModelConfig, w: M.Weights) -> None:
    require(cfg.norm == "layernorm", f"norm equivalence needs a Pre-LN model (norm='layernorm'), got norm={cfg.norm!r}")
    require(cfg.final_norm, "norm equivalence needs final_norm=True: without it the readout sees the stream's mean")
    require(cfg.mlp_input == "residual", "norm equivalence needs mlp_input='residual' (a concat MLP reads an unnormed stream)")
    if not cfg.bias:
        for key, t in M.to_state_dict(w).items():
            require(not (key.endswith(".b") and t.abs().max() > 0),
                    f"bias=False but LayerNorm bias {key} is nonzero: folding it needs biases in the model")
    M.check_weights(cfg, w)


def _fold(norm: M.Norm, W: Tensor, b: Tensor | None, heads: bool) -> tuple[Tensor, Tensor | None]:
    """(g * r + nb) W + b = r (diag(g) W) + (nb W + b). W: (K, D, X) or (K, H, D, X) if heads."""
    g = norm.w[:, None, :, None] if heads else norm.w[:, :, None]
    folded = W * g
    if b is None:
        return folded, None
    shift = torch.einsum("kd,khdx->khx", norm.b, W) if heads else torch.einsum("kd,kdx->kx", norm.b, W)
    return folded, b + shift


def _center(t: Tensor | None) -> Tensor | None:
    """t (..., D) -> t P: subtract the mean over the last (model) axis."""
    return None if t is None else t - t.mean(-1, keepdim=True)


def _ones(norm: M.Norm) -> M.Norm:
    return M.Norm(w=torch.ones_like(norm.w))


def to_rmsnorm(cfg: M.ModelConfig, w: M.Weights) -> tuple[M.ModelConfig, M.Weights]:
    """The Pre-RMSNorm model with the same outputs (steps 1-2 of the module docstring)."""
    _check(cfg, w)
    w = w.map(lambda t: t.clone())
    w.W_E, w.b_E, w.W_pos = _center(w.W_E), _center(w.b_E), _center(w.W_pos)
    for blk in w.blocks:
        a = blk.attn
        readers = ("V",) if cfg.qk_source == "positions" else ("Q", "K", "V")
        for r in readers:
            W, b = _fold(blk.ln1, getattr(a, f"W_{r}"), getattr(a, f"b_{r}"), heads=True)
            setattr(a, f"W_{r}", W)
            setattr(a, f"b_{r}", b)
        if cfg.attention == "softmax" and a.b_K is not None and cfg.qk_source == "residual":
            a.b_K = torch.zeros_like(a.b_K)  # q_i . b_K is the same for every key: softmax ignores it
        a.W_O, a.b_O = _center(a.W_O), _center(a.b_O)
        blk.ln1 = _ones(blk.ln1)
        if blk.mlp is not None:
            blk.mlp.W_in, blk.mlp.b_in = _fold(blk.ln2, blk.mlp.W_in, blk.mlp.b_in, heads=False)
            blk.mlp.W_out, blk.mlp.b_out = _center(blk.mlp.W_out), _center(blk.mlp.b_out)
            blk.ln2 = _ones(blk.ln2)
    w.W_U, w.b_U = _fold(w.ln_f, w.W_U, w.b_U, heads=False)
    w.ln_f = _ones(w.ln_f)
    return dataclasses.replace(cfg, norm="rmsnorm"), w


def _drop(t: Tensor | None) -> Tensor | None:
    """A writer (..., D) -> (..., D - 1): the stored coordinates."""
    return None if t is None else t[..., :-1].contiguous()


def _reader(W: Tensor, axis: int) -> Tensor:
    """A reader of the normalized D-vector (model axis ``axis``): W[:D-1] - W[D-1]."""
    W = W.movedim(axis, -1)
    return (W[..., :-1] - W[..., -1:]).movedim(-1, axis).contiguous()


def to_crmsnorm(cfg: M.ModelConfig, w: M.Weights) -> tuple[M.ModelConfig, M.Weights]:
    """The Pre-CRMSNorm model (model width D - 1) with the same outputs (steps 1-3)."""
    require(cfg.d_model >= 2, f"CRMSNorm needs d_model >= 2, got {cfg.d_model}")
    cfg, w = to_rmsnorm(cfg, w)
    w.W_E, w.b_E, w.W_pos = _drop(w.W_E), _drop(w.b_E), _drop(w.W_pos)
    for blk in w.blocks:
        a = blk.attn
        readers = ("V",) if cfg.qk_source == "positions" else ("Q", "K", "V")
        for r in readers:
            setattr(a, f"W_{r}", _reader(getattr(a, f"W_{r}"), axis=2))
        a.W_O, a.b_O = _drop(a.W_O), _drop(a.b_O)
        blk.ln1 = M.Norm(w=_drop(blk.ln1.w))
        if blk.mlp is not None:
            blk.mlp.W_in = _reader(blk.mlp.W_in, axis=1)
            blk.mlp.W_out, blk.mlp.b_out = _drop(blk.mlp.W_out), _drop(blk.mlp.b_out)
            blk.ln2 = M.Norm(w=_drop(blk.ln2.w))
    w.W_U = _reader(w.W_U, axis=1)
    w.ln_f = M.Norm(w=_drop(w.ln_f.w))
    return dataclasses.replace(cfg, norm="crmsnorm", d_model=cfg.d_model - 1, layout=None), w


def transform(cfg: M.ModelConfig, w: M.Weights, target: str) -> tuple[M.ModelConfig, M.Weights]:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    out = to_rmsnorm(cfg, w) if target == "rmsnorm" else to_crmsnorm(cfg, w)
    M.check_weights(*out)
    return out


# ----------------------------------------------------------------------------------------------
# The check: a random Pre-LN model (non-trivial gains and biases), every layer compared


def random_pre_ln(gen: torch.Generator, d_model: int, n_layers: int, T: int, K: int = 1,
                  dtype=torch.float64) -> tuple[M.ModelConfig, M.Weights]:
    """A Pre-LN GPT-style model with O(1) weights, gains 1 + N(0, 1/4) and biases N(0, 1/4)."""
    cfg = M.ModelConfig(d_model=d_model, n_layers=n_layers, n_heads=2, d_head=2, d_in=3, d_out=2,
                        d_mlp=2 * d_model, mlp="gelu", norm="layernorm", final_norm=True, n_positions=T)
    sd = {}
    for key, shape in M.weight_shapes(cfg, K).items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        sd[key] = (1 + noise / 2 if key.endswith(".w") else noise / 2 if key.split(".")[-1].startswith("b")
                   else noise / shape[-2] ** 0.5).to(dtype)
    return cfg, M.from_state_dict(sd)


def sample(gen: torch.Generator, *, d: int | None = None, n: int | None = None, depth: int | None = None) -> Case:
    d_model = domains.clamped(gen, d, 2, 8)
    T = domains.clamped(gen, n, 3, 8)  # T >= 3: one token sees all of Q, K
    n_layers = domains.clamped(gen, depth, 1, 3)
    cfg, w = random_pre_ln(gen, d_model, n_layers, T)
    tokens = torch.randn(domains.BATCH, T, cfg.d_in, generator=gen, dtype=torch.float64)
    return Case({}, data={"cfg": cfg, "weights": w, "tokens": tokens})


def errors(built: Built, case: Case) -> dict[str, float]:
    """Output and every layer's stream: the new stream is (LN stream) P, or its first D - 1 entries."""
    ref = M.forward(case.data["cfg"], case.data["weights"], case.data["tokens"], residuals=True)
    new = M.forward(built.cfg, built.weights, case.data["tokens"], residuals=True)
    out = {"output": scaled_error(new.out, ref.out)}
    for l, (h_new, h_ref) in enumerate(zip(new.residuals, ref.residuals)):
        out[f"layer {l}"] = scaled_error(h_new, _center(h_ref)[..., :h_new.shape[-1]])
    return out


def _construction(target: str) -> Construction:
    return Construction(
        name=f"pre_{target}",
        exactness="exact",
        algorithm="model.forward (the same model with norm='layernorm')",
        summary=f"Pre-LN -> Pre-{'RMSNorm' if target == 'rmsnorm' else 'CRMSNorm'} weight transformation: same outputs",
        sample=sample,
        build=lambda case: Built(*transform(case.data["cfg"], case.data["weights"], target)),
        errors=errors,
        bound=1e-11,
        bound_note="float64 round-off through L <= 3 layers of O(1) weights: ~ 1e-14",
    )


RMS = _construction("rmsnorm")
CRMS = _construction("crmsnorm")
