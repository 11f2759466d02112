"""Score a submission file against a solution file with the competition's metric.

    foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv [--metric auto]

The solution holds the true label per id (`id,label[,Usage]`), or one 0/1 column per class. The
submission may hold labels, P(positive) in one column, or one probability column per class; only
the ids the solution covers are scored (e.g. the public part). `--metric auto` takes accuracy for
labels, ROC AUC for one probability column and log loss for per-class probabilities.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.evaluation.metrics import DEFAULT_FOR_SUBMISSION, METRICS, sort_classes
from serve.csvfiles import read_csv_strings, where
from serve.errors import UserError
from serve.submission import check_no_gaps, column_mismatch

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    metric: str
    value: float
    accuracy: float
    n_scored: int
    n_correct: int
    kind: str


def _numbers(frame: pd.DataFrame, path, what: str) -> np.ndarray:
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row, c = np.argwhere(bad)[0]
        raise UserError(f"{where(path, int(row), frame.columns[c])}: '{frame.iloc[row, c]}' is not {what}")
    return values


def score_submission(submission_path: str | os.PathLike, solution_path: str | os.PathLike,
                     metric: str = "auto", positive: str | None = None) -> Score:
    """The metric of a submission on the ids of a solution file (see the module docstring)."""
    sol = read_csv_strings(solution_path)
    sol_cols = [c for c in sol.columns if c.lower() != "usage"]
    if len(sol_cols) < 2:
        raise UserError(f"{solution_path}: expected columns id,target (and optionally Usage), got {list(sol.columns)}")
    sub = read_csv_strings(submission_path)
    check_no_gaps(sub, submission_path)
    check_no_gaps(sol[sol_cols], solution_path)
    id_col = sol_cols[0]
    sub_cols = list(sub.columns[1:])
    if sub.columns[0] != id_col or (len(sol_cols) > 2 and list(sub.columns) != sol_cols) or \
            (len(sol_cols) == 2 and (len(sub_cols) == 1 or sol_cols[1] in sub_cols) and list(sub.columns) != sol_cols):
        raise UserError(column_mismatch(submission_path, list(sub.columns), sol_cols, str(solution_path)))
    merged = sol[sol_cols].merge(sub, on=id_col, how="left", suffixes=("_true", ""), indicator=True)
    absent = merged["_merge"] == "left_only"
    if absent.any():
        n = int(absent.sum())
        raise UserError(f"{submission_path}: id '{merged.loc[absent, id_col].iloc[0]}' of {solution_path} is missing"
                        + (f" (and {n - 1} more)" if n > 1 else ""))
    if len(sol_cols) > 2:  # one-hot solution: the true class is its column holding the largest value
        onehot = _numbers(merged[[f"{c}_true" for c in sol_cols[1:]]], solution_path, "0 or 1")
        truth = np.asarray(sol_cols[1:], dtype=object)[onehot.argmax(1)]
    else:
        truth = merged[f"{sol_cols[1]}_true" if sol_cols[1] in sub_cols else sol_cols[1]].to_numpy()
    if len(sub_cols) > 1:
        kind, classes = "class_probs", sub_cols
        unknown = sorted(set(truth) - set(classes))
        if unknown:
            raise UserError(f"{solution_path}: label '{unknown[0]}' has no probability column in {submission_path}")
        probs = _numbers(merged[classes], submission_path, "a probability (a number in [0, 1])")
    else:
        col = sub_cols[0]
        values = merged[col].to_numpy()
        classes = sort_classes(set(truth) | set(values))
        if set(values) <= set(truth) or not pd.to_numeric(pd.Series(values), errors="coerce").between(0, 1).all():
            kind = "label"
            index = {c: i for i, c in enumerate(classes)}
            probs = np.eye(len(classes))[[index[v] for v in values]]
        else:
            kind = "binary_prob"
            classes = sort_classes(set(truth))
            if len(classes) != 2:
                raise UserError(f"{solution_path}: one probability column needs two classes, the solution has "
                                f"{len(classes)}")
            pos = positive if positive is not None else classes[1]
            p = _numbers(merged[[col]], submission_path, "a probability (a number in [0, 1])")[:, 0]
            probs = np.stack([1 - p, p], axis=1) if pos == classes[1] else np.stack([p, 1 - p], axis=1)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[t] for t in truth])
    name = DEFAULT_FOR_SUBMISSION[kind] if metric == "auto" else metric
    if name not in METRICS:
        raise UserError(f"--metric: unknown metric '{metric}' (auto, {', '.join(METRICS)})")
    correct = int((probs.argmax(1) == y).sum())
    value = METRICS[name].score(y, probs, 1 if kind == "binary_prob" else None)
    return Score(metric=name, value=value, accuracy=correct / len(y), n_scored=len(y), n_correct=correct, kind=kind)
