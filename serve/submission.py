"""Submission checks and scoring, the same rules Kaggle applies, run before anything is uploaded.

    foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from serve.csvfiles import first_duplicate, first_empty_cell, read_csv_strings, where
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def _column_mismatch(path: os.PathLike | str, got: Sequence[str], want: Sequence[str], ref: str) -> str:
    extra = [c for c in got if c not in want]
    missing = [c for c in want if c not in got]
    detail = []
    if extra:
        detail.append(f"extra column {', '.join(repr(c) for c in extra)}")
    if missing:
        detail.append(f"missing column {', '.join(repr(c) for c in missing)}")
    if not detail:
        detail.append("columns out of order")
    return f"{path}: columns {list(got)} do not match {ref} {list(want)} ({'; '.join(detail)})"


def _check_no_gaps(df: pd.DataFrame, path: os.PathLike | str) -> None:
    cell = first_empty_cell(df)
    if cell is not None:
        raise UserError(f"{where(path, cell[0], cell[1])}: empty value")
    dup = first_duplicate(df.iloc[:, 0])
    if dup is not None:
        raise UserError(f"{where(path, dup, df.columns[0])}: id '{df.iloc[dup, 0]}' appears twice")


def validate_submission(path: str | os.PathLike, sample_path: str | os.PathLike,
                        classes: Sequence[str], name: str | None = None) -> pd.DataFrame:
    """Check `path` against the competition's sample submission; return it (cells as strings).

    Columns and their order, row count, the id set, no empty cell, no repeated id, every label
    one of `classes`. Raises UserError naming the file (`name`, if given, is the name to report,
    e.g. the final path of a file still being written), row and column of the first problem.
    """
    sub = read_csv_strings(path)
    path = name or path
    sample = read_csv_strings(sample_path)
    if list(sub.columns) != list(sample.columns):
        raise UserError(_column_mismatch(path, list(sub.columns), list(sample.columns), str(sample_path)))
    _check_no_gaps(sub, path)
    id_col = sample.columns[0]
    missing = sorted(set(sample[id_col]) - set(sub[id_col]))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        rows = f"; {len(sub)} rows, expected {len(sample)}" if len(sub) != len(sample) else ""
        raise UserError(f"{path}: id '{missing[0]}' of {sample_path} is missing{more}{rows}")
    if len(sub) != len(sample):
        extra = sub.index[~sub[id_col].isin(set(sample[id_col]))]
        row = int(extra[0]) if len(extra) else len(sample)
        raise UserError(f"{where(path, row, id_col)}: id '{sub.iloc[row, 0]}' is not in {sample_path} "
                        f"({len(sub)} rows, expected {len(sample)})")
    allowed = set(classes)
    for col in sample.columns[1:]:
        bad = ~sub[col].isin(allowed)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise UserError(f"{where(path, row, col)}: '{sub[col].iloc[row]}' is not a class "
                            f"(expected one of {', '.join(classes)})")
    return sub


@dataclass(frozen=True)
class Score:
    accuracy: float
    n_scored: int
    n_correct: int


def score_submission(submission_path: str | os.PathLike, solution_path: str | os.PathLike) -> Score:
    """Accuracy of a submission on the ids a solution file covers (e.g. the public part).

    The solution's first column is the id, its second the target; a Kaggle `Usage` column is
    ignored. The submission must have exactly the id and target columns and cover every id.
    """
    sol = read_csv_strings(solution_path)
    sol_cols = [c for c in sol.columns if c.lower() != "usage"]
    if len(sol_cols) != 2:
        raise UserError(f"{solution_path}: expected columns id,target (and optionally Usage), got {list(sol.columns)}")
    sub = read_csv_strings(submission_path)
    if list(sub.columns) != sol_cols:
        raise UserError(_column_mismatch(submission_path, list(sub.columns), sol_cols, str(solution_path)))
    _check_no_gaps(sub, submission_path)
    _check_no_gaps(sol[sol_cols], solution_path)
    id_col, target = sol_cols
    merged = sol[sol_cols].merge(sub, on=id_col, how="left", suffixes=("_true", "_pred"), indicator=True)
    absent = merged["_merge"] == "left_only"
    if absent.any():
        n = int(absent.sum())
        first = merged.loc[absent, id_col].iloc[0]
        raise UserError(f"{submission_path}: id '{first}' of {solution_path} is missing"
                        + (f" (and {n - 1} more)" if n > 1 else ""))
    correct = int((merged[f"{target}_true"] == merged[f"{target}_pred"]).sum())
    return Score(accuracy=correct / len(merged), n_scored=len(merged), n_correct=correct)
