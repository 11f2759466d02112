"""The report's content as blocks, and the HTML page drawn from them (the PDF and the notebook draw the same blocks).

    blocks = [Heading("Folds"), Table(df, "fold-table"), Figure(Path("reports/curves.png"), "curves")]
    page = to_html(blocks, "foldwise report")          # reports/index.html (pipeline/report/pdf.py: report.pdf)

Every section builder (pipeline/report/sections.py, tuning.py, learned.py, ladder.py) returns a list
of blocks; nothing in them knows the output format. A table's cells are formatted once
(`Table.cells`), so the HTML page, the PDF and the notebook show the same digits.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table.t{border-collapse:collapse;margin:.6em 0}
table.t td,table.t th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f5f5f5}img{max-width:100%}.kpi{display:flex;gap:1.2em;flex-wrap:wrap}
.kpi div{background:#f5f7fa;border-radius:6px;padding:.6em 1em}.kpi b{display:block;font-size:1.5em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}.muted{color:#777}"""


@dataclass(frozen=True)
class Heading:
    """A section (level 2) or subsection (level 3) title: the PDF's table of contents lists them."""
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text; `muted` for notes and for sections that do not apply."""
    text: str
    id: str | None = None
    muted: bool = False


@dataclass(frozen=True)
class Figure:
    """A PNG the section drew; its id (the file's stem unless given) names it in the HTML page."""
    path: Path
    alt: str
    id: str | None = None

    @property
    def html_id(self) -> str:
        return self.id or self.path.stem


@dataclass(frozen=True)
class Table:
    """A table; floats are shown with `floatfmt`, everything else as str()."""
    df: pd.DataFrame
    id: str
    floatfmt: str = "{:.4f}"

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """(column names, rows) as the strings every output shows."""
        def fmt(v) -> str:
            if v is None or (isinstance(v, float) and v != v):
                return ""
            return self.floatfmt.format(v) if isinstance(v, float) else str(v)

        return [str(c) for c in self.df.columns], [[fmt(v) for v in row] for row in self.df.itertuples(index=False)]


@dataclass(frozen=True)
class Kpis:
    """The key figures: (label, value) pairs shown large."""
    items: list[tuple[str, str]] = field(default_factory=list)

    def table(self) -> Table:
        """The same figures as a two-column table (the PDF's title page, the notebook)."""
        return Table(pd.DataFrame(self.items, columns=["key figure", "value"]), "kpis")


@dataclass(frozen=True)
class Code:
    """Preformatted text (the params)."""
    text: str


Block = Heading | Text | Figure | Table | Kpis | Code


def figures(blocks: list[Block]) -> list[Figure]:
    return [b for b in blocks if isinstance(b, Figure)]


def not_applicable(title: str, why: str, block_id: str) -> list[Block]:
    """A section that does not apply to this run says so (and why) instead of vanishing or breaking."""
    return [Heading(title), Text(why, id=block_id, muted=True)]


def _html_table(table: Table) -> str:
    columns, rows = table.cells()
    return pd.DataFrame(rows, columns=columns).to_html(index=False, table_id=table.id, border=0, classes="t",
                                                       escape=True)


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        attrs = (f" id={block.id}" if block.id else "") + (" class=muted" if block.muted else "")
        return f"<p{attrs}>{html.escape(block.text)}</p>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.path.read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}" id="{block.html_id}">'
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Kpis):
        return '<div class="kpi" id="kpis">' + "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>"
                                                       for k, v in block.items) + "</div>"
    return f"<pre>{html.escape(block.text)}</pre>"


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page (images as data URIs): opens offline, can be mailed as is."""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(_html_block(b) for b in blocks) + "</body></html>")


def show(blocks: list[Block]) -> None:
    """Display blocks in a Jupyter notebook (reports/report.ipynb): markdown, images, DataFrames."""
    from IPython.display import Image, Markdown, display

    for block in blocks:
        if isinstance(block, Heading):
            display(Markdown(f"{'#' * block.level} {block.text}"))
        elif isinstance(block, Text):
            display(Markdown(f"*{block.text}*" if block.muted else block.text))
        elif isinstance(block, Figure):
            display(Image(filename=str(block.path)))
        elif isinstance(block, Table | Kpis):
            columns, rows = (block if isinstance(block, Table) else block.table()).cells()
            display(pd.DataFrame(rows, columns=columns))
        else:
            print(block.text)
