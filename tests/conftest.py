"""Shared test setup: hypothesis profiles, and one torch thread (the tests are many tiny ops).

Profiles: "ci" (default: 25 examples, derandomized) and "dev" (300 examples); choose with
``HYPOTHESIS_PROFILE=dev pytest``.
"""

import os

import matplotlib
import pytest
import torch
from hypothesis import settings

from synthetic.strategies import register_profiles

matplotlib.use("Agg")
torch.set_num_threads(1)
register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def close_figures():
    """Close every matplotlib figure a test opened."""
    import matplotlib.pyplot as plt

    yield
    plt.close("all")
