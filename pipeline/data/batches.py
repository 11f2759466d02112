"""Fold batches: the prepared arrays (memory-mapped when large), seeds, and the seeded, augmented
batches that make a resumed fold bit-identical to an uninterrupted one.

    meta, images, labels, folds = load_prepared(Path("data/prepared"), fold=0)
    loader = DataLoader(AugmentedBatches(images, labels, augment), sampler=EpochBatches(rows, 128, seed, True),
                        batch_size=None)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.core import paths
from serve.atomic import sha256_file
from serve.errors import UserError

_logger = logging.getLogger(__name__)
MMAP_FRACTION = 0.25  # image arrays larger than this share of RAM are memory-mapped


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (stable across runs and platforms)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochBatches(Sampler):
    """Yields (rows, batch_seed) per batch: a permutation seeded by (seed, epoch); `set_epoch` first."""

    def __init__(self, rows: np.ndarray, batch_size: int, seed: int, drop_last: bool) -> None:
        self.rows, self.batch_size, self.seed, self.drop_last, self.epoch = rows, batch_size, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        order = np.random.default_rng(derive_seed(self.seed, self.epoch)).permutation(self.rows)
        for b in range(len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size], derive_seed(self.seed, self.epoch, b)


class AugmentedBatches(Dataset):
    """uint8 images `[N, H, W, C]` in memory -> a whole augmented batch (uint8 `[B, C, H, W]`, labels).
    `labels` is a class index per row, or a float table of targets per row
    (pipeline/training/targets.py), returned as it is.

    Taking whole batches lets workers (and the main process) seed the Albumentations pipeline once
    per batch, so the result does not depend on which process made the batch.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[np.ndarray, int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, seed = item
        batch = self.images[rows]
        if self.transform is not None:
            self.transform.set_random_seed(seed)
            batch = np.stack([self.transform(image=img)["image"].reshape(img.shape) for img in batch])
        return (torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))),
                torch.from_numpy(self.labels[rows].astype(np.float32 if self.labels.ndim == 2 else np.int64)))


def load_prepared(prepared: Path, fold: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """meta, images, labels and fold assignment; UserError if `fold` is not a fold of folds.csv."""
    try:
        files = paths.Prepared(prepared)
        meta = json.loads(files.meta.read_text())
        folds = pd.read_csv(files.folds)["fold"].to_numpy()
        images = load_images(files.train_images)
        labels = np.load(files.train_labels)
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found (run the prepare stage first)") from None
    if not 0 <= fold < meta["n_folds"]:
        raise UserError(f"fold {fold}: {files.folds} has folds 0-{meta['n_folds'] - 1} "
                        "(params.yaml train.folds must match prepare.n_folds)")
    return meta, images, labels, folds


def data_fingerprint(prepared: Path) -> str:
    h = hashlib.sha256()
    files = paths.Prepared(prepared)
    for path in (files.meta, files.folds, files.train_labels, files.train_images):
        h.update(sha256_file(path).encode())
    return h.hexdigest()[:16]


def load_images(path: Path) -> np.ndarray:
    """The uint8 image array, in memory, or memory-mapped when it is over MMAP_FRACTION of the RAM."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 0
    if ram and path.stat().st_size > MMAP_FRACTION * ram:
        _logger.info("%s is %.1f GiB: memory-mapped, not loaded", path, path.stat().st_size / 2**30)
        return np.load(path, mmap_mode="r")
    return np.load(path)
