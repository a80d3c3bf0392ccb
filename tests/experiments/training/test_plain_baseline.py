"""The plain PyTorch baseline of `ttb bench train` is the same model and the same training: its
nn.Module computes what constructions.model computes with the same weights, and a few steps of
torch.optim.AdamW + backward() + clip_grad_norm_ + LambdaLR land where THE trainer lands."""

import pytest
import torch

from constructions import model as M
from experiments.training.config import RunConfig
from experiments.training.plain import PlainTrainer, PlainTransformer
from experiments.training.regression import train_runs

SHAPES = {
    "gpt2-like": ({"n_layers": 2, "d_model": 16, "n_heads": 2, "mlp": "gelu_tanh", "norm": "layernorm"},
                  {"format": "interleaved"}),
    "lsa": ({"n_layers": 1, "d_model": 4, "n_heads": 1, "d_head": 4, "attention": "linear", "mlp": "none",
             "norm": "none", "final_norm": False, "bias": False}, {"format": "example"}),
    "softmax, example format": ({"n_layers": 1, "d_model": 8, "n_heads": 2, "mlp": "relu", "norm": "none",
                                 "final_norm": False}, {"format": "example"}),
}


def run(shape: str, **train) -> RunConfig:
    model, task = SHAPES[shape]
    return RunConfig.from_dict({"task": {"d": 3, "n_points": 6, **task}, "model": {**model, "init_std": 0.3},
                                "train": {"steps": 8, "batch_size": 4, "dtype": "float64", "log_every": 8, **train}})


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_plain_module_computes_what_the_forward_pass_computes(shape):
    """Random float64 weights (init std 0.3, so every unit is active): outputs agree to round-off."""
    r = run(shape)
    cfg = r.model_config()
    w = M.init(cfg, [torch.Generator().manual_seed(1)], std=0.3, dtype=torch.float64)
    tokens = torch.randn(5, r.task.n_tokens, cfg.d_in, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = M.forward(cfg, w, tokens).out[0]
    torch.testing.assert_close(PlainTransformer(cfg, w)(tokens), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_training_by_hand_lands_where_the_batched_trainer_lands(shape):
    """8 steps with warmup, weight decay and clipping: torch's AdamW, clip_grad_norm_ and LambdaLR
    against the trainer's per-model versions, in float64; only summation orders differ (~1e-15)."""
    r = run(shape, lr=3e-2, warmup_steps=3, weight_decay=0.1, grad_clip=0.5)
    trainer, state = train_runs([r], device="cpu")
    plain = PlainTrainer(r, device="cpu")
    for _ in range(8):
        plain.step()
    got = trainer.spec.flatten(M.from_state_dict(_typed(plain.model, trainer)))
    torch.testing.assert_close(got, state.theta, rtol=0, atol=1e-10)


def _typed(model: PlainTransformer, trainer) -> dict:
    """The plain module's parameters back in the typed weights' flat layout (K = 1)."""
    cfg, sd = trainer.problem.cfg, {}
    H, Dh = cfg.n_heads, cfg.d_head
    heads = lambda lin: lin.weight.detach().T.reshape(cfg.d_model, H, Dh).permute(1, 0, 2)[None]  # noqa: E731
    sd["W_E"] = model.embed.weight.detach().T[None]
    if model.embed.bias is not None:
        sd["b_E"] = model.embed.bias.detach()[None]
    if model.pos is not None:
        sd["W_pos"] = model.pos.detach()[None]
    for i, b in enumerate(model.blocks):
        p = f"blocks.{i}."
        for name, lin in (("W_Q", b.q), ("W_K", b.k), ("W_V", b.v)):
            sd[p + "attn." + name] = heads(lin)
            if lin.bias is not None:
                sd[p + "attn.b_" + name[-1]] = lin.bias.detach().view(1, H, Dh)
        sd[p + "attn.W_O"] = b.o.weight.detach().T.reshape(H, Dh, cfg.d_model)[None]
        if b.o.bias is not None:
            sd[p + "attn.b_O"] = b.o.bias.detach()[None]
        for name, ln in (("ln1", b.ln1), ("ln2", b.ln2)):
            if isinstance(ln, torch.nn.LayerNorm):
                sd[p + name + ".w"], sd[p + name + ".b"] = ln.weight.detach()[None], ln.bias.detach()[None]
        if b.fc is not None:
            sd[p + "mlp.W_in"], sd[p + "mlp.W_out"] = b.fc.weight.detach().T[None], b.proj.weight.detach().T[None]
            if b.fc.bias is not None:
                sd[p + "mlp.b_in"], sd[p + "mlp.b_out"] = b.fc.bias.detach()[None], b.proj.bias.detach()[None]
    if isinstance(model.ln_f, torch.nn.LayerNorm):
        sd["ln_f.w"], sd["ln_f.b"] = model.ln_f.weight.detach()[None], model.ln_f.bias.detach()[None]
    sd["W_U"] = model.unembed.weight.detach().T[None]
    if model.unembed.bias is not None:
        sd["b_U"] = model.unembed.bias.detach()[None]
    return sd
