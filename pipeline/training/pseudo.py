"""Pseudo-label rounds of one fold: retrain fold k with the test images, labelled by fold k's own
model of the round before, so fold k's validation rows stay unseen by every model in its chain.

    metrics = run_pseudo_fold(params, fold=0, seed=0)      # the pseudo@k stage

Why it is honest: fold k's round-0 model trained on every row outside fold k and nothing else; its
predictions on the test images are therefore a function of those rows alone, and so is round 1,
trained on the same rows plus those test images; round r repeats the argument. Fold k's
validation score after any round is as out-of-fold as round 0's. (Labelling the test images with
the full ensemble would not be: four of its five models trained on fold k's rows, and what they
learnt about those rows would reach fold k's model through the test images' labels.
tests/e2e/test_honesty.py measures that leak.)

Writes models/pseudo/fold<k>/: the last round's fold files (FoldFiles, as models/folds/fold<k>/),
its curves.csv, and rounds.json (each round's validation score, pseudo-labelled images, the round-0
model it started from). With `train.pseudo_labels.rounds: 0` only rounds.json, saying so: the
ensemble then takes models/folds/fold<k>/ (paths.final_fold_dirs).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core import paths
from serve.atomic import sha256_file, write_json
from serve.errors import UserError

if TYPE_CHECKING:  # torch is imported only where a round is trained (pseudo@k with rounds 0 stays light)
    from pipeline.training.params import TrainParams
    from pipeline.training.targets import TargetPlan

_logger = logging.getLogger(__name__)


def load_test_images(prepared: Path, why: str) -> np.ndarray:
    """data/prepared/test_images.npy; UserError naming `why` when the competition has none."""
    path = paths.Prepared(prepared).test_images
    if not path.is_file():
        raise UserError(f"{why}: {path} not found: this competition has no test images to label")
    images = np.load(path, mmap_mode="r")
    if len(images) == 0:
        raise UserError(f"{why}: {path} holds no images: this competition has no test images to label")
    return images


def teacher_probs(model_dir: Path, images: np.ndarray, params: TrainParams, batch_size: int = 512) -> np.ndarray:
    """The softmax probabilities of a trained fold (its model.pt) on uint8 images, no augmentation."""
    from pipeline.modeling.classifier import load_fold_model
    from pipeline.modeling.inference import predict_probs
    from pipeline.training.hardware import resolve_device, resolve_precision

    device = resolve_device(params.device)
    model, _ = load_fold_model(paths.FoldFiles(model_dir).model)
    amp_dtype, _ = resolve_precision(params.amp, device)
    return predict_probs(model.to(device), np.asarray(images), device, batch_size, amp_dtype=amp_dtype)


def record_off(fold: int, round0: Path = paths.FOLDS, out: Path = paths.PSEUDO) -> dict:
    """models/pseudo/fold<k>/rounds.json saying that no round is trained (the fold's model stays round 0's)."""
    final = paths.fold_dir(fold, out)
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    summary = {"fold": fold, "rounds": 0,
               "why": f"train.pseudo_labels.rounds is 0: the fold's model is {paths.fold_dir(fold, round0)}"}
    write_json(final / "rounds.json", summary)
    return summary


def run_pseudo_fold(params: TrainParams, fold: int, seed: int, prepared: Path = paths.PREPARED,
                    round0: Path = paths.FOLDS, out: Path = paths.PSEUDO,
                    checkpoints: Path = paths.CHECKPOINTS / "pseudo") -> dict:
    """Rounds 1..train.pseudo_labels.rounds of fold `fold` (module docstring); returns rounds.json."""
    from pipeline.training.fold import run_fold
    from pipeline.training.targets import TargetPlan, pseudo_rows

    pl = params.pseudo_labels
    final = paths.fold_dir(fold, out)
    teacher = paths.fold_dir(fold, round0)
    if pl.rounds == 0:
        return record_off(fold, round0, out)
    test = load_test_images(prepared, "params.yaml: train.pseudo_labels.rounds")
    if not paths.FoldFiles(teacher).model.is_file():
        raise UserError(f"{paths.FoldFiles(teacher).model}: not found (run train@{fold} first: dvc repro)")
    round0_metrics = json.loads(paths.FoldFiles(teacher).metrics.read_text())
    history = [{"round": 0, "val_score": round0_metrics["val_score"], "val_accuracy": round0_metrics["val_accuracy"],
                "train_seconds": round0_metrics["train_seconds"], "pseudo_labelled": 0}]
    work = final.with_name(final.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    try:
        for r in range(1, pl.rounds + 1):
            t0 = time.perf_counter()
            probs = teacher_probs(teacher, test, params)
            keep = pseudo_rows(probs, pl.threshold)
            if len(keep) == 0:
                raise UserError(f"params.yaml: train.pseudo_labels.threshold: {pl.threshold} leaves no test image "
                                f"(round {r}, fold {fold}: the most confident has {probs.max():.3f})")
            _logger.info("fold %d round %d: %d of %d test images pseudo-labelled (%s, threshold %.2f, weight %.2f)",
                         fold, r, len(keep), len(test), pl.targets, pl.threshold, pl.weight)

            def plan(meta: dict, images: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                     keep: np.ndarray = keep, probs: np.ndarray = probs) -> TargetPlan:
                return TargetPlan.build(images, labels, train_rows, len(meta["classes"]), params.label_smoothing,
                                        extra_images=np.asarray(test[keep]), extra_soft=probs[keep],
                                        extra_hard=pl.targets == "hard", extra_weight=pl.weight)

            round_dir = work / f"round{r}"
            metrics = run_fold(params, fold, seed, prepared, folds=round_dir, checkpoints=checkpoints / f"round{r}",
                               curves=round_dir, targets=plan)
            history.append({"round": r, "val_score": metrics["val_score"], "val_accuracy": metrics["val_accuracy"],
                            "train_seconds": round(time.perf_counter() - t0, 1), "pseudo_labelled": int(len(keep)),
                            "pseudo_mean_confidence": round(float(probs[keep].max(1).mean()), 6)})
            teacher = paths.fold_dir(fold, round_dir)
    except BaseException:  # nothing half-written stays beside the stage's output
        shutil.rmtree(work, ignore_errors=True)
        raise
    last = paths.fold_dir(fold, work / f"round{pl.rounds}")
    for f in last.iterdir():
        shutil.copy2(f, work / f.name)
    shutil.copy2(paths.curves_csv(fold, work / f"round{pl.rounds}"), work / "curves.csv")
    summary = {"fold": fold, "rounds": pl.rounds, "targets": pl.targets, "threshold": pl.threshold,
               "weight": pl.weight,
               "round0_model_sha256": sha256_file(paths.FoldFiles(paths.fold_dir(fold, round0)).model),
               "history": history,
               "val_score_gain": round(history[-1]["val_score"] - history[0]["val_score"], 6)}
    write_json(work / "rounds.json", summary)
    shutil.rmtree(final, ignore_errors=True)
    work.replace(final)
    _logger.info("fold %d: %s %.4f after round 0, %.4f after round %d", fold, round0_metrics["metric"],
                 history[0]["val_score"], history[-1]["val_score"], pl.rounds)
    return summary
