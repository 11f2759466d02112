"""The training loop's parts: one optimisation step, one epoch, and everything a fold's training
needs built from its params (model, optimizer, scheduler, loader, loss, mixup, precision).

    setup = TrainingSetup.create(params, meta, images, labels, train_rows, device, seed)
    loss, acc, seen = train_one_epoch(setup.run, setup.net, setup.loader, params, device, ...)

Shared by a fold's training (pipeline/training/fold.py), DDP (pipeline/distributed/ddp.py) and
`foldwise bench train` / `bench fold` (pipeline/bench/train.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.core.console import quiet
from pipeline.data.augment import build_augment
from pipeline.data.batches import AugmentedBatches, EpochBatches
from pipeline.modeling.classifier import create_classifier
from pipeline.training.checkpoint import FoldRun
from pipeline.training.hardware import keep_freed_memory, resolve_precision
from pipeline.training.params import TrainParams
from pipeline.training.targets import TargetLoss, TargetPlan


def train_step(run: FoldRun, net: nn.Module, x: torch.Tensor, y: torch.Tensor, params: TrainParams,
               device: torch.device, channels_last: bool, amp_dtype, scaler, criterion, mixup) -> tuple[float, int]:
    """One optimisation step on a uint8 batch; returns (loss, correct predictions)."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = y
    if y.ndim == 2:  # a table of targets (pipeline/training/targets.py): the accuracy counts each row's class
        y = criterion.labels(y)
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


def train_one_epoch(run: FoldRun, net: nn.Module, loader: DataLoader, params: TrainParams, device: torch.device,
                     channels_last: bool, amp_dtype, scaler, criterion, mixup, fold: int) -> tuple[float, float, int]:
    """One pass over the loader; `net` is `run.model` or its torch.compile wrapper."""
    net.train()
    loss_sum, correct, count = 0.0, 0, 0
    bar = tqdm(loader, desc=f"fold {fold} epoch {run.epoch + 1}/{params.epochs}", unit="batch",
               disable=not sys.stderr.isatty() or quiet(), leave=False, file=sys.stderr)
    for x, y in bar:
        loss, right = train_step(run, net, x, y, params, device, channels_last, amp_dtype, scaler, criterion, mixup)
        loss_sum += loss * len(y)
        correct += right
        count += len(y)
        bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}")
    return loss_sum / max(count, 1), correct / max(count, 1), count


def build_run(params: TrainParams, meta: dict, device: torch.device, steps_per_epoch: int) -> FoldRun:
    import timm.optim  # timm is imported only where a fold is trained
    import timm.scheduler
    import timm.utils

    h, _w, c = meta["image_shape"]
    kwargs = params.create_kwargs()
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
               wrap=None, targets: TargetPlan | None = None) -> TrainingSetup:
        """`sampler` and `wrap` (model -> net, e.g. DDP) are the hooks of pipeline/distributed/ddp.py;
        `targets` replaces (images, labels, train_rows) by pseudo-labelled or distilled targets."""
        if targets is not None:
            images, labels, train_rows = targets.images, targets.table, targets.rows
        keep_freed_memory()
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
        if targets is not None:  # its table already holds the label smoothing
            criterion: nn.Module = TargetLoss(targets.n_classes, targets.temperature)
        elif params.mixup_alpha > 0 or params.cutmix_alpha > 0:
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy
            mixup = Mixup(mixup_alpha=params.mixup_alpha, cutmix_alpha=params.cutmix_alpha, prob=params.mixup_prob,
                          label_smoothing=params.label_smoothing, num_classes=len(meta["classes"]))
            criterion = SoftTargetCrossEntropy()
        else:
            criterion = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        return cls(fold_run, net, loader, sampler, channels_last, amp_dtype, criterion, mixup, scaler, precision)
