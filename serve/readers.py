"""Readers that turn held-out images into the model's uint8 batches `[N, C, H, W]`, in chunks.

    reader = open_reader(Path("test/"), info)        # a pixel CSV, a uint8 .npy or a folder of images
    for chunk in reader.chunks(4096): ...

Inputs: a Kaggle pixel CSV (`[id,]pixel0,...`, values 0-255, row-major at the model's pixel
shape; without an id column the ids are row numbers), a `.npy` array `[N, H, W, C]` or
`[N, H, W]` of uint8 already at the model's shape, or a folder of image files of any size and
mode (id = the file name, with or without its extension as the competition spells it). Images go
through serve.images, the same decode/convert/resize that `prepare` used, so a file gives the
same pixels in training and here. Every reader streams: memory stays at one chunk however large
the input, and `chunks(rows, skip)` can start after the first `skip` rows (to resume an
interrupted run). `parse_pixel_frame` is also what the pixel-CSV layout validates training CSVs
with, so both halves agree on what a valid row is.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serve.csvfiles import as_written, where
from serve.errors import UserError
from serve.images import IMAGE_SUFFIXES, ImageSpec, convert_arrays, default_workers, list_images, load_images


def parse_pixel_frame(df: pd.DataFrame, pixel_columns: Sequence[str], image_shape: Sequence[int],
                      path: str, row_offset: int = 0) -> np.ndarray:
    """Validate the pixel columns of `df` and return uint8 images `[N, H, W, C]`.

    Every cell must be an integer 0-255. Raises UserError naming the file, row and column of the
    first bad cell (`row_offset` is the 0-based data row of `df`'s first row in the file).
    """
    block = df[list(pixel_columns)]
    for col in block.columns:
        series = block[col]
        if pd.api.types.is_integer_dtype(series.dtype):
            continue
        numeric = pd.to_numeric(series, errors="coerce")
        bad = numeric.isna() | (numeric != np.floor(numeric))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            value = series.iloc[row]
            what = ("empty value" if pd.isna(value) or str(value).strip() == ""
                    else f"{as_written(value)} is not an integer 0-255")
            raise UserError(f"{where(path, row_offset + row, col)}: {what}")
    values = block.to_numpy(dtype=np.float64 if not all(
        pd.api.types.is_integer_dtype(t) for t in block.dtypes) else np.int64)
    out_of_range = (values < 0) | (values > 255)
    if out_of_range.any():
        row, c = np.argwhere(out_of_range)[0]
        raise UserError(f"{where(path, row_offset + int(row), block.columns[c])}: "
                        f"{as_written(block.iloc[int(row), c])} is outside 0-255")
    h, w, ch = image_shape
    return values.astype(np.uint8).reshape(len(df), h, w, ch)


def pixel_columns_of(columns: Sequence[str], image_shape: Sequence[int], path: str,
                     exclude: Sequence[str]) -> list[str]:
    """The pixel columns: every column but `exclude`, as many as H*W*C, with no repeats."""
    pixels = [c for c in columns if c not in set(exclude)]
    n = int(np.prod(image_shape))
    if len(pixels) != n:
        raise UserError(f"{path}: {len(pixels)} pixel columns, expected {n} for images of shape "
                        f"{tuple(image_shape)} (H, W, C)")
    return pixels


@dataclass
class Chunk:
    ids: list[str]
    images: np.ndarray  # uint8 [N, C, H, W]


class PixelCsvReader:
    """Stream a pixel CSV in chunks; ids from `id_column` if present, else the 0-based row number.
    Rows are read at `pixel_shape` and converted to `spec` (a no-op when they already match)."""

    def __init__(self, path: str | os.PathLike, spec: ImageSpec, id_column: str,
                 ignore_columns: Sequence[str] = (), pixel_shape: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        self.spec = spec
        self.pixel_shape = tuple(pixel_shape or spec.shape)
        try:
            header = pd.read_csv(self.path, nrows=0)
        except FileNotFoundError:
            raise UserError(f"{self.path}: file not found") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            raise UserError(f"{self.path}: not a readable CSV with a header row") from None
        self.columns = [str(c) for c in header.columns]
        matches = [c for c in self.columns if c.lower() == id_column.lower()]
        self.id_column = id_column if id_column in self.columns else (matches[0] if len(matches) == 1 else None)
        ignore = {c.lower() for c in ignore_columns}
        exclude = [c for c in self.columns if c == self.id_column or c.lower() in ignore]
        self.pixel_columns = pixel_columns_of(self.columns, self.pixel_shape, str(self.path), exclude)

    def chunks(self, rows: int, skip: int = 0) -> Iterator[Chunk]:
        start = skip
        dtypes = {self.id_column: str} if self.id_column else None
        with pd.read_csv(self.path, chunksize=rows, dtype=dtypes, skiprows=range(1, skip + 1)) as frames:
            for df in frames:
                images = parse_pixel_frame(df, self.pixel_columns, self.pixel_shape, str(self.path), start)
                images = convert_arrays(images, self.spec)
                ids = df[self.id_column].tolist() if self.id_column else [str(i) for i in range(start, start + len(df))]
                yield Chunk(ids=ids, images=np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
                start += len(df)


class NpyReader:
    """Stream a uint8 `.npy` array `[N, H, W, C]` (or `[N, H, W]`) memory-mapped, in chunks."""

    def __init__(self, path: str | os.PathLike, image_shape: Sequence[int],
                 ids: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        try:
            arr = np.load(self.path, mmap_mode="r")
        except FileNotFoundError:
            raise UserError(f"{self.path}: file not found") from None
        except ValueError as exc:
            raise UserError(f"{self.path}: not a readable .npy array ({exc})") from None
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.dtype != np.uint8:
            raise UserError(f"{self.path}: dtype {arr.dtype}, expected uint8 images")
        if tuple(arr.shape[1:]) != tuple(image_shape):
            raise UserError(f"{self.path}: images of shape {tuple(arr.shape[1:])}, the model expects "
                            f"{tuple(image_shape)} (H, W, C)")
        if ids is not None and len(ids) != len(arr):
            raise UserError(f"{self.path}: {len(arr)} images but {len(ids)} ids")
        self.array = arr
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(arr))]

    def chunks(self, rows: int, skip: int = 0) -> Iterator[Chunk]:
        for start in range(skip, len(self.array), rows):
            block = np.asarray(self.array[start:start + rows])
            yield Chunk(ids=self.ids[start:start + rows],
                        images=np.ascontiguousarray(block.transpose(0, 3, 1, 2)))

    def __len__(self) -> int:
        return len(self.array)


class ImageFolderReader:
    """Stream the image files of a folder (sorted by name), decoded and resized by serve.images in
    `workers` threads; id = the file name (`id_form` "name") or the name without its extension ("stem")."""

    def __init__(self, path: str | os.PathLike, spec: ImageSpec, id_form: str = "stem",
                 workers: int | None = None) -> None:
        self.path = Path(path)
        self.spec = spec
        self.id_form = id_form
        self.workers = workers or default_workers()
        self.files = list_images(self.path)
        if not self.files:
            raise UserError(f"{self.path}: no image files ({', '.join(IMAGE_SUFFIXES)})")

    def chunks(self, rows: int, skip: int = 0) -> Iterator[Chunk]:
        for start in range(skip, len(self.files), rows):
            files = self.files[start:start + rows]
            batch = load_images(files, self.spec, workers=self.workers)
            ids = [f.name if self.id_form == "name" else f.stem for f in files]
            yield Chunk(ids=ids, images=np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))

    def __len__(self) -> int:
        return len(self.files)
