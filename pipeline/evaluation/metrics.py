"""Competition metrics by name, computed by scikit-learn, each with its direction.

    m = METRICS["log_loss"]
    m.score(labels, probs)            # labels: class indices [N]; probs: [N, classes]
    m.better(0.21, 0.25)              # True: lower is better for log loss

`prepare.metric` names one (or `auto`: DEFAULT_FOR_SUBMISSION by the sample submission's kind);
the OOF scores, early stopping, the ensemble choice, `foldwise score`,
`compare`, the report and the receipt all use it, with accuracy shown beside it.

  accuracy   share of rows whose most probable class is right
  log_loss   multi-class cross-entropy on the probabilities (lower is better)
  roc_auc    binary: AUC of P(positive); more classes: one-vs-rest macro AUC
  f1_macro   macro-averaged F1 of the most probable class
  qwk        quadratic weighted Cohen's kappa (classes in their ordinal order)
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from pipeline.core.registry import Registry

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    uses: str              # "probs" or "labels": what it is computed from
    _fn: Callable[[np.ndarray, np.ndarray, int | None], float]
    calibrates: bool = False  # it scores the probabilities' calibration: the ensemble fits a temperature for it

    def score(self, labels: np.ndarray, probs: np.ndarray, positive: int | None = None) -> float:
        """The metric of class-index `labels` [N] against probabilities `probs` [N, K]."""
        return float(self._fn(np.asarray(labels), np.asarray(probs, dtype=np.float64), positive))

    def better(self, a: float, b: float) -> bool:
        """True when score `a` beats score `b`."""
        return a > b if self.higher_is_better else a < b

    def key(self, value: float) -> float:
        """A sort key where larger is better."""
        return value if self.higher_is_better else -value

    def to_dict(self) -> dict:
        return {"name": self.name, "higher_is_better": self.higher_is_better}


def _accuracy(y, p, _pos):
    return (p.argmax(1) == y).mean()


def _log_loss(y, p, _pos):
    from sklearn.metrics import log_loss

    p = np.clip(p, 1e-15, 1.0)
    return log_loss(y, p / p.sum(axis=1, keepdims=True), labels=np.arange(p.shape[1]))


def _roc_auc(y, p, pos):
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    if p.shape[1] == 2 or pos is not None:
        pos = 1 if pos is None else pos
        return roc_auc_score(y == pos, p[:, pos])
    present = np.unique(y)
    sub = p[:, present]
    return roc_auc_score(y, sub / sub.sum(axis=1, keepdims=True), multi_class="ovr", average="macro", labels=present)


def _f1_macro(y, p, _pos):
    from sklearn.metrics import f1_score

    return f1_score(y, p.argmax(1), average="macro", labels=np.arange(p.shape[1]), zero_division=0)


def _qwk(y, p, _pos):
    from sklearn.metrics import cohen_kappa_score

    pred = p.argmax(1)
    if len(np.unique(np.concatenate([y, pred]))) < 2:
        return 1.0 if np.array_equal(y, pred) else 0.0
    return cohen_kappa_score(y, pred, weights="quadratic", labels=np.arange(p.shape[1]))


METRICS: Registry[Metric] = Registry("metric")
for _metric in (Metric("accuracy", True, "labels", _accuracy),
                Metric("log_loss", False, "probs", _log_loss, calibrates=True),
                Metric("roc_auc", True, "probs", _roc_auc), Metric("f1_macro", True, "labels", _f1_macro),
                Metric("qwk", True, "labels", _qwk)):
    METRICS.add(_metric.name, _metric)
NAMES = METRICS.names()
# the metric a competition is scored by when prepare.metric (or `foldwise score --metric`) says auto
DEFAULT_FOR_SUBMISSION = {"label": "accuracy", "binary_prob": "roc_auc", "class_probs": "log_loss"}


def sort_classes(values: Iterable) -> list[str]:
    """The class order every stage uses (and the ordinal and binary metrics assume): integers in
    numeric order, else strings in code-point order."""
    values = sorted(set(values))
    try:
        return sorted(values, key=lambda v: (int(v), v))
    except ValueError:
        return values


def from_meta(meta: dict) -> Metric:
    """The competition's metric named in meta.json (accuracy for data prepared before metrics existed)."""
    return METRICS[meta.get("metric", {}).get("name", "accuracy")]


def true_class_log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log P(true class) (clipped at 1e-15): the per-epoch validation loss, without scikit-learn."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0)).mean())


def scores(metric: Metric, labels: np.ndarray, probs: np.ndarray, positive: int | None = None) -> dict:
    """The competition metric plus accuracy and log loss (always shown beside it), rounded."""
    out = {"score": round(metric.score(labels, probs, positive), 6),
           "accuracy": round(METRICS["accuracy"].score(labels, probs), 6),
           "logloss": round(METRICS["log_loss"].score(labels, probs), 6)}
    return out
