"""One fold of a timm model trained end to end: resume, epochs, validation, the best epoch kept.

    metrics = run_fold(params, fold=0, seed=0)           # the train@k stage, a Ray worker, each DDP rank

Writes models/folds/fold<k>/ (pipeline/core/paths.py FoldFiles):
  model.pt        best epoch's weights + how to rebuild the model (load with weights_only=True)
  oof_probs.npy   float32 [n_val, n_classes] on this fold's validation rows (best epoch)
  oof_rows.npy    int64 [n_val], those rows' indices in train_images.npy
  metrics.json    validation score / accuracy / log-loss, best epoch, time, images/s
  config.json     the resolved params, fold, seed, device, precision and library versions
models/curves/fold<k>.csv (DVC plots: per epoch train/validation loss and accuracy, lr, seconds)
and models/checkpoints/fold<k>/last.pt after every epoch. Killed and started again with the same
params, data and seed, a fold resumes from that checkpoint and ends with the same weights as an
uninterrupted run: every epoch's shuffling, augmentation, dropout and mixup are seeded from
(seed, epoch), and each batch's augmentation from (seed, epoch, batch), whatever the number of workers.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core import paths
from pipeline.core.config import params_hash
from pipeline.core.provenance import versions
from pipeline.data.batches import data_fingerprint, derive_seed, load_prepared, seed_everything
from pipeline.evaluation.metrics import Metric, from_meta, true_class_log_loss
from pipeline.modeling.inference import predict_probs
from pipeline.training.checkpoint import FoldRun, load_checkpoint
from pipeline.training.hardware import describe, resolve_device
from pipeline.training.loop import TrainingSetup, train_one_epoch
from pipeline.training.params import TrainParams
from pipeline.training.targets import TargetPlan, plan_fingerprint
from serve.atomic import atomic_path, write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def fold_seed(params: TrainParams, fold: int, seed: int | None) -> int:
    """`seed`, or this fold's seed in train.folds."""
    if seed is None:
        listed = {spec["fold"]: spec["seed"] for spec in params.folds}
        if fold not in listed:
            raise UserError(f"fold {fold} is not in params.yaml train.folds; pass --seed or add it there")
        seed = listed[fold]
    return seed


def _determinism(params: TrainParams, device: torch.device) -> None:
    if params.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op with no deterministic kernel (adaptive_avg_pool2d's backward on CUDA) warns
        # instead of stopping the fold; `foldwise bench gpu` measures what the rest then reproduces.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _resume(run: FoldRun, ckpt_path: Path, signature: str, fold: int, dist) -> None:
    """Continue from the last checkpoint of this very run (rank 0's, broadcast under DDP)."""
    state = load_checkpoint(ckpt_path, signature) if dist is None or dist.is_main else None
    if dist is not None:  # rank 0's checkpoint reaches every rank (no shared filesystem needed)
        state = dist.broadcast_object(state)
    if state is not None:
        run.load_state_dict(state)
        _logger.info("fold %d: resuming from %s after epoch %d", fold, ckpt_path, run.epoch)


def _validate(t: TrainingSetup, images: np.ndarray, labels: np.ndarray, val_rows: np.ndarray, metric: Metric,
              positive: int | None, device: torch.device,
              dist) -> tuple[np.ndarray, float, float, float, torch.nn.Module]:
    """(probs, accuracy, log-loss, metric) on the fold's validation rows, with the EMA weights if kept."""
    scored = t.run.ema.module if t.run.ema is not None else t.run.model

    def predict(rows: np.ndarray) -> np.ndarray:
        return predict_probs(scored, images[rows], device, channels_last=t.channels_last, amp_dtype=t.amp_dtype)

    probs = predict(val_rows) if dist is None else dist.gather_rows(predict, val_rows, scored)
    y = labels[val_rows]
    return probs, float((probs.argmax(1) == y).mean()), true_class_log_loss(probs, y), \
        metric.score(y, probs, positive), scored


def _epoch(t: TrainingSetup, params: TrainParams, data: tuple, metric: Metric, positive: int | None,
           device: torch.device, fold: int, seed: int, dist) -> None:
    """One epoch: train, validate, record the curve row, keep the best epoch's weights and OOF probabilities."""
    images, labels, val_rows = data
    run = t.run
    epoch = run.epoch + 1
    seed_everything(derive_seed(seed, epoch) if dist is None else dist.epoch_seed(seed, epoch))
    t.sampler.set_epoch(epoch)
    t0 = time.perf_counter()
    train_loss, train_acc, count = train_one_epoch(run, t.net, t.loader, params, device, t.channels_last,
                                                   t.amp_dtype, t.scaler, t.criterion, t.mixup, fold)
    if dist is not None:
        train_loss, train_acc, count = dist.reduce_stats(train_loss, train_acc, count)
    train_seconds = time.perf_counter() - t0
    val_probs, val_acc, val_loss, val_score, scored = _validate(t, images, labels, val_rows, metric, positive,
                                                                 device, dist)
    run.epoch = epoch
    run.images_seen += count
    run.seconds += time.perf_counter() - t0
    run.curves.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                       "val_loss": val_loss, "val_accuracy": val_acc, "val_score": val_score,
                       "lr": run.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
                       "train_images_per_second": count / train_seconds})
    improved = run.best is None or (metric.key(val_score), -val_loss) > (
        metric.key(run.best["val_score"]), -run.best["val_loss"])
    if improved:
        run.best = {"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss, "val_score": val_score,
                    "probs": torch.from_numpy(val_probs),
                    "state": {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}}
        run.epochs_since_best = 0
    else:
        run.epochs_since_best += 1
    _logger.info("fold %d epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f %s %.4f%s | %.0f img/s",
                 fold, epoch, params.epochs, train_loss, train_acc, val_loss, val_acc, metric.name, val_score,
                 " *" if improved else "", count / train_seconds)


def run_fold(params: TrainParams, fold: int, seed: int, prepared: Path = paths.PREPARED, folds: Path = paths.FOLDS,
             checkpoints: Path = paths.CHECKPOINTS, curves: Path = paths.CURVES, dist=None,
             on_epoch: Callable[[dict, int], None] | None = None,
             targets: Callable[[dict, np.ndarray, np.ndarray, np.ndarray], TargetPlan] | None = None) -> dict:
    """Train one fold. `dist` (a pipeline.distributed.ddp.DDPContext under torchrun, else None) shards
    the batches, wraps the model in DDP, gathers the OOF rows and lets rank 0 alone write. `on_epoch`
    sees each epoch's curve row and the fold's number of epochs once the checkpoint is written
    (`foldwise tune` reports it to Optuna's pruner, which may stop the fold by raising). `targets`
    (meta, images, labels, train_rows) -> TargetPlan: what the fold trains on instead of its rows'
    labels (pseudo-labels, distillation); validation stays on the fold's own rows and labels."""
    meta, images, labels, fold_of_row = load_prepared(prepared, fold)
    device = resolve_device(params.device)
    _determinism(params, device)
    seed_everything(seed)
    train_rows, val_rows = np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold)
    plan = targets(meta, images, labels, train_rows) if targets is not None else None
    if plan is not None and dist is not None:
        raise UserError("pseudo-labels and distillation train one process per fold (not under torchrun)")
    params = params.for_rows(len(train_rows) if plan is None else len(plan.rows))
    metric = from_meta(meta)
    t = TrainingSetup.create(params, meta, images, labels, train_rows, device, seed, targets=plan,
                             **(dist.setup_kwargs(train_rows, params, seed, device) if dist else {}))
    signature = params_hash({"params": {k: v for k, v in dataclasses.asdict(params).items()
                                        if k not in ("folds", "pseudo_labels")},
                             "targets": plan_fingerprint(plan),
                             "fold": fold, "seed": seed, "data": data_fingerprint(prepared),
                             "autocast": str(t.amp_dtype), **(dist.signature() if dist else {})})
    ckpt_path = paths.checkpoint(fold, checkpoints)
    _resume(t.run, ckpt_path, signature, fold, dist)
    _logger.info("fold %d (seed %d): %s on %s, %d train / %d val images, %d epochs", fold, seed, params.model,
                 device, len(train_rows) if plan is None else len(plan.rows), len(val_rows), params.epochs)
    _logger.info("fold %d: precision %s", fold, t.precision)
    stopped_early = False
    while t.run.epoch < params.epochs:
        if params.patience is not None and t.run.epochs_since_best >= params.patience:
            stopped_early = True
            break
        _epoch(t, params, (images, labels, val_rows), metric, meta.get("positive"), device, fold, seed, dist)
        if dist is None or dist.is_main:
            with atomic_path(ckpt_path) as tmp:
                torch.save(t.run.state_dict(signature), tmp)
        if on_epoch is not None:
            on_epoch(t.run.curves[-1], params.epochs)
    if dist is not None and not dist.is_main:
        return {}
    return write_fold(params, meta, fold, seed, t, val_rows, paths.fold_dir(fold, folds), device, stopped_early,
                      paths.curves_csv(fold, curves))


def write_fold(params: TrainParams, meta: dict, fold: int, seed: int, t: TrainingSetup, val_rows: np.ndarray,
               out: Path, device: torch.device, stopped_early: bool, curves_path: Path) -> dict:
    """The fold's outputs (module docstring) from its best epoch; returns metrics.json's content."""
    run, best = t.run, t.run.best
    h, _w, c = meta["image_shape"]
    files = paths.FoldFiles(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": best["state"],
        "model": {"name": params.model, "num_classes": len(meta["classes"]), "in_chans": c, "native_size": h,
                  "mean": meta["mean"], "std": meta["std"], "img_size": params.img_size,
                  "drop_rate": params.drop_rate, "model_kwargs": params.create_kwargs()},
        "fold": fold, "seed": seed, "epoch": best["epoch"], "ema": params.ema,
    }
    with atomic_path(files.model) as tmp:
        torch.save(checkpoint, tmp)
    for path, arr in ((files.oof_probs, best["probs"].numpy()), (files.oof_rows, val_rows.astype(np.int64))):
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    with atomic_path(curves_path) as tmp:
        pd.DataFrame(run.curves).to_csv(tmp, index=False, float_format="%.6g")
    train_time = sum(r["seconds"] for r in run.curves)
    metrics = {"fold": fold, "seed": seed, "metric": from_meta(meta).name,
               "val_score": round(best["val_score"], 6), "val_accuracy": round(best["val_accuracy"], 6),
               "val_logloss": round(best["val_loss"], 6), "best_epoch": best["epoch"],
               "epochs_run": len(run.curves), "stopped_early": stopped_early,
               "train_seconds": round(run.seconds, 1),
               "train_images_per_second": round(run.images_seen / max(train_time, 1e-9), 1)}
    write_json(files.metrics, metrics)
    write_json(files.config, {
        "params": dataclasses.asdict(params), "fold": fold, "seed": seed, "device": str(device),
        "channels_last": t.channels_last, "threads": torch.get_num_threads(), "precision": t.precision,
        "cpu": describe(), "versions": versions(("torch", "timm", "numpy"))})
    _logger.info("fold %d: best epoch %d, val accuracy %.4f, %.0fs", fold, best["epoch"], best["val_accuracy"],
                 run.seconds)
    return metrics
