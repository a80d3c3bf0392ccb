"""`ttb inspect depth|patch` and `ttb compare --patch` on a two-seed sweep of a tiny linear-attention
shape (a few training steps: the numbers are not the point, the files and the JSON contract are)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from experiments.commands.main import main as ttb

pytestmark = pytest.mark.usefixtures("close_figures")

SWEEP = """
[sweep]
name = "inspect"
[task]
d = 3
n_points = 6
format = "example"
eval_batch_size = 16
[model]
n_layers = 2
d_model = 8
n_heads = 1
d_head = 8
attention = "linear"
mask = "exclude_query"
mlp = "none"
norm = "none"
final_norm = false
bias = false
[train]
steps = 2
batch_size = 8
log_every = 2
[grid]
"train.seed" = [0, 1]
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    (root / "sweep.toml").write_text(SWEEP)
    assert ttb(["sweep", str(root / "sweep.toml"), "--out", str(root / "sweep"), "--no-progress"]) == 0
    return root / "sweep"


def runs(sweep):
    return sorted((sweep / "runs").iterdir())


def test_inspect_depth_writes_frames_and_a_figure_of_a_run_beside_its_gd_construction(sweep, tmp_path, capsys):
    run = runs(sweep)[0]
    assert ttb(["inspect", "depth", str(run), "--out", str(tmp_path), "--json", "--prompts", "16"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows][1] == "gd construction (2 layers)" and rows[0]["run"] == run.name
    for row in rows:
        assert [layer["layer"] for layer in row["layers"]] == [0, 1]
        assert set(row["layers"][0]) == {"layer", "block_norm_ratio", "block_cosine", "skip_delta_nmse",
                                         "next_layer_r2"}
    for name in ("depth_contributions.csv", "depth_skips.csv", "depth_maps.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(list(tmp_path.glob("depth_*.png"))) == 1 and len(list(tmp_path.glob("depth_*.svg"))) == 1


@pytest.mark.slow
def test_inspect_depth_of_a_sweep_keeps_a_shared_construction_once(sweep, tmp_path, capsys):
    assert ttb(["inspect", "depth", str(sweep), "--out", str(tmp_path), "--json", "--prompts", "16"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows].count("gd construction (2 layers)") == 1 and len(rows) == 3
    assert len(list(tmp_path.glob("depth_*.png"))) == 2  # one figure per run
    table = pd.read_csv(tmp_path / "depth_skips.csv")
    counts = table.groupby("model").size()
    assert counts.nunique() == 1  # the construction's rows once, not once per run


def test_inspect_depth_reads_a_bare_weights_file_as_one_token_per_example(sweep, tmp_path, capsys):
    shutil.copy(runs(sweep)[0] / "weights.safetensors", tmp_path / "model.safetensors")
    assert ttb(["inspect", "depth", str(tmp_path / "model.safetensors"), "--construction", "none", "--prompts", "16",
                "--examples", "5"]) == 0
    out = capsys.readouterr().out
    assert "model" in out and "R^2 l->l+1" in out and "gd construction" not in out
    assert (tmp_path / "inspect" / "depth_maps.csv").exists()


def test_inspect_patch_between_two_seeds_gives_every_patch_in_json(sweep, tmp_path, capsys):
    first, second = runs(sweep)
    assert ttb(["inspect", "patch", str(first), str(second), "--out", str(tmp_path), "--json", "--prompts", "16"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {summary["source"][-6:], summary["target"][-6:]} == {"seed 0", "seed 1"}
    assert summary["prediction_gap"] > 0
    # 2 layers x (resid_pre, attn_out, resid_post, z of the one head) x (query, examples, all)
    assert len(summary["patches"]) == 24
    assert {p["site"] for p in summary["patches"]} == {"resid_pre", "attn_out", "resid_post", "z"}
    assert {p["head"] for p in summary["patches"] if p["site"] == "z"} == {0}
    for suffix in (".png", ".svg", ".csv"):
        assert (tmp_path / f"patching{suffix}").stat().st_size > 0


def test_inspect_patch_builds_a_named_construction_in_the_run_config(sweep, tmp_path, capsys):
    run = runs(sweep)[0]
    assert ttb(["inspect", "patch", "gd", str(run), "--out", str(tmp_path), "--no-heads", "--prompts", "16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gd construction (2 layers) -> linear, 2 layers") and "z[0]" not in out


@pytest.mark.parametrize("argv, words", [
    (["inspect", "patch", "gd", "gd"], "both construction names"),
    (["inspect", "depth", "RUN", "--construction", "newton2"], "--construction must be one of gd"),
    (["inspect", "patch", "SWEEP", "gd"], "holds 2 runs; give one run directory"),
])
def test_inspect_errors_are_one_line_naming_the_argument(sweep, capsys, argv, words):
    argv = [str(sweep) if a == "SWEEP" else str(runs(sweep)[0]) if a == "RUN" else a for a in argv]
    assert ttb(argv + ["--prompts", "16"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_compare_patch_writes_the_heatmap_between_the_first_two_runs(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    assert ttb(["compare", str(copy), "--patch", "--prompts", "16", "--algorithms", "gd,ols"]) == 0
    captured = capsys.readouterr()
    assert "closest" in captured.out
    assert (copy / "figures" / "patching.png").exists() and "patching.png" in captured.err
