"""The page of a reproduction: what was reproduced, the paper's number beside the measured one, the
figures, and every way the preset differs from the paper's setup (Markdown and HTML)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from experiments.common.atomic import atomic_write_json, atomic_write_text
from experiments.reproduce.core import Reproduction, Row


def _number(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def _verdict(r: Row) -> str:
    return {True: "yes", False: "no", None: ""}[r.holds]


def markdown(rep: Reproduction, scale: str, rows: list[Row], figures: list[Path], out: Path, minutes: float) -> str:
    lines = [f"# {rep.name}: {rep.paper}", "", rep.claim, "",
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


def page(rep: Reproduction, scale: str, rows: list[Row], figures: list[Path], out: Path, minutes: float) -> str:
    esc = html.escape
    head = ("<!doctype html><html><head><meta charset='utf-8'><title>" + esc(rep.name) + "</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto} table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left} img{max-width:560px}</style></head><body>")
    parts = [head, f"<h1>{esc(rep.name)}: {esc(rep.paper)}</h1>", f"<p>{esc(rep.claim)}</p>",
             f"<p>Scale <code>{esc(scale)}</code>; {rows[0].seeds if rows else 0} seeds; trained in {minutes:.1f} min. "
             f"The paper's code: {esc(rep.code)}.</p>",
             "<table><tr><th>metric</th><th>published</th><th>measured (mean ± sd)</th><th>holds</th><th>source</th></tr>"]
    parts += [f"<tr><td>{esc(r.metric)}</td><td>{_number(r.published)}</td><td>{r.measured:.4g} ± {r.spread:.2g}</td>"
              f"<td>{_verdict(r)}</td><td>{esc(r.source)}</td></tr>" for r in rows]
    parts.append("</table>")
    parts += [f'<figure><img src="{esc(str(p.relative_to(out)))}" alt="{esc(p.stem)}"></figure>' for p in figures]
    parts += ["<h2>The setup, field by field</h2><table><tr><th>field</th><th>paper (its code)</th>"
              "<th>paper preset</th><th>cpu preset</th><th>note</th></tr>"]
    parts += [f"<tr><td>{esc(f.field)}</td><td>{esc(f.paper)}</td><td>{esc(f.paper_preset)}</td>"
              f"<td>{esc(f.cpu_preset)}</td><td>{esc(f.note)}</td></tr>" for f in rep.fidelity]
    parts.append("</table></body></html>")
    return "\n".join(parts)


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
