"""Small slices of the real embedded competition, written as competition zips.

    frames = real_slice()                      # the first 400 train rows, 120 test rows, a sample submission
    write_zip(tmp_path / "slice.zip", frames)
"""
from __future__ import annotations

import functools
import io
import zipfile
from pathlib import Path

import pandas as pd

from helpers.cli import EMBEDDED


def read_member(name: str, nrows: int | None = None) -> pd.DataFrame:
    with zipfile.ZipFile(EMBEDDED / "fashion-mnist.zip") as zf, zf.open(name) as fh:
        return pd.read_csv(fh, nrows=nrows, dtype={"id": str} if name != "train.csv" else None)


@functools.lru_cache(maxsize=1)
def _slice() -> dict[str, pd.DataFrame]:
    train = read_member("train.csv", nrows=400)
    test = read_member("test.csv", nrows=120)
    sample = pd.DataFrame({"id": test["id"], "label": "0"})
    return {"train.csv": train, "test.csv": test, "sample_submission.csv": sample}


def real_slice() -> dict[str, pd.DataFrame]:
    """The first 400 train rows and 120 test rows of the embedded competition (real images); copies."""
    return {name: frame.copy() for name, frame in _slice().items()}


def write_zip(path: Path, frames: dict[str, pd.DataFrame | str | bytes]) -> Path:
    """A competition zip from DataFrames (written as CSV) or raw text/bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in frames.items():
            if isinstance(content, pd.DataFrame):
                buf = io.StringIO()
                content.to_csv(buf, index=False)
                content = buf.getvalue()
            zf.writestr(name, content)
    return path


def broken(real_slice, name: str, mutate) -> dict:
    frames = {k: v.copy() for k, v in real_slice.items()}
    frames[name] = mutate(frames[name])
    return frames


def set_cell(df: pd.DataFrame, row: int, col: str, value) -> pd.DataFrame:
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


BAD_PREPARE_INPUTS = {  # case -> (file, how to break it, words the one-line error must hold)
    "non-numeric pixel": ("train.csv", lambda df: set_cell(df, 6, "pixel45", "abc"),
                          ["train.csv", "row 7 (line 8)", "pixel45", "'abc'"]),
    "missing column": ("train.csv", lambda df: df.drop(columns="label"),
                       ["train.csv", "missing column 'label'"]),
    "label of 10": ("train.csv", lambda df: set_cell(df, 3, "label", 10),
                    ["train.csv", "row 4 (line 5)", "column 'label'", "not a class"]),
    "duplicated test id": ("test.csv", lambda df: set_cell(df, 9, "id", df.loc[2, "id"]),
                           ["test.csv", "row 10 (line 11)", "column 'id'", "appears twice"]),
    "pixel out of range": ("test.csv", lambda df: set_cell(df, 0, "pixel0", 256),
                           ["test.csv", "row 1 (line 2)", "pixel0", "outside 0-255"]),
    "empty pixel": ("train.csv", lambda df: set_cell(df, 11, "pixel3", None),
                    ["train.csv", "row 12 (line 13)", "pixel3", "empty value"]),
    "missing pixel column": ("test.csv", lambda df: df.drop(columns="pixel783"),
                             ["test.csv", "783 pixel columns, expected 784"]),
}
