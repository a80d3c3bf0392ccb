"""Do a sweep's finished runs still hold the files their sweep wrote? (``ttb runs DIR --verify``)

A finished run's three files vouch for each other, and each check names the file that disagrees:

- ``result.json`` parses, and its ``run_id`` is the directory's name;
- ``config.json`` parses, and its content hashes (:func:`experiments.common.ids.run_id`) to the
  run's id: an edited seed, noise or width gives another id;
- ``weights.safetensors`` is there, its sha256 is the one ``result.json`` recorded when the run
  finished (a replaced or damaged file shows; runs finished before hashes were recorded get a note
  instead), and the model config in its header is the one ``config.json`` implies.

The header check knows the in-context regression runs (their config.json is a
:class:`~experiments.training.config.RunConfig`); the other families (sequence, approx) write their
configs in their own terms, and for them the id and hash checks stand alone.
``check_run_files`` makes the same checks on one run directory and raises the first failure as a
ValueError naming the file (``ttb compare`` refuses such a run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from constructions.config import ModelConfig
from experiments.common.ids import run_id
from experiments.common.validate import read_json
from experiments.sweeps import store as st
from experiments.training.config import RunConfig

WEIGHTS, CONFIG, RESULT = "weights.safetensors", "config.json", "result.json"


@dataclass(frozen=True)
class Problem:
    """What is wrong with one file of one run; a ``note`` is worth saying but is no failure."""

    run_id: str
    file: str  # the path of the file that disagrees
    what: str
    note: bool = False

    def line(self) -> str:
        return f"{'note' if self.note else 'problem'}: {self.file}: {self.what}"


def verify(out) -> list[Problem]:
    """Every problem (and note) of the finished runs (those with a result.json) under ``out/runs``,
    plus rows the store marks finished whose result.json is gone."""
    out = Path(out)
    problems = []
    for directory in finished_runs(out):
        problems += run_problems(directory)
    return problems + store_problems(out)


def finished_runs(out: Path) -> list[Path]:
    """The run directories of ``out`` whose result.json exists (written last: the run finished)."""
    return sorted(p.parent for p in Path(out).glob(f"runs/*/{RESULT}"))


def store_problems(out: Path) -> list[Problem]:
    """Rows marked finished in the store whose run directory has no result.json."""
    if not (out / st.STORE_NAME).exists():
        return []
    return [Problem(row["run_id"], str(out / row["path"] / RESULT),
                    f"missing, though {st.STORE_NAME} marks the run {row['status']}")
            for row in st.status_rows(out)
            if row["status"] in st.FINISHED and not (out / row["path"] / RESULT).exists()]


def check_run_files(directory) -> None:
    """Raise a one-line ValueError naming the first file of run ``directory`` that disagrees with
    the others; notes (no hash recorded) pass. A directory without result.json (an imported run)
    is checked for config.json against the weights' header, and against its name under ``runs/``."""
    for problem in run_problems(Path(directory)):
        if not problem.note:
            raise ValueError(f"{problem.file}: {problem.what} (the run's files disagree; it is not used)")


def run_problems(directory: Path) -> list[Problem]:
    """The problems of one run directory, the first-named file first: result.json, config.json,
    then the weights (hash, then header)."""
    directory = Path(directory)
    name = directory.name
    problems, result = _result_problems(directory)
    expected = result.get("run_id", name) if result else (name if directory.parent.name == "runs" else None)
    config_problems, resolved = _config_problems(directory, expected)
    problems += config_problems
    problems += _weights_problems(directory, result, resolved)
    return problems


def _problem(directory: Path, file: str, what: str, note: bool = False) -> Problem:
    return Problem(directory.name, str(directory / file), what, note)


def _result_problems(directory: Path) -> tuple[list[Problem], dict | None]:
    """(problems of result.json, its content or None where absent or unreadable)."""
    if not (directory / RESULT).exists():
        return [], None
    try:
        result = read_json(directory / RESULT, "run result")
    except (OSError, ValueError) as err:
        return [_problem(directory, RESULT, f"does not read ({err})")], None
    if not isinstance(result, dict):
        return [_problem(directory, RESULT, f"holds {type(result).__name__}, not a JSON object")], None
    recorded = result.get("run_id", directory.name)
    if recorded != directory.name:
        return [_problem(directory, RESULT, f"names run {recorded!r}, but its directory is {directory.name!r}")], result
    return [], result


def _config_problems(directory: Path, expected: str | None) -> tuple[list[Problem], dict | None]:
    """(problems of config.json, its content or None): it must parse and hash to ``expected``."""
    try:
        resolved = read_json(directory / CONFIG, "run config")
    except (OSError, ValueError) as err:
        return [_problem(directory, CONFIG, f"does not read ({err})")], None
    if not isinstance(resolved, dict):
        return [_problem(directory, CONFIG, f"holds {type(resolved).__name__}, not a JSON object")], None
    found = run_id(resolved)
    if expected is not None and found != expected:
        return [_problem(directory, CONFIG, f"its content hashes to run id {found}, not to the run's id {expected}: "
                                            f"edited after the run was trained")], resolved
    return [], resolved


def _weights_problems(directory: Path, result: dict | None, resolved: dict | None) -> list[Problem]:
    """The weights file: present, the recorded sha256, the header's model config = config.json's."""
    path = directory / WEIGHTS
    if not path.exists():
        return [_problem(directory, WEIGHTS, "missing")] if result is not None else []
    problems = []
    recorded = (result or {}).get("weights_sha256")
    if recorded is None and result is not None:
        problems.append(_problem(directory, WEIGHTS, "no hash recorded in result.json (finished before hashes "
                                                     "were recorded); its header was checked", note=True))
    elif recorded is not None and st.file_sha256(path) != recorded:
        problems.append(_problem(directory, WEIGHTS, f"its sha256 is not the {recorded[:12]}... that result.json "
                                                     f"recorded: replaced or damaged since the run finished"))
    header = _header_problem(path, resolved)
    return problems + ([_problem(directory, WEIGHTS, header)] if header else [])


def _header_problem(path: Path, resolved: dict | None) -> str | None:
    """Why the weights' header disagrees with config.json (or does not read), or None. Only the
    regression family's config.json (no "kind") says which model config to expect."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except st.UNREADABLE as err:
        return f"unreadable ({type(err).__name__}: {err})"
    if resolved is None or "kind" in resolved or "ttb_config" not in header:
        return None
    try:
        expected = RunConfig.from_dict(resolved).model_config().to_dict()
    except (ValueError, TypeError):
        return None  # config.json itself does not validate: compare's loader says so, naming it
    try:
        found = ModelConfig.from_dict(json.loads(header["ttb_config"])).to_dict()
    except (ValueError, TypeError, KeyError) as err:
        return f"its header's model config does not read ({type(err).__name__}: {err})"
    diff = [f"{k} {found.get(k)!r} vs {expected.get(k)!r}" for k in sorted(set(found) | set(expected))
            if found.get(k) != expected.get(k) and not _longer_position_table(k, found, expected)]
    return None if not diff else f"its header's model config differs from config.json's (header vs config.json: " \
                                 f"{', '.join(diff)})"


def _longer_position_table(key: str, found: dict, expected: dict) -> bool:
    """An imported GPT-2 (``ttb import garg``) keeps its whole position table, of which its run reads
    the first rows: a header with more positions than config.json's prompts need agrees with it."""
    return key == "n_positions" and bool(expected.get(key)) and (found.get(key) or 0) >= expected[key]
