"""Reading small CSV files (submissions, solutions, id lists) with errors that name the place.

Rows are reported 1-based as "row R (line L)": row 1 is the first data row, line 2 of the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from serve.errors import UserError, first_line


def where(path: str | os.PathLike, row: int, column: str | None = None) -> str:
    """`file: row R (line L)[, column 'c']` for the 0-based data row `row`."""
    text = f"{path}: row {row + 1} (line {row + 2})"
    return f"{text}, column '{column}'" if column is not None else text


def as_written(value: object) -> str:
    """A parsed cell shown as it reads in the file: `256`, `12.5`, `'abc'` (text quoted), never
    numpy's `np.int64(256)`. Integral floats (a column with gaps parses as float) show as integers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return repr(str(value))


def read_csv_strings(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV with every cell as a string ('' where empty); a clear UserError if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    try:
        return pd.read_csv(p, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{p}: file is empty (expected a CSV with a header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: not a readable CSV ({first_line(exc, 10_000)})") from None


def first_empty_cell(df: pd.DataFrame) -> tuple[int, str] | None:
    """(row, column) of the first empty cell, or None."""
    empty = df.apply(lambda col: col.str.strip() == "")
    if not empty.to_numpy().any():
        return None
    rows, cols = empty.to_numpy().nonzero()
    first = rows.argmin()
    return int(rows[first]), str(df.columns[cols[first]])


def first_duplicate(values: pd.Series) -> int | None:
    """0-based row of the first value that already appeared above, or None."""
    dup = values.duplicated().to_numpy()
    return int(dup.argmax()) if dup.any() else None
