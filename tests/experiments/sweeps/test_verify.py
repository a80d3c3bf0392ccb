"""A finished run's files vouch for each other (issue 16, points 4 and 10): `ttb runs DIR --verify`
checks every finished run (the weights' sha256 against result.json, the weights' header against
config.json, config.json's content against the run id), and `ttb compare` refuses a run whose files
disagree, naming the file. One tiny sweep is trained once; each test tampers with a copy of it.
Each test fails on the code before these checks (no --verify; compare used edited files)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from support import TINY_SWEEP

from experiments.commands.main import main as ttb
from experiments.sweeps import spec as sw
from experiments.sweeps.runner import run_sweep

SWEEP = TINY_SWEEP.replace("{name}", "verify")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Four finished runs of 20 steps (two batches of two); tests copy it, never change it."""
    root = tmp_path_factory.mktemp("verify")
    path = root / "sweep.toml"
    path.write_text(SWEEP.format(steps=20, seeds="[0, 1]"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from intra-op threads
    try:
        run_sweep(sw.load_sweep(path), root / "out", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    return root / "out"


@pytest.fixture
def out(trained, tmp_path) -> Path:
    """A copy of the finished sweep to tamper with."""
    return Path(shutil.copytree(trained, tmp_path / "out"))


def run_dirs(out: Path) -> list[Path]:
    return sorted((out / "runs").iterdir())


def verify_json(out: Path, capsys) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = ttb(["runs", str(out), "--verify", "--json"])
    return code, json.loads(capsys.readouterr().out)


def failures(problems: list[dict]) -> list[dict]:
    return [p for p in problems if not p["note"]]


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def flip_data_byte(path: Path) -> None:
    """Change one byte of the tensor data, past the 8-byte length and the JSON header, so the file
    still reads as safetensors with the same header."""
    raw = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    at = 8 + header_len + (len(raw) - 8 - header_len) // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------------------------
# ttb runs --verify


def test_a_finished_sweep_verifies_clean_with_exit_0(trained, capsys):
    """Before: --verify was an unknown option."""
    code, problems = verify_json(trained, capsys)
    assert (code, problems) == (0, [])
    assert ttb(["runs", str(trained), "--verify"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == ["4 runs verified, 0 problems"]


def test_changed_weight_bytes_are_caught_naming_the_weights_file(out, capsys):
    """One flipped byte leaves the header readable (and equal): only the recorded sha256 shows it."""
    bad = run_dirs(out)[1]
    flip_data_byte(bad / "weights.safetensors")
    code, problems = verify_json(out, capsys)
    assert code == 1
    assert [(p["run_id"], p["file"]) for p in problems] == [(bad.name, str(bad / "weights.safetensors"))]
    assert "sha256" in problems[0]["problem"]
    assert ttb(["runs", str(out), "--verify"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "4 runs verified, 1 problem" and str(bad / "weights.safetensors") in lines[0]


def test_weights_swapped_with_another_runs_are_caught_by_their_hash(out, capsys):
    """The other run has the same model config (only seed, lr and clipping differ), so its header
    agrees: the hash is what tells the files apart."""
    a, b = run_dirs(out)[:2]
    shutil.copyfile(b / "weights.safetensors", a / "weights.safetensors")
    code, problems = verify_json(out, capsys)
    assert code == 1
    assert [p["file"] for p in failures(problems)] == [str(a / "weights.safetensors")]


@pytest.mark.parametrize("section, field, value", [("train", "seed", 7), ("model", "d_model", 8)])
def test_an_edited_config_json_is_caught_naming_config_json(out, capsys, section, field, value):
    """An edited field gives another id; a changed width also disagrees with the weights' header."""
    bad = run_dirs(out)[2]
    edit_json(bad / "config.json", lambda c: c[section].__setitem__(field, value))
    code, problems = verify_json(out, capsys)
    assert code == 1
    files = [p["file"] for p in failures(problems)]
    assert files[0] == str(bad / "config.json") and "run id" in failures(problems)[0]["problem"]
    if field == "d_model":
        assert files == [str(bad / "config.json"), str(bad / "weights.safetensors")]
        assert "d_model 16 vs 8" in failures(problems)[1]["problem"]
    else:
        assert files == [str(bad / "config.json")]


def test_an_edited_run_id_in_result_json_is_caught_naming_result_json(out, capsys):
    bad = run_dirs(out)[3]
    edit_json(bad / "result.json", lambda r: r.__setitem__("run_id", "0123456789ab"))
    code, problems = verify_json(out, capsys)
    assert code == 1
    assert str(bad / "result.json") == failures(problems)[0]["file"] and "0123456789ab" in problems[0]["problem"]


def test_a_result_json_that_does_not_parse_is_named(out, capsys):
    bad = run_dirs(out)[0]
    (bad / "result.json").write_text('{"run_id": ')
    code, problems = verify_json(out, capsys)
    assert code == 1 and [p["file"] for p in failures(problems)] == [str(bad / "result.json")]


def test_a_run_finished_before_hashes_were_recorded_gets_a_note_not_a_failure(out, capsys):
    old = run_dirs(out)[0]
    edit_json(old / "result.json", lambda r: r.pop("weights_sha256"))
    code, problems = verify_json(out, capsys)
    assert code == 0
    assert [(p["file"], p["note"]) for p in problems] == [(str(old / "weights.safetensors"), True)]
    assert "no hash recorded" in problems[0]["problem"]


def test_runs_without_verify_keeps_its_table_and_json_keys(trained, capsys):
    capsys.readouterr()
    assert ttb(["runs", str(trained), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and "status" in rows[0] and "problem" not in rows[0]


# ----------------------------------------------------------------------------------------------
# ttb compare refuses a run whose files disagree


TAMPERINGS = {
    "seed": ("config.json", lambda d, other: edit_json(d / "config.json", lambda c: c["train"].__setitem__("seed", 7))),
    "noise": ("config.json",
              lambda d, other: edit_json(d / "config.json", lambda c: c["task"].__setitem__("noise_std", 0.5))),
    "width": ("config.json",
              lambda d, other: edit_json(d / "config.json", lambda c: c["model"].__setitem__("d_model", 8))),
    "swapped weights": ("weights.safetensors",
                        lambda d, other: shutil.copyfile(other / "weights.safetensors", d / "weights.safetensors")),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_compare_refuses_a_tampered_run_with_one_line_naming_the_file(out, capsys, tampering):
    """Before: compare analysed the edited config (or the other run's weights) as if nothing happened."""
    file, tamper = TAMPERINGS[tampering]
    bad, other = run_dirs(out)[:2]
    tamper(bad, other)
    capsys.readouterr()
    code = ttb(["compare", str(bad), "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("ttb compare: error: ") and str(bad / file) in err[0], err
