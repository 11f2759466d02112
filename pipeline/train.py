"""Stage `train@k`: train one fold of a timm model; keep its best epoch and its OOF predictions.

    foldwise train --fold 0      # reads params.yaml `train`, data/prepared/

Writes models/folds/fold<k>/:
  model.pt        best epoch's weights + how to rebuild the model (load with weights_only=True)
  oof_probs.npy   float32 [n_val, n_classes] on this fold's validation rows (best epoch)
  oof_rows.npy    int64 [n_val], those rows' indices in train_images.npy
  metrics.json    validation accuracy / log-loss, best epoch, time, images/s
  curves.csv      per epoch: train loss/acc, validation loss/acc, lr, seconds
  config.json     the resolved params, fold, seed, device and library versions
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.augment import build_augment
from pipeline.config import TrainParams, load_section
from pipeline.models import create_classifier
from serve.atomic import atomic_path, write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
PREPARED = Path("data/prepared")
MODELS = Path("models/folds")


class AugmentedImages(Dataset):
    """uint8 images `[N, H, W, C]` kept in memory -> (uint8 tensor `[C, H, W]`, label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray, transform=None) -> None:
        self.images, self.labels, self.rows, self.transform = images, labels, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.rows[i]
        img = self.images[row]
        if self.transform is not None:
            img = self.transform(image=img)["image"].reshape(img.shape)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.labels[row])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(request: str) -> torch.device:
    if request == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml: train.device: cuda requested but torch sees no CUDA GPU")
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(request)


@torch.inference_mode()
def predict_probs(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 512,
                  channels_last: bool = False) -> np.ndarray:
    """Softmax probabilities for uint8 images `[N, H, W, C]` (no augmentation)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2))).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0)).mean())


def load_prepared(prepared: Path, fold: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """meta, images, labels and fold assignment; UserError if `fold` is not a fold of folds.csv."""
    try:
        meta = json.loads((prepared / "meta.json").read_text())
        folds = pd.read_csv(prepared / "folds.csv")["fold"].to_numpy()
        images = np.load(prepared / "train_images.npy")
        labels = np.load(prepared / "train_labels.npy")
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found (run the prepare stage first)") from None
    if not 0 <= fold < meta["n_folds"]:
        raise UserError(f"fold {fold}: {prepared / 'folds.csv'} has folds 0-{meta['n_folds'] - 1} "
                        "(params.yaml train.folds must match prepare.n_folds)")
    return meta, images, labels, folds


def run(params: TrainParams, fold: int, prepared: Path = PREPARED, models: Path = MODELS) -> dict:
    meta, images, labels, folds = load_prepared(prepared, fold)
    seed = params.seed + fold
    seed_everything(seed)
    device = resolve_device(params.device)
    channels_last = params.channels_last and params.model not in ("foldwise_mlp", "foldwise_linear")
    train_rows = np.flatnonzero(folds != fold)
    val_rows = np.flatnonzero(folds == fold)
    h, w, c = meta["image_shape"]
    n_classes = len(meta["classes"])
    model = create_classifier(params.model, n_classes, c, h, meta["mean"], meta["std"], params.img_size,
                              params.drop_rate, params.pretrained, params.model_kwargs).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    import timm.optim  # noqa: PLC0415
    import timm.scheduler  # noqa: PLC0415

    loader = DataLoader(
        AugmentedImages(images, labels, train_rows, build_augment(params.augment)),
        batch_size=params.batch_size, shuffle=True, drop_last=len(train_rows) > params.batch_size,
        num_workers=params.num_workers, persistent_workers=params.num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=lambda wid: seed_everything(seed * 100 + wid),
    )
    steps = params.epochs * len(loader)
    optimizer = timm.optim.create_optimizer_v2(model, opt=params.optimizer, lr=params.lr,
                                               weight_decay=params.weight_decay)
    scheduler = timm.scheduler.CosineLRScheduler(
        optimizer, t_initial=steps, lr_min=params.min_lr, warmup_t=int(params.warmup_epochs * len(loader)),
        warmup_lr_init=params.lr * 0.01, t_in_epochs=False)
    criterion = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
    _logger.info("fold %d: %s on %s, %d train / %d val images, %d epochs", fold, params.model, device,
                 len(train_rows), len(val_rows), params.epochs)

    curves, best, updates, t_start, seen = [], None, 0, time.perf_counter(), 0
    for epoch in range(1, params.epochs + 1):
        model.train()
        t_epoch = time.perf_counter()
        loss_sum, correct, count = 0.0, 0, 0
        bar = tqdm(loader, desc=f"fold {fold} epoch {epoch}/{params.epochs}", unit="batch",
                   disable=not sys.stderr.isatty(), leave=False, file=sys.stderr)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            updates += 1
            scheduler.step_update(updates)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}")
        seen += count
        train_seconds = time.perf_counter() - t_epoch
        val_probs = predict_probs(model, images[val_rows], device, channels_last=channels_last)
        val_acc = float((val_probs.argmax(1) == labels[val_rows]).mean())
        val_loss = log_loss(val_probs, labels[val_rows])
        curves.append({"epoch": epoch, "train_loss": loss_sum / count, "train_accuracy": correct / count,
                       "val_loss": val_loss, "val_accuracy": val_acc,
                       "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t_epoch})
        _logger.info("fold %d epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.0f img/s",
                     fold, epoch, params.epochs, loss_sum / count, correct / count, val_loss, val_acc,
                     count / train_seconds)
        if best is None or (val_acc, -val_loss) > (best["val_accuracy"], -best["val_loss"]):
            best = {"epoch": epoch, "val_accuracy": val_acc, "val_loss": val_loss, "probs": val_probs,
                    "state": copy.deepcopy(model.state_dict())}
    elapsed = time.perf_counter() - t_start

    out = models / f"fold{fold}"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in best["state"].items()},
        "model": {"name": params.model, "num_classes": n_classes, "in_chans": c, "native_size": h,
                  "mean": meta["mean"], "std": meta["std"], "img_size": params.img_size,
                  "drop_rate": params.drop_rate, "model_kwargs": params.model_kwargs},
        "fold": fold, "epoch": best["epoch"],
    }
    with atomic_path(out / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    for name, arr in (("oof_probs.npy", best["probs"]), ("oof_rows.npy", val_rows.astype(np.int64))):
        with atomic_path(out / name) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    with atomic_path(out / "curves.csv") as tmp:
        pd.DataFrame(curves).to_csv(tmp, index=False, float_format="%.6g")
    metrics = {"fold": fold, "val_accuracy": round(best["val_accuracy"], 6),
               "val_logloss": round(best["val_loss"], 6), "best_epoch": best["epoch"],
               "epochs_run": len(curves), "train_seconds": round(elapsed, 1),
               "train_images_per_second": round(seen / sum(r["seconds"] for r in curves), 1)}
    write_json(out / "metrics.json", metrics)
    write_json(out / "config.json", {
        "params": dataclasses.asdict(params), "fold": fold, "seed": seed, "device": str(device),
        "channels_last": channels_last,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "timm": __import__("timm").__version__, "numpy": np.__version__}})
    _logger.info("fold %d: best epoch %d, val accuracy %.4f, %.0fs", fold, best["epoch"], best["val_accuracy"], elapsed)
    return metrics


def load_fold_model(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild a fold's model from model.pt (weights_only=True: no code runs from the file)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run the train stage first)") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise UserError(f"{path}: not a readable foldwise checkpoint ({str(exc).splitlines()[0][:160]})") from None
    m = ckpt["model"]
    model = create_classifier(m["name"], m["num_classes"], m["in_chans"], m["native_size"], m["mean"], m["std"],
                              m["img_size"], m["drop_rate"], False, m["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def main(fold: int) -> None:
    run(load_section("train", TrainParams), fold)
