"""reports/report.ipynb: a notebook that loads the run's own files and redraws every figure and
table of the report (nbformat writes it; it runs top to bottom offline in a fresh kernel).

    write_notebook(Path("reports/report.ipynb"))      # the report stage
    jupyter lab reports/report.ipynb                  # or: jupyter nbconvert --to notebook --execute ...

Its first cells read the files themselves (metrics.json, the per-epoch curves, the OOF
predictions, the ladder's summary) with pandas, for a reader to take further; then one cell per
section calls the section's own code (pipeline/report/sections.py), so the notebook and the report
cannot disagree. Figures are redrawn into a temporary folder: reports/ stays the stage's output.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.report.sections import SECTIONS
from serve.atomic import write_text

INTRO = """# foldwise report, as a notebook

Every figure and table of `reports/index.html` and `reports/report.pdf`, redrawn from the run's own
files. Run it with the project's environment, from the project or its `reports/` folder:
`jupyter lab reports/report.ipynb`, or `jupyter nbconvert --to notebook --execute reports/report.ipynb`
(needs `pip install jupyterlab` or `nbconvert ipykernel`). The report stage rewrites this file."""

SETUP = """import json
import os
import tempfile
from pathlib import Path

import pandas as pd

root = Path.cwd()
while not (root / "dvc.yaml").exists() and root != root.parent:
    root = root.parent
os.chdir(root)  # the run's files are named relative to the project

from pipeline.core.config import load_section
from pipeline.report.content import show
from pipeline.report.params import ReportParams
from pipeline.report.run import Inputs, load_run
from pipeline.report.sections import SECTIONS

params = load_section("report", ReportParams)
run = load_run(Inputs())
out = Path(tempfile.mkdtemp(prefix="foldwise-report-"))  # the redrawn figures (reports/ is the stage's)
print(f"project {root}; figures redrawn in {out}")"""

FILES = """metrics = json.loads(Path("metrics.json").read_text())  # the ensemble stage's scores
print({k: metrics[k] for k in ("metric", "oof_score", "oof_accuracy", "oof_logloss", "method")})
curves = pd.concat([df.assign(fold=k) for k, df in run.curves.items()])  # models/curves/fold<k>.csv
display(curves.groupby("fold").tail(1))
oof = pd.read_csv("reports/oof_predictions.csv")  # actual vs predicted class of every OOF row
display(pd.crosstab(oof["actual"], oof["predicted"]))
ladder_file = Path("ladder/summary.json")  # foldwise ladder: one DVC experiment per rung
ladder = json.loads(ladder_file.read_text()) if ladder_file.exists() else None
print(f"ladder: {len(ladder['rungs'])} rungs" if ladder else "no ladder yet (foldwise ladder)")"""


def notebook_text() -> str:
    import nbformat

    cells = [nbformat.v4.new_markdown_cell(INTRO), nbformat.v4.new_code_cell(SETUP),
             nbformat.v4.new_markdown_cell("## The run's files"), nbformat.v4.new_code_cell(FILES)]
    for name in SECTIONS:
        cells.append(nbformat.v4.new_code_cell(f'show(SECTIONS["{name}"](run, out, params))'))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nbformat.writes(nb)


def write_notebook(path: Path) -> Path:
    write_text(path, notebook_text())
    return path
