"""`ttb inspect`: how trained and constructed models use their layers.

``ttb inspect depth RUN_OR_WEIGHTS... [--construction NAME] [--out DIR] [--json]``
    Depth use (experiments.analysis.depth) of every run under each path (a run or sweep directory,
    or a weights.safetensors file), each beside a construction of its depth (default gd: L steps
    at the best step size; "none" for no construction): per block the norm of its update relative
    to the residual and their cosine, the change of error when the block is skipped, and the
    held-out R^2 of a linear map from layer l to layer l + k. Writes DIR/depth_contributions.csv,
    depth_skips.csv, depth_maps.csv and one figure per run (depth_<run>.png/.svg/.csv); DIR
    defaults to the first path's directory + /inspect. ``--json`` prints, per model, its layers with
    block_norm_ratio, block_cosine, skip_delta_nmse and next_layer_r2.
``ttb inspect patch SOURCE TARGET [--out DIR] [--json]``
    Activation patching (experiments.analysis.patching) from SOURCE into TARGET: each a run
    directory, a weights.safetensors file, or a construction name (gd), built at the other model's
    depth and aligned into its config. For every block, site (resid_pre, attn_out, mlp_out,
    resid_post, each head's z) and position set (query, examples, all): the fraction of the
    prediction gap closed and the change of error. Writes the heatmaps DIR/patching.png and .svg
    with the tidy frame as patching.csv (DIR defaults to TARGET's directory + /inspect, or SOURCE's).
    ``--json`` prints source, target, prediction_gap (mean squared difference of their predictions
    / d) and patches: one entry per patch (site, layer, head, positions, gap_closed, delta_nmse).

Prompts come from the run's own task (a bare weights file: isotropic regression with d = d_in - 1
and --examples examples, the one-token-per-example format), float64, seeded by --seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.commands.options import seed

CONSTRUCTION_NAMES = ("gd",)  # experiments.analysis.depth.CONSTRUCTIONS (kept here: no torch at start-up)


def register(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("inspect", help="depth use and activation patching of trained and constructed models",
                       description=__doc__.split("\n\n")[0], formatter_class=raw)
    inner = p.add_subparsers(dest="inspect_command", metavar="WHAT", required=True)
    d = inner.add_parser("depth", help="per-layer contributions, skip effects, layer-to-layer linear maps",
                         description=_section("depth"), formatter_class=raw)
    d.add_argument("paths", nargs="+", metavar="RUN_OR_WEIGHTS", help="run or sweep directories, weights files")
    d.add_argument("--construction", default="gd",
                   help=f"construction beside each run: {', '.join(CONSTRUCTION_NAMES)} or none (default gd)")
    _common(d)
    d.set_defaults(func=depth_command)
    q = inner.add_parser("patch", help="activation patching from SOURCE into TARGET (same shape)",
                         description=_section("patch"), formatter_class=raw)
    q.add_argument("source", help="a run directory, a weights file, or a construction name (gd)")
    q.add_argument("target", help="a run directory, a weights file, or a construction name (gd)")
    q.add_argument("--no-heads", action="store_true", help="leave out the per-head z patches")
    _common(q)
    q.set_defaults(func=patch_command)


def _section(command: str) -> str:
    start = __doc__.index(f"``ttb inspect {command}")
    end = __doc__.find("\n``ttb ", start + 1)
    return __doc__[start:end if end > 0 else None].replace("``", "")


def _common(p) -> None:
    p.add_argument("--out", default=None, help="output folder (default: next to the first model, /inspect)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--prompts", type=int, default=256, help="evaluation prompts (default 256)")
    p.add_argument("--examples", type=int, default=20, help="in-context examples for a bare weights file (default 20)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the evaluation prompts")


def _check_counts(args) -> None:
    if args.prompts < 8:
        raise ValueError(f"--prompts must be >= 8, got {args.prompts}")
    if args.examples < 1:
        raise ValueError(f"--examples must be >= 1, got {args.examples}")


# ----------------------------------------------------------------------------------------------
# Models and prompts from the command line


class Subject:
    """A model named on the command line: a Learner, its evaluation prompts and a folder for output."""

    def __init__(self, learner, prompts, fit, d: int, home: Path):
        self.learner, self.prompts, self.fit, self.d, self.home = learner, prompts, fit, d, home


def _weights_file(path: Path, args) -> Subject:
    """A weights.safetensors file: its run's (config.json beside it), else isotropic prompts."""
    from constructions.model import load_weights
    from experiments.analysis import core as an
    from experiments.analysis import prompts as ap

    if (path.parent / "config.json").exists():
        return _run_subject(path.parent, args)
    cfg, weights = load_weights(path)
    d = cfg.d_in - 1
    if d < 1:
        raise ValueError(f"{path}: d_in = {cfg.d_in} is too small for the one-token-per-example format")
    p = ap.sample_prompts(d, args.examples, args.prompts, seed=args.seed)
    fit = ap.sample_prompts(d, args.examples, args.prompts, seed=args.seed + 1)
    learner = an.Learner(cfg, weights, "example", model=path.stem, run="")
    return Subject(learner, p, fit, d, path.parent)


def _run_subject(directory: Path, args) -> Subject:
    from experiments.analysis import prompts as ap
    from experiments.analysis import runs as ar

    run = ar.load_run(directory)
    p = ap.prompts_for_task(run.config.task, args.prompts, seed=args.seed)
    fit = ap.prompts_for_task(run.config.task, args.prompts, seed=args.seed + 1)
    return Subject(run.learner, p, fit, run.config.task.d, directory)


def subjects(path: str, args) -> list[Subject]:
    """Every model at ``path``: a weights file, a run directory, or each finished run of a sweep."""
    from experiments.analysis import runs as ar

    where = Path(path)
    if where.is_file():
        return [_weights_file(where, args)]
    return [_run_subject(d, args) for d in ar.find_runs(where)]


def _construction_beside(name: str, subject: Subject):
    from experiments.analysis import depth

    return depth.construction(name, subject.d, depth.applied_blocks(subject.learner.cfg), subject.fit)


# ----------------------------------------------------------------------------------------------
# ttb inspect depth


def depth_summary(frames: dict) -> list[dict]:
    """Per model: its layers with block_norm_ratio, block_cosine (all tokens), skip_delta_nmse and
    next_layer_r2 (the linear map from layer l to l + 1; layer l is the block's input)."""
    c, s, m = frames["contributions"], frames["skips"], frames["maps"]
    c = c[c.positions == "all"]
    out = []
    for model in dict.fromkeys(c.model):
        def at(f, metric, layer, **extra):
            rows = f[(f.model == model) & (f.metric == metric) & (f.layer == layer)]
            for k, v in extra.items():
                rows = rows[rows[k] == v]
            return float(rows.value.iloc[0]) if len(rows) else None

        layers = sorted(int(v) for v in c[c.model == model].layer.unique())
        out.append({"model": model, "run": str(c[c.model == model].run.iloc[0]), "layers": [
            {"layer": layer, "block_norm_ratio": at(c, "block_norm_ratio", layer),
             "block_cosine": at(c, "block_cosine", layer), "skip_delta_nmse": at(s, "skip_delta_nmse", layer),
             "next_layer_r2": at(m, "linear_map_r2", layer, to_layer=layer + 1)} for layer in layers]})
    return out


def format_depth(summary: list[dict]) -> str:
    lines = []
    for entry in summary:
        lines.append(f"{entry['run'] or '-'}  {entry['model']}")
        lines.append("    layer  |update|/|resid|  cosine  skip: d nmse  R^2 l->l+1")
        for r in entry["layers"]:
            lines.append(f"    {r['layer']:>5}  {r['block_norm_ratio']:>15.3g}  {r['block_cosine']:>6.3f}  "
                         f"{r['skip_delta_nmse']:>12.3g}  {r['next_layer_r2']:>10.4f}")
    return "\n".join(lines)


def depth_command(args) -> int:
    _check_counts(args)
    if args.construction not in CONSTRUCTION_NAMES + ("none",):
        raise ValueError(f"--construction must be one of {', '.join(CONSTRUCTION_NAMES)}, none; "
                         f"got {args.construction!r}")
    _agg()
    import pandas as pd

    from experiments.analysis import depth
    from experiments.analysis import runs as ar
    from experiments.plots import core as plots
    from experiments.plots import inspect as plots_inspect

    found = [s for path in args.paths for s in subjects(path, args)]
    out = Path(args.out) if args.out else _default_out(args.paths[0])
    out.mkdir(parents=True, exist_ok=True)
    parts, done, paths = {}, set(), []
    for subject in found:
        learners = [subject.learner]
        if args.construction != "none":
            learners.append(_construction_beside(args.construction, subject))
        frames = depth.depth_use(learners, subject.prompts)
        stem = ar.slug(subject.learner.model) + (f"-{subject.learner.run[:6]}" if subject.learner.run else "")
        axes = plots_inspect.depth_figure(frames)
        axes[0].figure.suptitle(f"depth use: {subject.learner.model}", fontsize="small")
        paths.append(plots.save(axes, pd.concat(frames.values(), ignore_index=True), out / f"depth_{stem}")[0])
        for key, f in frames.items():  # a construction shared by several runs is kept once
            parts.setdefault(key, []).append(f[~f.model.isin(done)])
        done.update(learner.model for learner in learners[1:])
    frames = {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}
    for key, f in frames.items():
        f.to_csv(out / f"depth_{key}.csv", index=False)
    summary = depth_summary(frames)
    print(json.dumps(summary, indent=1) if args.json else format_depth(summary))
    print(f"wrote depth_contributions.csv, depth_skips.csv, depth_maps.csv and {len(paths)} figure(s) to {out}",
          file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------
# ttb inspect patch


def _agg():
    import matplotlib

    matplotlib.use("Agg")


def _default_out(path: str) -> Path:
    where = Path(path)
    return (where.parent if where.is_file() else where) / "inspect"


def _one(path: str, args) -> Subject:
    found = subjects(path, args)
    if len(found) != 1:
        raise ValueError(f"{path} holds {len(found)} runs; give one run directory")
    return found[0]


def patch_pair(source: str, target: str, args):
    """(source Learner, target Learner, the Subject whose prompts are used) from the command line."""
    from experiments.analysis import patching

    names = set(CONSTRUCTION_NAMES)
    if source in names and target in names:
        raise ValueError("SOURCE and TARGET are both construction names; at least one must be a run or weights file")
    if target in names:
        s = _one(source, args)
        return s.learner, patching.aligned_construction(target, s.learner, s.d, s.fit), s
    t = _one(target, args)
    if source in names:
        return patching.aligned_construction(source, t.learner, t.d, t.fit), t.learner, t
    return _one(source, args).learner, t.learner, t


def patch_summary(data, source, target, p) -> dict:
    """The JSON of one patching frame: source, target, prediction_gap = mean (yhat_s - yhat_t)^2 / d,
    and per patch its gap_closed and delta_nmse."""
    import math

    import pandas as pd

    from experiments.analysis import depth

    gap = float((depth.predictions(source, p) - depth.predictions(target, p)).pow(2).mean() / p.d)
    keys = ["site", "layer", "head", "positions"]
    gaps = data[data.metric == "gap_closed"].set_index(keys).value
    errs = data[data.metric == "delta_nmse"].set_index(keys).value
    rows = [{"site": site, "layer": int(layer), "head": None if pd.isna(head) else int(head), "positions": where,
             "gap_closed": None if math.isnan(gap) else float(gap), "delta_nmse": float(err)}
            for (site, layer, head, where), gap, err in zip(gaps.index, gaps, errs)]
    return {"source": source.model, "target": target.model, "prediction_gap": gap, "patches": rows}


def format_patch(summary: dict, data) -> str:
    from experiments.plots import inspect as plots_inspect

    lines = [f"{summary['source']} -> {summary['target']}: prediction gap {summary['prediction_gap']:.3g} "
             f"(mean squared difference / d); fraction of the gap closed by each patch:"]
    for where in dict.fromkeys(data.positions):
        table = plots_inspect.patching_table(data[data.positions == where])
        lines += [f"  patched at {where}:", table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-")]
    return "\n".join(lines)


def write_patching(source, target, p, out: Path, stem: str = "patching", heads: bool = True):
    """Patch ``source`` into ``target`` on prompts ``p``; write the heatmaps out/stem.png and .svg
    with the frame as out/stem.csv. Returns (frame, PNG path)."""
    from experiments.analysis import patching
    from experiments.plots import core as plots
    from experiments.plots import inspect as plots_inspect

    data = patching.patching(source, target, p, heads=heads)
    axes = plots_inspect.patching_figure(data)
    return data, plots.save(axes, data, out / stem)[0]


def patch_command(args) -> int:
    _check_counts(args)
    _agg()
    source, target, subject = patch_pair(args.source, args.target, args)
    out = Path(args.out) if args.out else subject.home / "inspect"
    data, _ = write_patching(source, target, subject.prompts, out, heads=not args.no_heads)
    summary = patch_summary(data, source, target, subject.prompts)
    print(json.dumps(summary, indent=1) if args.json else format_patch(summary, data))
    print(f"wrote patching.png, .svg and .csv to {out}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------
# ttb compare --patch


def compare_patching(path: str, n_prompts: int = 256, seed_: int = 0) -> list[Path]:
    """Patching heatmaps for ``ttb compare DIR --patch``, written to DIR/figures: between the first
    two runs if they have one shape, else between each run and the GD construction aligned into its
    config (runs that cannot hold it exactly, e.g. softmax, are skipped with a note on stderr)."""
    from experiments.analysis import patching
    from experiments.analysis import runs as ar

    _agg()
    args = argparse.Namespace(prompts=n_prompts, examples=20, seed=seed_)
    found = subjects(path, args)
    out = Path(path) / "figures"
    if len(found) >= 2:
        try:
            patching.check_patchable(found[0].learner, found[1].learner)
            return [write_patching(found[0].learner, found[1].learner, found[1].prompts, out)[1]]
        except ValueError:
            pass
    paths = []
    for s in found:
        try:
            construction = patching.aligned_construction("gd", s.learner, s.d, s.fit)
        except ValueError as err:
            print(f"ttb compare --patch: {s.learner.model}: skipped ({err})", file=sys.stderr)
            continue
        stem = "patching_" + ar.slug(s.learner.model) + (f"-{s.learner.run[:6]}" if s.learner.run else "")
        paths.append(write_patching(construction, s.learner, s.prompts, out, stem)[1])
    return paths
