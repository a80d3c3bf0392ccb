"""Test-time distribution shifts: shapes, per-model seeding, the property that defines each shift, and
agreement with a small independent re-implementation (numpy, replaying the same generator)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthetic import functions as fn
from synthetic import shifts as S
from synthetic import tasks as icl
from synthetic.regression import RegressionTask, make_generators, sample

F64 = torch.float64
TASK = RegressionTask(d=4, n_points=4, noise_std=0.3)  # 3 examples < d: a query can be orthogonal to all
PARAMS = [pytest.param(S.parse_shift(text), id=text) for text in
          ("standard", "skewed", "orthant", "orthogonal_query", "query_in_context", "scale_x:3", "scale_y:0.5",
           "noisy_y:2")]


def shifted(shift, task=TASK, seeds=(0,), batch_size=64, dtype=F64):
    return S.sample(task, shift, make_generators(seeds), batch_size, dtype=dtype)


def unshifted(task=TASK, seeds=(0,), batch_size=64):
    return sample(task, make_generators(seeds), batch_size, dtype=F64)


def noise(batch) -> torch.Tensor:
    """y - w . x at every point: (K, B, N)."""
    return batch.y - (batch.x * batch.w[:, :, None, :]).sum(-1)


def replay(seed: int = 0, task=TASK, batch_size: int = 64) -> torch.Generator:
    """A generator in the state the shift finds it: the task's own draw already made."""
    g = torch.Generator().manual_seed(seed)
    sample(task, [g], batch_size, dtype=F64)
    return g


# ----------------------------------------------------------------------------------------------
# Every shift: shapes, seeding, consistency with the prompt's function


@pytest.mark.parametrize("shift", PARAMS)
def test_every_shift_keeps_the_batch_shapes_and_the_requested_dtype(shift):
    batch = shifted(shift, seeds=(0, 1), batch_size=5, dtype=torch.float32)
    assert (batch.x.shape, batch.y.shape, batch.w.shape) == ((2, 5, 4, 4), (2, 5, 4), (2, 5, 4))
    assert {batch.x.dtype, batch.y.dtype, batch.w.dtype} == {torch.float32}


@pytest.mark.parametrize("shift", PARAMS)
def test_model_k_of_a_batch_sees_what_its_generator_alone_gives_and_seeds_repeat(shift):
    both = shifted(shift, seeds=(3, 7))
    for k, seed in enumerate((3, 7)):
        alone = shifted(shift, seeds=(seed,))
        for name in ("x", "y", "w"):
            assert torch.equal(getattr(both, name)[k], getattr(alone, name)[0]), name


@pytest.mark.parametrize("shift", PARAMS)
def test_a_float32_batch_is_the_float64_batch_rounded(shift):
    torch.testing.assert_close(shifted(shift, dtype=torch.float32).x, shifted(shift).x.float(), rtol=0, atol=0)


@pytest.mark.parametrize("shift", [p for p in PARAMS if p.id not in ("scale_y:0.5", "noisy_y:2")])
def test_shifts_of_x_recompute_y_from_the_prompts_own_w_and_keep_each_points_noise(shift):
    before, after = unshifted(), shifted(shift)
    assert torch.equal(after.w, before.w)
    # y' - w.x' and y - w.x are the same noise draw, up to float64 round-off of sums of d products
    torch.testing.assert_close(noise(after), noise(before), rtol=0, atol=1e-12)


def test_the_standard_shift_is_the_task_as_drawn():
    before, after = unshifted(), shifted(S.Shift("standard"))
    assert all(torch.equal(getattr(before, n), getattr(after, n)) for n in ("x", "y", "w"))


# ----------------------------------------------------------------------------------------------
# The property that defines each shift


def test_skewed_inputs_are_the_drawn_inputs_times_a_symmetric_matrix_with_spectrum_one_over_i():
    task = RegressionTask(d=2, n_points=6)
    before, after = unshifted(task), shifted(S.Shift("skewed"), task)
    s = torch.linalg.lstsq(before.x[0].reshape(-1, 2), after.x[0].reshape(-1, 2)).solution  # x' = x S
    torch.testing.assert_close(s, s.T, rtol=0, atol=1e-12)
    # by hand: lam = (1, 1/2) rescaled so lam_1^2 + lam_2^2 = d = 2, i.e. times sqrt(2 / 1.25)
    want = torch.tensor([0.5, 1.0], dtype=F64) * math.sqrt(2 / 1.25)
    torch.testing.assert_close(torch.linalg.eigvalsh(s), want, rtol=0, atol=1e-12)


def test_skewed_inputs_have_trace_d_covariance_with_a_decaying_spectrum():
    task = RegressionTask(d=3, n_points=2)
    x = shifted(S.Shift("skewed"), task, batch_size=40_000).x[0].reshape(-1, 3)
    cov = x.T @ x / len(x)
    eig = torch.linalg.eigvalsh(cov).flip(0)
    want = torch.tensor([1.0, 1 / 4, 1 / 9], dtype=F64) * 3 / (1 + 1 / 4 + 1 / 9)
    # 80,000 draws: each eigenvalue's relative standard error is about sqrt(2 / 80000) = 0.5%; 5% is ~10 se
    torch.testing.assert_close(eig, want, rtol=0.05, atol=0)


def test_orthant_puts_every_context_input_of_a_prompt_in_one_orthant_and_leaves_the_query():
    before, after = unshifted(), shifted(S.Shift("orthant"))
    signs = after.x[0, :, :-1].sign()  # (B, N, d)
    assert torch.equal(signs, signs[:, :1].expand_as(signs))
    assert torch.equal(after.x[0, :, :-1].abs(), before.x[0, :, :-1].abs())
    assert torch.equal(after.x[0, :, -1], before.x[0, :, -1])
    assert len({tuple(p.tolist()) for p in signs[:, 0]}) > 4  # a random orthant per prompt, not one for all


def test_the_orthogonal_query_is_orthogonal_to_every_example_and_keeps_its_norm():
    before, after = unshifted(), shifted(S.Shift("orthogonal_query"))
    dots = (after.x[0, :, :-1] * after.x[0, :, -1:]).sum(-1)
    assert dots.abs().max() < 1e-10  # float64: exact up to round-off
    torch.testing.assert_close(after.x[0, :, -1].norm(dim=-1), before.x[0, :, -1].norm(dim=-1), rtol=1e-12, atol=0)
    assert torch.equal(after.x[0, :, :-1], before.x[0, :, :-1])


def test_with_as_many_examples_as_dimensions_the_query_is_orthogonal_to_the_first_d_minus_one():
    task = RegressionTask(d=3, n_points=6)
    x = shifted(S.Shift("orthogonal_query"), task).x[0]
    assert (x[:, :2] * x[:, -1:]).sum(-1).abs().max() < 1e-10
    assert (x[:, 2:-1] * x[:, -1:]).sum(-1).abs().min() > 0


def test_the_query_in_context_is_one_of_the_examples_at_a_random_position():
    before, after = unshifted(), shifted(S.Shift("query_in_context"))
    same = (after.x[0, :, :-1] == after.x[0, :, -1:]).all(-1)  # (B, N)
    assert torch.equal(same.sum(-1), torch.ones(64, dtype=torch.long))
    assert set(same.float().argmax(-1).tolist()) == {0, 1, 2}
    # its y is w . x_q plus the query's own noise draw, not the example's y
    torch.testing.assert_close(noise(after)[0, :, -1], noise(before)[0, :, -1], rtol=0, atol=1e-12)


def test_scale_x_multiplies_the_inputs_and_scale_y_the_outputs_and_the_weights():
    before = unshifted()
    x_scaled, y_scaled = shifted(S.parse_shift("scale_x:3")), shifted(S.parse_shift("scale_y:0.5"))
    torch.testing.assert_close(x_scaled.x, 3 * before.x, rtol=1e-15, atol=0)
    torch.testing.assert_close(y_scaled.y, 0.5 * before.y, rtol=1e-15, atol=0)
    torch.testing.assert_close(y_scaled.w, 0.5 * before.w, rtol=1e-15, atol=0)
    assert torch.equal(y_scaled.x, before.x)


def test_noisy_y_adds_noise_of_the_stated_standard_deviation():
    before, after = unshifted(batch_size=4096), shifted(S.parse_shift("noisy_y:2"), batch_size=4096)
    added = (after.y - before.y).flatten()
    # 16,384 draws: the sample std has relative standard error 1/sqrt(2 n) = 0.55%; 3% is ~5 se
    assert added.std().item() == pytest.approx(2.0, rel=0.03)
    assert abs(added.mean().item()) < 5 * 2.0 / math.sqrt(len(added))


# ----------------------------------------------------------------------------------------------
# Agreement with an independent re-implementation (numpy; Garg et al.'s formulas)


def test_skewed_agrees_with_a_numpy_rebuild_of_the_transform_from_the_same_draw():
    g = replay()
    a = np.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64).numpy())
    u = a[0] * np.sign(np.diag(a[1]))
    lam = 1 / np.arange(1, 5)
    lam = lam * np.sqrt(4 / np.sum(lam**2))
    want = unshifted().x[0].numpy() @ (u @ np.diag(lam) @ u.T)
    np.testing.assert_allclose(shifted(S.Shift("skewed")).x[0].numpy(), want, rtol=0, atol=1e-12)


def test_orthant_agrees_with_garg_et_al_random_quadrants_from_the_same_draw():
    g = replay()
    pattern = torch.randn(64, 1, 4, generator=g, dtype=F64).sign().numpy()
    x = unshifted().x[0].numpy()
    want = np.concatenate([np.abs(x[:, :-1]) * pattern, x[:, -1:]], axis=1)
    np.testing.assert_array_equal(shifted(S.Shift("orthant")).x[0].numpy(), want)


def test_orthogonal_query_agrees_with_garg_et_al_svd_projection():
    x = unshifted().x[0].numpy()
    want = []
    for prompt in x:  # one prompt at a time, as the SVD projection of orthogonal_train_test
        vt = np.linalg.svd(prompt[:-1], full_matrices=False)[2]
        q = prompt[-1] - prompt[-1] @ vt.T @ vt
        want.append(q * np.linalg.norm(prompt[-1]) / np.linalg.norm(q))
    np.testing.assert_allclose(shifted(S.Shift("orthogonal_query")).x[0, :, -1].numpy(), np.array(want),
                               rtol=0, atol=1e-12)


def test_query_in_context_and_noisy_y_agree_with_a_replay_of_their_draws():
    g = replay()
    index = torch.randint(0, 3, (64,), generator=g).numpy()
    x = unshifted().x[0].numpy()
    np.testing.assert_array_equal(shifted(S.Shift("query_in_context")).x[0, :, -1].numpy(), x[np.arange(64), index])
    eps = torch.randn(64, 4, generator=replay(), dtype=F64).numpy()
    np.testing.assert_allclose(shifted(S.parse_shift("noisy_y:2")).y[0].numpy(), unshifted().y[0].numpy() + 2 * eps,
                               rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# Other linear tasks, unsupported tasks and bad names


def test_the_linear_kinds_of_synthetic_tasks_keep_their_extra_fields_under_a_shift():
    pool = icl.TaskPoolTask(d=3, n_points=4, pool_size=2, noise_std=0.1)
    before = icl.sample(pool, make_generators([0]), 8, dtype=F64)
    after = S.sample(pool, S.Shift("skewed"), make_generators([0]), 8, dtype=F64)
    assert torch.equal(after.task_index, before.task_index)
    torch.testing.assert_close(noise(after), noise(before), rtol=0, atol=1e-12)


def test_the_standard_shift_draws_any_task_even_one_without_an_evaluator():
    task = icl.RepresentationTask(d=3, n_points=4)
    before = icl.sample(task, make_generators([0]), 4, dtype=F64)
    after = S.sample(task, S.Shift("standard"), make_generators([0]), 4, dtype=F64)
    assert torch.equal(after.features, before.features) and torch.equal(after.y, before.y)


def test_a_task_without_an_evaluator_is_a_one_line_error_naming_it_and_the_supported_ones():
    task = icl.RepresentationTask(d=3, n_points=4)
    with pytest.raises(ValueError, match=r"RepresentationTask has none \(supported: RegressionTask") as err:
        S.sample(task, S.Shift("scale_x"), make_generators([0]), 2)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("tilted", r"unknown shift 'tilted'; known shifts are standard, skewed, orthant"),
    ("skewed:2", r"shift 'skewed' takes no factor"),
    ("scale_x:0", r"shift 'scale_x': factor must be > 0"),
    ("noisy_y:-1", r"shift 'noisy_y': factor must be >= 0"),
    ("scale_y:big", r"factor must be a number, got 'big'"),
])
def test_bad_shift_names_and_factors_fail_with_a_line_that_names_them(text, message):
    with pytest.raises(ValueError, match=message):
        S.parse_shift(text)


def test_shift_names_round_trip_through_their_text_with_the_default_factor_made_explicit():
    assert str(S.parse_shift("scale_x")) == "scale_x:2"
    assert S.parse_shift(str(S.parse_shift("noisy_y:0.5"))) == S.Shift("noisy_y", 0.5)
    assert str(S.Shift("orthant")) == "orthant"


# ---------------------------------------------------------------------------------------------
# Function classes (synthetic.functions): shifted while drawn


FUNCTION_TASKS = {
    "tree": fn.DecisionTreeTask(d=4, n_points=4),
    "relu2nn": fn.ReluNetworkTask(d=4, n_points=4, width=8),
    "quadratic": fn.QuadraticTask(d=4, n_points=4),
    "logistic": fn.ClassificationTask(d=4, n_points=4),
    "mixture": fn.MixtureTask(d=4, n_points=4, components=(fn.QuadraticTask(d=4, n_points=4),
                                                           fn.ClassificationTask(d=4, n_points=4))),
}


@pytest.mark.parametrize("name", FUNCTION_TASKS)
def test_a_function_class_unshifted_is_its_own_sample_and_every_shift_keeps_the_shapes(name):
    task = FUNCTION_TASKS[name]
    own = fn.sample(task, make_generators([0, 1]), 16, dtype=F64)
    same = S.sample(task, S.parse_shift("standard"), make_generators([0, 1]), 16, dtype=F64)
    assert torch.equal(own.x, same.x) and torch.equal(own.y, same.y)
    for shift in PARAMS:
        batch = S.sample(task, shift.values[0], make_generators([0, 1]), 16)
        assert batch.x.shape == (2, 16, 4, 4) and batch.y.shape == (2, 16, 4) and torch.isfinite(batch.y).all()
        assert (batch.family is not None) == (name == "mixture")


def test_scaling_x_by_c_scales_a_quadratic_by_c_squared_and_leaves_a_tree_alone():
    """Same seeds, so the same inputs and functions: (x o x) . w / sqrt(3) is homogeneous of degree 2,
    and a tree splits at 0, so scaling x by 3 moves no point to another leaf."""
    c = S.parse_shift("scale_x:3")
    quad, tree = FUNCTION_TASKS["quadratic"], FUNCTION_TASKS["tree"]
    assert torch.allclose(shifted(c, quad).y, 9 * unshifted_fn(quad).y, atol=1e-12, rtol=0)
    assert torch.equal(shifted(c, tree).y, unshifted_fn(tree).y)
    assert torch.allclose(shifted(c, quad).x, 3 * unshifted_fn(quad).x, atol=0, rtol=0)


def unshifted_fn(task):
    return fn.sample(task, make_generators([0]), 64, dtype=F64)


def test_a_query_in_context_of_a_relu_network_gets_that_examples_label():
    batch = shifted(S.parse_shift("query_in_context"), FUNCTION_TASKS["relu2nn"])
    x, y = batch.x[0], batch.y[0]
    match = (x[:, :-1] == x[:, -1:]).all(-1)  # (B, N): which example the query copies
    assert match.any(-1).all()
    assert torch.allclose(y[:, -1], (y[:, :-1] * match).sum(-1) / match.sum(-1), atol=1e-12, rtol=0)


def test_an_orthogonal_query_of_a_mixture_is_orthogonal_to_every_example():
    batch = shifted(S.parse_shift("orthogonal_query"), FUNCTION_TASKS["mixture"])
    dots = (batch.x[..., :-1, :] * batch.x[..., -1:, :]).sum(-1)
    assert dots.abs().max() < 1e-10 and batch.x[..., -1, :].norm(dim=-1).min() > 0


def test_apply_refuses_a_function_class_batch_and_names_sample():
    task = FUNCTION_TASKS["tree"]
    batch = fn.sample(task, make_generators([0]), 4, dtype=F64)
    with pytest.raises(ValueError, match="shifts.sample"):
        S.apply(S.parse_shift("skewed"), task, batch, make_generators([0]))
