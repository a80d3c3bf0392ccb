"""A checkpoint of Garg et al. 2022 (``dtsip/in-context-learning``) as a run directory of ours.

Their training writes, per run, ``state.pt`` (``{"model_state_dict", "optimizer_state_dict",
"train_step"}``) or ``model_<step>.pt`` (a bare state dict) beside ``config.yaml``, whose ``model:``
section holds ``family: gpt2, n_dims, n_embd, n_head, n_layer, n_positions``. :func:`import_garg`
turns one into the run directory that ``ttb compare`` and ``ttb plot`` read:

    config.json          a RunConfig: task d = n_dims, interleaved tokens, isotropic regression;
                         model n_layers, d_model, n_heads, tanh GELU, LayerNorm, final norm, biases
    weights.safetensors  :func:`constructions.garg.from_garg_state_dict` (the same function as theirs)

``task.n_points`` is the prompt length the model was trained on: the final number of points of their
curriculum (``training.curriculum.points.end``, 41 in the paper) when config.yaml has it, else
``n_positions``. Their position table has 2 * n_positions rows, but rows past the curriculum's last
prompt were never trained, so evaluating there would measure an untrained model. The weights keep
every row; ``n_points`` only sets the length of the evaluation prompts.

The checkpoint is read with ``torch.load(weights_only=True)`` (no code runs from the file), and
config.yaml with a small reader of nested ``key: value`` blocks (the only YAML their runs write
that we need), so importing needs no network and no YAML library. Each bad input is one ValueError
or FileNotFoundError naming the file or field.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from constructions.garg import SIZE_NAMES, from_garg_state_dict
from constructions.model import save_weights
from experiments.common.atomic import atomic_write_json
from experiments.common.validate import ConfigError
from experiments.training.config import ModelSpec, RunConfig, TaskSpec, TrainSpec

CHECKPOINT_NAMES = ("state.pt", "model.pt")  # looked for, in this order, when given a folder
CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class GargImport:
    """What :func:`import_garg` wrote and read."""

    out_dir: Path
    sizes: dict  # n_dims, n_embd, n_head, n_layer, n_positions
    n_points: int
    train_step: int | None  # from state.pt; None for a bare state dict
    trained_task: str | None  # config.yaml's training.task, when given


# ----------------------------------------------------------------------------------------------
# config.yaml


def _scalar(text: str):
    """A YAML scalar: int, float, bool, null, or a (possibly quoted) string."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~", ""):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-]+)\s*:(?:\s+(?P<value>.*))?$")


def parse_yaml_mappings(text: str) -> dict:
    """Nested ``key: value`` blocks of a YAML file as dicts (block style, as ``yaml.dump`` writes).

    Lists (``- item`` lines and whatever is nested under them) and lines of no ``key:`` form are
    skipped; a key with nothing after the colon opens a nested block. Comments after `` #`` go.
    """
    root: dict = {}
    stack = [(-1, root)]  # (indent of the block's keys' parent, the block)
    list_indent = None
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if line.lstrip().startswith("-") or (list_indent is not None and indent > list_indent):
            list_indent = indent if list_indent is None or indent < list_indent else list_indent
            continue
        list_indent = None
        match = _KEY.match(line)
        if not match:
            continue
        while stack[-1][0] >= indent:
            stack.pop()
        block = stack[-1][1]
        if match["value"] is None:
            block[match["key"]] = {}
            stack.append((indent, block[match["key"]]))
        else:
            block[match["key"]] = _scalar(match["value"])
    return root


def _get(tree: dict, path: str):
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def read_garg_config(path: Path) -> dict:
    """config.yaml as nested dicts; ValueError if it has no ``model:`` section of family gpt2."""
    try:
        tree = parse_yaml_mappings(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    model = tree.get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{path} has no 'model:' section (expected family, n_dims, n_embd, n_head, "
                         f"n_layer, n_positions)")
    family = model.get("family", "gpt2")
    if family != "gpt2":
        raise ValueError(f"{path}: model.family is {family!r}; only Garg et al.'s 'gpt2' models can be imported")
    return tree


# ----------------------------------------------------------------------------------------------
# Sizes and the run config


def resolve_sizes(config: dict | None, overrides: dict, config_path: Path) -> dict:
    """The five sizes: config.yaml's ``model:`` values, replaced by any override that is not None."""
    model = (config or {}).get("model", {})
    sizes = {}
    for name in SIZE_NAMES:
        value = overrides.get(name)
        value = model.get(name) if value is None else value
        if value is None:
            where = f"{config_path} has no model.{name}" if config else f"no {config_path}"
            raise ValueError(f"Garg model size {name} unknown: {where}; give --{name.replace('_', '-')}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Garg model size {name} must be a positive integer, got {value!r}")
        sizes[name] = value
    return sizes


def trained_points(config: dict | None, n_positions: int, n_points: int | None) -> int:
    """Points per evaluation prompt: the given value, else the curriculum's last, else n_positions."""
    if n_points is None:
        n_points = _get(config or {}, "training.curriculum.points.end") or n_positions
    if not isinstance(n_points, int) or isinstance(n_points, bool) or not 1 <= n_points <= n_positions:
        raise ValueError(f"n_points must be an integer in [1, n_positions={n_positions}], got {n_points!r}")
    return n_points


def garg_run_config(sizes: dict, n_points: int, config: dict | None = None, train_step: int | None = None) -> RunConfig:
    """The RunConfig of an imported model: task and model as above; from their training section,
    when known, the steps, batch size and learning rate (the rest are our defaults, unused)."""
    task = TaskSpec(d=sizes["n_dims"], n_points=n_points, format="interleaved")
    model = ModelSpec(n_layers=sizes["n_layer"], d_model=sizes["n_embd"], n_heads=sizes["n_head"],
                      mlp="gelu_tanh", norm="layernorm", final_norm=True, bias=True)
    train = {"steps": train_step or _get(config or {}, "training.train_steps"),
             "batch_size": _get(config or {}, "training.batch_size"),
             "lr": _get(config or {}, "training.learning_rate")}
    try:
        return RunConfig(task=task, model=model, train=TrainSpec(**{k: v for k, v in train.items() if v}))
    except ConfigError as err:
        raise ValueError(f"config.yaml's training section does not fit a run config: {err}") from None


# ----------------------------------------------------------------------------------------------
# The checkpoint


def find_checkpoint(path) -> Path:
    """``path`` itself, or state.pt / model.pt inside it when it is a folder."""
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} is a folder without {' or '.join(CHECKPOINT_NAMES)}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def read_checkpoint(path: Path) -> tuple[dict, int | None]:
    """(model state dict, train_step or None) of ``state.pt`` or of a bare state dict; no pickle
    code runs (``weights_only=True``), so a file holding anything but tensors and plain containers
    is refused."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            raise ValueError(f"{path} holds objects a weights-only load refuses ({refused[1]}); no code is run from a "
                             f"checkpoint: re-save it as a state dict of tensors (model.state_dict())") from None
        raise ValueError(f"{path} is not a readable torch checkpoint (pickle error)") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(err).__name__})") from None
    if isinstance(data, dict) and "model_state_dict" in data:
        step = data.get("train_step")
        return data["model_state_dict"], step if isinstance(step, int) and step > 0 else None
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data, None
    raise ValueError(f"{path} is neither a training state (a dict with 'model_state_dict') nor a state dict "
                     f"of tensors")


# ----------------------------------------------------------------------------------------------
# The import


def import_garg(path, out_dir, *, n_points: int | None = None, **overrides) -> GargImport:
    """Convert a Garg et al. checkpoint (``state.pt``, a bare state dict, or a folder holding one)
    into the run directory ``out_dir`` (``config.json`` and ``weights.safetensors``, overwritten).

    The sizes come from ``config.yaml`` beside the checkpoint; keyword ``overrides`` (n_dims, n_embd,
    n_head, n_layer, n_positions) replace its values and stand in for it when it is absent.
    """
    unknown = set(overrides) - set(SIZE_NAMES)
    if unknown:
        raise TypeError(f"import_garg: unknown size(s) {sorted(unknown)}; known are {list(SIZE_NAMES)}")
    checkpoint = find_checkpoint(path)
    state_dict, step = read_checkpoint(checkpoint)
    config_path = checkpoint.parent / CONFIG_NAME
    config = read_garg_config(config_path) if config_path.is_file() else None
    sizes = resolve_sizes(config, overrides, config_path)
    points = trained_points(config, sizes["n_positions"], n_points)
    cfg, w = from_garg_state_dict(state_dict, **sizes)
    run = garg_run_config(sizes, points, config, step)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "weights.safetensors", cfg, w)
    atomic_write_json(out / "config.json", run.to_dict())
    return GargImport(out, sizes, points, step, _get(config or {}, "training.task"))
