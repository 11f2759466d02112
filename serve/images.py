"""The ONE image pipeline: decode -> EXIF orientation -> channels -> resize, to uint8 [H, W, C].

    spec = ImageSpec(height=224, width=224, channels=3, resize="stretch")
    pixels = load_image("train/cat.1.jpg", spec)          # uint8 [224, 224, 3]
    batch = load_images(paths, spec, workers=4)           # uint8 [N, 224, 224, 3], decoded in threads

`prepare` (training data) and `foldwise predict` / the HTTP server (held-out data) both call these
functions, so an image file gives byte-identical pixels in training and in serving (no
train/serve skew). Rules, in order:
  1. Pillow decodes the file; more than `spec.max_pixels` pixels is refused before decoding
     (decompression bombs), as is a truncated or unreadable file. Large JPEGs are decoded at a
     reduced DCT scale (`draft`) that still leaves at least the target size.
  2. EXIF orientation is applied (`ImageOps.exif_transpose`).
  3. Channels: 16-bit grayscale is scaled to 8 bits (v / 257); images with transparency (RGBA,
     LA, palette with a transparent colour) are composited onto black; then converted to `L`
     (1 channel, ITU-R 601 luma) or `RGB` (3 channels; grayscale is replicated).
  4. Resize to (height, width) with bilinear filtering (antialiased when shrinking): `stretch`
     ignores the aspect ratio, `crop` fills the target and cuts the centre, `pad` fits the whole
     image and pads with black. Images already at the target size are left untouched.
Pixel arrays (a pixel CSV's rows) enter at step 3 through `convert_array`.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from serve.errors import TooLarge, UnreadableImage, UserError, first_line

RESIZE_MODES = ("stretch", "crop", "pad")
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (0.25 GiB of 24-bit pixels)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class ImageSpec:
    """What every image becomes: height x width x channels uint8, resized by `resize`."""
    height: int
    width: int
    channels: int
    resize: str = "stretch"
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageSpec:
        return cls(**{k: d[k] for k in ("height", "width", "channels", "resize", "max_pixels") if k in d})


def _pil():
    from PIL import Image, ImageOps  # Pillow loads only where images are read
    return Image, ImageOps


def _to_channels(im, channels: int):
    Image, _ = _pil()
    if im.mode in _SIXTEEN_BIT:
        arr = np.asarray(im, dtype=np.int64)
        im = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def _resize(im, spec: ImageSpec):
    Image, ImageOps = _pil()
    size = (spec.width, spec.height)
    if im.size == size:
        return im
    method = Image.Resampling.BILINEAR
    if spec.resize == "crop":
        return ImageOps.fit(im, size, method=method, centering=(0.5, 0.5))
    if spec.resize == "pad":
        return ImageOps.pad(im, size, method=method, color=0, centering=(0.5, 0.5))
    return im.resize(size, method)


def _finish(im, spec: ImageSpec) -> np.ndarray:
    arr = np.asarray(_resize(_to_channels(im, spec.channels), spec), dtype=np.uint8)
    return arr.reshape(spec.height, spec.width, spec.channels)


def load_image(source: str | os.PathLike | bytes, spec: ImageSpec, name: str | None = None) -> np.ndarray:
    """Decode one image file (or its bytes) into uint8 `[H, W, C]` following `spec`.

    UserError (naming `name`, default the path) for an unreadable, truncated or oversized image."""
    Image, ImageOps = _pil()
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    Image.MAX_IMAGE_PIXELS = spec.max_pixels  # Pillow's own bomb check at open(), beyond 2x this
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our check below says it better
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > spec.max_pixels:
                    raise TooLarge(f"{label}: image is {w}x{h} = {w * h:,} pixels, above the limit of "
                                    f"{spec.max_pixels:,} (a decompression bomb?); refusing it")
                if im.format == "JPEG":
                    side = max(spec.height, spec.width)
                    im.draft(im.mode, (side, side))
                im.load()
                return _finish(ImageOps.exif_transpose(im), spec)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{label}: file not found") from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "more pixels than allowed"
        raise TooLarge(f"{label}: image has {size}, above the limit of {spec.max_pixels:,} "
                        "(a decompression bomb?); refusing it") from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = first_line(exc, 160)
        reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", reason)  # bytes given: no object repr
        raise UnreadableImage(f"{label}: not a readable image ({reason})") from None


def convert_array(pixels: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """A uint8 image `[h, w, c]` (c 1 or 3; e.g. a pixel CSV row) through steps 3-4 of `spec`."""
    if pixels.shape == spec.shape:
        return pixels
    Image, _ = _pil()
    im = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, "L" if pixels.shape[-1] == 1 else "RGB")
    return _finish(im, spec)


def convert_arrays(images: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """`convert_array` over a batch `[N, h, w, c]` (a no-op when already at the target shape)."""
    if images.shape[1:] == spec.shape:
        return images
    out = np.empty((len(images), *spec.shape), np.uint8)
    for i, img in enumerate(images):
        out[i] = convert_array(img, spec)
    return out


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Threads for decoding: one per usable core (Pillow releases the GIL while it decodes and resizes)."""
    return usable_cores()


def load_images(paths: Sequence[str | os.PathLike], spec: ImageSpec, workers: int | None = None,
                out: np.ndarray | None = None, names: Sequence[str] | None = None,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Decode many files into `out` (or a new array) `[N, H, W, C]`, in order, with `workers` threads.

    The first bad file (in file order) raises its UserError; `progress(n)` is called as images finish."""
    if out is None:
        out = np.empty((len(paths), *spec.shape), np.uint8)
    labels = list(names) if names is not None else [str(p) for p in paths]
    workers = workers or default_workers()

    def one(i: int) -> int:
        out[i] = load_image(paths[i], spec, labels[i])
        return i

    if workers <= 1 or len(paths) < 2:
        for i in range(len(paths)):
            one(i)
            if progress:
                progress(1)
        return out
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), 1024):  # bounded in-flight work; errors surface in file order
            for _ in pool.map(one, range(start, min(start + 1024, len(paths)))):
                if progress:
                    progress(1)
    return out


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
