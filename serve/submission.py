"""Submission kinds, formatting and checks: the rules Kaggle applies, run before anything is uploaded.

    spec = SubmissionSpec("label", "id", ["label"], classes=["cat", "dog"])
    frame = spec.frame(ids, probs)                     # what predict writes, chunk by chunk
    validate_submission("submission.csv", "sample_submission.csv", spec)

Kinds, read from the competition's sample submission by `prepare`:
  label        one column holding a class, spelled as the competition spells it
  binary_prob  one column holding P(positive class) (e.g. Aerial Cactus, scored by ROC AUC)
  class_probs  one column per class holding its probability (e.g. Dog Breed Identification)
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from serve.csvfiles import first_duplicate, first_empty_cell, read_csv_strings, where
from serve.errors import UserError

_logger = logging.getLogger(__name__)
KINDS = ("label", "binary_prob", "class_probs")
PROB_FORMAT = "%.6g"
ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SubmissionSpec:
    """What a submission file looks like: its id column, its other columns and what they hold."""
    kind: str
    id_column: str
    columns: list[str]                 # the non-id columns, in the sample submission's order
    classes: list[str]                 # the model's class order (probability index -> class)
    positive_class: str | None = None  # binary_prob: the class whose probability is written
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown submission kind {self.kind!r}")

    @property
    def header(self) -> list[str]:
        return [self.id_column, *self.columns]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SubmissionSpec:
        return cls(**{k: d[k] for k in ("kind", "id_column", "columns", "classes", "positive_class", "class_names")
                      if k in d})

    @classmethod
    def labels(cls, classes: Sequence[str], id_column: str = "id", target: str = "label") -> SubmissionSpec:
        return cls("label", id_column, [target], list(classes))

    def values(self, probs: np.ndarray) -> pd.DataFrame:
        """The non-id columns for probabilities `[N, classes]` (probabilities as numbers)."""
        if self.kind == "label":
            return pd.DataFrame({self.columns[0]: np.asarray(self.classes, dtype=object)[probs.argmax(1)]})
        if self.kind == "binary_prob":
            return pd.DataFrame({self.columns[0]: probs[:, self.classes.index(self.positive_class)]})
        index = {c: i for i, c in enumerate(self.classes)}
        return pd.DataFrame({c: probs[:, index[c]] for c in self.columns})

    def frame(self, ids: Sequence[str], probs: np.ndarray) -> pd.DataFrame:
        """The submission rows for `ids` and their probabilities (write with `float_format=PROB_FORMAT`)."""
        out = self.values(probs)
        out.insert(0, self.id_column, list(ids))
        return out


def column_mismatch(path: os.PathLike | str, got: Sequence[str], want: Sequence[str], ref: str) -> str:
    extra = [c for c in got if c not in want]
    missing = [c for c in want if c not in got]
    detail = []
    if extra:
        detail.append(f"extra column {', '.join(repr(c) for c in extra[:3])}" + (" ..." if len(extra) > 3 else ""))
    if missing:
        detail.append(f"missing column {', '.join(repr(c) for c in missing[:3])}"
                      + (" ..." if len(missing) > 3 else ""))
    if not detail:
        detail.append("columns out of order")
    shown = lambda cols: (str(list(cols)) if len(cols) <= 8  # noqa: E731
                          else f"[{', '.join(map(repr, cols[:6]))}, ... ({len(cols)} columns)]")
    return f"{path}: columns {shown(list(got))} do not match {ref} {shown(list(want))} ({'; '.join(detail)})"


def check_no_gaps(df: pd.DataFrame, path: os.PathLike | str) -> None:
    """No empty cell, no repeated id (first column)."""
    cell = first_empty_cell(df)
    if cell is not None:
        raise UserError(f"{where(path, cell[0], cell[1])}: empty value")
    dup = first_duplicate(df.iloc[:, 0])
    if dup is not None:
        raise UserError(f"{where(path, dup, df.columns[0])}: id '{df.iloc[dup, 0]}' appears twice")


def _check_probabilities(sub: pd.DataFrame, columns: Sequence[str], path, rows_sum_to_one: bool) -> None:
    values = sub[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        row, c = np.argwhere(bad)[0]
        raise UserError(f"{where(path, int(row), columns[c])}: '{sub[columns[c]].iloc[row]}' is not a probability "
                        "(a number in [0, 1])")
    if rows_sum_to_one:
        sums = values.sum(axis=1)
        off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
        if off.any():
            row = int(off.argmax())
            raise UserError(f"{where(path, row)}: probabilities sum to {sums[row]:.6g}, not 1")


def validate_submission(path: str | os.PathLike, sample_path: str | os.PathLike,
                        spec: SubmissionSpec | Sequence[str], name: str | None = None) -> pd.DataFrame:
    """Check `path` against the competition's sample submission; return it (cells as strings).

    Columns and their order, row count, the id set, no empty cell, no repeated id; then by kind:
    every label one of the classes, or every probability finite and in [0, 1] (per-class rows
    summing to 1). `spec` may be a plain class list (a label submission). Raises UserError naming
    the file (`name`, if given, e.g. the final path of a file still being written), row and column.
    """
    sub = read_csv_strings(path)
    path = name or path
    sample = read_csv_strings(sample_path)
    if list(sub.columns) != list(sample.columns):
        raise UserError(column_mismatch(path, list(sub.columns), list(sample.columns), str(sample_path)))
    if not isinstance(spec, SubmissionSpec):
        spec = SubmissionSpec.labels(list(spec), str(sample.columns[0]), str(sample.columns[1]))
    check_no_gaps(sub, path)
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
    columns = list(sample.columns[1:])
    if spec.kind == "label":
        allowed = set(spec.classes)
        shown = ", ".join(spec.classes[:12]) + (f", ... ({len(spec.classes)} classes)"
                                                if len(spec.classes) > 12 else "")
        for col in columns:
            bad = ~sub[col].isin(allowed)
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise UserError(f"{where(path, row, col)}: '{sub[col].iloc[row]}' is not a class "
                                f"(expected one of {shown})")
    else:
        _check_probabilities(sub, columns, path, rows_sum_to_one=spec.kind == "class_probs")
    return sub
