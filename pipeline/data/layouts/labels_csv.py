"""Layout `labels_csv`: a CSV of id -> label plus a folder of image files; test images in another.

    trainLabels.csv  id,label          train/1.png ...     test/1.png ...     (CIFAR-10)
    train.csv        image_id,label    train_images/*.jpg  test_images/*.jpg  (Cassava)
    train.csv        id,has_cactus     train/<id>          test/<id>          (Aerial Cactus: ids keep .jpg)

Ids are matched to image files by file name, with or without the extension. The labels CSV
(`prepare.train_file`, else the CSV whose first column matches most image names) and the image
folders (`prepare.train_images`, `prepare.test_images`, else the folders whose files match the ids)
are found automatically. An id with no image is an error naming its row; an image file with no
row in the labels CSV is left out with a warning that counts them (Kaggle folders sometimes hold
extra files; refusing the competition for them would help nobody).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pipeline.data.layouts.common import (
    Files,
    RawCompetition,
    best_image_dir,
    find_column,
    images_for_ids,
    labels_column,
    matches,
    read_strings,
    sample_submission,
    string_labels,
    test_images,
)
from serve.csvfiles import where
from serve.errors import UserError

if TYPE_CHECKING:  # the reader only reads attributes of prepare's params (no import cycle at run time)
    from pipeline.data.prepare import PrepareParams

_logger = logging.getLogger(__name__)


def find_labels_csv(files: Files, sample_path, params: PrepareParams) -> tuple:
    """(path, frame, id column) of the labels CSV: prepare.train_file, else the CSV (not the sample
    submission) with two or more columns whose first column names the most image files."""
    if params.train_file:
        path = files.require(params.train_file, "train_file")
        df = read_strings(path, files.name(path))
        return path, df, None
    best = None
    for path in files.csvs():
        if path == sample_path:
            continue
        df = read_strings(path, files.name(path))
        if len(df.columns) < 2 or len(df) == 0:
            continue
        ids = df.iloc[:, 0].tolist()
        score = max((matches(ids, paths)[0] for paths in files.image_dirs().values()), default=0)
        if score and (best is None or score > best[0]):
            best = (score, path, df)
    if best is None:
        raise UserError(f"{files.label}: no labels CSV whose first column names image files; set prepare.train_file")
    return best[1], best[2], None


def read(files: Files, params: PrepareParams) -> RawCompetition:
    sample_path, sample, id_col = sample_submission(files, params)
    sample_label = files.name(sample_path)
    labels_path, df, _ = find_labels_csv(files, sample_path, params)
    labels_label = files.name(labels_path)
    ids_col = find_column(df.columns, [id_col, "id", "image_id", "image", "file", "filename"]) or str(df.columns[0])
    target = labels_column(df, labels_label, params, sample, ids_col)
    if target == ids_col:
        raise UserError(f"{labels_label}: the id and label columns are both '{target}'; set prepare.target_column")
    ids = df[ids_col].astype(str).tolist()
    empty = [i for i, v in enumerate(ids) if not v.strip()]
    if empty:
        raise UserError(f"{where(labels_label, empty[0], ids_col)}: empty id")
    dup = df[ids_col].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise UserError(f"{where(labels_label, row, ids_col)}: id '{ids[row]}' appears twice")
    labels = string_labels(df[target], labels_label, target)

    if params.train_images:
        train_dir = files.folder(params.train_images, "train_images")
        _, form = matches(ids, files.image_dirs().get(train_dir, []))
    else:
        found = best_image_dir(files, ids, "train")
        if found is None:
            raise UserError(f"{labels_label}: no folder holds images named like its ids (e.g. '{ids[0]}'); "
                            "set prepare.train_images")
        train_dir, form = found
    train = images_for_ids(files, train_dir, ids, form, labels_label, ids_col)
    unlabelled = len(files.image_dirs().get(train_dir, [])) - len(train)
    notes = []
    if unlabelled > 0:
        notes.append(f"{files.name(train_dir)}/: {unlabelled} image files have no row in {labels_label}; left out")
        _logger.warning(notes[-1])
    test, test_ids, id_form = test_images(files, sample, id_col, sample_label, params, train_dir)
    found = {"train_file": files.rel(labels_path), "train_images": files.rel(train_dir),
             "test_images": files.rel(test.paths[0].parent), "sample_submission": files.rel(sample_path),
             "id_column": id_col, "target_column": target}
    return RawCompetition("labels_csv", train, labels, labels_label, target, test, test_ids, sample, sample_label,
                          id_col, id_form=id_form, notes=notes, found=found)
