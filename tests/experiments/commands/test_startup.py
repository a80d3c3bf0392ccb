"""`ttb --help` and `ttb COMMAND --help` start fast: building the parser imports no heavy module
(torch alone takes over a second to import on a small machine). Not a timing: the set of modules."""

import subprocess
import sys

HEAVY = ("torch", "numpy", "pandas", "matplotlib", "sympy", "safetensors", "numba")
PROBE = """
import sys
from experiments.commands.main import build_parser
build_parser()
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_building_the_cli_parser_imports_no_heavy_module():
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_every_command_help_runs_without_heavy_imports():
    for command in ("check", "sweep", "compare", "ood", "approx", "bench", "reproduce", "import"):
        probe = PROBE.replace("build_parser()", f"""
import contextlib, io
try:
    with contextlib.redirect_stdout(io.StringIO()):
        build_parser().parse_args([{command!r}, "--help"])
except SystemExit:
    pass""")
        out = subprocess.run([sys.executable, "-c", probe.format(heavy=HEAVY)], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "", (command, out)
