"""One colour per algorithm: every reference ttb can draw has its own, and the baselines a task kind
draws by default never share one (the nonlinear kinds' figures once drew k-NN and two trees alike)."""

from experiments.analysis import references as R
from experiments.plots.core import ALGORITHM_COLOURS, MODEL_COLOURS


def test_every_reference_name_has_a_colour_that_no_model_takes():
    missing = [name for name in R.REFERENCE_NAMES if name not in ALGORITHM_COLOURS]
    assert not missing
    # the baselines of the nonlinear kinds and lasso (the older ones share red and olive with models 3, 4)
    assert not {ALGORITHM_COLOURS[name] for name in (*R.NONLINEAR_NAMES, "lasso")} & set(MODEL_COLOURS)


def test_the_default_baselines_of_each_task_kind_have_distinct_colours():
    for kind, spec in R.TASK_BASELINES.items():
        names = spec.split(",")
        assert len({ALGORITHM_COLOURS[n] for n in names}) == len(names), kind
