"""`ttb check` and `ttb bench algorithms`: the public contract (names, --json keys, exit status)."""

import dataclasses
import json

import pytest

from constructions import registry
from constructions.check.run import mutate
from experiments.commands.main import main


def _json(capsys, argv):
    status = main(argv)
    return status, json.loads(capsys.readouterr().out)


def test_check_json_lists_every_construction_with_the_contract_keys(capsys):
    status, rows = _json(capsys, ["check", "--json", "--cases", "3"])
    assert status == 0
    assert [r["name"] for r in rows] == list(registry.CONSTRUCTIONS)
    for r in rows:
        assert {"name", "exactness", "error", "bound", "passed"} <= set(r)
        assert r["passed"] is True and r["error"] <= r["bound"]
        assert len(r["per_layer"]) >= 2


def test_check_mutate_reports_every_perturbation_caught(capsys):
    status, rows = _json(capsys, ["check", "--json", "--mutate", "--cases", "3", "gd", "newton"])
    assert status == 0
    assert [r["caught"] for r in rows] == [True, True]
    assert all(r["mutated_error"] > r["bound"] for r in rows)


def test_check_exits_nonzero_when_a_construction_is_wrong(capsys, monkeypatch):
    """A construction whose build() hands out perturbed weights must fail the check, and with
    --mutate its (already wrong) weights are still caught: the exit status says it failed."""
    good = registry.CONSTRUCTIONS["gd"]

    def broken_build(case):
        import torch

        return mutate(good.build(case), torch.Generator().manual_seed(0))[0]

    bad = dataclasses.replace(good, name="gd_broken", build=broken_build)
    monkeypatch.setitem(registry.CONSTRUCTIONS, "gd_broken", bad)
    status, rows = _json(capsys, ["check", "--json", "--cases", "2", "gd_broken"])
    assert status == 1 and rows[0]["passed"] is False


def test_check_table_names_the_columns_and_summarises(capsys):
    assert main(["check", "gd", "--cases", "2"]) == 0
    out = capsys.readouterr().out
    assert "name" in out and "exactness" in out and "1 of 1 ok" in out


def test_check_unknown_name_is_an_error_naming_the_known_ones(capsys):
    assert main(["check", "nope"]) == 2
    assert "known: gd" in capsys.readouterr().err


def test_bench_algorithms_json_reports_a_ratio_and_agreement(capsys):
    """Agreement to 1e-10: float64, d = 3, noiseless data; every algorithm is exact to round-off
    (least squares by orthogonal factorisations, ~cond(X) eps) and 10 steps stay well inside it."""
    argv = ["bench", "algorithms", "--prompts", "8", "--n", "6", "--d", "3", "--repeats", "1", "--json"]
    status, rows = _json(capsys, argv)
    assert status == 0
    assert [r["algorithm"] for r in rows] == ["least_squares", "ridge", "ridge_sum", "gd", "newton"]
    for r in rows:
        assert {"algorithm", "prompts", "d", "n", "batched_s", "loop_s", "ratio", "max_abs_diff", "threads", "load"} <= set(r)
        assert r["ratio"] > 0 and r["max_abs_diff"] < 1e-10


def test_bench_algorithms_table_runs_the_chosen_subset(capsys):
    assert main(["bench", "algorithms", "--prompts", "4", "--n", "3", "--d", "2", "--repeats", "1",
                 "--algorithms", "gd, ridge_sum"]) == 0
    out = capsys.readouterr().out
    assert "load average" in out and "gd" in out and "ridge_sum" in out and "newton" not in out


def test_bench_help_does_not_import_torch():
    """`ttb --help` stays fast: the bench command imports its torch-heavy module only when it runs."""
    import subprocess
    import sys

    code = "import sys; from experiments.commands import bench; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_algorithms_rejects_unknown_algorithm(capsys):
    assert main(["bench", "algorithms", "--algorithms", "svm", "--prompts", "2"]) == 2
    assert "unknown 'svm'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"]])
def test_help_exits_cleanly(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0


def test_check_symbolic_adds_passing_lemma_rows(capsys):
    status, rows = _json(capsys, ["check", "gd", "--json", "--cases", "2", "--symbolic"])
    lemmas = [r for r in rows if r["exactness"] == "symbolic"]
    assert status == 0 and len(lemmas) >= 3
    assert all(r["passed"] for r in lemmas) and {"gd_one_step", "newton_one_iteration"} <= {
        r["name"].split(":", 1)[1] for r in lemmas}
