"""Input builders for tests/e2e/test_bad_inputs.py: each writes one bad input (a broken competition,
an unsafe archive, a bad image, a bad submission, bad params) into a case's folder.

    Case(argv=["prepare"], needles=["train.csv", "row 7"], files=project(mutate=broken("train.csv", ...)))
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import write_zip

CLASSES = "[a, b, c, d, e, f, g, h, i, j]"
PROJECT_PARAMS = (f"prepare:\n  layout: pixel_csv\n  class_names: {CLASSES}\n"
                  "  classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
                  "  n_folds: 2\n")


@dataclass
class Case:
    argv: list[str]                      # `foldwise` arguments, run in the case's folder
    needles: list[str]                   # fragments of the one error line
    files: Callable[[Path, dict], None]  # writes the inputs into the folder
    env: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- input builders


def _frames(ctx: dict) -> dict[str, pd.DataFrame]:
    return {k: v.copy() for k, v in ctx["slice"].items()}


def _set(df: pd.DataFrame, row: int, col: str, value) -> pd.DataFrame:
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


def project(params: str = PROJECT_PARAMS, mutate: Callable[[dict], None] | None = None,
            archive: Callable[[Path, dict], None] | None = None) -> Callable[[Path, dict], None]:
    """A project folder: params.yaml and data/raw/competition.zip (the real slice, optionally broken)."""
    def build(d: Path, ctx: dict) -> None:
        (d / "params.yaml").write_text(params)
        (d / "data/raw").mkdir(parents=True)
        if archive is not None:
            archive(d / "data/raw/competition.zip", ctx)
            return
        frames = _frames(ctx)
        if mutate is not None:
            mutate(frames)
        write_zip(d / "data/raw/competition.zip", frames)
    return build


def broken(name: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[dict], None]:
    def mutate(frames: dict) -> None:
        frames[name] = fn(frames[name])
    return mutate


def raw_zip(members: dict[str, bytes | str], symlink: str | None = None) -> Callable[[Path, dict], None]:
    def build(path: Path, ctx: dict) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
            if symlink:
                info = zipfile.ZipInfo(symlink)
                info.external_attr = (0o120777 << 16)
                zf.writestr(info, "/etc/passwd")
    return build


def nested_unsafe(path: Path, ctx: dict) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("../train.csv", "x")
    frames = _frames(ctx)
    write_zip(path, {"test.csv": frames["test.csv"], "sample_submission.csv": frames["sample_submission.csv"],
                     "train.csv.zip": inner.getvalue()})


def zip_bomb(path: Path, ctx: dict) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train.csv", b"0" * (40 << 20))


def image_comp(kind: str = "labels_csv", labels: dict[str, str] | None = None, images: dict[str, bytes] | None = None,
               sample: str | None = None, drop: tuple[str, ...] = (), dirs: tuple[str, ...] = ()) -> Callable:
    """A small image competition (real pixels as PNG files): labels CSV + train/ + test/, or class
    folders; `labels`, `images`, `sample` and `drop` change it, `dirs` adds empty folders."""
    def build(path: Path, ctx: dict) -> None:
        from PIL import Image
        x = ctx["slice"]["train.csv"].drop(columns="label").to_numpy().astype(np.uint8).reshape(-1, 28, 28)
        png = lambda img: (lambda b: (Image.fromarray(img).save(b, format="PNG"), b.getvalue())[1])(io.BytesIO())  # noqa: E731
        members: dict[str, bytes | str] = {}
        names = ["coat", "bag"]
        if kind == "labels_csv":
            rows = {f"t{i}": names[i % 2] for i in range(8)}
            rows.update(labels or {})
            members["labels.csv"] = "id,label\n" + "".join(f"{k},{v}\n" for k, v in rows.items())
            members.update({f"train/t{i}.png": png(x[i]) for i in range(8)})
        else:
            members.update({f"train/{names[i % 2]}/t{i}.png": png(x[i]) for i in range(8)})
        members.update({f"test/s{i}.png": png(x[20 + i]) for i in range(4)})
        members["sample_submission.csv"] = sample or "id,label\n" + "".join(f"s{i},coat\n" for i in range(4))
        members.update(images or {})
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                if name not in drop:
                    zf.writestr(name, data)
            for d in dirs:
                zf.writestr(zipfile.ZipInfo(d), b"")
    return build


def _truncated_png(ctx: dict) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(buf, format="PNG")
    return buf.getvalue()[:200]


IMG_PARAMS = "prepare:\n  layout: auto\n  n_folds: 2\n"


def predict_files(csv: Callable[[pd.DataFrame], pd.DataFrame] | None = None, npy: np.ndarray | None = None,
                  images: dict[str, np.ndarray | bytes] | None = None, links: dict[str, str] | None = None,
                  extra: dict[str, str] | None = None) -> Callable[[Path, dict], None]:
    """model.onnx (the tiny ensemble) plus a test.csv (optionally broken), an .npy or an image folder."""
    def build(d: Path, ctx: dict) -> None:
        shutil.copy2(ctx["onnx"], d / "model.onnx")
        test = ctx["slice"]["test.csv"].iloc[:12].copy()
        (csv or (lambda df: df))(test).to_csv(d / "test.csv", index=False)
        pd.DataFrame({"id": test["id"]}).to_csv(d / "ids.csv", index=False)
        pd.DataFrame({"id": test["id"], "label": "0"}).to_csv(d / "sample.csv", index=False)
        if npy is not None:
            np.save(d / "x.npy", npy)
        if images is not None:
            from PIL import Image
            (d / "imgs").mkdir()
            for name, img in images.items():
                if isinstance(img, bytes):
                    (d / "imgs" / name).write_bytes(img)
                else:
                    Image.fromarray(img).save(d / "imgs" / name)
        for name, text in (extra or {}).items():
            (d / name).write_text(text)
        for link, target in (links or {}).items():
            if target.startswith("hard:"):
                os.link(d / target[5:], d / link)
            else:
                os.symlink(target, d / link)
    return build


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` grayscale pixels but holds almost no data (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


CODE_PARAMS = "submit:\n  mode: code\n  competition: some-competition\n  dataset: me/some-competition-model\n" \
              "  kernel: me/some-competition-infer\n"


def submission_project(sub: str, params: str = "") -> Callable[[Path, dict], None]:
    """A prepared project (meta.json, sample submission) with `sub` as submissions/submission.csv."""
    def build(d: Path, ctx: dict) -> None:
        (d / "params.yaml").write_text(params or "submit:\n  enabled: false\n")
        (d / "data/prepared").mkdir(parents=True)
        classes = [str(i) for i in range(10)]
        (d / "data/prepared/meta.json").write_text(json.dumps({
            "classes": classes, "id_column": "id", "target_column": "label",
            "submission": {"kind": "label", "id_column": "id", "columns": ["label"], "classes": classes}}))
        (d / "data/prepared/sample_submission.csv").write_text("id,label\n0,0\n1,0\n2,0\n")
        (d / "submissions").mkdir()
        (d / "submissions/submission.csv").write_text(sub)
    return build


def files(contents: dict[str, str]) -> Callable[[Path, dict], None]:
    def build(d: Path, ctx: dict) -> None:
        for name, text in contents.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
    return build


def train_params(train: str) -> Callable[[Path, dict], None]:
    return files({"params.yaml": f"train:\n{train}"})


PRED = ["predict", "--model", "model.onnx"]
SUB_OK = "id,label\n0,1\n1,2\n2,3\n"
SOL = "id,label\n0,1\n1,2\n2,3\n"
