"""Stage `ensemble`: score ensembling candidates on out-of-fold (OOF) predictions and pick one
(the rules: pipeline/evaluation/ensemble.py).

    python -m pipeline.stages.ensemble        # what dvc.yaml runs; by hand: foldwise ensemble

Reads models/folds/ (or a fold's last pseudo-label round, models/pseudo/fold<k>/) and
data/prepared/. Writes metrics.json (DVC metrics: per fold, OOF overall,
every candidate, the choice, the calibration decision of pipeline/evaluation/calibration.py),
models/ensemble.json (the recipe the export stage builds) and
models/oof_logits.npy ([views, rows, classes], for the report).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.config import load_section
from pipeline.core.console import run_stage
from pipeline.evaluation.calibration import cross_fitted, decide
from pipeline.evaluation.ensemble import choose, combine, softmax
from pipeline.evaluation.metrics import from_meta, scores
from pipeline.modeling.ensemble import EnsembleParams, oof_view_logits
from serve.atomic import atomic_path, write_json

_logger = logging.getLogger(__spec__.name if __spec__ else __name__)  # pipeline.stages.<name>, also under -m


def _summary(metric_name: str, candidates: dict, chosen: str, per_fold: dict, covered: np.ndarray) -> dict:
    """metrics.json: the chosen candidate's OOF scores, the folds' spread, every candidate."""
    accs = np.array([f["accuracy"] for f in per_fold.values()])
    fold_scores = np.array([f["score"] for f in per_fold.values()])
    plain = candidates["mean_prob"] if "mean_prob" in candidates else next(iter(candidates.values()))
    return {
        "metric": metric_name,
        "oof_score": candidates[chosen]["score"],
        "oof_accuracy": candidates[chosen]["accuracy"],
        "oof_logloss": candidates[chosen]["logloss"],
        "oof_score_no_tta": plain["score"],
        "oof_accuracy_no_tta": plain["accuracy"],
        "oof_coverage": round(float(covered.mean()), 6),
        "fold_score_mean": round(float(fold_scores.mean()), 6),
        "fold_score_std": round(float(fold_scores.std()), 6),
        "fold_accuracy_mean": round(float(accs.mean()), 6),
        "fold_accuracy_std": round(float(accs.std()), 6),
        "method": chosen,
        "folds": per_fold,
        "candidates": candidates,
    }


def _calibration(params: EnsembleParams, metric, positive, logits: np.ndarray, views: list[str], recipe: dict,
                 labels: np.ndarray, dirs: dict, covered: np.ndarray) -> dict:
    """Temperature scaling of the chosen candidate, decided by its cross-fitted OOF score (calibration.py)."""
    if params.calibrate == "off":
        return {"applies": False, "kept": False, "temperature": 1.0, "why": "ensemble.calibrate: off"}
    groups = np.full(len(labels), -1)
    for k, d in dirs.items():
        groups[np.load(paths.FoldFiles(d).oof_rows)] = k
    sub = logits[[views.index(v) for v in recipe["views"]]][:, covered]
    probs, y, g = combine(sub, recipe["combine"], np.asarray(recipe["view_weights"])), labels[covered], groups[covered]
    decision = decide(metric, probs, y, g, positive)
    if decision["kept"]:
        decision["scores"] = scores(metric, y, cross_fitted(probs, y, g), positive)
    return decision


def _pseudo_summary(dirs: dict, folds: Path, labels: np.ndarray, metric, positive) -> dict | None:
    """Each fold's pseudo-label rounds, and round 0's OOF score (no TTA) beside the last round's."""
    pseudo = {k: json.loads((d / "rounds.json").read_text()) for k, d in dirs.items() if (d / "rounds.json").is_file()}
    if not pseudo:
        return None
    rows, probs = [], []
    for k in pseudo:
        f = paths.FoldFiles(paths.fold_dir(k, folds))
        rows.append(np.load(f.oof_rows))
        probs.append(np.load(f.oof_probs))
    r, p = np.concatenate(rows), np.concatenate(probs)
    return {"rounds": max(v["rounds"] for v in pseudo.values()),
            "round0_oof_score_no_tta": round(metric.score(labels[r], p, positive), 6),
            "round0_oof_accuracy_no_tta": round(float((p.argmax(1) == labels[r]).mean()), 6),
            "folds": {str(k): v["history"] for k, v in pseudo.items()}}


def run(params: EnsembleParams, prepared: Path = paths.PREPARED, folds: Path = paths.FOLDS,
        metrics_path: Path = paths.METRICS_JSON, ensemble_path: Path = paths.ENSEMBLE_JSON,
        logits_path: Path = paths.OOF_LOGITS, pseudo: Path = paths.PSEUDO) -> dict:
    files = paths.Prepared(prepared)
    meta = json.loads(files.meta.read_text())
    metric, positive = from_meta(meta), meta.get("positive")
    labels = np.load(files.train_labels)
    images = np.load(files.train_images, mmap_mode="r")
    dirs = paths.final_fold_dirs(meta["n_folds"], folds, pseudo)  # a fold's last pseudo-label round, if any
    views = ["none", *params.tta]
    logits = oof_view_logits(dirs, images, views, len(meta["classes"]), params.batch_size)
    covered = ~np.isnan(logits[0, :, 0])
    if covered.sum() < len(labels):
        _logger.warning("OOF covers %d of %d rows: folds %s of %d trained", covered.sum(), len(labels),
                        sorted(dirs), meta["n_folds"])
    per_fold = {}
    for k, d in dirs.items():
        fold = paths.FoldFiles(d)
        rows = np.load(fold.oof_rows)
        per_fold[str(k)] = {**scores(metric, labels[rows], softmax(logits[0, rows]), positive),
                            "best_epoch": json.loads(fold.metrics.read_text())["best_epoch"]}
    candidates, recipes, chosen = choose(logits[:, covered], labels[covered], views, params.methods, metric, positive)
    metrics = _summary(metric.name, candidates, chosen, per_fold, covered)
    metrics["calibration"] = _calibration(params, metric, positive, logits, views, recipes[chosen], labels,
                                          dirs, covered)
    if metrics["calibration"]["kept"]:  # the cross-fitted scores: no row's temperature was fitted on that row
        metrics.update({f"oof_{k}": v for k, v in metrics["calibration"].pop("scores").items()})
    metrics["calibration"].pop("scores", None)
    pseudo_summary = _pseudo_summary(dirs, folds, labels, metric, positive)
    if pseudo_summary is not None:
        metrics["pseudo_labels"] = pseudo_summary
    trained = sorted(dirs)
    write_json(ensemble_path, {"method": chosen, **recipes[chosen],
                               "temperature": metrics["calibration"]["temperature"], "folds": trained,
                               "fold_weights": [round(1.0 / len(trained), 12)] * len(trained),
                               "fold_dirs": [str(dirs[k]) for k in trained], "all_views": views})
    with atomic_path(logits_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, logits)
    write_json(metrics_path, metrics)
    _logger.info("OOF %s %.4f (accuracy %.4f) with %s (folds %.4f ± %.4f); candidates: %s", metric.name,
                 metrics["oof_score"], metrics["oof_accuracy"], chosen, metrics["fold_score_mean"],
                 metrics["fold_score_std"], ", ".join(f"{n} {c['score']:.4f}" for n, c in candidates.items()))
    return metrics


def main() -> dict:
    """Score the candidates of params.yaml `ensemble` on the OOF predictions and record the best."""
    return run(load_section("ensemble", EnsembleParams))


if __name__ == "__main__":
    run_stage(main)
