"""Imports run one way: no cycle between modules, no import against the layers, and no import
inside a function outside the CLI (except the optional dependencies named below).

The checker reads every module's imports with ``ast`` (top-level and inside functions) and resolves
``from pkg import name`` to the submodule ``pkg.name`` when there is one. Layers, lowest first:

    synthetic -> nothing of the project
    constructions -> synthetic;  proofs_check -> constructions, synthetic;  experiments -> the rest
    inside constructions:  reference and the core modules (model, config, weights, tokens, paint,
                           mpnn, hf)  <  check  <  icl | positional | approx  <  registry
    inside experiments:    common < training < sweeps < analysis < plots < approx | ood < reports
                           < reproduce < commands  (a reproduction's page is built from reports.page)

A module may import its own layer or lower ones; two families of one layer (icl and approx, ood and
approx) do not import each other. The tests at the end plant a cycle, a layer violation and an
import inside a function in a throw-away tree, and check that each is reported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("synthetic", "constructions", "proofs_check", "experiments")
TOP_RANK = {"synthetic": 0, "constructions": 1, "proofs_check": 2, "experiments": 3}
SUB_RANK = {
    "constructions": {"reference": 0, "": 0, "check": 1, "icl": 2, "positional": 2, "approx": 2, "registry": 3},
    "experiments": {"common": 0, "training": 1, "sweeps": 2, "analysis": 3, "plots": 4, "approx": 5, "ood": 5, "reports": 6,
                    "reproduce": 7, "commands": 8, "": 0},
}
# Imports allowed inside functions outside experiments/commands: optional or heavy dependencies that
# only one code path needs (module -> imported names).
INNER_ALLOWED = {
    "constructions.hf": {"transformers"},  # the `hf` extra: only the GPT-2 adapter needs it
    "constructions.tl": {"transformer_lens"},  # the `tl` extra: only the TransformerLens export needs it
    # the `ray` extra: only the Ray backend needs it; torch.utils.tensorboard needs the `tensorboard`
    # extra, so it is imported only when [sweep] tensorboard = true
    "experiments.sweeps.runner": {"ray", "torch"},
    "synthetic.sequences": {"numba"},  # compiled on first use of max_subarray only (slow to import)
    "constructions.reference.trees": {"sklearn"},  # the `baselines` extra: tree and boosting baselines only
}
ROOT = Path(__file__).resolve().parents[1]


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the four packages under ``root``."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """(imported name, resolved project module or "", inside a function) for each import of a file."""
    tree = ast.parse(path.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out += [(name, name if name in known else "", id(node) in inner) for name in names]
    return out


def rank(module: str) -> tuple[int, str, int]:
    """(package rank, subpackage, subpackage rank) of a module."""
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 else ("" if len(parts) == 1 or parts[1] not in SUB_RANK.get(parts[0], {})
                                           else parts[1])
    return TOP_RANK[parts[0]], sub, SUB_RANK.get(parts[0], {}).get(sub, 0)


def violations(root: Path) -> list[str]:
    """Every cycle, layer violation and disallowed inner import under ``root``, one line each."""
    known = modules(root)
    graph = {m: set() for m in known}
    problems = []
    for module, path in known.items():
        for name, target, inside in imports(path, known):
            if inside and not module.startswith("experiments.commands") and \
                    name.split(".")[0] not in INNER_ALLOWED.get(module, set()):
                problems.append(f"{module}: imports {name} inside a function")
            if target and target != module:
                graph[module].add(target)
                problems += layer_problem(module, target)
    return problems + [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]


def layer_problem(module: str, target: str) -> list[str]:
    (top_a, sub_a, rank_a), (top_b, sub_b, rank_b) = rank(module), rank(target)
    if top_a == top_b and module.split(".")[0] == target.split(".")[0]:
        if rank_b > rank_a or (rank_b == rank_a and sub_a != sub_b and sub_a and sub_b):
            return [f"{module} imports {target}: against the layers inside {module.split('.')[0]}"]
        return []
    if top_b > top_a:
        return [f"{module} imports {target}: against the layers (synthetic -> constructions -> experiments)"]
    return []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a path."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ----------------------------------------------------------------------------------------------


def test_the_project_has_no_cycle_no_layer_violation_and_no_stray_inner_import():
    assert violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_planted_cycle_is_reported(tmp_path):
    root = _tree(tmp_path, {"experiments/analysis/a.py": "from experiments.analysis import b\n",
                            "experiments/analysis/b.py": "from experiments.analysis.a import x\n"})
    assert violations(root) == ["import cycle: experiments.analysis.a -> experiments.analysis.b"]


def test_an_import_against_the_layers_is_reported(tmp_path):
    root = _tree(tmp_path, {"synthetic/tasks.py": "from constructions import model\n",
                            "constructions/model.py": "",
                            "experiments/training/trainer.py": "import experiments.analysis.core\n",
                            "experiments/analysis/core.py": "",
                            "experiments/ood/x.py": "from experiments.approx import y\n",
                            "experiments/approx/y.py": ""})
    found = violations(root)
    assert any(line.startswith("synthetic.tasks imports constructions.model") for line in found)
    assert any(line.startswith("experiments.training.trainer imports experiments.analysis.core") for line in found)
    assert any(line.startswith("experiments.ood.x imports experiments.approx.y") for line in found)
    assert len(found) == 3


def test_an_import_inside_a_function_is_reported_outside_the_cli_only(tmp_path):
    root = _tree(tmp_path, {"experiments/sweeps/store.py": "def f():\n    import pandas\n",
                            "experiments/commands/sweep.py": "def g():\n    from experiments.sweeps import store\n"})
    assert violations(root) == ["experiments.sweeps.store: imports pandas inside a function"]
