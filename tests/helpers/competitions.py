"""Small Kaggle-shaped competitions built from real pixels (the embedded Fashion-MNIST images).

    zip_path, solution = build("cactus", tmp_path)     # a competition zip + the labels of its test ids

Each shape re-lays out the same real images the way a real competition ships them, as PNG/JPEG
files (RGB and grayscale, several sizes, string class names), with nested zips and 7z:

  digits    pixel CSV, test.csv without ids, sample `ImageId,Label` ids 1..N (Digit Recognizer)
  cifar     trainLabels.csv `id,label` with class names + train.7z / test.7z of RGB PNGs (CIFAR-10)
  cactus    train.csv `id,has_cactus`, ids carry `.jpg`, train.zip/test.zip, P(1) scored by ROC AUC
  seedlings train/<class name with spaces and hyphens>/*.png, sample `file,species` (Plant Seedlings)
  breeds    labels.csv `id,breed` + one probability column per class, scored by log loss (Dog Breeds)

The test images come from labelled training rows, so `solution.csv` knows every test label.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers.data import read_member

NAMES = ["T-shirt top", "Trouser", "Pull-over", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]
SHAPES = ("digits", "cifar", "cactus", "seedlings", "breeds")
LAYOUT = {"digits": "pixel_csv", "cifar": "labels_csv", "cactus": "labels_csv", "seedlings": "class_folders",
          "breeds": "labels_csv"}
METRIC = {"digits": "accuracy", "cifar": "accuracy", "cactus": "roc_auc", "seedlings": "accuracy",
          "breeds": "log_loss"}
_CACHE: dict[str, pd.DataFrame] = {}


def rows(n_train: int, n_test: int,
         classes: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real 28x28 images and labels: (train_x, train_y, test_x, test_y), class-balanced."""
    if "train" not in _CACHE:
        _CACHE["train"] = read_member("train.csv", nrows=6000)
    df = _CACHE["train"]
    if classes is not None:
        df = df[df["label"].isin(classes)]
    df = df.iloc[: n_train + n_test]
    x = df.drop(columns="label").to_numpy().astype(np.uint8).reshape(-1, 28, 28)
    y = df["label"].to_numpy()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _rgb(img: np.ndarray, seed: int, size: int) -> Image.Image:
    """A real grayscale image tinted by `seed` (not by class), upscaled to `size` px: an RGB photo stand-in."""
    tint = np.array([(seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256], np.float32) / 255
    rgb = (img[..., None].astype(np.float32) * (0.55 + 0.45 * tint)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").resize((size, size))


def _gray(img: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(img, "L").resize((size, size))


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jpg(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes | str]) -> bytes:
    """A zip archive of `members` (name -> content), in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _7z(members: dict[str, bytes], path: Path) -> bytes:
    import py7zr

    with py7zr.SevenZipFile(path, "w") as sz:
        for name, data in members.items():
            sz.writestr(data, name)
    return path.read_bytes()


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def build(shape: str, folder: Path, n_train: int = 400, n_test: int = 80,
          classes: list[int] | None = None) -> tuple[Path, Path]:
    """Write `<shape>.zip` and `<shape>_solution.csv` into `folder`; return both paths (`classes`: cifar's
    Fashion-MNIST classes, default all ten)."""
    folder.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes | str] = {}
    if shape == "digits":
        tx, ty, sx, sy = rows(n_train, n_test)
        train = pd.DataFrame(tx.reshape(len(tx), -1), columns=[f"pixel{i}" for i in range(784)])
        train.insert(0, "label", ty)
        ids = [str(i) for i in range(1, len(sx) + 1)]
        members = {"train.csv": _csv(train),
                   "test.csv": _csv(pd.DataFrame(sx.reshape(len(sx), -1), columns=[f"pixel{i}" for i in range(784)])),
                   "sample_submission.csv": _csv(pd.DataFrame({"ImageId": ids, "Label": 0}))}
        solution = pd.DataFrame({"ImageId": ids, "Label": sy})
    elif shape == "cifar":
        tx, ty, sx, sy = rows(n_train, n_test, classes)
        names = [n.lower().replace(" ", "_").replace("-", "_") for n in NAMES]
        train = {f"train/{i + 1}.png": _png(_rgb(x, i, 32)) for i, x in enumerate(tx)}
        test = {f"test/{i + 1}.png": _png(_rgb(x, i, 32)) for i, x in enumerate(sx)}
        members = {"trainLabels.csv": _csv(pd.DataFrame({"id": range(1, len(ty) + 1),
                                                         "label": [names[y] for y in ty]})),
                   "sampleSubmission.csv": _csv(pd.DataFrame({"id": range(1, len(sy) + 1), "label": names[0]})),
                   "train.7z": _7z(train, folder / "train.7z"), "test.7z": _7z(test, folder / "test.7z")}
        solution = pd.DataFrame({"id": range(1, len(sy) + 1), "label": [names[y] for y in sy]})
    elif shape == "cactus":
        tx, ty, sx, sy = rows(n_train, n_test, classes=[0, 6])  # T-shirt vs shirt: not trivial
        hexid = lambda i: f"{(i * 2654435761) % 2**64:016x}{i:08x}.jpg"  # noqa: E731
        tid, sid = [hexid(i) for i in range(len(tx))], [hexid(10_000 + i) for i in range(len(sx))]
        members = {"train.csv": _csv(pd.DataFrame({"id": tid, "has_cactus": (ty == 6).astype(int)})),
                   "sample_submission.csv": _csv(pd.DataFrame({"id": sid, "has_cactus": 0.5})),
                   "train.zip": zip_bytes({f"train/{i}": _jpg(_rgb(x, k, 32))
                                           for k, (i, x) in enumerate(zip(tid, tx))}),
                   "test.zip": zip_bytes({f"test/{i}": _jpg(_rgb(x, k, 32))
                                          for k, (i, x) in enumerate(zip(sid, sx))})}
        solution = pd.DataFrame({"id": sid, "has_cactus": (sy == 6).astype(int)})
    elif shape == "seedlings":
        tx, ty, sx, sy = rows(n_train, n_test)
        sizes = (28, 36, 44)
        train = {f"train/{NAMES[y]}/{i:05d}.png": _png(_gray(x, sizes[i % 3])) for i, (x, y) in enumerate(zip(tx, ty))}
        files = [f"{(i * 7919) % 10**9:09x}.png" for i in range(len(sx))]
        test = {f"test/{f}": _png(_gray(x, sizes[i % 3])) for i, (f, x) in enumerate(zip(files, sx))}
        members = {**train, **test, "sample_submission.csv": _csv(pd.DataFrame({"file": files, "species": NAMES[0]}))}
        solution = pd.DataFrame({"file": files, "species": [NAMES[y] for y in sy]})
    elif shape == "breeds":
        tx, ty, sx, sy = rows(n_train, n_test)
        breeds = [n.lower().replace(" ", "_").replace("-", "_") for n in NAMES]
        tid, sid = [f"{i:04x}d0g" for i in range(len(tx))], [f"{i:04x}7e5" for i in range(len(sx))]
        sizes = (40, 48)
        members = {"labels.csv": _csv(pd.DataFrame({"id": tid, "breed": [breeds[y] for y in ty]})),
                   "train.zip": zip_bytes({f"train/{i}.jpg": _jpg(_rgb(x, k, sizes[k % 2]))
                                      for k, (i, x) in enumerate(zip(tid, tx))}),
                   "test.zip": zip_bytes({f"test/{i}.jpg": _jpg(_rgb(x, k, sizes[k % 2]))
                                     for k, (i, x) in enumerate(zip(sid, sx))})}
        sample = pd.DataFrame({"id": sid, **{b: 1 / len(breeds) for b in breeds}})
        members["sample_submission.csv"] = _csv(sample)
        solution = pd.DataFrame({"id": sid, "breed": [breeds[y] for y in sy]})
    else:
        raise ValueError(shape)
    zip_path = folder / f"{shape}.zip"
    zip_path.write_bytes(zip_bytes(members))
    sol_path = folder / f"{shape}_solution.csv"
    solution.to_csv(sol_path, index=False)
    return zip_path, sol_path
