"""Training targets beyond one hard label per row: pseudo-labelled test images and a teacher's soft
predictions (distillation), as one table the training loop reads batch by batch.

    plan = TargetPlan.build(images, labels, train_rows, n_classes, label_smoothing=0.1,
                            teacher=probs_of_train_rows, alpha=0.5, temperature=2.0,
                            extra_images=test_images, extra_soft=teacher_probs_of_test, extra_weight=1.0)
    run_fold(params, fold, seed, targets=plan)             # pipeline/training/fold.py

Each row of `plan.table` holds `[hard (C) | soft (C) | alpha | weight]`; a row's loss is
`weight * (alpha * T^2 * CE(soft, softmax(z / T)) + (1 - alpha) * CE(hard, softmax(z)))`
(Hinton et al.'s distillation loss; `soft` is already the teacher's probabilities at temperature T).
A pseudo-labelled image is a row with `alpha = 1` (soft) or a one-hot `hard` (hard) and the
pseudo-label weight. Rows of the training set keep their label (with label smoothing).

Nothing here decides which teacher may label what: pipeline/training/pseudo.py and distill.py do,
so that no row a score is computed on was ever seen by a model in the chain.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class StackedImages:
    """Two uint8 image arrays `[N, H, W, C]` read as one (rows >= len(first) index `second`),
    without copying either (either may be memory-mapped)."""

    def __init__(self, first: np.ndarray, second: np.ndarray) -> None:
        if first.shape[1:] != second.shape[1:]:
            raise ValueError(f"image shapes differ: {first.shape[1:]} and {second.shape[1:]}")
        self.first, self.second, self.shape = first, second, (len(first) + len(second), *first.shape[1:])
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        low = rows < len(self.first)
        out[low] = self.first[rows[low]]
        out[~low] = self.second[rows[~low] - len(self.first)]
        return out


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): a teacher's probabilities at temperature T (T > 1 spreads them)."""
    if temperature == 1.0:
        return probs.astype(np.float32)
    z = np.log(np.clip(probs, 1e-12, None)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def pseudo_rows(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the images whose most probable class has probability >= `threshold`."""
    return np.flatnonzero(probs.max(1) >= threshold)


@dataclass
class TargetPlan:
    """What a fold trains on: `images` (indexable by row), `rows` to sample, `table` [N, 2C+2]."""
    images: object
    rows: np.ndarray
    table: np.ndarray
    temperature: float = 1.0
    summary: dict | None = None  # how many rows of each kind, for the fold's metrics

    @property
    def n_classes(self) -> int:
        return (self.table.shape[1] - 2) // 2

    @classmethod
    def build(cls, images: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, n_classes: int,
              label_smoothing: float = 0.0, teacher: np.ndarray | None = None, alpha: float = 0.0,
              temperature: float = 1.0, extra_images: np.ndarray | None = None,
              extra_soft: np.ndarray | None = None, extra_hard: bool = False,
              extra_weight: float = 1.0) -> TargetPlan:
        """The table for `train_rows` (hard labels; with `teacher` [len(train_rows), C] probabilities
        mixed in at weight `alpha`) plus, optionally, `extra_images` labelled by `extra_soft`
        (each row's teacher probabilities: learnt as they are, or as their argmax when `extra_hard`)."""
        c = n_classes
        n_extra = 0 if extra_images is None else len(extra_images)
        table = np.zeros((len(images) + n_extra, 2 * c + 2), dtype=np.float32)
        y = labels[train_rows].astype(np.int64)
        table[train_rows, :c] = label_smoothing / c
        table[train_rows, y] += 1.0 - label_smoothing
        table[train_rows, 2 * c + 1] = 1.0
        if teacher is not None:
            table[train_rows, c:2 * c] = soften(teacher, temperature)
            table[train_rows, 2 * c] = alpha
        rows = [np.asarray(train_rows, dtype=np.int64)]
        if n_extra:
            idx = np.arange(len(images), len(images) + n_extra)
            if extra_hard:
                table[idx, :c] = label_smoothing / c
                table[idx, extra_soft.argmax(1)] += 1.0 - label_smoothing
            else:
                table[idx, c:2 * c] = soften(extra_soft, temperature)
                table[idx, 2 * c] = 1.0
            table[idx, 2 * c + 1] = extra_weight
            rows.append(idx)
            images = StackedImages(images, extra_images)
        summary = {"train_rows": int(len(train_rows)), "extra_rows": int(n_extra),
                   "teacher_alpha": alpha if teacher is not None else 0.0, "temperature": temperature}
        return cls(images, np.concatenate(rows), table, temperature, summary)


class TargetLoss(nn.Module):
    """The loss of the module docstring on a batch of table rows `[B, 2C+2]`."""

    def __init__(self, n_classes: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.c, self.t = n_classes, float(temperature)

    def forward(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        c, t = self.c, self.t
        logits = logits.float()
        hard, soft, alpha, weight = rows[:, :c], rows[:, c:2 * c], rows[:, 2 * c], rows[:, 2 * c + 1]
        hard_ce = -(hard * F.log_softmax(logits, 1)).sum(1)
        soft_ce = -(soft * F.log_softmax(logits / t, 1)).sum(1) * (t * t)
        per_row = alpha * soft_ce + (1 - alpha) * hard_ce
        return (weight * per_row).sum() / weight.sum().clamp_min(1e-12)

    def labels(self, rows: torch.Tensor) -> torch.Tensor:
        """Each row's class for the running accuracy: its hard label, else the teacher's argmax."""
        hard, soft, alpha = rows[:, :self.c], rows[:, self.c:2 * self.c], rows[:, 2 * self.c]
        return torch.where(alpha >= 1.0, soft.argmax(1), hard.argmax(1))


def plan_fingerprint(plan: TargetPlan | None) -> str | None:
    """A short hash of what a plan trains on (a resumed fold must train on the very same targets)."""
    if plan is None:
        return None
    h = hashlib.sha256(np.ascontiguousarray(plan.rows).tobytes())
    h.update(np.ascontiguousarray(plan.table[plan.rows]).tobytes())
    h.update(repr((plan.images.shape, plan.temperature)).encode())
    return h.hexdigest()[:16]
