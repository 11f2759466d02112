"""Layout `pixel_csv`: images as rows of pixel columns (Fashion-MNIST, Digit Recognizer).

    train.csv   label, pixel0 ... pixelN        (any pixel naming: pixel0.., pixel1.., 1x1..)
    test.csv    [id,] pixel0 ... pixelN         (no id column: ids are the sample submission's, in order)
    sample_submission.csv   id, label

Pixels are integers 0-255 in row-major order, H x W x C (`prepare.pixel_shape`, default: square
grayscale, or square RGB when the count is 3 x a square). The target column may differ in case
from the sample submission's (Digit Recognizer: `label` vs `Label`).
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from pipeline.data.layouts.common import (
    Files,
    PixelArray,
    RawCompetition,
    find_column,
    labels_column,
    read_csv,
    sample_submission,
    string_labels,
)
from serve.csvfiles import first_duplicate, where
from serve.errors import UserError
from serve.readers import parse_pixel_frame, pixel_columns_of

if TYPE_CHECKING:  # the reader only reads attributes of prepare's params (no import cycle at run time)
    from pipeline.data.prepare import PrepareParams

_logger = logging.getLogger(__name__)


def pixel_shape(params: PrepareParams, n_pixels: int, label: str) -> tuple[int, int, int]:
    """prepare.pixel_shape, else a square grayscale (or RGB) image of `n_pixels` values."""
    if params.pixel_shape is not None:
        return tuple(params.pixel_shape)  # type: ignore[return-value]
    side = math.isqrt(n_pixels)
    if side * side == n_pixels:
        return side, side, 1
    side = math.isqrt(n_pixels // 3)
    if n_pixels % 3 == 0 and side * side * 3 == n_pixels:
        return side, side, 3
    raise UserError(f"{label}: {n_pixels} pixel columns is not a square image; set prepare.pixel_shape [H, W, C]")


def read(files: Files, params: PrepareParams) -> RawCompetition:
    sample_path, sample, id_col = sample_submission(files, params)
    sample_label = files.name(sample_path)
    train_path = files.require(params.train_file or "train.csv", "train_file")
    train_label = files.name(train_path)
    header = read_csv(train_path, train_label, nrows=0)
    target = labels_column(header, train_label, params, sample, find_column(header.columns, [id_col]))
    train_id = find_column(header.columns, [id_col])
    train = read_csv(train_path, train_label, engine="pyarrow")
    if len(train) == 0:
        raise UserError(f"{train_label}: no rows")
    spelled = read_csv(train_path, train_label, usecols=[target], dtype=str, keep_default_na=False)[target]
    excluded = [target] + ([train_id] if train_id else [])
    n_pix = len(train.columns) - len(excluded)
    shape = pixel_shape(params, n_pix, train_label)
    train_pixels = pixel_columns_of(list(train.columns), shape, train_label, excluded)
    labels = string_labels(spelled, train_label, target)  # as spelled in the file ("007" stays "007")
    train_images = parse_pixel_frame(train, train_pixels, shape, train_label)
    del train

    test_path = files.require(params.test_file or "test.csv", "test_file")
    test_label = files.name(test_path)
    test_header = read_csv(test_path, test_label, nrows=0)
    test_id = find_column(test_header.columns, [id_col])
    test = read_csv(test_path, test_label, dtype={test_id: str} if test_id else None)
    test_pixels = pixel_columns_of(list(test.columns), shape, test_label, [test_id] if test_id else [])
    if test_pixels != train_pixels:
        diff = next(a for a, b in zip(test_pixels, train_pixels) if a != b)
        raise UserError(f"{test_label}: pixel column '{diff}' does not match {train_label}'s columns")
    if test_id is None:
        if len(test) != len(sample):
            raise UserError(f"{test_label}: no id column '{id_col}', and its {len(test)} rows cannot be paired with "
                            f"the {len(sample)} rows of {sample_label}")
        test_ids = sample[id_col].tolist()
        _logger.info("%s has no id column: ids are %s's, in file order", test_label, sample_label)
    else:
        ids = test[test_id].astype(str)
        empty = ids.str.strip() == ""
        if empty.any():
            raise UserError(f"{where(test_label, int(empty.to_numpy().argmax()), test_id)}: empty id")
        dup = first_duplicate(ids)
        if dup is not None:
            raise UserError(f"{where(test_label, dup, test_id)}: id '{ids.iloc[dup]}' appears twice")
        test_ids = ids.tolist()
        sample_ids = set(sample[id_col])
        if set(test_ids) != sample_ids:
            only_test = sorted(set(test_ids) - sample_ids)
            only_sample = sorted(sample_ids - set(test_ids))
            what = (f"test id '{only_test[0]}' is not in {sample_label}" if only_test
                    else f"id '{only_sample[0]}' of {sample_label} has no test image")
            raise UserError(f"{test_label}: {what}")
    test_images = parse_pixel_frame(test, test_pixels, shape, test_label)
    found = {"train_file": files.rel(train_path), "test_file": files.rel(test_path),
             "sample_submission": files.rel(sample_path), "id_column": id_col, "target_column": target,
             "pixel_shape": list(shape)}
    return RawCompetition("pixel_csv", PixelArray(train_images), labels, train_label, target,
                          PixelArray(test_images), test_ids, sample, sample_label, id_col, found=found)
