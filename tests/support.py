"""What several test folders share: the repository root and a minimal TOML writer."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def toml_text(d: dict) -> str:
    """A minimal TOML writer for flat tables (a top level of values, then one level of tables)."""
    top = [f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict)]
    tables = [f"[{k}]\n" + "\n".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
              for k, v in d.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


# A sweep of four tiny float64 runs in two batches of two ({steps}, {name} and {seeds} to fill in):
# the product puts the seed axis first, so batch 1 is seed 0's two runs and batch 2 is seed 1's.
TINY_SWEEP = """
[sweep]
name = "{name}"
max_models_per_batch = 2
[task]
d = 3
n_points = 5
eval_batch_size = 16
[model]
n_layers = 1
d_model = 16
n_heads = 2
[train]
steps = {steps}
batch_size = 8
log_every = 10
checkpoint_every = 20
dtype = "float64"
[[grid.zip]]
"train.lr" = [1e-3, 3e-3]
"train.grad_clip" = [1.0, 0.0]
[grid]
"train.seed" = {seeds}
"""
