"""serve/logs.py: one format, and the libraries that chatter at INFO held to WARNING."""
from __future__ import annotations

import logging

from serve.logs import setup_logging


def test_chatty_libraries_log_warnings_only_and_ours_log_info(capsys) -> None:
    setup_logging(logging.INFO)
    logging.getLogger("fontTools.subset").info("maxp pruned")          # fpdf2's font subsetting, per report.pdf
    logging.getLogger("pipeline.report.page").info("wrote reports/index.html")
    logging.getLogger("fontTools.subset").warning("a glyph is missing")
    err = capsys.readouterr().err
    assert "maxp pruned" not in err
    assert "INFO pipeline.report.page: wrote reports/index.html" in err and "a glyph is missing" in err
