"""Looped constructions: one block (group) applied b times against the unlooped construction, the
reference at any loop count, the weight count, and mutations of the shared block."""

import pytest
import torch

from constructions import model as M
from constructions.check.contract import Built, Case
from constructions.icl import gd, gd_plus_plus, looped, looped_newton, newton, preconditioned_gd
from constructions.reference import algorithms
from constructions.registry import CONSTRUCTIONS
from constructions.tokens import example_tokens, query_prediction
from experiments.commands.main import main

# looped construction -> (the unlooped module with the same build() parameters, blocks per loop)
PAIRS = {
    "gd_looped": (gd, 1),
    "preconditioned_gd_looped": (preconditioned_gd, 1),
    "gd_plus_plus_looped": (gd_plus_plus, 1),
    "newton_looped": (newton, looped_newton.GROUP),
}
NAMES = list(PAIRS)


def _case(name: str, depth: int, seed: int = 0, d: int = 3, n: int = 7) -> Case:
    return CONSTRUCTIONS[name].sample(torch.Generator().manual_seed(seed), d=d, n=n, depth=depth)


def _run(built, case: Case, loops: int | None = None) -> M.Output:
    tokens = example_tokens(case.x, case.y, case.x_query)
    return M.forward(built.cfg, built.weights, tokens, residuals=True, loops=loops)


def _scaled(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


def test_the_four_looped_constructions_are_registered_as_exact():
    assert all(CONSTRUCTIONS[name].exactness == "exact" for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("depth", [1, 4])
def test_looped_construction_equals_the_unrolled_construction_with_the_same_parameters(name, depth):
    """Same build() parameters, so the same claimed iterates: the GD family's streams agree slot by
    slot after every layer (same layout, same blocks); newton's u slot after loop t + 1 equals the
    unlooped layer t + 1, and both readouts agree. 1e-12: the only difference is the order of
    float64 operations (newton forms alpha S x from sqrt(alpha) x twice), ~ 2^k d N eps ~ 1e-14."""
    unlooped_module, group = PAIRS[name]
    case = _case(name, depth)
    a = _run(CONSTRUCTIONS[name].build(case), case)
    b = _run(unlooped_module.build(**case.params), case)
    assert _scaled(a.out, b.out) <= 1e-12
    if group == 1:
        assert len(a.residuals) == len(b.residuals) == depth + 1
        assert max(_scaled(h, g) for h, g in zip(a.residuals, b.residuals)) <= 1e-12
        return
    u_looped, u_plain = looped_newton.layout(3)["u"], newton.layout(3)["u"]
    for t in range(case.params["n_iter"] + 1):
        assert _scaled(a.residuals[group * (t + 1)][..., u_looped], b.residuals[t + 1][..., u_plain]) <= 1e-12


def _reference_prediction(name: str, case: Case, n_iterations: int) -> torch.Tensor:
    """The reference algorithm's query prediction after n_iterations (newton: start + n - 1 iterations)."""
    p, x, y, xq = case.params, case.x, case.y, case.x_query
    if name == "newton_looped":
        S, b = algorithms.statistics(x, y)
        M_last = algorithms.newton_schulz(S, alpha=p["alpha"], n_iter=n_iterations - 1)[-1]
        return algorithms.predict(algorithms.predict(M_last, b.unsqueeze(-2)), xq)
    if name == "gd_plus_plus_looped":
        return algorithms.gd_plus_plus(x, y, xq, eta=p["eta"], gamma=p["gamma"], n_steps=n_iterations).prediction[-1]
    P = p["P"] if "P" in p else p["eta"] * torch.eye(p["d"], dtype=torch.float64)
    return algorithms.predict(algorithms.preconditioned_gd(x, y, P=P, n_steps=n_iterations)[-1], xq)


@pytest.mark.parametrize("name", NAMES)
def test_the_same_weights_run_as_many_iterations_as_loops(name):
    """Built for 2 loops, run for 1, 3, 5 and 7: the readout is the reference's prediction after
    that many iterations, and not after 2 (so the loop count, not the build, sets the depth).
    1e-10: the construction's own bound (round-off ~ 2^k d N eps for newton, ~ d N eps for GD)."""
    case = _case(name, depth=2, seed=1)
    built = CONSTRUCTIONS[name].build(case)
    at_build = _reference_prediction(name, case, 2)
    for loops in (1, 3, 5, 7):
        want = _reference_prediction(name, case, loops)
        got = query_prediction(_run(built, case, loops).out[0])
        assert _scaled(got, want) <= 1e-10, f"loops={loops}"
        assert _scaled(got, at_build) > 1e-6, f"loops={loops}: the reference barely moved, the test would be vacuous"


def test_one_gd_block_run_for_three_loops_takes_three_steps_computed_by_hand():
    """d = 1, examples (x, y) = (1, 1), (2, 1), eta = 1/2, query 1 (as the unlooped gd anchor):
    w_1 = 3/4, w_2 = 9/16; grad at 9/16 is (1/2)((9/16 - 1) + (9/8 - 1) 2) = -3/32, so
    w_3 = 9/16 + 3/64 = 39/64. Built for one step, the same block runs all three."""
    built = looped.build_gd(d=1, n_steps=1, eta=0.5)
    case = Case({}, torch.tensor([[[1.0], [2.0]]], dtype=torch.float64), torch.tensor([[1.0, 1.0]], dtype=torch.float64),
                torch.tensor([[1.0]], dtype=torch.float64))
    run = _run(built, case, loops=3)
    preds = [M.readout(built.cfg, built.weights, h)[0, 0, -1, 0].item() for h in run.residuals]
    assert preds == pytest.approx([0.0, 3 / 4, 9 / 16, 39 / 64], abs=1e-15)


def _n_weights(built) -> int:
    return sum(t.numel() for t in M.to_state_dict(built.weights).values())


@pytest.mark.parametrize("name", NAMES)
def test_a_looped_construction_has_the_weights_of_one_group_whatever_its_loop_count(name):
    unlooped_module, group = PAIRS[name]
    shallow, deep = _case(name, depth=1), _case(name, depth=6)
    one, many = CONSTRUCTIONS[name].build(shallow), CONSTRUCTIONS[name].build(deep)
    assert len(one.weights.blocks) == len(many.weights.blocks) == group
    assert many.cfg.n_loops == 6 and _n_weights(one) == _n_weights(many)
    w = many.weights
    one_group = sum(t.numel() for k, t in M.to_state_dict(w).items() if k.startswith("blocks."))
    assert _n_weights(many) == w.W_E.numel() + w.W_U.numel() + one_group
    assert _n_weights(unlooped_module.build(**deep.params)) > _n_weights(many)  # unlooped: one layer per step


def _per_loop(errs: dict[str, float], group: int) -> list[float]:
    """Worst error of each loop: labels "layer i" (i = 1..L) and "layer L+k", in loop order."""
    blocks = [v for k, v in errs.items() if k != "layer 0" and not k.startswith("layer L+")]
    blocks += [v for k, v in errs.items() if k.startswith("layer L+")]
    return [max(blocks[i: i + group]) for i in range(0, len(blocks), group)]


@pytest.mark.parametrize("name", NAMES)
def test_a_mutation_of_the_shared_block_is_caught_at_every_iteration(name):
    """Every non-zero weight of the group, perturbed by 1e-3 of its size (as ``ttb check --mutate``):
    each loop's own readout and slots, built ones and extra ones, are off by far more than the bound.
    Not vacuous: the unperturbed weights pass every loop (asserted first)."""
    c, group = CONSTRUCTIONS[name], PAIRS[name][1]
    case = _case(name, depth=3, seed=2)
    built = c.build(case)
    assert max(c.errors(built, case).values()) <= c.bound_for(case)
    gen = torch.Generator().manual_seed(3)
    sd = M.to_state_dict(built.weights)
    for key in sorted(k for k, t in sd.items() if k.startswith("blocks.") and t.abs().max() > 0):
        noise = 1e-3 * sd[key].abs().max() * torch.randn(sd[key].shape, generator=gen, dtype=sd[key].dtype)
        broken = Built(built.cfg, M.from_state_dict({**sd, key: sd[key] + noise}))
        per_loop = _per_loop(c.errors(broken, case), group)
        assert len(per_loop) == 3 + looped.EXTRA_LOOPS
        assert min(per_loop) > 1e3 * c.bound_for(case), f"{key}: per-loop errors {per_loop}"


@pytest.mark.parametrize("name", NAMES)
def test_errors_fail_weights_that_are_right_for_the_built_loops_but_not_beyond(name):
    """Built for one loop, then switched to input injection (the embedding is added before every
    loop after the first): the built single loop is untouched and passes, so only the extra loops
    that errors() runs can see that these weights no longer iterate."""
    c = CONSTRUCTIONS[name]
    case = _case(name, depth=1, seed=4)
    built = c.build(case)
    injected = Built(M.ModelConfig(**{**built.cfg.__dict__, "input_injection": True}), built.weights)
    errs = c.errors(injected, case)
    extra = {k: v for k, v in errs.items() if k.startswith("layer L+")}
    assert len(extra) == PAIRS[name][1] * looped.EXTRA_LOOPS > 0
    assert max(v for k, v in errs.items() if k not in extra) <= c.bound_for(case)
    assert max(extra.values()) > 1e3 * c.bound_for(case)


@pytest.mark.parametrize("name", NAMES)
def test_unrolling_a_looped_construction_gives_the_same_streams(name):
    built = CONSTRUCTIONS[name].build(case := _case(name, depth=3))
    flat = looped.unroll(built, loops=5)
    assert flat.cfg.n_loops == 1 and flat.cfg.n_layers == 5 * built.cfg.n_layers
    a, b = _run(built, case, loops=5), _run(flat, case)
    assert all(torch.equal(h, g) for h, g in zip(a.residuals, b.residuals)) and len(a.residuals) == len(b.residuals)


def test_ttb_check_lists_and_passes_the_looped_constructions_and_catches_their_mutations(capsys):
    assert main(["check", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert set(NAMES) <= set(listed)
    assert main(["check", "--mutate", "--cases", "2", *NAMES]) == 0
    assert "4 of 4 ok" in capsys.readouterr().out


@pytest.mark.parametrize("call, match", [
    (lambda: looped.build_gd(d=2, n_steps=0, eta=0.1), "n_steps must be >= 1"),
    (lambda: looped.build_preconditioned_gd(d=2, n_steps=2, P=torch.eye(2).expand(2, 2, 2)),
     r"P must have shape \(2, 2\) \(one preconditioner for every loop\)"),
    (lambda: looped.build_gd_plus_plus(d=2, n_steps=1, eta=0.1, gamma=-1.0), "gamma must be a number >= 0"),
    (lambda: looped_newton.build(d=2, n_iter=1, alpha=3.0, radius=1.0), r"alpha=3 violates"),
    (lambda: looped_newton.build(d=2, n_iter=-1, alpha=0.1), "n_iter must be >= 0"),
    (lambda: looped.unroll(looped.build_gd(2, 2, 0.1), loops=0), "loops must be >= 1"),
])
def test_impossible_looped_construction_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unroll_refuses_input_injection_which_no_unlooped_model_expresses():
    built = looped.build_gd(2, 2, 0.1)
    injected = Built(M.ModelConfig(**{**built.cfg.__dict__, "input_injection": True}), built.weights)
    with pytest.raises(ValueError, match="input_injection"):
        looped.unroll(injected)
