"""de Luca et al.'s protocol in the sequence family: a fixed training set visited in epochs,
per-sequence sub-intervals, reduce-on-plateau, their init and depth; optional fields that leave the
run ids of existing configs as they were; config errors that name the field."""

import copy
import math

import pytest
import torch
from support import ROOT

from experiments.common.validate import ConfigError
from experiments.ood import experiment as ood
from experiments.ood import sequences as TS
from experiments.ood.init import bounds, torch_init
from experiments.training.trainer import Plateau
from synthetic.algorithmic import AlgorithmicTask, SubIntervals

SHAPE = TS.SeqShape(width=8, n_heads=2, n_layers=2, d_mlp=8)
TINY = {
    "name": "tiny", "device": "cpu",
    "task": {"kinds": ["cumsum"], "n": 4, "c_train": 2.0, "test_cs": [4.0, 8.0], "sub_intervals": True},
    "model": {"width": 8, "n_heads": 2, "n_layers": 2, "d_mlp": 8, "mlp_input": "concat", "init": "torch"},
    "train": {"seeds": 2, "steps": 6, "batch_size": 4, "train_size": 12, "log_every": 3, "plateau_factor": 0.9,
              "plateau_patience": 50},
    "eval": {"batch_size": 8},
}

# The ids of experiments/configs/positional_ood_cpu.toml, computed before the optional fields existed.
CPU_CONFIG_IDS = [
    "feb3f9c54eee", "6bf09c5eaa9e", "d5ceb21467d6", "a98477bb855d", "8ba12ab25f2f", "38b30ed94a62",
    "7fe8993c09da", "c227228ccfe6", "b961fa104d76", "e276d557d637", "f353c6e2af0d", "d95497b2b02b",
]


def problem(train_size=12, batch_size=4, seeds=(0, 1), **fields):
    task = AlgorithmicTask("cumsum", 4, sub_intervals=True)
    runs = [TS.SeqRun(task.kind, task.n, task.c_train, "positional", SHAPE, s, 8, batch_size, 3,
                      sub_intervals=True, train_size=train_size, **fields) for s in seeds]
    return TS.SequenceProblem(runs, device="cpu")


def test_the_cpu_config_keeps_its_run_ids():
    cfg = ood.load_config(ROOT / "experiments/configs/positional_ood_cpu.toml")
    assert [r.run_id for r in cfg.runs()] == CPU_CONFIG_IDS


def test_optional_fields_enter_the_resolved_config_only_away_from_their_defaults():
    plain = TS.SeqRun("cumsum", 4, 2.0, "positional", SHAPE, 0, 8, 4)
    assert not {"sub_intervals", "train_size", "plateau"} & set(plain.to_dict())
    assert "init" not in plain.to_dict()["shape"]
    changed = TS.SeqRun("cumsum", 4, 2.0, "positional", TS.SeqShape(width=8, n_heads=2, n_layers=2, d_mlp=8,
                                                                      init="torch"), 0, 8, 4,
                        sub_intervals=True, train_size=8, plateau=Plateau(0.9, 50, 1e-4))
    d = changed.to_dict()
    assert d["sub_intervals"] is True and d["train_size"] == 8 and d["shape"]["init"] == "torch"
    assert d["plateau"] == {"factor": 0.9, "patience": 50, "threshold": 1e-4}
    assert changed.run_id != plain.run_id


def test_every_batch_of_an_epoch_comes_from_the_fixed_set_and_covers_it_once():
    """N = 12, B = 4: the three batches of an epoch are the 12 drawn sequences, each once (no
    replacement); the next epoch visits them in another order."""
    p = problem()
    fixed = p.fixed_set()
    assert fixed.x.shape == (2, 12, 4) and fixed.steps_per_epoch == 3
    for epoch in (0, 1):
        xs = torch.cat([fixed.batch(3 * epoch + j)[0] for j in range(3)], dim=1)  # (K, 12, n)
        for k in range(2):
            seen = sorted(map(tuple, xs[k].tolist()))
            assert seen == sorted(map(tuple, fixed.x[k].tolist()))
    assert not torch.equal(fixed.order(0), fixed.order(1))
    tokens, targets = p.batch(p.generators(), 4)
    assert torch.equal(targets, fixed.batch(4)[1]) and torch.equal(tokens[..., 1:, 0], fixed.batch(4)[0])


def test_the_same_seed_draws_the_same_fixed_set_and_order_alone_or_in_a_batch():
    together = problem(seeds=(3, 5)).fixed_set()
    alone = problem(seeds=(5,)).fixed_set()
    assert torch.equal(together.x[1], alone.x[0]) and torch.equal(together.y[1], alone.y[0])
    assert torch.equal(together.order(2)[1], alone.order(2)[0])
    assert not torch.equal(together.x[0], together.x[1])  # different seeds, different sets


def test_fixed_set_sequences_lie_on_sub_intervals_of_the_training_range():
    x = problem(train_size=400, batch_size=4).fixed_set().x
    assert bool((x.abs() <= 2.0).all())
    spans = x.amax(-1) - x.amin(-1)
    assert spans.min() < 0.5 and spans.max() > 3.0  # narrow and wide intervals both occur


def test_a_run_resumed_mid_epoch_visits_the_fixed_set_as_if_never_stopped():
    """Epochs of 3 steps, logs every 2: the checkpoint at step 4 falls inside the second epoch. The
    order of an epoch is a function of (seed, epoch) alone, so the resumed run takes the same batches
    and ends with the same weights, bit for bit (same batch, same operations)."""
    cfg = ood.parse_config({**TINY, "dtype": "float64", "model": {**TINY["model"], "kinds": ["standard"]},
                            "train": {**TINY["train"], "steps": 8, "log_every": 2}})
    runs = cfg.runs()
    straight = TS.make_trainer(runs, device="cpu")
    whole = straight.fit(straight.initial_state())
    first = TS.make_trainer(runs, device="cpu")
    half = first.fit(first.initial_state(), max_steps=4)
    second = TS.make_trainer(runs, device="cpu")
    resumed = second.fit(second.state_from_slices([first.checkpoint_slice(half, k) for k in range(len(runs))]))
    assert resumed.step == 8 and torch.equal(resumed.theta, whole.theta)


@pytest.mark.parametrize("kind", TS.MODEL_KINDS)
def test_batched_training_with_the_protocol_fields_equals_separate_runs(kind):
    """A fixed set, sub-intervals, their init and a plateau rule per model (patience 0 with a
    strict threshold, so it does cut the rate here): trained together and alone, the same weights.
    Float64; tolerance as in test_ood.py's batched test."""
    task = AlgorithmicTask("cumsum", 4, sub_intervals=True)
    shape = TS.SeqShape(width=8, n_heads=2, n_layers=2, d_mlp=8, mlp_input="concat", init="torch")
    seeds, hypers = [0, 1, 2], [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-2}]
    plateaus = [Plateau(0.5, 0, 0.5), None, Plateau(0.9, 1, 1e-4)]
    run = lambda s, h, p: TS.train(kind, task, shape, s, h, steps=9, batch_size=4, dtype=torch.float64,  # noqa: E731
                                   log_every=3, train_size=12, plateaus=p)
    together = run(seeds, hypers, plateaus)
    alone = torch.cat([run([s], [h], [p]).theta for s, h, p in zip(seeds, hypers, plateaus)])
    torch.testing.assert_close(together.theta, alone, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(together.theta[0], together.theta[1])


def test_plateau_fields_reach_the_trainer_and_cut_only_that_models_rate():
    """Patience 0 and threshold 0.5: a log that does not halve the best loss cuts the rate by the
    factor. With a constant lr of 1e-6 the loss cannot halve, so model 0's rate at the four logs is 1, 1, 1/2,
    1/4 times lr (the first log sets the best, each later one cuts after it is written); model 1,
    batched with it and without the rule, keeps lr."""
    cfg = ood.parse_config({**TINY, "train": {**TINY["train"], "plateau_factor": 0.5, "plateau_patience": 0,
                                              "plateau_threshold": 0.5, "lr": 1e-6, "min_lr_ratio": 1.0,
                                              "steps": 12}})
    runs = cfg.runs()
    assert {r.plateau for r in runs} == {Plateau(0.5, 0, 0.5)}
    runs = [runs[0], TS.SeqRun(**{**runs[1].__dict__, "plateau": None})]
    trainer = TS.make_trainer(runs, device="cpu")
    assert trainer.plateaus == [Plateau(0.5, 0, 0.5), None]
    state = trainer.fit(trainer.initial_state())
    assert [m["lr"] / 1e-6 for m in state.metrics[0]] == pytest.approx([1, 1, 0.5, 0.25])
    assert [m["lr"] / 1e-6 for m in state.metrics[1]] == pytest.approx([1, 1, 1, 1])


def test_their_depth_is_floor_log2_n_plus_one():
    assert [TS.log2_plus_one_layers(n) for n in (2, 4, 8, 16, 32, 5)] == [2, 3, 4, 5, 6, 3]
    cfg = ood.parse_config({**TINY, "model": {**TINY["model"], "n_layers": "log2+1"}})
    assert cfg.runs()[0].shape.n_layers == 3  # n = 4


def test_torch_init_bounds_are_their_models_by_hand():
    """The standard model of n = 8 (input 1 + 9 wide), width 64, 2 heads, concat MLP of 64:
    encoding 1/sqrt(10); qk_proj xavier over 64 -> 2 * 2 * 64; v/o_proj xavier 64 -> 64; MLP layers
    1/sqrt(128) and 1/sqrt(64); decoding 1/sqrt(64); attention biases 0."""
    cfg = TS.model_config("standard", 8, TS.SeqShape(width=64, n_layers=4, d_mlp=64, mlp_input="concat"))
    b = bounds(cfg)
    assert b["W_E"] == b["b_E"] == pytest.approx(1 / math.sqrt(10))
    assert b["blocks.0.attn.W_Q"] == pytest.approx(math.sqrt(6 / (64 + 256)))
    assert b["blocks.3.attn.W_V"] == b["blocks.3.attn.W_O"] == pytest.approx(math.sqrt(6 / 128))
    assert b["blocks.1.mlp.W_in"] == b["blocks.1.mlp.b_in"] == pytest.approx(1 / math.sqrt(128))
    assert b["blocks.1.mlp.W_out"] == b["W_U"] == b["b_U"] == pytest.approx(1 / 8)
    assert b["blocks.2.attn.b_Q"] == b["blocks.2.attn.b_O"] == 0.0
    positional = bounds(TS.model_config("positional", 8, TS.SeqShape(width=64, n_layers=4)))
    assert positional["blocks.0.attn.W_K"] == pytest.approx(math.sqrt(6 / (9 + 36)))  # d_k = 9 positions


def test_torch_init_stays_inside_its_bounds_and_is_the_same_alone_or_in_a_batch():
    cfg = TS.model_config("positional", 4, TS.SeqShape(width=8, n_heads=2, n_layers=2, d_mlp=8))
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    theta = torch_init(cfg, gens([0, 1]), dtype=torch.float64)
    assert torch.equal(theta[1], torch_init(cfg, gens([1]), dtype=torch.float64)[0])
    views = TS.FlatSpec.of(cfg).views(theta)
    for key, bound in bounds(cfg).items():
        assert bool((views[key].abs() <= bound).all()), key
        if views[key].numel() >= 16:  # uniform fills its range: all 16 inside half of it has odds 2^-16
            assert (views[key].abs().max() > bound / 2) == (bound > 0), key


def test_sub_interval_evaluation_ranges_redraw_intervals_inside_the_training_range():
    cfg = ood.parse_config(TINY)
    ranges = ood.evaluation_ranges(cfg)
    assert [r for _, r in ranges] == [SubIntervals(2.0), SubIntervals(4.0, 2.0), SubIntervals(8.0, 2.0)]


def test_the_gpu_configs_are_their_setting():
    """The values of de Luca et al.'s params/scale_params.json and experiment_scale.py."""
    cfg = ood.load_config(ROOT / "experiments/configs/positional_ood_gpu.toml")
    assert cfg.task_kinds == ("cumsum", "cummin", "sort", "cummedian", "cum_max_subarray") and cfg.ns == (8,)
    assert cfg.sub_intervals and cfg.c_train == 2.0 and cfg.test_cs == tuple(range(4, 21, 2))
    assert (cfg.train_size, cfg.batch_size, cfg.steps, cfg.log_every) == (30000, 1000, 2001 * 30, 30)
    assert cfg.plateau == Plateau(0.9, 50, 1e-4) and len(cfg.seeds) == 10 and cfg.eval_batch_size == 1000
    assert cfg.hyper == {"lr": 5e-4, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "warmup": 0.0,
                         "min_lr_ratio": 1.0, "clip": 0.0}
    shape = cfg.shape_for(8)
    assert (shape.width, shape.n_heads, shape.n_layers, shape.d_mlp, shape.mlp_input, shape.init) == \
        (64, 2, 4, 64, "concat", "torch")
    sizes = ood.load_config(ROOT / "experiments/configs/positional_ood_n_gpu.toml")
    assert [sizes.shape_for(n).n_layers for n in sizes.ns] == [2, 3, 4, 5, 6] and sizes.test_cs == (6.0,)
    # pinned, so that trained paper-scale runs stay findable (resumed, not retrained)
    assert [cfg.runs()[i].run_id for i in (0, -1)] == ["c5b1250c12ac", "f578c738a332"]
    assert [sizes.runs()[i].run_id for i in (0, -1)] == ["d5c509888e6b", "0b7dccb49f1c"]


@pytest.mark.parametrize("path, value, field", [
    (("train", "train_size"), 10, "train.train_size"),  # not a multiple of batch_size 4
    (("train", "train_size"), 2, "train.train_size"),  # smaller than one batch
    (("train", "train_size"), -4, "train.train_size"),
    (("train", "plateau_factor"), 1.5, "train.plateau_factor"),
    (("train", "plateau_factor"), 0.0, "train.plateau_factor"),
    (("train", "plateau_patience"), 2.5, "train.plateau_patience"),
    (("train", "plateau_threshold"), -1e-4, "train.plateau_threshold"),
    (("task", "sub_intervals"), "yes", "task.sub_intervals"),
    (("task", "shells"), True, "task.sub_intervals"),  # shells and sub-intervals exclude each other
    (("model", "init"), "xavier", "model.init"),
    (("model", "n_layers"), "log2+2", "model.n_layers"),
])
def test_a_bad_protocol_field_is_named(path, value, field):
    data = copy.deepcopy(TINY)
    data[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("+", r"\+")):
        ood.parse_config(data)
