"""`ttb bench train` and the GPU check script: the parts that run without a GPU."""

import json
import subprocess
import sys

import pytest
import torch
from support import ROOT

from experiments.commands.main import main as ttb
from experiments.training import bench


def test_bench_rows_carry_the_plain_loop_the_trainer_loop_and_the_batched_rates():
    rows = bench.run(ks=(1, 2), steps=1, device="cpu", shapes=["tiny", "lsa"], progress=False)
    assert [(r["shape"], r["K"]) for r in rows] == [("tiny", 1), ("tiny", 2), ("lsa", 1), ("lsa", 2)]
    for r in rows:
        assert r["plain_steps_per_s"] > 0 and r["loop_steps_per_s"] > 0 and r["batched_steps_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["batched_steps_per_s"] / r["loop_steps_per_s"])
        assert r["ratio_vs_plain"] == pytest.approx(r["batched_steps_per_s"] / r["plain_steps_per_s"])
    assert "tiny" in bench.format_table(rows)
    with pytest.raises(ValueError, match="shape must be one of"):
        bench.run(shapes=["huge"])


def test_a_k_that_does_not_fit_is_a_row_that_says_so_and_the_table_shows_it(monkeypatch):
    """The GPU script grows K until memory runs out: that K is reported, not a crash."""
    real = bench.measure

    def measure(shape, K, *args):
        if K > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(shape, K, *args)

    monkeypatch.setattr(bench, "measure", measure)
    rows = bench.run(ks=(1, 4), steps=1, device="cpu", shapes=["lsa"], progress=False)
    assert rows[1] == {"shape": "lsa", "K": 4, "device": "cpu", "autocast": None, "error": "out of memory"}
    assert "out of memory" in bench.format_table(rows)


def test_peak_flops_name_the_card_and_its_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert bench.peak_flops(torch.device("cuda"), torch.bfloat16) == ("NVIDIA H200", 989.4e12)
    assert bench.peak_flops(torch.device("cpu")) == ("cpu", None)


def test_ks_that_are_not_integers_are_a_one_line_error(capsys):
    assert ttb(["bench", "train", "--ks", "abc"]) == 2
    assert "--ks must be comma-separated integers" in capsys.readouterr().err


def test_the_gpu_script_parses_and_its_table_step_reads_the_bench_json(tmp_path):
    assert subprocess.run(["bash", "-n", str(ROOT / "experiments/gpu_check.sh")]).returncode == 0
    rows = bench.run(ks=(1,), steps=1, device="cpu", shapes=["tiny"], progress=False)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows))
    code = ("import json, sys; from experiments.training import bench as b; "
            "print(b.format_table(json.load(open(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    assert "tiny" in out and "vs plain" in out
