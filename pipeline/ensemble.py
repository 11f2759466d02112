"""Stage `ensemble`: gather the folds' out-of-fold predictions and score them.

    foldwise ensemble            # reads params.yaml `ensemble`, models/folds/, data/prepared/

Writes `metrics.json` (DVC metrics: OOF accuracy and log-loss overall and per fold, fold mean
and std) and `models/ensemble.json` (method, folds, weights) for the export stage.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from pipeline.config import EnsembleParams, load_section
from serve.atomic import write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
PREPARED = Path("data/prepared")
MODELS = Path("models/folds")


def fold_dirs(models: Path, n_folds: int) -> dict[int, Path]:
    """{fold: dir} of the trained folds under `models`; stale dirs of folds that no longer exist fail."""
    found = {}
    for d in sorted(models.glob("fold*")):
        m = re.fullmatch(r"fold(\d+)", d.name)
        if not m or not d.is_dir():
            continue
        k = int(m.group(1))
        if k >= n_folds:
            raise UserError(f"{d}: fold {k} is not a fold of data/prepared/folds.csv ({n_folds} folds); remove it")
        found[k] = d
    if not found:
        raise UserError(f"{models}: no trained folds (run the train stages first)")
    return found


def run(params: EnsembleParams, prepared: Path = PREPARED, models: Path = MODELS,
        metrics_path: Path = Path("metrics.json"), ensemble_path: Path = Path("models/ensemble.json")) -> dict:
    meta = json.loads((prepared / "meta.json").read_text())
    labels = np.load(prepared / "train_labels.npy")
    dirs = fold_dirs(models, meta["n_folds"])
    n_classes = len(meta["classes"])
    oof = np.full((len(labels), n_classes), np.nan, dtype=np.float32)
    per_fold = {}
    for k, d in dirs.items():
        rows = np.load(d / "oof_rows.npy")
        probs = np.load(d / "oof_probs.npy")
        if probs.shape != (len(rows), n_classes):
            raise UserError(f"{d / 'oof_probs.npy'}: shape {probs.shape}, expected {(len(rows), n_classes)}")
        oof[rows] = probs
        y = labels[rows]
        per_fold[str(k)] = {
            "accuracy": round(float((probs.argmax(1) == y).mean()), 6),
            "logloss": round(float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1)).mean()), 6),
            "best_epoch": json.loads((d / "metrics.json").read_text())["best_epoch"],
        }
    covered = ~np.isnan(oof[:, 0])
    if covered.sum() < len(labels):
        _logger.warning("OOF covers %d of %d rows: folds %s of %d trained", covered.sum(), len(labels),
                        sorted(dirs), meta["n_folds"])
    y, p = labels[covered], oof[covered]
    accs = np.array([f["accuracy"] for f in per_fold.values()])
    metrics = {
        "oof_accuracy": round(float((p.argmax(1) == y).mean()), 6),
        "oof_logloss": round(float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1)).mean()), 6),
        "oof_coverage": round(float(covered.mean()), 6),
        "fold_accuracy_mean": round(float(accs.mean()), 6),
        "fold_accuracy_std": round(float(accs.std()), 6),
        "method": params.method,
        "folds": per_fold,
    }
    folds = sorted(dirs)
    write_json(ensemble_path, {"method": params.method, "folds": folds,
                               "weights": [round(1.0 / len(folds), 12)] * len(folds),
                               "fold_dirs": [str(dirs[k]) for k in folds]})
    write_json(metrics_path, metrics)
    _logger.info("OOF accuracy %.4f (folds %.4f ± %.4f)", metrics["oof_accuracy"], accs.mean(), accs.std())
    return metrics


def main() -> None:
    run(load_section("ensemble", EnsembleParams))
