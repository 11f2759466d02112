"""Predict labels for a held-out set with an ONNX ensemble and write a (validated) CSV.

    foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv
    foldwise predict --model models/ensemble.onnx --input data/prepared/test_images.npy \
        --ids data/prepared/test_ids.csv --sample data/prepared/sample_submission.csv \
        --output submissions/submission.csv

Input: a pixel CSV (ids from the model's id column if present, else row numbers) or a uint8
`.npy`. With `--sample`, rows follow the sample submission's id order and the file is checked
against it (columns, ids, classes) before it replaces the output.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from serve.atomic import atomic_path
from serve.csvfiles import read_csv_strings
from serve.engine import Engine, Throughput
from serve.errors import UserError
from serve.readers import NpyReader, PixelCsvReader
from serve.submission import validate_submission

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictResult:
    rows: int
    seconds: float
    images_per_second: float
    provider: str


def _open_reader(engine: Engine, input_path: Path, ids_path: Path | None):
    info = engine.info
    suffix = input_path.suffix.lower()
    if suffix == ".csv":
        return PixelCsvReader(input_path, info.image_shape, info.id_column, ignore_columns=[info.target_column])
    if suffix == ".npy":
        ids = None
        if ids_path is not None:
            ids_df = read_csv_strings(ids_path)
            if info.id_column not in ids_df.columns:
                raise UserError(f"{ids_path}: no column '{info.id_column}' (the model's id column)")
            ids = ids_df[info.id_column].tolist()
        return NpyReader(input_path, info.image_shape, ids)
    raise UserError(f"{input_path}: unsupported input type '{suffix}' (use a pixel .csv or a uint8 .npy)")


def predict_file(model: str | os.PathLike, input_path: str | os.PathLike, output: str | os.PathLike,
                 ids_path: str | os.PathLike | None = None, sample: str | os.PathLike | None = None,
                 batch_size: int = 256, provider: str = "auto", threads: int | None = None,
                 probs_output: str | os.PathLike | None = None, chunk_rows: int = 4096) -> PredictResult:
    """Run the model over `input_path`, write `id,label` to `output` (and probabilities if asked)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    engine = Engine(model, provider=provider, threads=threads)
    info = engine.info
    reader = _open_reader(engine, Path(input_path), Path(ids_path) if ids_path else None)
    all_ids: list[str] = []
    all_probs: list[np.ndarray] = []
    speed = Throughput()
    with tqdm(desc=f"predict ({engine.provider})", unit="img", disable=not sys.stderr.isatty(),
              file=sys.stderr) as bar:
        for ids, probs in engine.run(reader.chunks(chunk_rows), batch_size):
            all_ids.extend(ids)
            all_probs.append(probs)
            speed.add(len(ids))
            bar.update(len(ids))
    probs = np.concatenate(all_probs) if all_probs else np.zeros((0, len(info.classes)), np.float32)
    labels = np.asarray(info.classes, dtype=object)[probs.argmax(axis=1)] if len(probs) else np.array([], object)
    df = pd.DataFrame({info.id_column: all_ids, info.target_column: labels})
    if sample is not None:
        sample_df = read_csv_strings(sample)
        order = sample_df.iloc[:, 0]
        by_id = df.set_index(info.id_column)
        if by_id.index.duplicated().any():
            raise UserError(f"{input_path}: id '{by_id.index[by_id.index.duplicated()][0]}' appears twice")
        missing = order[~order.isin(by_id.index)]
        if len(missing):
            raise UserError(f"{input_path}: id '{missing.iloc[0]}' of {sample} has no image "
                            f"({len(missing)} ids missing)")
        df = by_id.loc[order].reset_index()
        df.columns = list(sample_df.columns)
    with atomic_path(output) as tmp:
        df.to_csv(tmp, index=False)
        if sample is not None:
            validate_submission(tmp, sample, info.classes, name=str(output))
    if probs_output is not None:
        prob_df = pd.DataFrame(probs, columns=info.classes)
        prob_df.insert(0, info.id_column, all_ids)
        with atomic_path(probs_output) as tmp:
            prob_df.to_csv(tmp, index=False, float_format="%.6g")
    seconds = len(df) / speed.per_second if speed.images else 0.0
    _logger.info("%d rows -> %s (%.0f images/s on %s)", len(df), output, speed.per_second, engine.provider)
    return PredictResult(rows=len(df), seconds=seconds, images_per_second=speed.per_second,
                         provider=engine.provider)
