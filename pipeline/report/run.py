"""What the report shows, read once from the run's files: `Run`, loaded by `load_run`.

    run = load_run(Inputs())       # paths relative to the project's root (the report stage, the notebook)

Every section of the HTML page, the PDF and the notebook is drawn from a `Run`; the only files a
section reads itself are the folders of `foldwise tune` and `foldwise ladder` (tune/report/,
ladder/) and, for what the network learned, the first fold's model and validation rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.report.tables import labelled_test_scores, oof_probabilities, read_json
from serve.errors import UserError


@dataclass(frozen=True)
class Inputs:
    """What the report reads (dvc.yaml's deps of the report stage)."""
    prepared: Path = paths.PREPARED
    models: Path = paths.MODELS
    metrics: Path = paths.METRICS_JSON
    receipt: Path = paths.RECEIPT
    bench: Path = paths.BENCH_INFER
    source_json: Path = paths.SOURCE_JSON
    history: Path = paths.HISTORY
    tune: Path = paths.TUNE_REPORT
    ladder: Path = paths.LADDER


@dataclass
class Oof:
    """The chosen ensemble's OOF predictions on the rows it covers."""
    rows: np.ndarray      # training rows with an OOF prediction
    labels: np.ndarray    # every training row's class
    probs: np.ndarray     # [N, C] (NaN where not covered)
    pred: np.ndarray      # predicted class of `rows`
    names: list[str]

    @property
    def confusion(self) -> np.ndarray:
        n = len(self.names)
        return np.bincount(self.labels[self.rows] * n + self.pred, minlength=n * n).reshape(n, n)


@dataclass
class Run:
    """One run of the pipeline, as the report sees it."""
    inputs: Inputs
    meta: dict
    metrics: dict
    oof: Oof
    images: np.ndarray                  # training images [N, H, W, C] (memory-mapped)
    folds: pd.DataFrame                 # the fold table
    curves: dict[int, pd.DataFrame]     # per-epoch curves by fold
    best_epoch: dict[int, int]
    fold_configs: dict[int, dict]       # each fold's config.json (params, device, precision)
    test_scores: dict | None            # each fold and the ensemble on labelled test rows (a solution file)
    receipt: dict | None
    export: dict | None
    bench: dict | None
    history: dict

    @property
    def metric(self) -> str:
        return self.metrics.get("metric", "accuracy")


def _folds(metrics: dict, models: Path) -> tuple[pd.DataFrame, dict, dict, dict]:
    """(fold table, curves by fold, best epoch by fold, config by fold)."""
    metric = metrics.get("metric", "accuracy")
    fold_rows, curves, best, configs = [], {}, {}, {}
    for k in sorted(int(f) for f in metrics["folds"]):
        files = paths.FoldFiles(paths.fold_dir(k, models / paths.FOLDS.name))
        fm = read_json(files.metrics) or {}
        configs[k] = read_json(files.config) or {}
        curve_path = paths.curves_csv(k, models / paths.CURVES.name)
        if curve_path.exists():
            curves[k] = pd.read_csv(curve_path)
        scored = metrics["folds"][str(k)]
        best[k] = scored.get("best_epoch")
        fold_rows.append({"fold": k, "seed": fm.get("seed"), "best epoch": best[k],
                          **({metric: scored["score"]} if metric != "accuracy" else {}),
                          "accuracy": scored["accuracy"], "log-loss": scored["logloss"],
                          "train s": fm.get("train_seconds"), "images/s": fm.get("train_images_per_second")})
    return pd.DataFrame(fold_rows), curves, best, configs


def load_run(inputs: Inputs = Inputs()) -> Run:
    """Read the run's files; a missing one the report cannot do without is one line (UserError)."""
    files = paths.Prepared(inputs.prepared)
    try:
        meta = json.loads(files.meta.read_text())
        metrics = json.loads(inputs.metrics.read_text())
        labels = np.load(files.train_labels)
        images = np.load(files.train_images, mmap_mode="r")
        probs = oof_probabilities(inputs.models / paths.ENSEMBLE_JSON.name, inputs.models / paths.OOF_LOGITS.name)
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found (run the pipeline up to the ensemble stage first)") from None
    rows = np.flatnonzero(~np.isnan(probs[:, 0]))
    oof = Oof(rows, labels, probs, probs[rows].argmax(1), [str(n) for n in (meta["class_names"] or meta["classes"])])
    folds, curves, best, configs = _folds(metrics, inputs.models)
    return Run(inputs, meta, metrics, oof, images, folds, curves, best, configs,
               labelled_test_scores(meta, inputs.prepared, inputs.models, inputs.source_json),
               read_json(inputs.receipt), read_json(inputs.models / paths.EXPORT_JSON.name), read_json(inputs.bench),
               read_json(inputs.history) or {})
