"""Fixtures shared by the experiment tests: one tiny demo run per session, one intra-op thread."""

from __future__ import annotations

import pytest
import torch

from experiments.commands.main import main as ttb


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """One `ttb demo --tiny` (two shapes, a few steps), shared by the CLI and page tests."""
    out = tmp_path_factory.mktemp("demo")
    assert ttb(["demo", "--tiny", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and two threads on a shared 2-core machine
    run several times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
