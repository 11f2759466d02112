"""`foldwise bench export`: what the export stage costs next to training, on an RGB competition at
a size of your choice, in one run.

    foldwise bench export                          # 8,000 training images, 64 px RGB
    foldwise bench export --size 64 --rows 2000    # a shorter run (export's fixed costs weigh more)

A copy of the project is made under bench/export-cost/ (same code and params). Its competition is
built from the embedded Fashion-MNIST images: each one tinted by its row number (not by its class)
and upscaled to `size` px RGB PNG, shipped as labels.csv + train.zip/test.zip, the layout of most
photo competitions; `foldwise init` writes its params (the recipe it fits, which may train at a
smaller size: `trained_size` says), as a user would. Then, timed one after the other: `dvc repro`
of everything before the folds (untimed), the folds (`train@*`), the ensemble stage, and the
export stage. Prints each time, export's time as a fraction of training's, export's
own steps (models/export.json `seconds`) and the variant it chose; writes bench/export.json.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.bench.project_copy import copy_project, fold_metrics, run_timed
from pipeline.core import paths
from pipeline.core.config import read_params
from pipeline.core.provenance import machine
from pipeline.distributed import dvcstate
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def _rgb_png(pixels: np.ndarray, seed: int, size: int) -> bytes:
    """A 28x28 grayscale image tinted by `seed` and upscaled to `size` px, as PNG bytes."""
    from PIL import Image

    tint = 0.55 + 0.45 * np.array([(seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256], np.float32) / 255
    rgb = (pixels.reshape(28, 28, 1).astype(np.float32) * tint).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").resize((size, size), Image.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def write_rgb_competition(embedded_zip: Path, dst: Path, rows: int, test_rows: int, size: int) -> None:
    """labels.csv `id,label` + train.zip/test.zip of `size`-px RGB PNGs + sample_submission.csv."""
    with zipfile.ZipFile(embedded_zip) as zf, zf.open("train.csv") as fh:
        df = pd.read_csv(fh, nrows=rows + test_rows)
    if len(df) < rows + test_rows:
        raise UserError(f"--rows {rows}: the embedded competition has {len(df) - test_rows} training images")
    labels = df.pop("label").to_numpy()
    pixels = df.to_numpy(np.uint8)
    ids = [f"img{i:06d}" for i in range(len(df))]
    members: dict[str, bytes | str] = {}
    for part, span in (("train", range(rows)), ("test", range(rows, rows + test_rows))):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as inner:
            for i in span:
                inner.writestr(f"{part}/{ids[i]}.png", _rgb_png(pixels[i], i, size))
        members[f"{part}.zip"] = buf.getvalue()
    members["labels.csv"] = pd.DataFrame({"id": ids[:rows], "label": labels[:rows]}).to_csv(index=False)
    members["sample_submission.csv"] = pd.DataFrame({"id": ids[rows:], "label": 0}).to_csv(index=False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for name, data in members.items():
            out.writestr(name, data)


# what the bench shows of the dvc runs it times: each stage's start and each fold's epochs
PROGRESS = r"Running stage|fold \d+ epoch \d+|fold \d+: best epoch"


def _epochs_run(project: Path) -> list[int]:
    """Each fold's epochs as trained (models/folds/fold<k>/metrics.json): init's recipe sets a budget
    in steps, so train.epochs alone does not say."""
    return [m["epochs_run"] for m in fold_metrics(project).values()]


def bench_export(size: int = 64, rows: int = 8000, test_rows: int = 1000, threads: int = 2, root: Path = Path("."),
                 workdir: Path = paths.BENCH / "export-cost", keep: bool = False) -> dict:
    """Build the project copy and its competition, then time the folds, the ensemble and the export."""
    if size < 8 or rows < 100 or test_rows < 1:
        raise UserError(f"--size must be at least 8 and --rows at least 100, got {size}, {rows}")
    shutil.rmtree(workdir, ignore_errors=True)
    project = workdir / "project"
    copy_project(root, project, None, None)
    source = root / read_params(root / "params.yaml")["download"]["path"]
    _logger.info("bench export: writing a %d-px RGB competition of %d training images", size, rows)
    write_rgb_competition(source, project / "data/rgb.zip", rows, test_rows, size)
    foldwise = str(Path(sys.executable).parent / "foldwise")
    run_timed([foldwise, "init", "data/rgb.zip"], project, threads)
    stages = dvcstate.fold_stages(project)
    _logger.info("bench export: preparing the data (untimed)")
    dvcstate.reproduce_upstream(project, stages)
    times, dvc = {}, dvcstate.dvc_bin()
    # the folds alone, then `dvc repro ensemble` and `dvc repro export` (with the stages between: pseudo, distill)
    for step, args in (("train", ["--single-item", *(s.name for s in stages)]), ("ensemble", ["ensemble"]),
                       ("export", ["export"])):
        load = os.getloadavg()[0]
        _logger.info("bench export: dvc repro %s", " ".join(args))
        times[step] = round(run_timed([dvc, "repro", *args], project, threads, show=PROGRESS), 1)
        times[f"{step}_load_before"] = round(load, 2)
    report = json.loads((project / paths.EXPORT_JSON).read_text())
    meta = json.loads(paths.Prepared(project / paths.PREPARED).meta.read_text())
    result = {"cpu": machine(), "size": size, "trained_size": meta["image_shape"][:2],
              "channels": meta["image_shape"][2], "train_rows": rows,
              "folds": len(stages), "steps": read_params(project / "params.yaml")["train"]["steps"],
              "epochs_run": _epochs_run(project),
              "threads": threads, "seconds": times, "export_vs_train": round(times["export"] / times["train"], 4),
              "export_steps": report["seconds"], "predict_graph": report["predict_graph"],
              "oof_score": {g: report[g].get("oof_score") for g in paths.GRAPH_FILES if g in report},
              "load_after": [round(x, 2) for x in os.getloadavg()]}
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result

