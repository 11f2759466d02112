"""Stage `prepare`: read the competition (any layout), validate it, write compact arrays and folds.

    foldwise prepare             # reads params.yaml `prepare`

Unpacks data/raw/competition.zip (and the archives inside it) into a temporary folder, reads it
with the layout's reader (pipeline/layouts/), resolves classes, submission kind and metric,
decodes every image once to the target size and channels, and writes data/prepared/:
  train_images.npy  uint8 [N, H, W, C]      train_labels.npy  int64 [N] (class index)
  test_images.npy   uint8 [M, H, W, C]      test_ids.csv      the test ids, sample-submission spelling
  folds.csv         row,label,fold (stratified, seeded)
  sample_submission.csv (copied)            meta.json  classes, submission, metric, image spec, stats
Everything is built in a staging folder and swapped in at the end: bad input leaves the old
data/prepared (or none) untouched.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.archive import extract_competition
from pipeline.config import PrepareParams, load_section
from pipeline.layouts import read_competition
from pipeline.layouts.common import Files
from pipeline.layouts.decode import channel_stats, image_spec, write_images
from pipeline.layouts.targets import resolve_targets
from pipeline.metrics import METRICS
from serve.atomic import replace_dir, write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
ARCHIVE = Path("data/raw/competition.zip")
OUT = Path("data/prepared")


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
    with open(path, "wb") as fh:
        np.save(fh, arr)


def run(params: PrepareParams, archive_path: Path = ARCHIVE, out: Path = OUT) -> dict:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        files = Files(extract_competition(Path(archive_path), Path(tmp) / "competition"), str(archive_path))
        raw = read_competition(files, params)
        targets = resolve_targets(raw, params)
        counts = np.bincount(targets.labels, minlength=len(targets.classes))
        if counts.min() < params.n_folds:
            cls = int(counts.argmin())
            raise UserError(f"{raw.labels_file}: class '{targets.classes[cls]}' has {counts[cls]} rows, fewer than "
                            f"prepare.n_folds={params.n_folds}")
        spec, size_why = image_spec(raw, params)
        stage = Path(tmp) / "prepared"
        stage.mkdir()
        write_images(raw.train, spec, stage / "train_images.npy", params.workers, "train images")
        write_images(raw.test, spec, stage / "test_images.npy", params.workers, "test images")
        shutil.rmtree(files.root)  # the unpacked copy is no longer needed; free the disk before the swap
        folds = stratified_folds(targets.labels, params.n_folds, params.seed)
        mean, std = channel_stats(stage / "train_images.npy")
        metric = METRICS[targets.metric]
        meta = {
            "layout": raw.layout,
            "id_column": raw.id_column,
            "target_column": targets.submission.columns[0],
            "classes": targets.classes,
            "class_names": targets.class_names,
            "submission": targets.submission.to_dict(),
            "metric": metric.to_dict(),
            "positive": targets.positive,
            "id_form": raw.id_form,
            "image_shape": list(spec.shape),
            "image": {**spec.to_dict(), "pixel_shape": (list(raw.train.images.shape[1:])
                                                        if hasattr(raw.train, "images") else None),
                      "chosen_by": size_why},
            "n_train": int(len(targets.labels)),
            "n_test": int(len(raw.test_ids)),
            "n_folds": params.n_folds,
            "class_counts": counts.tolist(),
            "mean": mean,
            "std": std,
            "notes": raw.notes,
            # where the test files and sample submission lie in the competition (the notebook reads them there)
            "files": {k: v for k, v in raw.found.items() if k in ("test_file", "test_images", "sample_submission")},
        }
        _save_npy(stage / "train_labels.npy", targets.labels)
        pd.DataFrame({raw.id_column: raw.test_ids}).to_csv(stage / "test_ids.csv", index=False)
        pd.DataFrame({"row": np.arange(len(folds)), "label": targets.labels, "fold": folds}).to_csv(
            stage / "folds.csv", index=False)
        raw.sample.to_csv(stage / "sample_submission.csv", index=False)
        write_json(stage / "meta.json", meta)
        replace_dir(stage, out)
    _logger.info("prepared %d train / %d test images of shape %s (%s layout), %d classes, %s submission, "
                 "metric %s, %d folds", meta["n_train"], meta["n_test"], meta["image_shape"], raw.layout,
                 len(targets.classes), targets.submission.kind, targets.metric, params.n_folds)
    return meta


def main() -> None:
    run(load_section("prepare", PrepareParams))
