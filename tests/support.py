"""What several test folders share: the repository root and a minimal TOML writer."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def toml_text(d: dict) -> str:
    """A minimal TOML writer for flat tables (a top level of values, then one level of tables)."""
    top = [f"{k} = {json.dumps(v)}" for k, v in d.items() if not isinstance(v, dict)]
    tables = [f"[{k}]\n" + "\n".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())
              for k, v in d.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"
