"""`ttb export-tl WEIGHTS --out DIR`: one model of ours as a TransformerLens model.

``ttb export-tl WEIGHTS --out DIR [--model INDEX] [--dtype float32|float64] [--n-ctx N] [--json]``
    WEIGHTS is a weights file written by ttb (safetensors with its config in the header), or a run
    directory holding weights.safetensors. DIR gets model.pt (the TransformerLens model's state
    dict), config.json (its TransformerBridgeConfig as a dict, plus ``ttb_config``: ours, from
    which the hooks standing in for what TransformerLens lacks are rebuilt) and README.txt (how to
    load it). Inputs are residuals: run our embedding and pass ``start_at_layer=0``. --model picks
    model INDEX of a batched file (default 0); --dtype defaults to the weights'. Needs the extra
    ``tl`` (transformer-lens >= 4). See constructions.tl; experiments.commands.tl.load_export(DIR)
    loads DIR back, with its hooks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DTYPE_NAMES = ("float32", "float64")
FILES = ("model.pt", "config.json", "README.txt")


def register(sub) -> None:
    p = sub.add_parser("export-tl", help="export a model to TransformerLens (model.pt, config.json, README.txt)",
                       description=__doc__.split("\n\n", 1)[1].replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", metavar="WEIGHTS", help="weights file written by ttb, or a run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write model.pt, config.json, README.txt")
    p.add_argument("--model", type=int, default=0, metavar="INDEX", help="model INDEX of a batched file (default 0)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="dtype of the export (default: the weights')")
    p.add_argument("--n-ctx", type=int, default=None, metavar="N",
                   help="longest prompt the TransformerLens model accepts (default: n_positions, else 1024)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=export_tl_command)


def _tl():
    """constructions.tl, or a one-line UserError naming the extra when transformer-lens is missing."""
    from constructions import tl
    from experiments.common.validate import UserError

    try:
        tl.require_transformer_lens()
    except ImportError as err:
        raise UserError(f"export-tl needs TransformerLens (transformer-lens>=4): {tl.EXTRA}") from err
    return tl


def weights_path(given: str) -> Path:
    """WEIGHTS as given, or the weights.safetensors of a run directory."""
    path = Path(given)
    return path / "weights.safetensors" if path.is_dir() else path


def readme(config: dict, dtype: str, index: int) -> str:
    """Three lines: build the model, load the weights (saying whether ttb's hooks are needed), and
    feed it residuals."""
    from constructions import tl
    from constructions.model import ModelConfig

    hooks = tl.hook_summary(ModelConfig.from_dict(config["ttb_config"]))
    note = (f"ttb's permanent hooks make {hooks}: load with experiments.commands.tl.load_export(DIR), which adds them"
            if hooks else "plain TransformerLens computes this model: no hooks needed")
    return (
        f"model = TransformerBridge.boot_native(TransformerBridgeConfig.from_dict(json.load(open('config.json'))), "
        f"dtype=torch.{dtype})  # transformer-lens>=4, HookedTransformer's successor: "
        f"from transformer_lens import TransformerBridge; from transformer_lens.config import TransformerBridgeConfig\n"
        f"model.load_state_dict(torch.load('model.pt', weights_only=True))  # {note}\n"
        f"logits = model(resid, start_at_layer=0)  # inputs are residuals, not token ids: "
        f"resid = constructions.model.embed(cfg, weights.select({index}), tokens)[0] (ttb's embedding, positions included)\n"
    )


def export_tl(weights: str, out: str, *, index: int = 0, dtype: str | None = None,
              n_ctx: int | None = None) -> dict:
    """Write DIR/model.pt, config.json, README.txt for model ``index`` of WEIGHTS; what was written."""
    import torch

    from constructions.model import load_weights
    from experiments.common.atomic import atomic_write_text, atomic_write_with
    from experiments.common.validate import ConfigError

    tl = _tl()
    cfg, w = load_weights(weights_path(weights))
    if not 0 <= index < w.K:
        raise ConfigError(f"--model {index}: {weights} holds K={w.K} model(s), indices 0 to {w.K - 1}")
    if n_ctx is not None and n_ctx < max(cfg.n_positions, 1):
        raise ConfigError(f"--n-ctx {n_ctx}: must be >= the model's n_positions={max(cfg.n_positions, 1)}")
    torch_dtype = w.W_E.dtype if dtype is None else getattr(torch, dtype)
    model = tl.to_hooked_transformer(cfg, w, index, dtype=torch_dtype, n_ctx=n_ctx)
    config = tl.tl_config_dict(cfg, n_ctx=n_ctx)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: t.detach().cpu().contiguous() for key, t in model.state_dict().items()}
    atomic_write_with(directory / "model.pt", lambda tmp: torch.save(state, tmp))
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2) + "\n")
    name = str(torch_dtype).removeprefix("torch.")
    atomic_write_text(directory / "README.txt", readme(config, name, index))
    return {"out": str(directory), "files": list(FILES), "model": index, "dtype": name,
            "n_layers": config["n_layers"], "n_ctx": config["n_ctx"], "hooked_layers": tl.hooked_layers(cfg)}


def load_export(directory, *, device=None):
    """The TransformerLens model that ``ttb export-tl`` wrote to ``directory``, with its hooks."""
    import torch

    from experiments.common.validate import read_json

    tl = _tl()
    directory = Path(directory)
    config = read_json(directory / "config.json", "TransformerLens config")
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    dtype = next(iter(state.values())).dtype
    model = tl.bridge_from_config(config, dtype=dtype, device=device)
    model.load_state_dict(state, strict=True)
    return model


def export_tl_command(args) -> int:
    done = export_tl(args.weights, args.out, index=args.model, dtype=args.dtype, n_ctx=args.n_ctx)
    if args.json:
        print(json.dumps(done))
    else:
        hooked = f"; hooks recompute the attention of blocks {done['hooked_layers']}" if done["hooked_layers"] else ""
        print(f"exported model {done['model']} of {args.weights} to {done['out']} ({done['dtype']}, "
              f"{done['n_layers']} blocks, n_ctx {done['n_ctx']}{hooked}); see {done['out']}/README.txt")
    return 0
