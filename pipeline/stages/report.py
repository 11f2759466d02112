"""Stage `report`: reports/index.html (one self-contained page), reports/report.pdf and
reports/report.ipynb with every plot and metric of the run, its PNGs and
reports/oof_predictions.csv (pipeline/report/sections.py lists the sections).

    python -m pipeline.stages.report        # what dvc.yaml runs; by hand: foldwise report
"""
from __future__ import annotations

from pathlib import Path

from pipeline.core.config import load_section
from pipeline.core.console import run_stage
from pipeline.report.page import build_report
from pipeline.report.params import ReportParams


def main() -> Path:
    """Write the report as params.yaml `report` says."""
    return build_report(load_section("report", ReportParams))


if __name__ == "__main__":
    run_stage(main)
