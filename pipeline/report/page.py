"""The report: reports/index.html, reports/report.pdf and reports/report.ipynb from the same content.

    index = build_report(params, Inputs())      # the report stage (pipeline/stages/report.py)

The run's files are read once (pipeline/report/run.py); each section (pipeline/report/sections.py
lists them) draws its PNGs into reports/ and returns blocks (pipeline/report/content.py), which
become one self-contained HTML page (images as data URIs: it opens offline and can be mailed or
handed in as is) and a PDF with a title page, contents and page numbers (pipeline/report/pdf.py).
reports/report.ipynb (pipeline/report/notebook.py) redraws every section from the same files.
Beside them: the PNGs and reports/oof_predictions.csv (actual vs predicted class per OOF row:
DVC's confusion plot).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.core import paths
from pipeline.report.content import Block, to_html
from pipeline.report.notebook import write_notebook
from pipeline.report.params import ReportParams
from pipeline.report.pdf import write_pdf
from pipeline.report.run import Inputs, Run, load_run
from pipeline.report.sections import SECTIONS
from serve.atomic import atomic_path, write_text

_logger = logging.getLogger(__name__)
TITLE = "foldwise report"


def report_blocks(run: Run, params: ReportParams, out: Path) -> list[Block]:
    """Every section's blocks, in order (their figures drawn into `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    return [block for build in SECTIONS.values() for block in build(run, out, params)]


def build_report(params: ReportParams, inputs: Inputs = Inputs(), out: Path = paths.REPORTS) -> Path:
    """Write `out`/index.html, report.pdf, report.ipynb and oof_predictions.csv; returns the page's path."""
    run = load_run(inputs)
    out.mkdir(parents=True, exist_ok=True)
    oof = run.oof
    with atomic_path(out / "oof_predictions.csv") as tmp:
        pd.DataFrame({"row": oof.rows, "actual": [oof.names[i] for i in oof.labels[oof.rows]],
                      "predicted": [oof.names[i] for i in oof.pred]}).to_csv(tmp, index=False)
    blocks = report_blocks(run, params, out)
    page = to_html(blocks, TITLE)
    write_text(out / "index.html", page)
    _logger.info("wrote %s (%d KB)", out / "index.html", len(page) // 1024)
    write_pdf(blocks, out / "report.pdf", TITLE)
    write_notebook(out / "report.ipynb")
    return out / "index.html"
