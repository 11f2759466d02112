"""Reading a run's report back: reports/report.pdf page by page, reports/report.ipynb executed.

    text = check_pdf(project / "reports")          # asserts: as many images as index.html, every page renders
    images = run_notebook(project / "reports")     # a fresh kernel (nbclient), offline; the PNGs it displayed
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def html_figures(reports: Path) -> list[str]:
    return re.findall(r'<img [^>]*id="([^"]+)"', (reports / "index.html").read_text())


def check_pdf(reports: Path, tmp: Path | None = None) -> str:
    """Every page's text and images (pypdf), and every page rendered by pdftoppm where it is
    installed (`make test` installs poppler-utils); returns the whole text."""
    from pypdf import PdfReader

    pdf = reports / "report.pdf"
    reader = PdfReader(pdf)
    texts, images = [], 0
    for page in reader.pages:
        texts.append(page.extract_text())
        images += len(page.images)
    assert images == len(html_figures(reports)), (images, html_figures(reports))
    assert reader.outline, "no outline (the table of contents' bookmarks)"
    text = "\n".join(texts)
    assert f"page 1 of {len(reader.pages)}" in text and "Contents" in texts[1]
    if shutil.which("pdftoppm") and tmp is not None:
        subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(tmp / "page")], check=True, timeout=120)
        rendered = sorted(tmp.glob("page*.png"))
        assert len(rendered) == len(reader.pages) and all(p.stat().st_size > 500 for p in rendered)
    return text


def run_notebook(reports: Path, timeout: int = 300) -> int:
    """Execute reports/report.ipynb top to bottom in a fresh kernel from reports/, the internet off
    (helpers/notebook_runner.py's first cell); returns how many PNG images its cells displayed (an
    error in any cell fails)."""
    import nbformat
    from nbclient import NotebookClient

    from helpers.notebook_runner import OFFLINE_CELL

    nb = nbformat.read(reports / "report.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(OFFLINE_CELL))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(reports)}}).execute()
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))
