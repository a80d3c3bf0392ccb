"""Fixtures shared by the experiment tests: one tiny demo run per session."""

from __future__ import annotations

import pytest

from experiments.commands.main import main as ttb


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """One `ttb demo --tiny` (two shapes, a few steps), shared by the CLI and page tests."""
    out = tmp_path_factory.mktemp("demo")
    assert ttb(["demo", "--tiny", "--quiet", "--out", str(out)]) == 0
    return out
