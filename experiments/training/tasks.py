"""The synthetic in-context regression task of a run, by ``task.kind``: two explicit tables.

``BUILDERS`` maps a kind of :class:`experiments.training.config.TaskSpec` to the synthetic task it
draws from (at the curriculum's size), and ``SAMPLERS`` maps a synthetic task class to the function
that draws its prompts. Adding a kind is one line in each. ``FAMILIES`` builds the components of a
``mixture`` (and the function classes of :mod:`synthetic.functions`) from the same fields.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from synthetic import functions, regression
from synthetic import tasks as icl_tasks

# The TaskSpec fields that fix a run's data distribution (runs that agree on them share one draw call).
DATA_FIELDS = ("d", "noise_std", "kind", "condition_number", "basis_seed", "w_std", "noise_levels", "noise_probs",
               "k", "pool_size", "pool_seed", "phi_depth", "phi_width", "phi_seed", "x_dist", "x_range",
               "tree_depth", "relu_width", "relu_scale", "quadratic_form", "labels", "logistic_scale", "mixture",
               "mixture_probs")
# The kinds whose prompts carry a linear weight ``batch.w`` (the others carry NaN there, or features' weights).
LINEAR_W_KINDS = ("isotropic", "anisotropic", "noise_mixture", "sparse", "pool", "logistic")


def _regression(f: dict, n_points: int, n_dims: int):
    return regression.RegressionTask(n_points=n_points, n_dims_active=n_dims, noise_std=f["noise_std"], kind=f["kind"],
                                     condition_number=f["condition_number"], basis_seed=f["basis_seed"], d=f["d"],
                                     w_std=f["w_std"], x_dist=f["x_dist"], x_range=f["x_range"])


def _common(f: dict, n_points: int) -> dict:
    return {"d": f["d"], "n_points": n_points, "w_std": f["w_std"]}


def _active(f: dict, n_dims: int) -> int | None:
    return None if n_dims == f["d"] else n_dims


# family -> (data fields, n_points) -> synthetic function task (full width: a mixture zeroes x itself)
FAMILIES: dict[str, Callable] = {
    "isotropic": lambda f, n: regression.RegressionTask(**_common(f, n), noise_std=f["noise_std"]),
    "sparse": lambda f, n: icl_tasks.SparseRegressionTask(**_common(f, n), k=f["k"], noise_std=f["noise_std"]),
    "tree": lambda f, n: functions.DecisionTreeTask(f["d"], n, depth=f["tree_depth"], noise_std=f["noise_std"]),
    "relu2nn": lambda f, n: functions.ReluNetworkTask(f["d"], n, width=f["relu_width"], scale=f["relu_scale"],
                                                      noise_std=f["noise_std"]),
    "quadratic": lambda f, n: functions.QuadraticTask(**_common(f, n), form=f["quadratic_form"],
                                                      noise_std=f["noise_std"]),
    "logistic": lambda f, n: functions.ClassificationTask(**_common(f, n), labels=f["labels"],
                                                          scale=f["logistic_scale"]),
}


def _function(f: dict, n_points: int, n_dims: int):
    """A function class (tree, relu2nn, quadratic, logistic) with the curriculum's active dims."""
    return dataclasses.replace(FAMILIES[f["kind"]](f, n_points), n_dims_active=_active(f, n_dims))


def _mixture(f: dict, n_points: int, n_dims: int):
    return functions.MixtureTask(f["d"], n_points, components=tuple(FAMILIES[m](f, n_points) for m in f["mixture"]),
                                 probs=f["mixture_probs"] or None, n_dims_active=_active(f, n_dims))


# kind -> (data fields, n_points, active dims) -> synthetic task. The kinds of synthetic.tasks have no
# dimension curriculum (the config rejects one), so they ignore n_dims.
BUILDERS: dict[str, Callable] = {
    "isotropic": _regression,
    "anisotropic": _regression,
    "noise_mixture": lambda f, n, _: icl_tasks.NoiseMixtureTask(**_common(f, n), noise_levels=f["noise_levels"],
                                                                noise_probs=f["noise_probs"] or None),
    "sparse": lambda f, n, _: icl_tasks.SparseRegressionTask(**_common(f, n), k=f["k"], noise_std=f["noise_std"]),
    "pool": lambda f, n, _: icl_tasks.TaskPoolTask(**_common(f, n), pool_size=f["pool_size"],
                                                   pool_seed=f["pool_seed"], noise_std=f["noise_std"]),
    "representation": lambda f, n, _: icl_tasks.RepresentationTask(**_common(f, n), depth=f["phi_depth"],
                                                                   width=f["phi_width"], phi_seed=f["phi_seed"],
                                                                   noise_std=f["noise_std"]),
    **{kind: _function for kind in ("tree", "relu2nn", "quadratic", "logistic")},
    "mixture": _mixture,
}

SAMPLERS: dict[type, Callable] = {regression.RegressionTask: regression.sample,
                                  **{cls: icl_tasks.sample for cls in icl_tasks.TASKS},
                                  **{cls: functions.sample for cls in functions.TASKS}}


def require_linear_w(kind: str, what: str = "this analysis") -> None:
    """Raise a one-line ValueError when prompts of ``kind`` carry no linear weight ``w`` (trees,
    networks, quadratics and mixtures hold NaN there): for probes and metrics that read ``batch.w``."""
    if kind not in LINEAR_W_KINDS:
        raise ValueError(f"{what} reads the linear weight w of each prompt, which task.kind = {kind!r} does not "
                         f"have (kinds with one: {list(LINEAR_W_KINDS)})")


def data_fields(task_spec) -> dict:
    """The DATA_FIELDS of a TaskSpec, as a dict."""
    return {name: getattr(task_spec, name) for name in DATA_FIELDS}


def task_of(fields: dict, n_points: int, n_dims: int):
    """The synthetic task of a run's data fields at the curriculum's size (n_points, n_dims)."""
    return BUILDERS[fields["kind"]](fields, n_points, n_dims)


def synthetic_task(task_spec, n_points: int | None = None):
    """The synthetic task of a TaskSpec at full size (or with ``n_points``)."""
    return task_of(data_fields(task_spec), n_points or task_spec.n_points, task_spec.d)


def sample(task, generators: Sequence[torch.Generator], batch_size: int, *, device=None, dtype=torch.float32):
    """Prompts of any synthetic in-context task, model k from ``generators[k]`` alone."""
    return SAMPLERS[type(task)](task, generators, batch_size, device=device, dtype=dtype)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Worker threads that run torch single-threaded: an OpenMP team of their own would keep spinning
    after each draw and slow the main thread's training step (measured: 2x on 2 cores)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="ttb-data", initializer=torch.set_num_threads,
                              initargs=(1,))


def sample_parallel(task, generators: Sequence[torch.Generator], batch_size: int, *, device=None,
                    dtype=torch.float32, workers: int = 1):
    """:func:`sample`, the models split over ``workers`` threads (CPU generators draw one model at a
    time and release the interpreter, so K models' data take about 1 / workers of the time). Model
    k's numbers come from ``generators[k]`` alone either way, so the result is the same."""
    workers = min(workers, len(generators))
    if workers < 2 or any(g.device.type != "cpu" for g in generators):
        return sample(task, generators, batch_size, device=device, dtype=dtype)
    cuts = [round(i * len(generators) / workers) for i in range(workers + 1)]
    parts = list(_pool(workers).map(lambda ab: sample(task, generators[ab[0]:ab[1]], batch_size, device=device,
                                                      dtype=dtype), zip(cuts[:-1], cuts[1:])))
    return type(parts[0])(**{f: torch.cat([getattr(b, f) for b in parts]) for f in _fields(parts[0])})


def _fields(batch) -> list[str]:
    return [f for f in vars(batch) if isinstance(getattr(batch, f), torch.Tensor)]
