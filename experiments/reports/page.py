"""A page people read: sections that open with sentences computed from their numbers, tables without
NaN cells, figures with readable names. Pure string building; the callers write the file.

A :class:`Section` is a title, one or two sentences (what the numbers say), optional flags (what a
reader must not miss, e.g. models that did not learn), an optional table and figures.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;line-height:1.4} "
         "table{border-collapse:collapse;font-size:13px;margin:6px 0} td,th{border:1px solid #ccc;padding:2px 8px;"
         "text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums} figure{display:inline-block;"
         "margin:6px;vertical-align:top} figcaption{font-size:12px;max-width:560px} img{max-width:560px} "
         "p.summary{font-size:15px} p.flag{background:#fff3cd;border-left:4px solid #d39e00;padding:4px 8px}")


@dataclass
class Section:
    title: str
    sentences: list[str]
    table: pd.DataFrame | None = None
    figures: list[Path] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)  # figure path -> caption


def cell(value) -> str:
    """A table cell: blank dash for a missing value, numbers at a precision a reader can use."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0 or (1e-3 <= abs(value) < 1e4):
            return f"{value:.3g}"
        return f"{value:.2e}"
    return str(value)


def table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for value in r:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f"<td{' class=num' if numeric else ''}>{html.escape(cell(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def figure_html(png: Path, root: Path, caption: str | None = None) -> str:
    rel = png.relative_to(root)
    svg, csv = rel.with_suffix(".svg"), rel.with_suffix(".csv")
    text = html.escape(caption or rel.stem.replace("_", " ").replace("-", " "))
    return (f'<figure><img src="{html.escape(str(rel))}" alt="{text}"><figcaption>{text} '
            f'(<a href="{html.escape(str(svg))}">svg</a>, <a href="{html.escape(str(csv))}">data</a>)'
            "</figcaption></figure>")


def section_html(s: Section, root: Path) -> str:
    parts = [f"<h2>{html.escape(s.title)}</h2>", f"<p class=summary>{html.escape(' '.join(s.sentences))}</p>"]
    parts += [f"<p class=flag>{html.escape(flag)}</p>" for flag in s.flags]
    if s.table is not None and len(s.table):
        parts.append(table_html(s.table))
    parts += [figure_html(p, root, s.captions.get(str(p))) for p in s.figures]
    return "\n".join(parts)


def render(title: str, intro: list[str], sections: list[Section], root: Path) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(p)}</p>" for p in intro]
    body += [section_html(s, root) for s in sections]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>" + STYLE
            + "</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
