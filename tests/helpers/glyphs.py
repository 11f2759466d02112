"""A handwritten-digit-like competition where a horizontal flip changes the class.

    zip_path, solution = build_glyphs(tmp_path, n_train=700, n_test=70)

28x28 grayscale glyphs in Digit Recognizer's layout (pixel CSV, sample `ImageId,Label`): the
digits 0-9 and the letters b, d, p, q (two mirror pairs), drawn with Pillow's font at random
sizes, offsets, rotations and stroke widths, blurred and noised. A model trained with flips
sees a flipped b labelled b and a d labelled d that look alike: flips must hurt here.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont

GLYPHS = list("0123456789bdpq")


def _glyph(char: str, rng: np.random.Generator) -> np.ndarray:
    font = ImageFont.load_default(size=int(rng.integers(17, 24)))
    im = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(im).text((14 + rng.integers(-3, 4), 14 + rng.integers(-3, 4)), char, fill=255, font=font,
                            anchor="mm", stroke_width=int(rng.integers(0, 2)), stroke_fill=255)
    im = im.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR).filter(ImageFilter.GaussianBlur(0.6))
    x = np.asarray(im, np.float32) + rng.normal(0, 12, (28, 28))
    return x.clip(0, 255).astype(np.uint8)


def _rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % len(GLYPHS)
    rng.shuffle(labels)
    return np.stack([_glyph(GLYPHS[y], rng) for y in labels]).reshape(n, -1), labels


def build_glyphs(folder: Path, n_train: int = 700, n_test: int = 70, seed: int = 0) -> tuple[Path, Path]:
    """Write `glyphs.zip` and `glyphs_solution.csv` into `folder`; return both paths."""
    rng = np.random.default_rng(seed)
    tx, ty = _rows(n_train, rng)
    sx, sy = _rows(n_test, rng)
    pixels = [f"pixel{i}" for i in range(784)]
    train = pd.DataFrame(tx, columns=pixels)
    train.insert(0, "label", ty)
    ids = list(range(1, n_test + 1))
    folder.mkdir(parents=True, exist_ok=True)
    zip_path, sol_path = folder / "glyphs.zip", folder / "glyphs_solution.csv"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, df in (("train.csv", train), ("test.csv", pd.DataFrame(sx, columns=pixels)),
                         ("sample_submission.csv", pd.DataFrame({"ImageId": ids, "Label": 0}))):
            buf = io.StringIO()
            df.to_csv(buf, index=False)
            zf.writestr(name, buf.getvalue())
    pd.DataFrame({"ImageId": ids, "Label": sy}).to_csv(sol_path, index=False)
    return zip_path, sol_path
