"""The report's blocks as HTML and as a PDF (pipeline/report/content.py, pdf.py)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from pypdf import PdfReader

from pipeline.report.content import Code, Figure, Heading, Kpis, Table, Text, to_html
from pipeline.report.pdf import write_pdf

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path


def _blocks(tmp_path: Path) -> list:
    table = Table(pd.DataFrame({"fold": [0, 1], "accuracy": [0.91234, float("nan")], "note": ["Δ ✔ →", None]}),
                  "fold-table")
    return [Heading("foldwise report", 1), Text("400 images, 10 classes", muted=True),
            Kpis([("OOF accuracy", "0.9123")]), Heading("Folds"), table, Text("Ensemble ± one fold", id="t"),
            Heading("Curves", 3), Figure(_png(tmp_path / "curves.png"), "curves"),
            *[b for k in range(5) for b in (Heading(f"Section {k}"), Figure(_png(tmp_path / f"f{k}.png"), "f"))],
            Heading("Params"), Code('{"train": {"lr": 0.003}}\n' * 120)]


def test_cells_are_formatted_once_for_every_output() -> None:
    columns, rows = Table(pd.DataFrame({"a": [0.5, float("nan")], "b": ["x", None]}), "t", "{:.2f}").cells()
    assert columns == ["a", "b"] and rows == [["0.50", "x"], ["", ""]]


def test_html_has_every_block_with_its_ids(tmp_path: Path) -> None:
    page = to_html(_blocks(tmp_path), "foldwise report")
    assert page.count("<img ") == 6 and 'id="curves"' in page and 'id="fold-table"' in page
    assert "0.9123" in page and "<p id=t>" in page and "class=muted" in page and "Δ ✔ →" in page


def test_the_pdf_has_a_title_page_contents_every_figure_and_page_numbers(tmp_path: Path) -> None:
    path = write_pdf(_blocks(tmp_path), tmp_path / "report.pdf", "foldwise report")
    reader = PdfReader(path)
    texts = [p.extract_text() for p in reader.pages]
    n = len(reader.pages)
    assert n >= 5 and all(f"page {i} of {n}" in t for i, t in enumerate(texts, 1))
    assert "foldwise report" in texts[0] and "OOF accuracy" in texts[0] and "0.9123" in texts[0]
    assert "Contents" in texts[1] and "Section 4" in texts[1] and "Curves" in texts[1]
    assert sum(len(p.images) for p in reader.pages) == 6
    body = "\n".join(texts[2:])
    assert "0.9123" in body and "Δ ✔ →" in body and '"lr": 0.003' in body
    assert [o.title for o in reader.outline if not isinstance(o, list)][:2] == ["Folds", "Section 0"]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_table_wider_than_the_page_is_printed_in_column_groups_not_cut(tmp_path: Path) -> None:
    wide = pd.DataFrame([[f"row{r}", *[1234.5678 + c for c in range(30)]] for r in range(3)],
                        columns=["name", *[f"a long column name {c}" for c in range(30)]])
    write_pdf([Heading("Wide"), Table(wide, "wide", "{:.1f}")], tmp_path / "wide.pdf", "wide")
    text = "".join(page.extract_text() for page in PdfReader(tmp_path / "wide.pdf").pages)
    assert "a long column name 29" in text and "1263.6" in text  # the last column, and its numbers
    assert text.count("row2") > 1  # the first column repeated in every group
