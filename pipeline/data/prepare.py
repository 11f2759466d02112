"""The prepare stage's library: params.yaml `prepare`, and the competition (any layout) read,
validated and written as compact arrays and stratified folds.

    meta = prepare(load_section("prepare", PrepareParams), paths.ARCHIVE, paths.PREPARED)

Unpacks data/raw/competition.zip (and the archives inside it) into a temporary folder, reads it
with the layout's reader (pipeline/data/layouts/), resolves classes, submission kind and metric,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import check_choice
from pipeline.data.archive import extract_competition
from pipeline.data.layouts import LAYOUTS, read_competition
from pipeline.data.layouts.common import Files
from pipeline.data.layouts.decode import channel_stats, image_spec, write_images
from pipeline.data.layouts.targets import resolve_targets
from pipeline.evaluation.metrics import METRICS
from serve.atomic import replace_dir, write_json
from serve.errors import UserError
from serve.images import RESIZE_MODES
from serve.submission import KINDS, SubmissionSpec

_logger = logging.getLogger(__name__)


@dataclass
class PrepareParams:
    """How to read the competition (layout, files, columns, classes, submission, metric, image size)
    and how to split it into folds. `null` / `auto` values are found in the data."""
    layout: str = "auto"                     # auto | a name of LAYOUTS (pipeline/data/layouts/)
    train_file: str | None = None         # pixel_csv: the train CSV; labels_csv: the labels CSV
    test_file: str | None = None          # pixel_csv: the test CSV
    train_images: str | None = None       # labels_csv: folder of training images; class_folders: their root
    test_images: str | None = None        # folder of test images
    sample_submission: str | None = None  # default: the one sample*submission*.csv
    id_column: str | None = None          # default: the sample submission's first column
    target_column: str | None = None      # the training labels' column (default: found by name)
    classes: list[Any] | None = None      # declare the classes (and their order); default: from the labels
    class_names: list[Any] = field(default_factory=list)  # display names, one per class (default: the classes)
    submission: str = "auto"                 # auto | label | binary_prob | class_probs (serve.submission.KINDS)
    positive_class: Any | None = None     # binary_prob: the class whose probability is submitted
    metric: str = "auto"                     # auto | a name of METRICS (pipeline/evaluation/metrics.py)
    image_size: list[int] | None = None   # [H, W] every image is resized to; default: from the images
    channels: int | None = None           # 1 or 3; default: 1 if every image is grayscale
    resize: str = "stretch"                  # stretch | crop | pad (serve.images)
    pixel_shape: list[int] | None = None  # pixel_csv: [H, W, C] of a row; default: square
    max_pixels: int = 89_478_485             # larger images are refused (decompression bombs)
    workers: int | None = None            # decoding threads; default: one per core
    n_folds: int = 5
    seed: int = 42

    def validate(self, err) -> None:
        LAYOUTS.check(self.layout, err, "layout", also=("auto",))
        check_choice(self.submission, ("auto", *KINDS), err, "submission")
        METRICS.check(self.metric, err, "metric", also=("auto",))
        check_choice(self.resize, RESIZE_MODES, err, "resize")
        for key in ("classes", "class_names"):
            for i, v in enumerate(getattr(self, key) or []):
                if isinstance(v, bool) or not isinstance(v, (str, int)):
                    raise err(f"must be a string or an integer, got {v!r}", f"{key}[{i}]")
        if self.positive_class is not None and (isinstance(self.positive_class, bool)
                                                or not isinstance(self.positive_class, (str, int))):
            raise err(f"must be a class (a string or an integer), got {self.positive_class!r}", "positive_class")
        if self.classes is not None and len({str(c) for c in self.classes}) != len(self.classes):
            raise err("classes must be distinct", "classes")
        if self.class_names and len(set(self.class_names)) != len(self.class_names):
            raise err("class names must be distinct", "class_names")
        if self.n_folds < 2:
            raise err(f"must be at least 2, got {self.n_folds}", "n_folds")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 4):
            raise err(f"must be [H, W] with H, W >= 4, got {self.image_size}", "image_size")
        if self.channels is not None and self.channels not in (1, 3):
            raise err(f"must be 1 or 3 (or null), got {self.channels}", "channels")
        if self.pixel_shape is not None and (len(self.pixel_shape) != 3 or min(self.pixel_shape) < 1
                                             or self.pixel_shape[2] not in (1, 3)):
            raise err(f"must be [H, W, C] with C 1 or 3, got {self.pixel_shape}", "pixel_shape")
        if self.max_pixels < 1:
            raise err(f"must be at least 1, got {self.max_pixels}", "max_pixels")
        if self.workers is not None and self.workers < 1:
            raise err(f"must be at least 1 (or null), got {self.workers}", "workers")


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


def prepare(params: PrepareParams, archive_path: Path = paths.ARCHIVE, out: Path = paths.PREPARED) -> dict:
    """Read, validate and write the competition (see the module docstring); returns meta.json's content."""
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
        dst = paths.Prepared(stage)
        write_images(raw.train, spec, dst.train_images, params.workers, "train images")
        write_images(raw.test, spec, dst.test_images, params.workers, "test images")
        shutil.rmtree(files.root)  # the unpacked copy is no longer needed; free the disk before the swap
        folds = stratified_folds(targets.labels, params.n_folds, params.seed)
        mean, std = channel_stats(dst.train_images)
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
        _save_npy(dst.train_labels, targets.labels)
        pd.DataFrame({raw.id_column: raw.test_ids}).to_csv(dst.test_ids, index=False)
        pd.DataFrame({"row": np.arange(len(folds)), "label": targets.labels, "fold": folds}).to_csv(
            dst.folds, index=False)
        raw.sample.to_csv(dst.sample_submission, index=False)
        write_json(dst.meta, meta)
        replace_dir(stage, out)
    _logger.info("prepared %d train / %d test images of shape %s (%s layout), %d classes, %s submission, "
                 "metric %s, %d folds", meta["n_train"], meta["n_test"], meta["image_shape"], raw.layout,
                 len(targets.classes), targets.submission.kind, targets.metric, params.n_folds)
    return meta



def submission_spec(meta: dict) -> SubmissionSpec:
    """meta.json's submission (kind, columns, classes), or labels for data prepared before kinds existed."""
    if "submission" in meta:
        return SubmissionSpec.from_dict(meta["submission"])
    return SubmissionSpec.labels(meta["classes"], meta["id_column"], meta["target_column"])
