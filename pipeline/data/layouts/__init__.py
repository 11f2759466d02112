"""Competition layouts: one reader per way Kaggle lays out an image-classification competition.

    raw = read_competition(Files(folder, "data/raw/competition.zip"), params)   # layout from params or detected

  pixel_csv      train.csv / test.csv of pixel columns           (pipeline/data/layouts/pixel_csv.py)
  labels_csv     a CSV of id -> label + a folder of image files  (pipeline/data/layouts/labels_csv.py)
  class_folders  train/<class>/*.png + test/*.png                (pipeline/data/layouts/class_folders.py)

LAYOUTS is the registry of readers (`prepare.layout` names one); `prepare.layout: auto` (and
`foldwise init`) detect the layout with `detect`. Readers end at a
`RawCompetition`; nothing after `prepare` knows which layout the data came from.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.core.registry import Registry
from pipeline.data.layouts import class_folders, labels_csv, pixel_csv
from pipeline.data.layouts.common import Files, RawCompetition, best_image_dir, read_csv, sample_submission
from serve.errors import UserError

if TYPE_CHECKING:  # the reader only reads attributes of prepare's params (no import cycle at run time)
    from pipeline.data.prepare import PrepareParams

_logger = logging.getLogger(__name__)
LAYOUTS: Registry[Callable[[Files, PrepareParams], RawCompetition]] = Registry("layout")
LAYOUTS.add("pixel_csv", pixel_csv.read)
LAYOUTS.add("labels_csv", labels_csv.read)
LAYOUTS.add("class_folders", class_folders.read)
MIN_PIXEL_COLUMNS = 64


def _pixel_csv_candidate(files: Files, params: PrepareParams) -> str | None:
    name = params.train_file or "train.csv"
    path = files.find(name)
    if path is None:
        return None
    header = read_csv(path, files.name(path), nrows=0)
    if len(header.columns) >= MIN_PIXEL_COLUMNS:
        return f"{files.name(path)} has {len(header.columns)} columns (pixels)"
    return None


def detect(files: Files, params: PrepareParams) -> tuple[str, str]:
    """(layout, why) for the unpacked competition; UserError naming what is missing if none fits."""
    why = _pixel_csv_candidate(files, params)
    if why:
        return "pixel_csv", why
    sample_path, sample, id_col = sample_submission(files, params)
    if not files.image_dirs():
        raise UserError(f"{files.label}: no image files and no pixel CSV (train.csv with pixel columns); "
                        "set prepare.layout and its files")
    test = best_image_dir(files, sample[id_col].tolist(), "test")
    test_dir = test[0] if test else None
    try:
        path, df, _ = labels_csv.find_labels_csv(files, sample_path, params)
        found = best_image_dir(files, df.iloc[:, 0].astype(str).tolist(), "train", exclude=test_dir)
        if found is not None and (found[0] != test_dir or params.train_file):
            return "labels_csv", f"{files.name(path)} names the images in {files.name(found[0])}/"
    except UserError:
        pass
    roots = class_folders.class_roots(files, test_dir)
    if roots:
        root = max(roots, key=lambda r: len(roots[r]))
        return "class_folders", f"{files.name(root)}/ has {len(roots[root])} class folders of images"
    raise UserError(f"{files.label}: cannot tell the layout (no pixel CSV, no labels CSV naming the images, no "
                    "folder of class folders); set prepare.layout and its files")


def read_competition(files: Files, params: PrepareParams) -> RawCompetition:
    layout = params.layout
    if layout == "auto":
        layout, why = detect(files, params)
        _logger.info("layout %s: %s", layout, why)
    return LAYOUTS[layout](files, params)
