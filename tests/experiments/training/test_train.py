"""The batched trainer: per-model optimiser math, batched == separate runs, masking, resume."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.common.validate import ConfigError
from experiments.training.config import Curriculum, RunConfig
from experiments.training.fit import FunctionProblem
from experiments.training.optim import FlatSpec, Hyper, adamw, clip_coef, grad_norms, hyper_rows, lr_at
from experiments.training.regression import make_trainer, train_runs
from experiments.training.trainer import Loop, Plateau, Trainer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's
    spinning threads slow them down many times over."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_config(**train) -> RunConfig:
    """A tiny float64 run: 2 layers, width 16, d = 3, 6 points, 8 prompts per step."""
    task = {"d": 3, "n_points": 6, "eval_batch_size": 16, **train.pop("task", {})}
    model = {"n_layers": 2, "d_model": 16, "n_heads": 2, **train.pop("model", {})}
    train = {"steps": 30, "batch_size": 8, "dtype": "float64", "log_every": 10, **train}
    return RunConfig.from_dict({"task": task, "model": model, "train": train})


def mixed_runs(task: dict | None = None, **common) -> list[RunConfig]:
    """Three models that differ in everything that may differ inside one batch."""
    task = task or {}
    return [
        run_config(seed=0, lr=1e-3, grad_clip=0.5, task=task, **common),
        run_config(seed=1, lr=3e-3, grad_clip=0.0, weight_decay=0.1, beta2=0.99, task=task, **common),
        run_config(seed=2, lr=1e-2, grad_clip=0.05, warmup_steps=5, task={**task, "noise_std": 0.5}, **common),
    ]


def hyper(K: int, **values) -> Hyper:
    base = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "warmup": 0,
            "total": 100, "min_lr_ratio": 0.1, "clip": 0.0}
    return Hyper.stack([{**base, **values}] * K, dtype=torch.float64, device="cpu")


# ----------------------------------------------------------------------------------------------
# Optimiser math against torch's own implementations (K = 1)


def test_adamw_matches_torch_adamw_for_one_model():
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(1, 7, generator=gen, dtype=torch.float64)
    param = torch.nn.Parameter(p0[0].clone())
    opt = torch.optim.AdamW([param], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    hp = hyper(1, lr=1e-2, beta2=0.99, weight_decay=0.1)
    theta, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t in range(5):
        g = torch.randn(1, 7, generator=gen, dtype=torch.float64)
        param.grad = g[0].clone()
        opt.step()
        theta, m, v = adamw(theta, m, v, g, torch.tensor(t), hp.lr, hp, torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(theta[0], param.detach(), rtol=0, atol=1e-14)


def test_per_model_clipping_matches_torch_clip_grad_norm_model_by_model():
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(3, 10, generator=gen, dtype=torch.float64) * torch.tensor([[0.1], [1.0], [10.0]])
    clip = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # 0 = no clipping
    clipped = g * clip_coef(grad_norms(g), clip)[:, None]
    for k in range(2):
        want = g[k].clone().requires_grad_()
        want.grad = g[k].clone()
        torch.nn.utils.clip_grad_norm_([want], max_norm=1.0)
        torch.testing.assert_close(clipped[k], want.grad, rtol=0, atol=1e-15)
    torch.testing.assert_close(clipped[2], g[2])  # model 2 is not clipped; model 0 is under its clip


def test_schedule_warms_up_linearly_then_follows_the_cosine_to_its_floor():
    hp = hyper(1, lr=1.0, warmup=4, total=14, min_lr_ratio=0.1)
    lr = [float(lr_at(hp, torch.tensor(t))) for t in range(15)]
    assert lr[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr[4] == pytest.approx(1.0)  # cosine starts at the peak
    assert lr[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert lr[14] == pytest.approx(0.1)


def test_linear_schedule_warms_up_then_falls_on_a_straight_line_to_its_floor_per_model():
    """Model 0 keeps the cosine, model 1 takes the line: warmup 4 steps to lr 1, then 10 steps from 1
    down to 0.2, i.e. 0.08 a step (values by hand); the plain loop's LambdaLR factor agrees."""
    from experiments.training.plain import schedule

    rows = [{"lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "warmup": 4, "total": 14,
             "min_lr_ratio": 0.2, "clip": 0.0, "schedule": name} for name in ("cosine", "linear")]
    hp = Hyper.stack(rows, dtype=torch.float64, device="cpu")
    lr = torch.stack([lr_at(hp, torch.tensor(t)) for t in range(16)])  # (16, 2)
    assert lr[:4, 1].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr[4:15, 1].tolist() == pytest.approx([1.0, 0.92, 0.84, 0.76, 0.68, 0.6, 0.52, 0.44, 0.36, 0.28, 0.2])
    assert float(lr[15, 1]) == pytest.approx(0.2)  # past the end: the floor
    assert float(lr[9, 0]) == pytest.approx(0.2 + 0.8 * 0.5)  # the cosine model is untouched (halfway: 0.6)
    assert float(lr[7, 0]) != pytest.approx(float(lr[7, 1]))
    run = run_config(steps=14, lr=1.0, warmup_steps=4, min_lr_ratio=0.2, schedule="linear")
    assert [schedule(run)(t) for t in range(15)] == pytest.approx(lr[:15, 1].tolist())


def test_the_schedule_field_is_validated_and_left_out_of_the_run_id_at_its_default():
    with pytest.raises(ConfigError, match="train.schedule"):
        run_config(schedule="triangle")
    assert "schedule" not in run_config().to_dict()["train"]
    assert run_config(schedule="cosine").run_id == run_config().run_id
    linear = run_config(schedule="linear")
    assert linear.to_dict()["train"]["schedule"] == "linear" and linear.run_id != run_config().run_id
    assert RunConfig.from_dict(linear.to_dict()) == linear


def test_flat_buffer_round_trips_typed_weights_and_decays_only_matrices():
    cfg = run_config().model_config()
    spec = FlatSpec.of(cfg)
    theta = torch.randn(2, spec.n_params, dtype=torch.float64)
    torch.testing.assert_close(spec.flatten(spec.unflatten(theta)), theta)
    decay = spec.decay_mask(torch.float64)
    w = spec.unflatten(decay.expand(1, -1))
    assert float(w.W_E.min()) == 1.0 and float(w.b_E.max()) == 0.0 and float(w.blocks[0].ln1.w.max()) == 0.0
    attn = w.blocks[0].attn
    assert float(attn.W_Q.min()) == 1.0 and float(w.W_pos.min()) == 1.0
    # the per-head biases are (H, Dh) per model: two axes, but biases all the same (no decay)
    assert max(float(b.max()) for b in (attn.b_Q, attn.b_K, attn.b_V, attn.b_O)) == 0.0


def test_curriculum_grows_points_and_dimensions_up_to_the_task_size():
    cur = Curriculum(dims_start=2, dims_inc=1, points_start=3, points_inc=2, interval=10)
    assert [cur.at(s, d=4, n_points=8) for s in (0, 9, 10, 25, 1000)] == [(3, 2), (3, 2), (5, 3), (7, 4), (8, 4)]


# ----------------------------------------------------------------------------------------------
# Batched == separate


def assert_batch_equals_separate(runs, atol: float, rel_norm: float = 0.0, rel_loss: float = 1e-12) -> None:
    _, batched = train_runs(runs, device="cpu")
    for k, run in enumerate(runs):
        _, alone = train_runs([run], device="cpu")
        if rel_norm:
            gap = (batched.theta[k] - alone.theta[0]).norm() / alone.theta[0].norm()
            assert float(gap) < rel_norm
        else:
            torch.testing.assert_close(batched.theta[k], alone.theta[0], atol=atol, rtol=0)
        got = [r["loss"] for r in batched.metrics[k]]
        want = [r["loss"] for r in alone.metrics[0]]
        assert got == pytest.approx(want, abs=atol, rel=rel_loss)


def test_batched_float64_training_equals_separate_runs_with_different_lrs_and_clips():
    """Same seeds, 30 steps: only reduction order differs (batched vs single matmuls), ~1e-14."""
    assert_batch_equals_separate(mixed_runs(curriculum={"dims_start": 1, "points_start": 2, "interval": 10}),
                                 atol=1e-10)


def test_batched_float32_training_equals_separate_runs_to_float32_tolerance():
    """float32 (eps 1.2e-7): batched and single kernels round differently, and Adam's normalised
    step m / sqrt(v) turns a flipped sign of a near-zero gradient entry into a difference of up to
    2 lr in that entry, so entries are not compared one by one. Measured after 30 steps: relative
    weight-norm gap <= 1e-4 and logged losses within 3e-5 relative; we allow 1e-3 for both."""
    assert_batch_equals_separate(mixed_runs(dtype="float32"), atol=0.0, rel_norm=1e-3, rel_loss=1e-3)


def test_example_format_trains_batched_like_separate_runs():
    assert_batch_equals_separate(mixed_runs(task={"format": "example"})[:2], atol=1e-10)


def test_chunking_the_models_of_a_step_changes_nothing():
    runs = mixed_runs(steps=10)
    chunked, whole = make_trainer(runs, device="cpu", model_chunk=2), make_trainer(runs, device="cpu", model_chunk=3)
    a, b = chunked.fit(chunked.initial_state()), whole.fit(whole.initial_state())
    torch.testing.assert_close(a.theta, b.theta, atol=1e-12, rtol=0)


def test_diverging_model_is_masked_with_its_step_and_the_others_go_on():
    """lr = 1e300: after one step the weights are ~1e300 and the next forward pass overflows."""
    runs = [run_config(seed=0), run_config(seed=1, lr=1e300, grad_clip=0.0)]
    trainer, state = train_runs(runs, device="cpu")
    summary = trainer.summary(state)
    assert summary[1]["status"] == "diverged" and 0 < summary[1]["diverged_step"] < 30
    assert summary[0]["status"] == "done" and summary[0]["steps_done"] == 30
    _, alone = train_runs(runs[:1], device="cpu")
    torch.testing.assert_close(state.theta[0], alone.theta[0], rtol=0, atol=1e-10)


def test_early_stop_freezes_only_the_model_that_hit_its_target():
    runs = [run_config(seed=0, early_stop_target=1e9), run_config(seed=1)]
    trainer, state = train_runs(runs, device="cpu")
    assert state.stopped_step == [10, -1]
    assert [len(m) for m in state.metrics] == [1, 3]
    summary = trainer.summary(state)
    assert summary[0]["steps_done"] == 10 and summary[1]["steps_done"] == 30
    ten = make_trainer(runs[:1], device="cpu")
    torch.testing.assert_close(state.theta[0], ten.fit(ten.initial_state(), max_steps=10).theta[0], atol=1e-12, rtol=0)


def test_resuming_from_a_checkpoint_slice_continues_exactly():
    runs = mixed_runs()
    trainer = make_trainer(runs, device="cpu")
    half = trainer.fit(trainer.initial_state(), max_steps=20)
    slices = [trainer.checkpoint_slice(half, k) for k in range(len(runs))]
    fresh = make_trainer(runs, device="cpu")
    resumed = fresh.fit(fresh.state_from_slices(slices))
    _, straight = train_runs(runs, device="cpu")
    assert torch.equal(resumed.theta, straight.theta)
    assert resumed.metrics == straight.metrics


def test_a_training_step_never_synchronises_with_the_host(monkeypatch):
    """Reading a value on the host (item, bool, tolist, cpu, numpy) fails inside the step loop."""
    trainer = make_trainer(mixed_runs(), device="cpu")
    state = trainer.initial_state()
    trainer.step(state)  # warm-up outside the guard

    def refuse(*args, **kwargs):
        raise AssertionError("host synchronisation inside the training step")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for _ in range(3):
        trainer.step(state)
    monkeypatch.undo()
    assert state.step == 4


def test_bfloat16_autocast_trains_the_same_models_in_mixed_precision():
    """float32 weights, bf16 matmuls (torch.autocast, here on the CPU): the models train (finite,
    falling loss) and land near, not on, the float32 run: bf16 keeps 8 bits of mantissa, so after 30
    steps at these learning rates (up to 1e-2) the weights differ by 8% relative (measured 0.084);
    0.25 leaves room, and a gap of exactly 0 would mean autocast was not applied."""
    runs = mixed_runs(dtype="float32")
    trainer = make_trainer(runs, device="cpu", autocast="bfloat16")
    mixed = trainer.fit(trainer.initial_state())
    _, full = train_runs(runs, device="cpu")
    assert all(math.isfinite(r["loss"]) for m in mixed.metrics for r in m)
    gap = float((mixed.theta - full.theta).norm() / full.theta.norm())
    assert 0 < gap < 0.25
    with pytest.raises(ValueError, match="autocast must be one of"):
        make_trainer(runs, device="cpu", autocast="float8")


# ----------------------------------------------------------------------------------------------
# GPU and compile


@pytest.mark.slow
def test_compiled_step_equals_eager_step_on_cpu():
    runs = mixed_runs(steps=10)
    _, eager = train_runs(runs, device="cpu")
    _, compiled = train_runs(runs, device="cpu", compile=True)
    torch.testing.assert_close(compiled.theta, eager.theta, atol=1e-10, rtol=0)


@pytest.mark.gpu
def test_batched_cuda_training_equals_cpu_training():
    """Data drawn on the CPU generators (data_on = "cpu") so both devices see the same numbers;
    float64 kernels on the GPU reduce in another order, so agreement is to ~1e-9, not bitwise."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    runs = mixed_runs(data_on="cpu")
    _, cpu = train_runs(runs, device="cpu")
    _, gpu = train_runs(runs, device="cuda")
    torch.testing.assert_close(gpu.theta.cpu(), cpu.theta, atol=1e-9, rtol=0)


@pytest.mark.gpu
def test_compiled_step_runs_on_cuda_and_matches_eager():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    runs = mixed_runs(dtype="float32", steps=20)
    _, eager = train_runs(runs, device="cuda")
    _, compiled = train_runs(runs, device="cuda", compile=True)
    torch.testing.assert_close(compiled.theta, eager.theta, atol=1e-4, rtol=1e-3)
    assert all(math.isfinite(r["loss"]) for m in compiled.metrics for r in m)


def test_the_garg_token_layout_trains_with_d_wide_tokens_and_the_same_predictions_per_step():
    """task.format = "interleaved_y0": d input features (not d + 1), causal mask, one prediction per
    point; batched equals separate as for the other formats."""
    runs = mixed_runs(task={"format": "interleaved_y0"})[:2]
    cfg = runs[0].model_config()
    assert cfg.d_in == runs[0].task.d and cfg.mask == "causal"
    assert_batch_equals_separate(runs, atol=1e-10)
    trainer, state = train_runs(runs[:1], device="cpu")
    assert len(trainer.summary(state)[0]["curve"]) == runs[0].task.n_points


def test_an_identity_embedding_and_readout_stay_fixed_while_attention_trains():
    """model.io = "identity" (an LSA layer without input or output projection, von Oswald et al.):
    the embedding copies the tokens, the readout is -y; 30 steps change the attention weights but
    not those, bit for bit, and positions = false leaves no position embedding."""
    run = run_config(task={"format": "example"}, model={"n_layers": 1, "d_model": 4, "n_heads": 1, "d_head": 4,
                                                        "attention": "linear", "mlp": "none", "norm": "none",
                                                        "final_norm": False, "bias": False, "io": "identity",
                                                        "positions": False})
    trainer, state = train_runs([run], device="cpu")
    w, w0 = trainer.weights(state, 0), trainer.spec.unflatten(trainer.problem.init_theta())
    assert w.W_pos is None
    assert torch.equal(w.W_E[0], torch.eye(4, dtype=torch.float64))
    assert torch.equal(w.W_U[0, :, 0], torch.tensor([0.0, 0.0, 0.0, -1.0], dtype=torch.float64))
    assert not torch.equal(w.blocks[0].attn.W_Q, w0.blocks[0].attn.W_Q)
    with pytest.raises(ConfigError, match="model.io = 'identity'"):
        run_config(model={"io": "identity"})  # d_model 16 is not d + 1 = 4


def test_a_plateau_cuts_only_that_models_learning_rate_after_its_patience():
    """Model 0's loss is flat (its target is where it starts), model 1's falls (its target is too far
    to reach in 70 steps): with patience 2 and factor 0.1, model 0's rate drops after its 4th log (3
    logs without improvement after the first) and again after its 7th; a row shows the rate used
    in the steps it sums. Model 1's never drops. A checkpoint slice keeps the scale."""

    class Flat(FunctionProblem):
        def plateaus(self):
            return [Plateau(factor=0.1, patience=2)] * 2

    theta = torch.zeros(2, 3, dtype=torch.float64)
    target = torch.tensor([[0.0, 0.0, 0.0], [50.0, 50.0, 50.0]], dtype=torch.float64)
    losses = lambda th, t: (th - t).pow(2).mean(1)  # noqa: E731
    hypers = hyper_rows([{"lr": 0.1, "min_lr_ratio": 1.0}] * 2, 70)
    problem = Flat(losses, theta, hypers, lambda step: (target,), torch.ones(3, dtype=torch.float64))
    trainer = Trainer(problem, Loop(70, 10))
    state = trainer.fit(trainer.initial_state())
    assert state.tensors.lr_scale.tolist() == pytest.approx([0.01, 1.0])
    assert [r["lr"] for r in state.metrics[0]] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
    resumed = trainer.state_from_slices([trainer.checkpoint_slice(state, k) for k in range(2)])
    assert resumed.tensors.lr_scale.tolist() == pytest.approx([0.01, 1.0]) and resumed.plateau_wait == state.plateau_wait
