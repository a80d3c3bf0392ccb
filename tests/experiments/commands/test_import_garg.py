"""`ttb import garg`: a checkpoint of Garg et al. 2022 becomes a run directory that `ttb compare`
reads; every bad input is one line and exit status 2.

The checkpoints are written here the way their training writes them: ``state.pt`` holding
``{"model_state_dict", "optimizer_state_dict", "train_step"}`` (or a bare state dict) beside a
``config.yaml`` as ``yaml.dump`` lays it out. That the converted weights compute their function is
tests/constructions/test_garg.py's job; here the written weights must equal the converter's.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from constructions.garg import from_garg_state_dict  # noqa: E402
from constructions.model import load_weights, to_state_dict  # noqa: E402
from experiments.commands.main import main as ttb  # noqa: E402
from experiments.training.config import RunConfig  # noqa: E402
from experiments.training.garg_import import parse_yaml_mappings  # noqa: E402

SIZES = dict(n_dims=3, n_embd=16, n_head=2, n_layer=2, n_positions=12)

CONFIG_YAML = """\
config: conf/toy.yaml
inherit:
- /src/conf/models/standard.yaml
- /src/conf/wandb.yaml
model:
  family: gpt2
  n_dims: 3
  n_embd: 16   # width
  n_head: 2
  n_layer: 2
  n_positions: 12
out_dir: ../models/linear_regression/run-1
test_run: false
training:
  batch_size: 64
  curriculum:
    dims:
      end: 3
      inc: 1
      interval: 2000
      start: 3
    points:
      end: 9
      inc: 2
      interval: 2000
      start: 5
  data: gaussian
  learning_rate: 0.0001
  task: {task}
  task_kwargs: {{}}
  train_steps: 5001
wandb:
  entity: someone
  name: "linear_regression_toy"
  notes: ''
"""


def garg_state_dict(seed: int = 0) -> dict:
    """Their model's state dict (read-in, GPT-2 backbone, read-out), every parameter redrawn."""
    torch.manual_seed(seed)
    model = nn.Module()
    model._read_in = nn.Linear(SIZES["n_dims"], SIZES["n_embd"])
    model._backbone = transformers.GPT2Model(transformers.GPT2Config(
        n_positions=2 * SIZES["n_positions"], n_embd=SIZES["n_embd"], n_layer=SIZES["n_layer"],
        n_head=SIZES["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False))
    model._read_out = nn.Linear(SIZES["n_embd"], 1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(min(p.shape)) if p.dim() == 2 else 0.3)
    return model.state_dict()


def garg_run(folder, *, bare: bool = False, config: str | None = CONFIG_YAML, task: str = "linear_regression"):
    """A run folder as their training leaves it; returns the checkpoint's path."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = garg_state_dict()
    path = folder / ("model_5000.pt" if bare else "state.pt")
    torch.save(sd if bare else {"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []},
                                "train_step": 5000}, path)
    if config is not None:
        (folder / "config.yaml").write_text(config.format(task=task))
    return path


def error_line(capsys, argv) -> str:
    assert ttb(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ttb import: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_config_yaml_is_read_as_nested_blocks_skipping_lists_and_comments():
    tree = parse_yaml_mappings(CONFIG_YAML.format(task="linear_regression"))
    assert tree["model"] == {"family": "gpt2", "n_dims": 3, "n_embd": 16, "n_head": 2, "n_layer": 2, "n_positions": 12}
    assert tree["training"]["curriculum"]["points"]["end"] == 9 and tree["training"]["learning_rate"] == 1e-4
    assert tree["wandb"]["name"] == "linear_regression_toy" and tree["test_run"] is False
    assert "inherit" in tree and tree["out_dir"] == "../models/linear_regression/run-1"


def test_importing_state_pt_writes_a_run_directory_that_compare_reads(tmp_path, capsys):
    checkpoint = garg_run(tmp_path / "garg")
    out = tmp_path / "imported"
    assert ttb(["import", "garg", str(checkpoint), "--out", str(out)]) == 0
    assert "prompts of 9 points" in capsys.readouterr().out
    run = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert (run.task.d, run.task.n_points, run.task.format, run.task.kind) == (3, 9, "interleaved", "isotropic")
    m = run.model
    assert (m.n_layers, m.d_model, m.n_heads, m.mlp, m.norm, m.final_norm, m.bias) == (
        2, 16, 2, "gelu_tanh", "layernorm", True, True)
    assert (run.train.steps, run.train.batch_size, run.train.lr) == (5000, 64, 1e-4)
    cfg, w = load_weights(out / "weights.safetensors")
    want_cfg, want = from_garg_state_dict(garg_state_dict(), **SIZES)
    assert cfg == want_cfg and cfg.n_positions == 24
    for key, t in to_state_dict(want).items():
        assert torch.equal(to_state_dict(w)[key], t), key
    assert ttb(["compare", str(out), "--json", "--prompts", "32", "--algorithms", "gd,ols,zero"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["closest_algorithm"] in ("gd", "ols", "zero")
    assert len(rows[0]["algorithms"]["gd"]["best_iteration_per_layer"]) == 3  # embedding + 2 layers


def test_a_bare_state_dict_or_its_folder_imports_too(tmp_path, capsys):
    checkpoint = garg_run(tmp_path / "garg", bare=True)
    assert ttb(["import", "garg", str(checkpoint), "--out", str(tmp_path / "a")]) == 0
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model.pt").write_bytes(checkpoint.read_bytes())
    (tmp_path / "folder" / "config.yaml").write_text("model:\n  family: gpt2\n  n_dims: 3\n  n_embd: 16\n"
                                                     "  n_head: 2\n  n_layer: 2\n  n_positions: 12\n")
    assert ttb(["import", "garg", str(tmp_path / "folder"), "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "config.json").read_text()) for d in "ab")
    assert a["task"]["n_points"] == 9 and b["task"]["n_points"] == 12  # no curriculum: n_positions
    assert a["train"]["steps"] == 5001  # no train_step in a bare state dict: config.yaml's train_steps


def test_sizes_given_as_options_stand_in_for_a_missing_config_yaml(tmp_path, capsys):
    checkpoint = garg_run(tmp_path / "garg", config=None)
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items()]
    assert ttb(["import", "garg", str(checkpoint), "--out", str(tmp_path / "out"), "--n-points", "5", *sizes]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["task"]["n_points"] == 5


def test_a_model_trained_on_another_task_is_imported_with_a_note(tmp_path, capsys):
    checkpoint = garg_run(tmp_path / "garg", task="sparse_linear_regression")
    assert ttb(["import", "garg", str(checkpoint), "--out", str(tmp_path / "out")]) == 0
    assert "trained on 'sparse_linear_regression'" in capsys.readouterr().err


class NotAStateDict:
    pass


def saved(folder, obj):
    torch.save(obj, folder / "state.pt")
    return folder / "state.pt"


def written(folder, text):
    (folder / "state.pt").write_text(text)
    return folder / "state.pt"


@pytest.mark.parametrize("setup, extra, message", [
    (lambda d: d / "nope.pt", [], "checkpoint {d}/nope.pt does not exist"),
    (lambda d: d, [], "is a folder without state.pt or model.pt"),
    (lambda d: saved(d, {"model_state_dict": {}, "conf": NotAStateDict()}), [],
     "holds objects a weights-only load refuses (test_import_garg.NotAStateDict)"),
    (lambda d: saved(d, nn.Linear(2, 2)), [], "refuses (torch.nn.modules.linear.Linear)"),
    (lambda d: written(d, "not a checkpoint"), [], "is not a readable torch checkpoint"),
    (lambda d: saved(d, torch.zeros(3)), [], "is neither a training state"),
    (lambda d: garg_run(d, config=None), [], "n_dims unknown: no {d}/config.yaml; give --n-dims"),
    (lambda d: garg_run(d), ["--n-dims", "4"], "so the model has n_dims=3, but n_dims=4 was given"),
    (lambda d: garg_run(d), ["--n-layer", "3"], "the checkpoint has 2 layers, n_layer=3 was given"),
    (lambda d: garg_run(d), ["--n-points", "13"], "n_points must be an integer in [1, n_positions=12], got 13"),
    (lambda d: garg_run(d, config="model:\n  family: lstm\n"), [], "model.family is 'lstm'; only"),
    (lambda d: garg_run(d, config="training:\n  task: x\n"), [], "config.yaml has no 'model:' section"),
    (lambda d: garg_run(d, config=CONFIG_YAML.replace("n_embd: 16", "n_embd: wide")), [],
     "size n_embd must be a positive integer, got 'wide'"),
])
def test_a_bad_input_is_one_line_naming_it(tmp_path, capsys, setup, extra, message):
    path = setup(tmp_path)
    err = error_line(capsys, ["import", "garg", str(path), "--out", str(tmp_path / "out"), *extra])
    assert message.format(d=tmp_path) in err
    assert not (tmp_path / "out" / "weights.safetensors").exists()
