"""Stage `prepare`: read the competition archive, validate it, write compact arrays and folds.

    foldwise prepare             # reads params.yaml `prepare`

Writes to data/prepared/:
  train_images.npy  uint8 [N, H, W, C]      train_labels.npy  int64 [N] (class index)
  test_images.npy   uint8 [M, H, W, C]      test_ids.csv      the test ids, file order
  folds.csv         row,label,fold (stratified, seeded)
  sample_submission.csv (copied)            meta.json  classes, columns, shape, pixel stats

Layouts are readers registered in `LAYOUTS`; today `pixel_csv` (label/id + pixel0..N columns).
Everything is validated before anything is written, so a bad file leaves no partial output.
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.archive import CompetitionArchive
from pipeline.config import PrepareParams, load_section
from serve.atomic import atomic_path, write_json
from serve.csvfiles import as_written, first_duplicate, where
from serve.errors import UserError
from serve.readers import parse_pixel_frame, pixel_columns_of

_logger = logging.getLogger(__name__)
ARCHIVE = Path("data/raw/competition.zip")
OUT = Path("data/prepared")


@dataclass
class Competition:
    train_images: np.ndarray  # uint8 [N, H, W, C]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray   # uint8 [M, H, W, C]
    test_ids: list[str]
    sample_submission: pd.DataFrame
    id_column: str
    target_column: str


def _read_csv(archive: CompetitionArchive, name: str, **kwargs) -> pd.DataFrame:
    label = archive.label(name)
    with archive.open(name) as fh:
        data = fh.read()
    try:
        return pd.read_csv(io.BytesIO(data), **kwargs)
    except pd.errors.EmptyDataError:
        raise UserError(f"{label}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{label}: not a readable CSV ({str(exc).splitlines()[0][:200]})") from None


def _require_column(df: pd.DataFrame, column: str, label: str, role: str) -> None:
    if column not in df.columns:
        raise UserError(f"{label}: missing column '{column}' ({role}); columns are "
                        f"{', '.join(map(str, df.columns[:5]))}{', ...' if len(df.columns) > 5 else ''}")


def _image_shape(params: PrepareParams, n_pixels: int, label: str) -> tuple[int, int, int]:
    if params.image_shape is not None:
        return tuple(params.image_shape)  # type: ignore[return-value]
    side = math.isqrt(n_pixels)
    if side * side != n_pixels:
        raise UserError(f"{label}: {n_pixels} pixel columns is not a square image; set prepare.image_shape [H, W, C]")
    return side, side, 1


def _labels(df: pd.DataFrame, column: str, n_classes: int, label: str) -> np.ndarray:
    raw = df[column]
    numeric = pd.to_numeric(raw, errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric)) | (numeric < 0) | (numeric >= n_classes)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise UserError(f"{where(label, row, column)}: label {as_written(raw.iloc[row])} is not a class "
                        f"(expected an integer 0-{n_classes - 1}; prepare.class_names has {n_classes})")
    return numeric.to_numpy().astype(np.int64)


def read_pixel_csv(archive: CompetitionArchive, params: PrepareParams) -> Competition:
    """Kaggle's pixel-CSV layout: train = target + pixels, test = id + pixels."""
    sample_label = archive.label(params.sample_submission)
    sample = _read_csv(archive, params.sample_submission, dtype=str, keep_default_na=False)
    if len(sample.columns) < 2:
        raise UserError(f"{sample_label}: expected at least two columns (id, target), got {list(sample.columns)}")
    id_col = params.id_column or str(sample.columns[0])
    target = params.target_column or str(sample.columns[1])
    _require_column(sample, id_col, sample_label, "the id column")
    _require_column(sample, target, sample_label, "the target column")

    train_label = archive.label(params.train_file)
    train = _read_csv(archive, params.train_file, engine="pyarrow")
    _require_column(train, target, train_label, "the target column")
    n_pix = len(train.columns) - 1 - (id_col in train.columns)
    shape = _image_shape(params, n_pix, train_label)
    train_pixels = pixel_columns_of(list(train.columns), shape, train_label, [target, id_col])
    labels = _labels(train, target, len(params.class_names), train_label)
    train_images = parse_pixel_frame(train, train_pixels, shape, train_label)

    test_label = archive.label(params.test_file)
    test = _read_csv(archive, params.test_file, dtype={id_col: str})
    _require_column(test, id_col, test_label, "the id column")
    test_pixels = pixel_columns_of(list(test.columns), shape, test_label, [id_col])
    if test_pixels != train_pixels:
        diff = next(a for a, b in zip(test_pixels, train_pixels) if a != b)
        raise UserError(f"{test_label}: pixel column '{diff}' does not match {train_label}'s columns")
    test_ids = test[id_col].astype(str)
    empty = test_ids.str.strip() == ""
    if empty.any():
        raise UserError(f"{where(test_label, int(empty.to_numpy().argmax()), id_col)}: empty id")
    dup = first_duplicate(test_ids)
    if dup is not None:
        raise UserError(f"{where(test_label, dup, id_col)}: id '{test_ids.iloc[dup]}' appears twice")
    test_images = parse_pixel_frame(test, test_pixels, shape, test_label)

    sample_ids = set(sample[id_col])
    if set(test_ids) != sample_ids:
        only_test = sorted(set(test_ids) - sample_ids)
        only_sample = sorted(sample_ids - set(test_ids))
        what = (f"test id '{only_test[0]}' is not in {sample_label}" if only_test
                else f"id '{only_sample[0]}' of {sample_label} has no test image")
        raise UserError(f"{test_label}: {what}")
    return Competition(train_images, labels, test_images, test_ids.tolist(), sample, id_col, target)


LAYOUTS: dict[str, Callable[[CompetitionArchive, PrepareParams], Competition]] = {
    "pixel_csv": read_pixel_csv,
}


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per row: each class shuffled (seeded) and dealt round-robin, so every fold gets
    the same share of every class (counts differ by at most one)."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    start = 0
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        rng.shuffle(rows)
        folds[rows] = (start + np.arange(len(rows))) % n_folds
        start = (start + len(rows)) % n_folds
    return folds


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def run(params: PrepareParams, archive_path: Path = ARCHIVE, out: Path = OUT) -> dict:
    archive = CompetitionArchive(archive_path)
    comp = LAYOUTS[params.layout](archive, params)
    n_classes = len(params.class_names)
    counts = np.bincount(comp.train_labels, minlength=n_classes)
    if counts.min() < params.n_folds:
        cls = int(counts.argmin())
        raise UserError(f"{archive.label(params.train_file)}: class {cls} ({params.class_names[cls]}) has "
                        f"{counts[cls]} rows, fewer than prepare.n_folds={params.n_folds}")
    folds = stratified_folds(comp.train_labels, params.n_folds, params.seed)
    pixels = comp.train_images.reshape(-1, comp.train_images.shape[-1]).astype(np.float64) / 255.0
    meta = {
        "layout": params.layout,
        "id_column": comp.id_column,
        "target_column": comp.target_column,
        "classes": [str(i) for i in range(n_classes)],
        "class_names": params.class_names,
        "image_shape": list(comp.train_images.shape[1:]),
        "n_train": int(len(comp.train_labels)),
        "n_test": int(len(comp.test_ids)),
        "n_folds": params.n_folds,
        "class_counts": counts.tolist(),
        "mean": pixels.mean(axis=0).round(6).tolist(),
        "std": pixels.std(axis=0).round(6).tolist(),
    }
    out.mkdir(parents=True, exist_ok=True)
    _save_npy(out / "train_images.npy", comp.train_images)
    _save_npy(out / "train_labels.npy", comp.train_labels)
    _save_npy(out / "test_images.npy", comp.test_images)
    with atomic_path(out / "test_ids.csv") as tmp:
        pd.DataFrame({comp.id_column: comp.test_ids}).to_csv(tmp, index=False)
    with atomic_path(out / "folds.csv") as tmp:
        pd.DataFrame({"row": np.arange(len(folds)), "label": comp.train_labels, "fold": folds}).to_csv(tmp, index=False)
    with atomic_path(out / "sample_submission.csv") as tmp:
        comp.sample_submission.to_csv(tmp, index=False)
    write_json(out / "meta.json", meta)
    _logger.info("prepared %d train / %d test images of shape %s, %d folds",
                 meta["n_train"], meta["n_test"], meta["image_shape"], params.n_folds)
    return meta


def main() -> None:
    run(load_section("prepare", PrepareParams))
