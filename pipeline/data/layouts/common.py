"""What every layout reader returns, and the helpers they share (finding files, reading CSVs,
matching column names, indexing image files by id).

A reader gets the unpacked competition folder and `prepare`'s params and returns a `RawCompetition`:
training images (files to decode, or pixel arrays) with their labels spelled as the competition
spells them, test images with their ids, and the sample submission. Everything after that
(classes, submission kind, metric, decoding, folds) is layout-independent (pipeline/data/prepare.py).
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from serve.csvfiles import where
from serve.errors import UserError, first_line
from serve.images import IMAGE_SUFFIXES

if TYPE_CHECKING:  # the reader only reads attributes of prepare's params (no import cycle at run time)
    from pipeline.data.prepare import PrepareParams

_logger = logging.getLogger(__name__)


@dataclass
class ImageFiles:
    """Images still to decode: their paths and how to name them in messages."""
    paths: list[Path]
    names: list[str]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class PixelArray:
    """Images read from a pixel CSV: uint8 `[N, h, w, c]` at the CSV's own shape."""
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class RawCompetition:
    layout: str
    train: ImageFiles | PixelArray
    train_labels: list[str]          # one per training image, spelled as in the data
    labels_file: str                 # where the labels came from, for messages: a CSV ...
    labels_column: str | None        # ... and its column (None: class folders, the image's folder)
    test: ImageFiles | PixelArray
    test_ids: list[str]              # as the sample submission spells them, in test-image order
    sample: pd.DataFrame             # the sample submission, every cell a string
    sample_name: str
    id_column: str
    id_form: str = "stem"            # image-folder ids: "name" (with extension) or "stem"
    notes: list[str] = field(default_factory=list)
    found: dict[str, str] = field(default_factory=dict)  # prepare keys -> what the reader used (for `init`)


class Files:
    """The unpacked competition: find files by relative path or by name, name them in messages."""

    def __init__(self, root: Path, label: str) -> None:
        self.root = Path(root)
        self.label = label  # e.g. data/raw/competition.zip
        self.all = sorted(p for p in self.root.rglob("*") if p.is_file() and not p.name.startswith("."))

    def name(self, path: Path) -> str:
        return f"{self.label}:{self.rel(path)}"

    def rel(self, path: Path) -> str:
        """`path` relative to the competition's root, as params.yaml names files and folders."""
        return str(PurePosixPath(path.relative_to(self.root)))

    def find(self, name: str) -> Path | None:
        """A file by relative path or by file name (case-insensitive); UserError if ambiguous."""
        want = name.replace("\\", "/").lower()
        hits = [p for p in self.all if str(PurePosixPath(p.relative_to(self.root))).lower() == want]
        if not hits:
            hits = [p for p in self.all if p.name.lower() == PurePosixPath(want).name]
        if len(hits) > 1:
            raise UserError(f"{self.label}: '{name}' is ambiguous ({', '.join(self.name(p) for p in hits[:4])}); "
                            "give its folder in params.yaml prepare")
        return hits[0] if hits else None

    def require(self, name: str, key: str) -> Path:
        found = self.find(name)
        if found is None:
            have = ", ".join(str(PurePosixPath(p.relative_to(self.root))) for p in self.csvs()[:8])
            raise UserError(f"{self.label}: no file '{name}' (prepare.{key}); CSV files: {have or 'none'}")
        return found

    def csvs(self) -> list[Path]:
        return [p for p in self.all if p.suffix.lower() == ".csv"]

    def folder(self, name: str, key: str) -> Path:
        want = name.strip("/").lower()
        dirs = {d for p in self.all for d in PurePosixPath(p.relative_to(self.root)).parents if str(d) != "."}
        exact = [d for d in dirs if str(d).lower() == want]
        hits = sorted(self.root / d for d in (exact or [d for d in dirs if d.name.lower() == want]))
        if not hits:
            raise UserError(f"{self.label}: no folder '{name}' (prepare.{key})")
        if len(hits) > 1:
            raise UserError(f"{self.label}: folder '{name}' is ambiguous; give its path in prepare.{key}")
        return hits[0]

    def image_dirs(self) -> dict[Path, list[Path]]:
        """Image files grouped by the folder that holds them."""
        out: dict[Path, list[Path]] = defaultdict(list)
        for p in self.all:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out[p.parent].append(p)
        return dict(out)


def read_csv(path: Path, label: str, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise UserError(f"{label}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{label}: not a readable CSV ({first_line(exc)})") from None


def read_strings(path: Path, label: str) -> pd.DataFrame:
    """A small CSV with every cell a string ('' where empty)."""
    return read_csv(path, label, dtype=str, keep_default_na=False, na_filter=False)


SAMPLE_PATTERN = re.compile(r"sample.*submission.*\.csv$", re.IGNORECASE)


def sample_submission(files: Files, params: PrepareParams) -> tuple[Path, pd.DataFrame, str]:
    """The sample submission (prepare.sample_submission, or the one `sample*submission*.csv`) and its id column."""
    if params.sample_submission:
        path = files.require(params.sample_submission, "sample_submission")
    else:
        found = [p for p in files.csvs() if SAMPLE_PATTERN.search(p.name)]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise UserError(f"{files.label}: {what} sample submission CSV found (sample*submission*.csv); "
                            "set prepare.sample_submission")
        path = found[0]
    label = files.name(path)
    sample = read_strings(path, label)
    if len(sample.columns) < 2:
        raise UserError(f"{label}: expected an id column and at least one target column, got {list(sample.columns)}")
    if len(sample) == 0:
        raise UserError(f"{label}: no rows (the sample submission lists every test id)")
    id_col = match_column(sample.columns, params.id_column, label, "prepare.id_column") if params.id_column \
        else str(sample.columns[0])
    if str(sample.columns[0]) != id_col:
        raise UserError(f"{label}: the id column '{id_col}' must come first (columns: {list(sample.columns)[:5]})")
    dup = sample[id_col].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise UserError(f"{where(label, row, id_col)}: id '{sample[id_col].iloc[row]}' appears twice")
    return path, sample, id_col


def match_column(columns: Sequence, name: str, label: str, key: str) -> str:
    """`name` among `columns`, exactly or ignoring case (`label` matches `Label`)."""
    cols = [str(c) for c in columns]
    if name in cols:
        return name
    folded = [c for c in cols if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    shown = ", ".join(cols[:6]) + (", ..." if len(cols) > 6 else "")
    raise UserError(f"{label}: no column '{name}' ({key}); columns are {shown}")


def find_column(columns: Sequence, candidates: Sequence[str]) -> str | None:
    """The first of `candidates` present in `columns` (ignoring case), or None."""
    cols = [str(c) for c in columns]
    for cand in candidates:
        for c in cols:
            if c.lower() == cand.lower():
                return c
    return None


def labels_column(df: pd.DataFrame, label: str, params: PrepareParams, sample: pd.DataFrame,
                  id_col: str | None) -> str:
    """The training-label column: prepare.target_column, else the sample's target name (any case),
    else `label`/`target`/`class`, else the only column that is not the id."""
    if params.target_column:
        return match_column(df.columns, params.target_column, label, "prepare.target_column")
    sample_targets = [str(c) for c in sample.columns[1:]] if len(sample.columns) == 2 else []
    found = find_column(df.columns, [*sample_targets, "label", "target", "class", "category", "species"])
    if found:
        return found
    rest = [str(c) for c in df.columns if str(c) != id_col]
    if len(rest) == 1:
        return rest[0]
    if sample_targets:
        raise UserError(f"{label}: missing column '{sample_targets[0]}' (the training labels, named like the sample "
                        f"submission's target; columns are {', '.join(rest[:5])}, ...); set prepare.target_column")
    raise UserError(f"{label}: cannot tell which column holds the labels ({', '.join(rest[:6])}); "
                    "set prepare.target_column")


def string_labels(series: pd.Series, label: str, column: str) -> list[str]:
    """Labels as spelled (strings); an empty cell is an error naming its row."""
    values = series.astype(str).str.strip()
    empty = (values == "") | series.isna().to_numpy()
    if empty.any():
        row = int(np.asarray(empty).argmax())
        raise UserError(f"{where(label, row, column)}: empty label (every training row needs a class)")
    return values.tolist()


def index_by_id(paths: Sequence[Path]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Image files by file name and by stem (a stem shared by two files maps to neither)."""
    by_name = {p.name: p for p in paths}
    by_stem: dict[str, Path] = {}
    clash = set()
    for p in paths:
        if p.stem in by_stem:
            clash.add(p.stem)
        by_stem[p.stem] = p
    for stem in clash:
        del by_stem[stem]
    return by_name, by_stem


def matches(ids: Sequence[str], paths: Sequence[Path]) -> tuple[int, str]:
    """How many `ids` name a file of `paths`, and whether they do so with the extension or without."""
    by_name, by_stem = index_by_id(paths)
    names = sum(1 for i in ids if i in by_name)
    stems = sum(1 for i in ids if i in by_stem)
    return (names, "name") if names >= stems else (stems, "stem")


def best_image_dir(files: Files, ids: Sequence[str], hint: str, exclude: Path | None = None) -> tuple[Path, str] | None:
    """The folder whose image files match most of `ids` (ties: the one whose path mentions `hint`)."""
    best = None
    for folder, paths in files.image_dirs().items():
        n, form = matches(ids, paths)
        if n == 0:
            continue
        rank = (n, hint in str(folder.relative_to(files.root)).lower(), folder != exclude)
        if best is None or rank > best[0]:
            best = (rank, folder, form)
    return (best[1], best[2]) if best else None


def images_for_ids(files: Files, folder: Path, ids: Sequence[str], form: str, ids_label: str,
                   id_column: str) -> ImageFiles:
    """The image file of each id (in `ids` order); an id without an image is an error naming its row."""
    paths = [p for p in files.image_dirs().get(folder, [])]
    by_name, by_stem = index_by_id(paths)
    table = by_name if form == "name" else by_stem
    out = []
    for row, i in enumerate(ids):
        p = table.get(i)
        if p is None:
            raise UserError(f"{where(ids_label, row, id_column)}: id '{i}' has no image in {files.name(folder)}/")
        out.append(p)
    return ImageFiles(out, [files.name(p) for p in out])


def test_images(files: Files, sample: pd.DataFrame, id_col: str, sample_label: str,
                params: PrepareParams, train_dir: Path | None) -> tuple[ImageFiles, list[str], str]:
    """Test images: prepare.test_images, else the folder whose files match the sample submission's ids."""
    ids = sample[id_col].tolist()
    if params.test_images:
        folder = files.folder(params.test_images, "test_images")
        _, form = matches(ids, files.image_dirs().get(folder, []))
    else:
        found = best_image_dir(files, ids, "test", exclude=train_dir)
        if found is None:
            raise UserError(f"{files.label}: no folder of test images whose names match the ids of {sample_label} "
                            f"(e.g. '{ids[0] if ids else '?'}'); set prepare.test_images")
        folder, form = found
    images = images_for_ids(files, folder, ids, form, sample_label, id_col)
    extra = len(files.image_dirs().get(folder, [])) - len(images)
    if extra > 0 and folder != train_dir:
        _logger.warning("%s/: %d image files are not in %s; they are not predicted", files.name(folder), extra,
                        sample_label)
    return images, ids, form
