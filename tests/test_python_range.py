"""The declared Python range matches what the code imports: pyproject says >= 3.10, so a module of
the standard library that 3.10 lacks needs its backport declared for 3.10, and every module must
at least compile under the lowest declared Python where this machine has one."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
from support import ROOT

PACKAGES = ("synthetic", "constructions", "experiments", "proofs_check")
# Standard-library modules newer than 3.10, and the backport that stands in for each on 3.10.
BACKPORTS = {"tomllib": "tomli"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def lowest_python() -> tuple[int, int]:
    major, minor = re.match(r">=\s*(\d+)\.(\d+)", project()["requires-python"]).groups()
    return int(major), int(minor)


def find_python(major: int, minor: int) -> str | None:
    """An interpreter of that version: on PATH, or installed by pyenv (whose shims may name a
    version that is not the active one)."""
    candidates = [shutil.which(f"python{major}.{minor}"),
                  *map(str, sorted(Path.home().glob(f".pyenv/versions/{major}.{minor}.*/bin/python")))]
    for python in filter(None, candidates):
        try:
            done = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                                  text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.split() == [str(major), str(minor)]:
            return python
    return None


def sources() -> list:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_module_newer_than_the_lowest_python_has_its_backport_declared():
    if lowest_python() >= (3, 11):
        pytest.skip("the declared range starts at 3.11: tomllib is in the standard library")
    deps = project()["dependencies"]
    for module, backport in BACKPORTS.items():
        if any(re.search(rf"^\s*import {module}\b|^\s*from {module}\b", p.read_text(), re.M) for p in sources()):
            declared = [d for d in deps if re.match(rf"{backport}\b", d)]
            assert declared and all("python_version < '3.11'" in d for d in declared), \
                f"{module} is imported but {backport} is not declared for Python < 3.11 in pyproject.toml"


def test_every_module_compiles_under_the_lowest_declared_python():
    major, minor = lowest_python()
    python = find_python(major, minor)
    if python is None:
        pytest.skip(f"no python{major}.{minor} on this machine")
    script = ("import sys\nfor f in sys.argv[1:]:\n    compile(open(f, encoding='utf-8').read(), f, 'exec')\n")
    done = subprocess.run([python, "-c", script, *map(str, sources())], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
