"""Layout `class_folders`: one folder of training images per class; test images in a folder.

    train/Black-grass/1.png  train/Common Chickweed/2.png ...   test/0021e90e4.png ...
    sample_submission.csv    file,species        (Plant Seedlings: ids keep `.png`)

The class is the folder's name, spelled exactly (spaces and hyphens kept). The training root is
`prepare.train_images`, else the folder with the most subfolders of images (ties: the one whose
path mentions `train`). An empty class folder is an error naming it.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.data.layouts.common import Files, ImageFiles, RawCompetition, sample_submission, test_images
from serve.errors import UserError
from serve.images import IMAGE_SUFFIXES

if TYPE_CHECKING:  # the reader only reads attributes of prepare's params (no import cycle at run time)
    from pipeline.data.prepare import PrepareParams

_logger = logging.getLogger(__name__)


def class_roots(files: Files, exclude: Path | None = None) -> dict[Path, dict[str, list[Path]]]:
    """Folders with two or more subfolders that hold image files: {root: {class folder name: images}}
    (`exclude`, the test folder, is never a class)."""
    roots: dict[Path, dict[str, list[Path]]] = defaultdict(dict)
    for folder, paths in files.image_dirs().items():
        if folder != exclude:
            roots[folder.parent][folder.name] = paths
    return {r: c for r, c in roots.items() if len(c) >= 2}


def find_train_root(files: Files, params: PrepareParams,
                    exclude: Path | None = None) -> tuple[Path, dict[str, list[Path]]]:
    if params.train_images:
        root = files.folder(params.train_images, "train_images")
        classes = {d.name: sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                   for d in sorted(root.iterdir()) if d.is_dir()}
        if len(classes) < 2:
            raise UserError(f"{files.name(root)}: expected one subfolder per class, found {len(classes)}")
        return root, classes
    roots = class_roots(files, exclude)
    if not roots:
        raise UserError(f"{files.label}: no folder with one subfolder of images per class; set prepare.train_images")
    root = max(roots, key=lambda r: (len(roots[r]), "train" in str(r.relative_to(files.root)).lower(),
                                     sum(map(len, roots[r].values()))))
    # subfolders with no image files directly inside are classes too (and empty: reported below)
    classes = {d.name: roots[root].get(d.name, []) for d in sorted(root.iterdir()) if d.is_dir() and d != exclude}
    return root, classes


def read(files: Files, params: PrepareParams) -> RawCompetition:
    sample_path, sample, id_col = sample_submission(files, params)
    sample_label = files.name(sample_path)
    test, test_ids, id_form = test_images(files, sample, id_col, sample_label, params, None)
    root, classes = find_train_root(files, params, exclude=test.paths[0].parent if len(test) else None)
    empty = [name for name, paths in classes.items() if not paths]
    if empty:
        raise UserError(f"{files.name(root / empty[0])}/: empty class folder (no image files); remove it or add images")
    paths, labels = [], []
    for name in sorted(classes):
        for p in sorted(classes[name]):
            paths.append(p)
            labels.append(name)
    train = ImageFiles(paths, [files.name(p) for p in paths])
    found = {"train_images": files.rel(root), "test_images": files.rel(test.paths[0].parent),
             "sample_submission": files.rel(sample_path), "id_column": id_col}
    return RawCompetition("class_folders", train, labels, files.name(root), None, test, test_ids, sample,
                          sample_label, id_col, id_form=id_form, found=found)
