"""Every failure the user can fix is one line, ``ttb COMMAND: error: ...``, naming the file or field,
with a non-zero exit and no traceback; a bug keeps its traceback and asks for a report (issue 16,
points 5 and 11).

Each case runs ``main([...])`` in-process (argparse's own errors exit through SystemExit); Ctrl-C
runs a real ``ttb sweep`` in a subprocess and interrupts it with SIGINT.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from constructions.weights import load_weights, save_weights
from experiments.commands import check as check_command
from experiments.commands.main import main

REPO = Path(__file__).resolve().parents[3]
TINY = """
[sweep]
name = "tiny"
device = "{device}"
[task]
d = 2
n_points = 3
eval_batch_size = {eval_batch_size}
[model]
n_layers = 1
d_model = {d_model}
n_heads = 1
[train]
steps = {steps}
batch_size = {batch_size}
log_every = 2
checkpoint_every = 2
dtype = "float64"
"""
SIZES = {"device": "cpu", "eval_batch_size": 4, "d_model": 8, "steps": 2, "batch_size": 4}


def sweep_file(folder: Path, **changes) -> Path:
    path = folder / "sweep.toml"
    path.write_text(TINY.format(**{**SIZES, **changes}))
    return path


def run_ttb(capsys, argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of ``ttb argv``, in-process."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def assert_one_line(status, err: str, *names: str) -> str:
    """A non-zero exit and exactly one non-empty stderr line starting "ttb " that holds ``names``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status not in (0, None), err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("ttb "), err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished two-step sweep: a store and one run directory."""
    folder = tmp_path_factory.mktemp("finished")
    torch.set_num_threads(1)
    assert main(["sweep", str(sweep_file(folder)), "--out", str(folder / "out"), "--no-progress"]) == 0
    return folder / "out"


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A copy of the finished sweep's run directory, free to spoil."""
    source = next((finished / "runs").iterdir())
    return Path(shutil.copytree(source, tmp_path / source.name))


# ----------------------------------------------------------------------------------------------
# Output folders


def test_out_that_is_a_file_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = ["sweep", str(sweep_file(tmp_path)), "--out", str(tmp_path / "afile"), "--no-progress"]
    assert_one_line(*run_ttb(capsys, argv), "afile")


def test_out_under_a_file_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = ["sweep", str(sweep_file(tmp_path)), "--out", str(tmp_path / "afile" / "sub"), "--no-progress"]
    assert_one_line(*run_ttb(capsys, argv), "afile")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
@pytest.mark.parametrize("inside", [False, True], ids=["out-itself", "out-inside"])
def test_read_only_out_is_one_line_naming_it(tmp_path, capsys, inside):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        out = locked / "sub" if inside else locked
        argv = ["sweep", str(sweep_file(tmp_path)), "--out", str(out), "--no-progress"]
        assert_one_line(*run_ttb(capsys, argv), str(locked))
    finally:
        locked.chmod(0o700)


def test_export_into_a_missing_folder_is_one_line_naming_it(finished, tmp_path, capsys):
    argv = ["export", str(finished), "--output", str(tmp_path / "missing" / "metrics.csv")]
    assert_one_line(*run_ttb(capsys, argv), str(tmp_path / "missing"))


# ----------------------------------------------------------------------------------------------
# Config files


def test_a_directory_given_as_the_config_file_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "configs").mkdir()
    assert_one_line(*run_ttb(capsys, ["sweep", str(tmp_path / "configs"), "--dry-run"]), "configs")


def test_a_non_utf8_config_file_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[sweep]\nname = "café"\n'.encode("latin-1"))
    line = assert_one_line(*run_ttb(capsys, ["sweep", str(path), "--dry-run"]), "latin1.toml")
    assert "UTF-8" in line


# ----------------------------------------------------------------------------------------------
# Devices


def test_a_malformed_device_in_the_file_fails_validation_naming_the_field(tmp_path, capsys):
    argv = ["sweep", str(sweep_file(tmp_path, device="cpu:banana")), "--dry-run"]
    assert_one_line(*run_ttb(capsys, argv), "sweep.device", "cpu:banana")


@pytest.mark.parametrize("device", ["cpu:banana", "gpu"])
def test_a_malformed_device_flag_fails_before_training_listing_the_allowed_ones(tmp_path, capsys, device):
    out = tmp_path / "out"
    argv = ["sweep", str(sweep_file(tmp_path)), "--device", device, "--out", str(out), "--no-progress"]
    assert_one_line(*run_ttb(capsys, argv), "--device", repr(device), "'cuda:N'")
    assert not out.exists()


def _has(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@pytest.mark.parametrize("device, what", [("cuda", "CUDA"), ("mps", "MPS")])
@pytest.mark.parametrize("where", ["flag", "file"])
def test_a_device_this_torch_lacks_is_one_line_saying_so(tmp_path, capsys, device, what, where):
    if _has(device):
        pytest.skip(f"this machine has {device}")
    path = sweep_file(tmp_path, device=device if where == "file" else "cpu")
    argv = ["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"]
    argv += ["--device", device] if where == "flag" else []
    line = assert_one_line(*run_ttb(capsys, argv), repr(device), what)
    assert "this torch" in line
    assert not list((tmp_path / "out").rglob("*.safetensors"))


# ----------------------------------------------------------------------------------------------
# Sizes that cannot be allocated: refused before training, naming the field to lower


def run_ttb_capped(argv: list[str], cap: int = 4 * 2**30) -> tuple[int, str]:
    """(exit status, stderr) of ``ttb argv`` in a subprocess whose address space is capped at ``cap``
    bytes: code that tries to allocate a huge tensor fails there instead of exhausting the machine."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "experiments.commands.main", *argv], capture_output=True,
                          text=True, env=env, cwd=REPO, preexec_fn=limit, timeout=300)
    return proc.returncode, proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="caps the address space with RLIMIT_AS")
@pytest.mark.parametrize("field, change", [
    ("model.d_model", {"d_model": 10**9}),
    ("train.batch_size", {"batch_size": 10**9}),
    ("task.eval_batch_size", {"eval_batch_size": 10**9}),
])
def test_a_size_that_cannot_fit_is_refused_before_training_naming_the_field(tmp_path, field, change):
    out = tmp_path / "out"
    status, err = run_ttb_capped(["sweep", str(sweep_file(tmp_path, **change)), "--out", str(out), "--no-progress"])
    assert "GiB" in assert_one_line(status, err, field)
    assert not list(out.rglob("*.safetensors"))


def test_a_dry_run_refuses_a_size_that_cannot_fit_too(tmp_path, capsys):
    status, err = run_ttb(capsys, ["sweep", str(sweep_file(tmp_path, d_model=10**9)), "--dry-run"])
    assert "GiB" in assert_one_line(status, err, "model.d_model")
    assert "memory: every batch fits on cpu" in run_ttb_out(capsys, ["sweep", str(sweep_file(tmp_path)), "--dry-run"])


def test_a_dry_run_for_a_device_this_machine_lacks_says_it_did_not_check_memory(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = run_ttb_out(capsys, ["sweep", str(sweep_file(tmp_path)), "--dry-run", "--device", "cuda"])
    assert "memory not checked" in out and "CUDA" in out


def run_ttb_out(capsys, argv: list[str]) -> str:
    """stdout of a ``ttb`` call that must succeed."""
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


# ----------------------------------------------------------------------------------------------
# Run files: weights without their config, JSON that is not JSON


def test_weights_without_config_metadata_are_one_line_naming_the_file(run_copy, capsys):
    save_file({"W_E": torch.zeros(1, 3, 8)}, str(run_copy / "weights.safetensors"))
    line = assert_one_line(*run_ttb(capsys, ["compare", str(run_copy), "--prompts", "8"]), "weights.safetensors")
    assert "ttb_config" in line


def test_nan_weights_are_one_line_naming_the_file(run_copy, capsys):
    cfg, weights = load_weights(run_copy / "weights.safetensors")
    save_weights(run_copy / "weights.safetensors", cfg, weights.map(lambda t: t * float("nan")))
    line = assert_one_line(*run_ttb(capsys, ["compare", str(run_copy), "--prompts", "8"]), "weights.safetensors")
    assert "NaN" in line


def test_bad_json_in_a_runs_config_is_one_line_naming_the_file(run_copy, capsys):
    (run_copy / "config.json").write_text('{"task": {"d": 2,')
    assert_one_line(*run_ttb(capsys, ["compare", str(run_copy), "--prompts", "8"]), "config.json")


def test_bad_json_in_a_runs_result_is_one_line_naming_the_file(finished, tmp_path, capsys):
    out = Path(shutil.copytree(finished, tmp_path / "out"))
    (next((out / "runs").iterdir()) / "result.json").write_text('{"run_id": ')
    (out / "store.sqlite").unlink()  # the result is read again when the store does not know the run
    path = sweep_file(tmp_path)
    status, err = run_ttb(capsys, ["sweep", str(path), "--out", str(out), "--no-progress"])
    if status == 0:  # a store that rebuilds itself may set the bad file aside instead: then it says so
        assert "result.json" in err and "Traceback" not in err
    else:
        assert_one_line(status, err, "result.json")


# ----------------------------------------------------------------------------------------------
# Command-line values


def test_a_seed_out_of_range_is_one_line_naming_the_option(capsys):
    assert_one_line(*run_ttb(capsys, ["check", "gd", "--seed", str(2**70)]), "--seed", "2**63")


def test_an_algorithm_option_that_is_not_a_number_names_the_algorithm_and_option(run_copy, capsys):
    argv = ["compare", str(run_copy), "--algorithms", "gd:eta=abc", "--prompts", "8"]
    assert_one_line(*run_ttb(capsys, argv), "gd", "eta", "'abc'")


def test_bench_train_ks_that_are_not_integers_are_one_line(capsys):
    assert_one_line(*run_ttb(capsys, ["bench", "train", "--ks", "abc"]), "--ks", "'abc'")


# ----------------------------------------------------------------------------------------------
# The boundary itself: errors from deep inside a command


def _no_space():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/store.sqlite")


def _permission():
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/out")


def _database():
    raise sqlite3.DatabaseError("file is not a database")


def _safetensors():
    raise SafetensorError("Error while deserializing header: header too large")


def _torch_oom():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 288.00 GiB")


def _cpu_oom():
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: not enough memory: "
                       "you tried to allocate 288000000000 bytes.")


def _undecodable():
    b"\xff".decode("utf-8")


def _bad_json():
    json.loads('{"a": ')


@pytest.mark.parametrize("raise_it, names", [
    (_no_space, ("/data/out/store.sqlite", "no space left")),
    (_permission, ("/data/out", "permission denied")),
    (_database, ("store.sqlite", "not a database")),
    (_safetensors, ("safetensors", "header too large")),
    (_torch_oom, ("out of memory", "train.batch_size")),
    (_cpu_oom, ("out of memory", "train.batch_size")),
    (_undecodable, ("UTF-8",)),
    (_bad_json, ("JSON", "line 1")),
], ids=["disk-full", "permission", "sqlite", "safetensors", "torch-oom", "cpu-oom", "utf8", "json"])
def test_expected_failures_deep_in_a_command_are_one_line(monkeypatch, capsys, raise_it, names):
    monkeypatch.setattr(check_command, "run", lambda args: raise_it())
    status, err = run_ttb(capsys, ["check"])
    assert status == 2
    assert_one_line(status, err, "ttb check: error: ", *names)


def test_a_bug_keeps_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    monkeypatch.setattr(check_command, "run", lambda args: 1 / 0)
    status, err = run_ttb(capsys, ["check"])
    assert status == 1 and "Traceback" in err and "ZeroDivisionError" in err
    assert err.strip().splitlines()[-1].startswith("ttb check: unexpected error") and "report" in err


def test_ctrl_c_in_a_sweep_is_one_line_saying_it_resumes(tmp_path):
    """A real sweep in a subprocess, interrupted with SIGINT once it has written its store."""
    out = tmp_path / "out"
    path = sweep_file(tmp_path, steps=10**6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "experiments.commands.main", "sweep", str(path), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.time() + 120
    while not (out / "runs").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # into the training loop
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    line = assert_one_line(proc.returncode, err, "ttb sweep: interrupted")
    assert "run the same command again" in line
