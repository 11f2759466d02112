"""Stage `train@k`: train one fold of a timm model; keep its best epoch and its OOF predictions.

    foldwise train --fold 0 --seed 0      # reads params.yaml `train`, data/prepared/

Writes models/folds/fold<k>/:
  model.pt        best epoch's weights + how to rebuild the model (load with weights_only=True)
  oof_probs.npy   float32 [n_val, n_classes] on this fold's validation rows (best epoch)
  oof_rows.npy    int64 [n_val], those rows' indices in train_images.npy
  metrics.json    validation accuracy / log-loss, best epoch, time, images/s
  config.json     the resolved params, fold, seed, device and library versions
models/curves/fold<k>.csv (DVC plots: per epoch train/validation loss and accuracy, lr, seconds)
and models/checkpoints/fold<k>/last.pt after every epoch (model, optimizer, scheduler, EMA, RNG
states, best so far). Killed and started again with the same params, data and seed, a fold
resumes from that checkpoint and ends with the same weights as an uninterrupted run: every
epoch's shuffling, augmentation, dropout and mixup are seeded from (seed, epoch), and each
batch's augmentation from (seed, epoch, batch), whatever the number of workers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.augment import build_augment
from pipeline.config import TrainParams, load_section, params_hash
from pipeline.fold_data import (AugmentedBatches, EpochBatches, data_fingerprint, derive_seed, load_images,  # noqa: F401
                                 load_prepared, seed_everything)
from pipeline.hardware import autocast_dtype, resolve_device, resolve_precision  # noqa: F401
from pipeline.metrics import from_meta as metric_of
from pipeline.models import create_classifier
from serve.atomic import atomic_path, write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
PREPARED = Path("data/prepared")
MODELS = Path("models/folds")
CHECKPOINTS = Path("models/checkpoints")
CURVES = Path("models/curves")


@torch.inference_mode()
def predict_probs(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 512,
                  channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Softmax probabilities for uint8 images `[N, H, W, C]` (no augmentation)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2))).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0)).mean())


def _rng_states() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": random.getstate()}


def _restore_rng(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0))
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in states["python"]))


@dataclasses.dataclass
class FoldRun:
    """Everything one fold's training loop owns (what a checkpoint saves and restores)."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    ema: object | None
    epoch: int = 0
    updates: int = 0
    best: dict | None = None
    epochs_since_best: int = 0
    curves: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0

    def state_dict(self, signature: str) -> dict:
        return {"signature": signature, "epoch": self.epoch, "updates": self.updates,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "ema": self.ema.state_dict() if self.ema else None,
                "best": self.best, "epochs_since_best": self.epochs_since_best, "curves": self.curves,
                "seconds": self.seconds, "images_seen": self.images_seen, "rng": _rng_states()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        for key in ("epoch", "updates", "best", "epochs_since_best", "curves", "seconds", "images_seen"):
            setattr(self, key, state[key])
        _restore_rng(state["rng"])


def load_checkpoint(path: Path, signature: str) -> dict | None:
    """The checkpoint's state if it belongs to this exact run (params, fold, seed, data), else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        _logger.warning("%s: unreadable checkpoint (%s); starting the fold afresh", path, str(exc)[:120])
        return None
    if state.get("signature") != signature:
        _logger.info("%s: from other params, seed or data; starting the fold afresh", path)
        return None
    return state


def train_step(run: FoldRun, net: nn.Module, x: torch.Tensor, y: torch.Tensor, params: TrainParams,
               device: torch.device, channels_last: bool, amp_dtype, scaler, criterion, mixup) -> tuple[float, int]:
    """One optimisation step on a uint8 batch; returns (loss, correct predictions)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = y
    if mixup is not None:
        x, target = mixup(x.float(), y)
    with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
        logits = net(x)
        loss = criterion(logits, target)
    run.optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(run.optimizer)
    else:
        loss.backward()
    if params.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), params.grad_clip)
    if scaler is not None:
        scaler.step(run.optimizer)
        scaler.update()
    else:
        run.optimizer.step()
    run.updates += 1
    if run.scheduler is not None:
        run.scheduler.step_update(run.updates)
    if run.ema is not None:
        run.ema.update(run.model, step=run.updates)
    return loss.item(), int((logits.argmax(1) == y).sum())


def _train_one_epoch(run: FoldRun, net: nn.Module, loader: DataLoader, params: TrainParams, device: torch.device,
                     channels_last: bool, amp_dtype, scaler, criterion, mixup, fold: int) -> tuple[float, float, int]:
    """One pass over the loader; `net` is `run.model` or its torch.compile wrapper."""
    net.train()
    loss_sum, correct, count = 0.0, 0, 0
    bar = tqdm(loader, desc=f"fold {fold} epoch {run.epoch + 1}/{params.epochs}", unit="batch",
               disable=not sys.stderr.isatty() or bool(os.environ.get("FOLDWISE_QUIET")), leave=False, file=sys.stderr)
    for x, y in bar:
        loss, right = train_step(run, net, x, y, params, device, channels_last, amp_dtype, scaler, criterion, mixup)
        loss_sum += loss * len(y)
        correct += right
        count += len(y)
        bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}")
    return loss_sum / max(count, 1), correct / max(count, 1), count


def build_run(params: TrainParams, meta: dict, device: torch.device, steps_per_epoch: int) -> FoldRun:
    import timm.optim  # noqa: PLC0415
    import timm.scheduler  # noqa: PLC0415
    import timm.utils  # noqa: PLC0415

    h, _w, c = meta["image_shape"]
    kwargs = dict(params.model_kwargs)
    if params.drop_path_rate is not None:
        kwargs["drop_path_rate"] = params.drop_path_rate
    model = create_classifier(params.model, len(meta["classes"]), c, h, meta["mean"], meta["std"], params.img_size,
                              params.drop_rate, params.pretrained and not params.pretrained_file, kwargs,
                              params.pretrained_file).to(device)
    opt_kwargs = {"momentum": params.momentum} if params.optimizer.lower() in ("sgd", "nesterov", "momentum") else {}
    optimizer = timm.optim.create_optimizer_v2(model, opt=params.optimizer, lr=params.lr,
                                               weight_decay=params.weight_decay, **opt_kwargs)
    scheduler = None
    if params.sched != "none":
        scheduler, _ = timm.scheduler.create_scheduler_v2(
            optimizer, sched=params.sched, num_epochs=params.epochs, warmup_epochs=params.warmup_epochs,
            warmup_lr=params.lr * 0.01, min_lr=params.min_lr, step_on_epochs=False,
            updates_per_epoch=steps_per_epoch, decay_epochs=max(1, params.epochs // 3))
    ema = timm.utils.ModelEmaV3(model, decay=params.ema_decay) if params.ema else None
    return FoldRun(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema)


@dataclasses.dataclass
class TrainingSetup:
    """Model, optimizer, loader, loss and precision settings of one fold: shared by training and `bench`."""
    run: FoldRun
    net: nn.Module
    loader: DataLoader
    sampler: EpochBatches
    channels_last: bool
    amp_dtype: torch.dtype | None
    criterion: nn.Module
    mixup: object | None
    scaler: object | None
    precision: str = ""  # what resolve_precision chose and why

    @classmethod
    def create(cls, params: TrainParams, meta: dict, images: np.ndarray, labels: np.ndarray,
               train_rows: np.ndarray, device: torch.device, seed: int, sampler: EpochBatches | None = None,
               wrap=None) -> "TrainingSetup":
        """`sampler` and `wrap` (model -> net, e.g. DDP) are the hooks of pipeline/distributed/ddp.py."""
        channels_last = params.channels_last and not params.model.startswith(("foldwise_mlp", "foldwise_linear"))
        amp_dtype, precision = resolve_precision(params.amp, device)
        if sampler is None:
            sampler = EpochBatches(train_rows, params.batch_size, seed, drop_last=len(train_rows) > params.batch_size)
        loader = DataLoader(AugmentedBatches(images, labels, build_augment(params.augment)), sampler=sampler,
                            batch_size=None, num_workers=params.num_workers,
                            persistent_workers=params.num_workers > 0, pin_memory=device.type == "cuda")
        fold_run = build_run(params, meta, device, len(sampler))
        if channels_last:
            fold_run.model.to(memory_format=torch.channels_last)
        net = wrap(fold_run.model) if wrap is not None else fold_run.model
        net = torch.compile(net) if params.compile else net
        mixup = None
        if params.mixup_alpha > 0 or params.cutmix_alpha > 0:
            from timm.data import Mixup  # noqa: PLC0415
            from timm.loss import SoftTargetCrossEntropy  # noqa: PLC0415
            mixup = Mixup(mixup_alpha=params.mixup_alpha, cutmix_alpha=params.cutmix_alpha, prob=params.mixup_prob,
                          label_smoothing=params.label_smoothing, num_classes=len(meta["classes"]))
            criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            criterion = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        return cls(fold_run, net, loader, sampler, channels_last, amp_dtype, criterion, mixup, scaler, precision)


def run(params: TrainParams, fold: int, seed: int, prepared: Path = PREPARED, models: Path = MODELS,
        checkpoints: Path = CHECKPOINTS, curves_dir: Path = CURVES, dist=None) -> dict:
    """Train one fold. `dist` (a pipeline.distributed.ddp.DDPContext under torchrun, else None) shards
    the batches, wraps the model in DDP, gathers the OOF rows and lets rank 0 alone write."""
    meta, images, labels, folds = load_prepared(prepared, fold)
    device = resolve_device(params.device)
    if params.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(seed)
    train_rows, val_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    metric = metric_of(meta)
    t = TrainingSetup.create(params, meta, images, labels, train_rows, device, seed,
                             **(dist.setup_kwargs(train_rows, params, seed, device) if dist else {}))
    fold_run, net, loader, sampler = t.run, t.net, t.loader, t.sampler
    channels_last, amp_dtype, criterion, mixup, scaler = t.channels_last, t.amp_dtype, t.criterion, t.mixup, t.scaler

    signature = params_hash({"params": {k: v for k, v in dataclasses.asdict(params).items() if k != "folds"},
                             "fold": fold, "seed": seed, "data": data_fingerprint(prepared),
                             "autocast": str(amp_dtype), **(dist.signature() if dist else {})})
    ckpt_path = checkpoints / f"fold{fold}" / "last.pt"
    state = load_checkpoint(ckpt_path, signature) if dist is None or dist.is_main else None
    if dist is not None:  # rank 0's checkpoint reaches every rank (no shared filesystem needed)
        state = dist.broadcast_object(state)
    if state is not None:
        fold_run.load_state_dict(state)
        _logger.info("fold %d: resuming from %s after epoch %d", fold, ckpt_path, fold_run.epoch)

    _logger.info("fold %d (seed %d): %s on %s, %d train / %d val images, %d epochs", fold, seed, params.model,
                 device, len(train_rows), len(val_rows), params.epochs)
    _logger.info("fold %d: precision %s", fold, t.precision)

    stopped_early = False
    while fold_run.epoch < params.epochs:
        if params.patience is not None and fold_run.epochs_since_best >= params.patience:
            stopped_early = True
            break
        epoch = fold_run.epoch + 1
        seed_everything(derive_seed(seed, epoch) if dist is None else dist.epoch_seed(seed, epoch))
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        train_loss, train_acc, count = _train_one_epoch(fold_run, net, loader, params, device, channels_last,
                                                        amp_dtype, scaler, criterion, mixup, fold)
        if dist is not None:
            train_loss, train_acc, count = dist.reduce_stats(train_loss, train_acc, count)
        train_seconds = time.perf_counter() - t0
        scored = fold_run.ema.module if fold_run.ema is not None else fold_run.model
        predict = lambda rows: predict_probs(scored, images[rows], device, channels_last=channels_last,  # noqa: E731
                                             amp_dtype=amp_dtype)
        val_probs = predict(val_rows) if dist is None else dist.gather_rows(predict, val_rows, scored)
        val_acc = float((val_probs.argmax(1) == labels[val_rows]).mean())
        val_loss = log_loss(val_probs, labels[val_rows])
        val_score = metric.score(labels[val_rows], val_probs, meta.get("positive"))
        fold_run.epoch = epoch
        fold_run.images_seen += count
        fold_run.seconds += time.perf_counter() - t0
        fold_run.curves.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                                "val_loss": val_loss, "val_accuracy": val_acc, "val_score": val_score,
                                "lr": fold_run.optimizer.param_groups[0]["lr"],
                                "seconds": time.perf_counter() - t0,
                                "train_images_per_second": count / train_seconds})
        improved = fold_run.best is None or (metric.key(val_score), -val_loss) > (
            metric.key(fold_run.best["val_score"]), -fold_run.best["val_loss"])
        if improved:
            fold_run.best = {"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss, "val_score": val_score,
                             "probs": torch.from_numpy(val_probs),
                             "state": {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}}
            fold_run.epochs_since_best = 0
        else:
            fold_run.epochs_since_best += 1
        _logger.info("fold %d epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f %s %.4f%s | %.0f img/s",
                     fold, epoch, params.epochs, train_loss, train_acc, val_loss, val_acc, metric.name, val_score,
                     " *" if improved else "", count / train_seconds)
        if dist is None or dist.is_main:
            with atomic_path(ckpt_path) as tmp:
                torch.save(fold_run.state_dict(signature), tmp)
    if dist is not None and not dist.is_main:
        return {}
    return _write_outputs(params, meta, fold, seed, fold_run, val_rows, models / f"fold{fold}", device,
                          channels_last, stopped_early, curves_dir / f"fold{fold}.csv", t.precision)


def _write_outputs(params: TrainParams, meta: dict, fold: int, seed: int, fold_run: FoldRun, val_rows: np.ndarray,
                   out: Path, device: torch.device, channels_last: bool, stopped_early: bool,
                   curves_path: Path, precision: str = "") -> dict:
    best = fold_run.best
    h, _w, c = meta["image_shape"]
    kwargs = dict(params.model_kwargs)
    if params.drop_path_rate is not None:
        kwargs["drop_path_rate"] = params.drop_path_rate
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": best["state"],
        "model": {"name": params.model, "num_classes": len(meta["classes"]), "in_chans": c, "native_size": h,
                  "mean": meta["mean"], "std": meta["std"], "img_size": params.img_size,
                  "drop_rate": params.drop_rate, "model_kwargs": kwargs},
        "fold": fold, "seed": seed, "epoch": best["epoch"], "ema": params.ema,
    }
    with atomic_path(out / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    for name, arr in (("oof_probs.npy", best["probs"].numpy()), ("oof_rows.npy", val_rows.astype(np.int64))):
        with atomic_path(out / name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    with atomic_path(curves_path) as tmp:
        pd.DataFrame(fold_run.curves).to_csv(tmp, index=False, float_format="%.6g")
    train_time = sum(r["seconds"] for r in fold_run.curves)
    metrics = {"fold": fold, "seed": seed, "metric": metric_of(meta).name,
               "val_score": round(best["val_score"], 6), "val_accuracy": round(best["val_accuracy"], 6),
               "val_logloss": round(best["val_loss"], 6), "best_epoch": best["epoch"],
               "epochs_run": len(fold_run.curves), "stopped_early": stopped_early,
               "train_seconds": round(fold_run.seconds, 1),
               "train_images_per_second": round(fold_run.images_seen / max(train_time, 1e-9), 1)}
    write_json(out / "metrics.json", metrics)
    import timm  # noqa: PLC0415

    from pipeline.hardware import describe as describe_cpu  # noqa: PLC0415
    write_json(out / "config.json", {
        "params": dataclasses.asdict(params), "fold": fold, "seed": seed, "device": str(device),
        "channels_last": channels_last, "threads": torch.get_num_threads(), "precision": precision,
        "cpu": describe_cpu(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
                     "numpy": np.__version__}})
    _logger.info("fold %d: best epoch %d, val accuracy %.4f, %.0fs", fold, best["epoch"], best["val_accuracy"],
                 fold_run.seconds)
    return metrics


def fold_seed(params: TrainParams, fold: int, seed: int | None) -> int:
    """`seed`, or this fold's seed in train.folds."""
    if seed is None:
        listed = {spec["fold"]: spec["seed"] for spec in params.folds}
        if fold not in listed:
            raise UserError(f"fold {fold} is not in params.yaml train.folds; pass --seed or add it there")
        seed = listed[fold]
    return seed


def main(fold: int, seed: int | None = None) -> None:
    params = load_section("train", TrainParams)
    run(params, fold, fold_seed(params, fold, seed))
