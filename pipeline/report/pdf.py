"""reports/report.pdf from the report's blocks (fpdf2: pure Python, no browser or system package).

    write_pdf(blocks, Path("reports/report.pdf"), "foldwise report")

A title page with the run's key figures, a table of contents (each section's page, also as the
PDF's outline), then every section with every figure and table; page numbers in the footer. Text
is set in DejaVu Sans, the font matplotlib ships (so →, ±, Δ and ✔ print on any machine).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.report.content import Block, Code, Figure, Heading, Kpis, Table, Text
from serve.atomic import atomic_path

_logger = logging.getLogger(__name__)
GREY, BLACK = (110, 110, 110), (34, 34, 34)


def _fonts() -> dict[str, Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return {"": ttf / "DejaVuSans.ttf", "B": ttf / "DejaVuSans-Bold.ttf", "mono": ttf / "DejaVuSansMono.ttf"}


def _document(title: str):
    from fpdf import FPDF

    class Report(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("dejavu", size=8)
            self.set_text_color(*GREY)
            self.cell(0, 8, f"{title} · page {self.page_no()} of {{nb}}", align="C")

    pdf = Report(format="A4")
    fonts = _fonts()
    pdf.add_font("dejavu", "", fonts[""])
    pdf.add_font("dejavu", "B", fonts["B"])
    pdf.add_font("dejavumono", "", fonts["mono"])
    pdf.set_auto_page_break(True, margin=16)
    pdf.set_title(title)
    pdf.set_creator("foldwise")
    return pdf


def _toc(pdf, outline) -> None:
    pdf.set_xy(pdf.l_margin, pdf.t_margin)
    pdf.set_text_color(*BLACK)
    pdf.set_font("dejavu", "B", 16)
    pdf.cell(0, 12, "Contents", new_x="LMARGIN", new_y="NEXT")
    for section in outline:
        pdf.set_font("dejavu", "B" if section.level == 0 else "", 10 if section.level == 0 else 9)
        indent = 6 * section.level
        pdf.set_x(pdf.l_margin + indent)
        link = pdf.add_link(page=section.page_number)
        pdf.cell(pdf.epw - indent - 14, 6, section.name, link=link)
        pdf.cell(14, 6, str(section.page_number), align="R", new_x="LMARGIN", new_y="NEXT", link=link)


def _figure(pdf, block: Figure) -> None:
    from PIL import Image

    with Image.open(block.path) as im:
        w_px, h_px = im.size
    w = pdf.epw
    h = w * h_px / w_px
    room = pdf.eph - 10
    if h > room:  # taller than a page: scale to fit
        w, h = w * room / h, room
    if pdf.get_y() + h > pdf.page_break_trigger:
        pdf.add_page()
    pdf.image(str(block.path), x=pdf.l_margin + (pdf.epw - w) / 2, w=w, h=h, alt_text=block.alt)
    pdf.ln(3)


def _widths(pdf, columns: list[str], rows: list[list[str]], room: float) -> list[float]:
    """Each column as wide as its header (bold) and longest cell; where that is wider than `room`,
    the widest columns are capped at one width (water-filling), never below their longest header
    word or, for columns of single tokens (numbers, names), their longest cell: text wraps at
    spaces, numbers never."""
    size, pad = pdf.font_size_pt, 2.5
    cells = [[pdf.get_string_width(r[i]) for r in rows] for i in range(len(columns))]
    pdf.set_font("dejavu", "B", size)
    heads = [pdf.get_string_width(c) for c in columns]
    words = [max((pdf.get_string_width(w) for w in c.split()), default=0.0) for c in columns]
    pdf.set_font("dejavu", "", size)
    natural = [max([h, *c]) + pad for h, c in zip(heads, cells)]
    floor = [max(w, max(c, default=0.0) if all(" " not in r[i] for r in rows) else 0.0) + pad
             for i, (w, c) in enumerate(zip(words, cells))]
    if sum(natural) <= room:
        return natural
    lo, hi = 0.0, max(natural)
    for _ in range(40):
        cap = (lo + hi) / 2
        lo, hi = (cap, hi) if sum(max(f, min(w, cap)) for w, f in zip(natural, floor)) < room else (lo, cap)
    return [max(f, min(w, lo)) for w, f in zip(natural, floor)]


def _column_groups(pdf, columns: list[str], rows: list[list[str]]) -> list[list[int]]:
    """Column indices in groups that each fit the page at the smallest size, the first column
    repeated in every group (a table wider than the page is printed as several, never cut)."""
    groups, current, used = [], [0], 0.0
    natural = _widths(pdf, columns, rows, float("inf"))
    used = natural[0]
    for i in range(1, len(columns)):
        if used + natural[i] > pdf.epw - 1 and len(current) > 1:
            groups.append(current)
            current, used = [0], natural[0]
        current.append(i)
        used += natural[i]
    return [*groups, current]


def _table(pdf, block: Table) -> None:
    columns, rows = block.cells()
    if not columns:
        return
    pdf.set_text_color(*BLACK)
    for size in (8.0, 6.5):
        pdf.set_font("dejavu", size=size)
        widths = _widths(pdf, columns, rows, pdf.epw)
        if sum(widths) < pdf.epw - 1:
            break
    else:
        groups = _column_groups(pdf, columns, rows)
        if len(groups) > 1:
            for group in groups:
                _table(pdf, Table(pd.DataFrame([[r[i] for i in group] for r in rows],
                                               columns=[columns[i] for i in group]), block.id, block.floatfmt))
            return
    with pdf.table(col_widths=widths, width=min(sum(widths), pdf.epw), text_align="RIGHT", line_height=size * 0.5,
                   first_row_as_headings=True, headings_style=_headings_style(), padding=0.8) as t:
        for row in [columns, *rows]:
            cells = t.row()
            for value in row:
                cells.cell(value)
    pdf.ln(3)


def _headings_style():
    from fpdf.fonts import FontFace

    return FontFace(emphasis="BOLD", fill_color=(240, 240, 240))


def _block(pdf, block: Block) -> None:
    if isinstance(block, Heading):
        if pdf.get_y() > pdf.page_break_trigger - 45:  # no heading alone at the foot of a page
            pdf.add_page()
        pdf.start_section(block.text, level=0 if block.level <= 2 else 1)
        pdf.set_font("dejavu", "B", 14 if block.level <= 2 else 11)
        pdf.set_text_color(*BLACK)
        pdf.ln(2)
        pdf.multi_cell(0, 7, block.text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    elif isinstance(block, Text):
        pdf.set_font("dejavu", size=9)
        pdf.set_text_color(*(GREY if block.muted else BLACK))
        pdf.multi_cell(0, 4.6, block.text, align="L", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
    elif isinstance(block, Figure):
        _figure(pdf, block)
    elif isinstance(block, Table):
        _table(pdf, block)
    elif isinstance(block, Kpis):
        _table(pdf, block.table())
    elif isinstance(block, Code):
        pdf.set_font("dejavumono", size=6.5)
        pdf.set_text_color(*BLACK)
        pdf.multi_cell(0, 3.1, block.text, new_x="LMARGIN", new_y="NEXT")


def write_pdf(blocks: list[Block], path: Path, title: str) -> Path:
    """Title page (what comes before the first section: its text and the key figures), contents,
    then every section; written atomically."""
    first = next((i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.level >= 2), len(blocks))
    front, body = blocks[:first], blocks[first:]
    subtitle = " ".join(b.text for b in front if isinstance(b, Text))
    pdf = _document(title)
    pdf.add_page()
    pdf.set_font("dejavu", "B", 24)
    pdf.ln(30)
    pdf.cell(0, 14, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("dejavu", size=11)
    pdf.set_text_color(*GREY)
    pdf.multi_cell(0, 6, subtitle, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    for block in front:
        if isinstance(block, Kpis):
            _block(pdf, block)
    pdf.add_page()
    pdf.insert_toc_placeholder(_toc, pages=1, allow_extra_pages=True)
    for block in body:
        _block(pdf, block)
    with atomic_path(path) as tmp:
        pdf.output(str(tmp))
    _logger.info("wrote %s (%d pages)", path, pdf.pages_count)
    return path
