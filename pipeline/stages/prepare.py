"""Stage `prepare`: data/raw/competition.zip (any Kaggle layout) -> validated arrays and stratified
folds in data/prepared/ (pipeline/data/prepare.py says what each file holds).

    python -m pipeline.stages.prepare        # what dvc.yaml runs; by hand: foldwise prepare
"""
from __future__ import annotations

from pipeline.core import paths
from pipeline.core.config import load_section
from pipeline.core.console import run_stage
from pipeline.data.prepare import PrepareParams, prepare


def main() -> dict:
    """Read, validate and write the competition as params.yaml `prepare` says."""
    return prepare(load_section("prepare", PrepareParams), paths.ARCHIVE, paths.PREPARED)


if __name__ == "__main__":
    run_stage(main)
