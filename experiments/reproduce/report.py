"""The page of a reproduction: what was reproduced, the paper's number beside the measured one, the
figures, and every way the preset differs from the paper's setup (Markdown and HTML)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from experiments.common.atomic import atomic_write_json, atomic_write_text
from experiments.reports.page import Section, render
from experiments.reproduce.core import Reproduction, Row


def _number(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _verdict(r: Row) -> str:
    return {True: "yes", False: "no", None: ""}[r.holds]


def markdown(rep: Reproduction, scale: str, rows: list[Row], figures: list[Path], out: Path, minutes: float) -> str:
    lines = [f"# {rep.name}: {rep.paper}", "", rep.claim, "", summary(rep, rows), "",
             f"Scale `{scale}`; {rows[0].seeds if rows else 0} seeds; trained in {minutes:.1f} min. The paper's "
             f"code: {rep.code}.", "", "| metric | published | measured (mean ± sd over seeds) | holds | source |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.metric} | {_number(r.published)} | {r.measured:.4g} ± {r.spread:.2g} | {_verdict(r)} | "
              f"{r.source} |" for r in rows]
    lines += [""] + [f"![{p.stem}]({p.relative_to(out)})" for p in figures]
    lines += ["", "## The setup, field by field", "", "| field | paper (its code) | paper preset | cpu preset | note |",
              "|---|---|---|---|---|"]
    lines += [f"| {f.field} | {f.paper} | {f.paper_preset} | {f.cpu_preset} | {f.note} |" for f in rep.fidelity]
    return "\n".join(lines) + "\n"


def summary(rep: Reproduction, rows: list[Row]) -> str:
    """The page's first sentence: how many measured numbers support the paper's claim, and which do not."""
    tested = [r for r in rows if r.holds is not None]
    if not tested:
        return f"{len(rows)} numbers measured beside the paper's; none states a test of the claim."
    failed = [r.metric for r in tested if not r.holds]
    text = f"{len(tested) - len(failed)} of {len(tested)} measured numbers support the claim"
    return text + (f"; not: {', '.join(failed)}." if failed else ".")


def page(rep: Reproduction, scale: str, rows: list[Row], figures: list[Path], out: Path, minutes: float) -> str:
    numbers = pd.DataFrame([{"metric": r.metric, "published": r.published, "measured (mean)": r.measured,
                             "sd over seeds": r.spread, "seeds": r.seeds, "holds": r.holds, "source": r.source}
                            for r in rows])
    setup = pd.DataFrame([{"field": f.field, "paper (its code)": f.paper, "paper preset": f.paper_preset,
                           "cpu preset": f.cpu_preset, "note": f.note} for f in rep.fidelity])
    differ = [f.field for f in rep.fidelity if f.cpu_preset != f.paper]
    sections = [Section("Measured beside published", [summary(rep, rows)], numbers, list(figures)),
                Section("The setup, field by field", [
                    f"{len(rep.fidelity)} fields of the paper's code; the {scale} preset differs in "
                    f"{len(differ) if scale == 'cpu' else 'the fields noted'}"
                    + (f" ({', '.join(differ)})." if scale == "cpu" and differ else ".")], setup)]
    intro = [rep.claim, f"Scale {scale}; {rows[0].seeds if rows else 0} seeds; trained in {minutes:.1f} min. "
                        f"The paper's code: {rep.code}."]
    return render(f"{rep.name}: {rep.paper}", intro, sections, out)


def write(rep: Reproduction, scale: str, rows: list[Row], figures: list[Path], out, minutes: float) -> list[Path]:
    """report.md, report.html and results.json in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", markdown(rep, scale, rows, figures, out, minutes))
    atomic_write_text(out / "report.html", page(rep, scale, rows, figures, out, minutes))
    atomic_write_json(out / "results.json", [r.to_json() for r in rows])
    return [out / "report.md", out / "report.html", out / "results.json"]


def load_rows(out) -> list[dict]:
    return json.loads((Path(out) / "results.json").read_text())
