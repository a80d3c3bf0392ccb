"""docs/tutorial.ipynb runs from top to bottom and shows what its text says (skipped without the
`notebook` extra: nbclient, nbformat, ipykernel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "execute_result":
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_the_tutorial_notebook_runs_and_its_construction_matches_gd(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    gaps = [float(v) for v in re.findall(r"max \|model - GD iterate\| = (\S+)", text)]
    assert len(gaps) == 4 and max(gaps) < 1e-12
    assert "caught: True" in text and ": True;" in text
    assert "blocks.0.attn.hook_pattern" in text  # the cache listing
    # between two GD constructions, patching the last residual closes the whole gap, the first none
    assert re.search(r"resid_post\s+\S+\s+\S+\s+1\.000", text) and re.search(r"resid_pre\s+0\.000", text)
