"""The README's Python examples run as written."""

import importlib
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_tour_example_runs(capsys):
    exec(compile(_python_blocks()[0], "README-tour", "exec"), {})
    assert "x[0]" in capsys.readouterr().out


def test_readme_worked_construction_registers_and_checks(tmp_path, monkeypatch):
    """The 'one module, one registry line' example, written to a module and registered."""
    from constructions import registry
    from constructions.check.run import run_check

    (tmp_path / "gd_decay_example.py").write_text(_python_blocks()[1])
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("gd_decay_example")
    monkeypatch.setitem(registry.CONSTRUCTIONS, "gd_decay", module.CONSTRUCTION)
    result = run_check(registry.get("gd_decay"), n_cases=4)
    assert result.passed
    assert run_check(registry.get("gd_decay"), n_cases=4, mutated=True).caught
    sys.modules.pop("gd_decay_example", None)


def test_readme_hook_example_shows_a_doubled_pattern_is_a_doubled_step(capsys):
    exec(compile(_python_blocks()[2], "README-hooks", "exec"), {})
    out = capsys.readouterr().out
    assert "blocks.0.attn.hook_pattern" in out
    diffs = [float(v) for v in out.split("tensor([")[1].split("]")[0].split(",")]
    assert max(abs(v) for v in diffs) < 1e-12
