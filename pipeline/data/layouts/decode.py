"""Images to uint8 `.npy`: the target size and channels, then every image decoded once.

    spec, why = image_spec(raw, params)                   # ImageSpec (+ how it was chosen)
    write_images(raw.train, spec, path, workers=None)     # [N, H, W, C] uint8, written through a memmap

The size is `prepare.image_size`, else the images' own when they all share one no larger than
256 px, else a square of the median shorter side capped at 224 (from the headers of a sample of
files). Channels are `prepare.channels`, else 1 when every sampled image is grayscale, else 3.
Files are decoded by serve.images (the function predict uses) in threads; the array is written
through a memory map, so a data set larger than RAM never has to fit in it.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.data.layouts.common import ImageFiles, PixelArray, RawCompetition
from serve.errors import UserError, first_line
from serve.images import ImageSpec, convert_arrays, load_images

if TYPE_CHECKING:  # the reader only reads attributes of prepare's params (no import cycle at run time)
    from pipeline.data.prepare import PrepareParams

_logger = logging.getLogger(__name__)
SAMPLE_HEADERS = 512
NATIVE_LIMIT = 256
DEFAULT_SIDE = 224
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def header_stats(images: ImageFiles, k: int = SAMPLE_HEADERS) -> tuple[list[tuple[int, int]], list[str]]:
    """(width, height) and mode of up to `k` files spread evenly over `images` (headers only)."""
    from PIL import Image, UnidentifiedImageError

    idx = np.unique(np.linspace(0, len(images) - 1, num=min(k, len(images))).astype(int)) if len(images) else []
    sizes, modes = [], []
    for i in idx:
        try:
            with warnings.catch_warnings(), Image.open(images.paths[i]) as im:  # a bomb is refused at decode
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                sizes.append(im.size)
                modes.append(im.mode)
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{images.names[i]}: not a readable image ({first_line(exc, 160)})") from None
    return sizes, modes


def image_spec(raw: RawCompetition, params: PrepareParams) -> tuple[ImageSpec, str]:
    """The ImageSpec every train and test image is converted to, and how it was chosen."""
    resize, limit = params.resize, params.max_pixels
    if isinstance(raw.train, PixelArray):
        h, w, c = raw.train.images.shape[1:]
        channels = params.channels or c
        size = tuple(params.image_size) if params.image_size else (h, w)
        return ImageSpec(size[0], size[1], channels, resize, limit), f"pixel CSV rows of {h}x{w}x{c}"
    sizes, modes = header_stats(raw.train)
    test_sizes, test_modes = header_stats(raw.test, SAMPLE_HEADERS // 4)
    sizes, modes = sizes + test_sizes, modes + test_modes
    channels = params.channels or (1 if all(m in GRAY_MODES for m in modes) else 3)
    if params.image_size:
        h, w = params.image_size
        why = "prepare.image_size"
    else:
        distinct = set(sizes)
        if len(distinct) == 1 and max(next(iter(distinct))) <= NATIVE_LIMIT:
            w, h = next(iter(distinct))
            why = f"every sampled image is {w}x{h}"
        else:
            short = int(np.median([min(s) for s in sizes]))
            side = max(16, min(DEFAULT_SIDE, short) // 8 * 8)
            h = w = side
            why = (f"sampled images range {min(sizes)}..{max(sizes)} (median shorter side {short}): "
                   f"{side}x{side}; set prepare.image_size to choose")
            _logger.warning("image size: %s", why)
    return ImageSpec(int(h), int(w), int(channels), resize, limit), why


def _save_array(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)


def write_images(source: ImageFiles | PixelArray, spec: ImageSpec, path: Path, workers: int | None = None,
                 what: str = "images") -> None:
    """All of `source` as uint8 `[N, H, W, C]` in the .npy file `path` (a new file; the caller makes it atomic)."""
    if isinstance(source, PixelArray):
        _save_array(path, convert_arrays(source.images, spec))
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(source), *spec.shape))
    done, t0, last = 0, time.perf_counter(), time.monotonic()
    bar = None
    if sys.stderr.isatty() and not os.environ.get("FOLDWISE_QUIET"):
        from tqdm import tqdm
        bar = tqdm(total=len(source), desc=f"decode {what}", unit="img", file=sys.stderr)

    def progress(n: int) -> None:
        nonlocal done, last
        done += n
        if bar is not None:
            bar.update(n)
        elif time.monotonic() - last >= 10:
            last = time.monotonic()
            _logger.info("decode %s: %d/%d images, %.0f images/s", what, done, len(source),
                         done / (time.perf_counter() - t0))

    try:
        load_images(source.paths, spec, workers=workers, out=out, names=source.names, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    out.flush()
    del out
    _logger.info("decoded %d %s to %s in %.1fs", len(source), what, path, time.perf_counter() - t0)


def channel_stats(path: Path, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the pixels in [0, 1], read in chunks (memmap-friendly)."""
    arr = np.load(path, mmap_mode="r")
    c = arr.shape[-1]
    s, ss, n = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(arr), chunk):
        block = np.asarray(arr[start:start + chunk], dtype=np.float64).reshape(-1, c) / 255.0
        s += block.sum(0)
        ss += (block * block).sum(0)
        n += len(block)
    mean = s / max(n, 1)
    std = np.sqrt(np.maximum(ss / max(n, 1) - mean * mean, 1e-12))
    return mean.round(6).tolist(), std.round(6).tolist()
