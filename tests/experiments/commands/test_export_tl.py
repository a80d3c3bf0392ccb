"""`ttb export-tl WEIGHTS --out DIR`: the written TransformerLens model loads back (with ttb's loader,
and a hook-free one by README.txt's recipe alone) and predicts what our forward pass predicts; every
bad input is one line and exit status 2.

Weights are drawn with std 0.5 and perturbed biases (see tests/constructions/test_tl.py, which also
derives the tolerance: float64 round-off of two small blocks, ~1e-15 observed, 1e-10 allowed). Model 1
of a batch of two is exported, so an export of model 0 would fail the comparison.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

pytest.importorskip("transformer_lens")

from constructions import model as M  # noqa: E402
from constructions import tl  # noqa: E402
from experiments.commands.main import main as ttb  # noqa: E402
from experiments.commands.tl import load_export  # noqa: E402

TOL = 1e-10
BASE = dict(d_model=8, n_layers=2, n_heads=2, d_head=4, d_in=3, d_out=2, d_mlp=16, mlp="gelu_tanh",
            norm="layernorm", final_norm=True, n_positions=8)


def weights_file(path, **overrides):
    """A weights file of two models (float64) with order-one scores and nonzero biases."""
    cfg = M.ModelConfig(**{**BASE, **overrides})
    sd = M.to_state_dict(M.init(cfg, [torch.Generator().manual_seed(k) for k in range(2)], std=0.5,
                                dtype=torch.float64))
    noise = torch.Generator().manual_seed(9)
    for key, t in sd.items():
        if key.split(".")[-1].startswith("b"):
            sd[key] = t + 0.3 * torch.randn(t.shape, generator=noise, dtype=t.dtype)
    M.save_weights(path, cfg, M.from_state_dict(sd))
    return path


def predictions(model, path, index=1):
    """(TL's, ours) predictions of model ``index`` of the weights at ``path``."""
    cfg, w = M.load_weights(path)
    x = torch.randn(2, 6, cfg.d_in, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return tl.tl_predictions(model, cfg, w, x.to(w.W_E.dtype), index), M.forward(cfg, w, x).out[index]


@pytest.fixture(scope="module")
def linear_export(tmp_path_factory):
    """(weights file, DIR, --json output) of one `ttb export-tl --model 1` of a linear-attention,
    exclude_query model (its hooks are needed), run in-process."""
    tmp = tmp_path_factory.mktemp("export_tl")
    path = weights_file(tmp / "w.safetensors", attention="linear", mask="exclude_query")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert ttb(["export-tl", str(path), "--out", str(tmp / "out"), "--model", "1", "--json"]) == 0
    return path, tmp / "out", json.loads(printed.getvalue())


def test_an_export_loads_back_with_its_hooks_and_predicts_the_same(linear_export):
    path, out, done = linear_export
    assert done["model"] == 1 and done["dtype"] == "float64" and done["hooked_layers"] == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "config.json", "model.pt"]
    got, want = predictions(load_export(out), path)
    assert (got - want).abs().max().item() <= TOL


def test_readme_has_three_lines_on_loading_and_residual_inputs(linear_export):
    lines = (linear_export[1] / "README.txt").read_text().splitlines()
    assert len(lines) == 3
    assert "boot_native" in lines[0] and "load_state_dict" in lines[1] and "load_export" in lines[1]
    assert "start_at_layer=0" in lines[2] and "embed" in lines[2]


def test_a_softmax_export_loads_in_plain_transformer_lens_by_the_readme(tmp_path):
    """No ttb hooks: TransformerBridgeConfig.from_dict(config.json) + load_state_dict(model.pt)."""
    from transformer_lens import TransformerBridge
    from transformer_lens.config import TransformerBridgeConfig

    path = weights_file(tmp_path / "w.safetensors")
    assert ttb(["export-tl", str(path), "--out", str(tmp_path / "out"), "--model", "1"]) == 0
    assert "no hooks needed" in (tmp_path / "out" / "README.txt").read_text()
    config = TransformerBridgeConfig.from_dict(json.loads((tmp_path / "out" / "config.json").read_text()))
    model = TransformerBridge.boot_native(config, dtype=torch.float64)
    model.load_state_dict(torch.load(tmp_path / "out" / "model.pt", weights_only=True))
    got, want = predictions(model, path)
    assert (got - want).abs().max().item() <= TOL
    assert (got - predictions(model, path, index=0)[1]).abs().max() > 0.1  # the other model differs


def test_dtype_option_exports_in_float32_from_a_run_directory(tmp_path):
    (tmp_path / "run").mkdir()
    path = weights_file(tmp_path / "run" / "weights.safetensors")
    assert ttb(["export-tl", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--dtype", "float32"]) == 0
    model = load_export(tmp_path / "out")
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    got, want = predictions(model, path, index=0)
    assert (got.double() - want).abs().max().item() <= 1e-5  # float32's tolerance (tests/constructions/test_tl.py)


@pytest.mark.parametrize("args, words", [
    (["--model", "2"], "--model 2"),
    (["--n-ctx", "4"], "--n-ctx 4"),
])
def test_bad_options_are_one_line_naming_the_option(tmp_path, capsys, args, words):
    path = weights_file(tmp_path / "w.safetensors")
    assert ttb(["export-tl", str(path), "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err
    assert not (tmp_path / "out" / "model.pt").exists()


def test_a_model_tl_cannot_express_is_one_line_naming_the_field(tmp_path, capsys):
    path = weights_file(tmp_path / "w.safetensors", norm="crmsnorm")
    assert ttb(["export-tl", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "norm='crmsnorm'" in err


def test_without_the_extra_the_error_names_the_install_command(tmp_path, capsys, monkeypatch):
    def missing():
        raise ImportError("No module named 'transformer_lens'")

    monkeypatch.setattr(tl, "require_transformer_lens", missing)
    path = weights_file(tmp_path / "w.safetensors")
    assert ttb(["export-tl", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and 'pip install -e ".[tl]"' in err
