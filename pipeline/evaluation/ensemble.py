"""Ensemble rules, scored out of fold: how the TTA views of every fold's predictions are combined.

    cands, recipes, chosen = choose(logits, labels, views, ["mean_prob", "mean_logit", "weighted"], metric)

Every training row is predicted by the one fold model that did not train on it, under each
test-time augmentation view (`none` plus `ensemble.tta`): logits `[views, rows, classes]`.
Methods (METHODS, named by `ensemble.methods`), each with and without the TTA views:
  mean_prob   mean of the views' softmax probabilities
  mean_logit  softmax of the views' mean logits
  weighted    probabilities weighted per view, weights fitted on the OOF log-loss
Each candidate is scored with the competition's metric (accuracy and log loss beside it),
nothing tuned on test labels; the best OOF score (then log-loss) wins. At test time the same
rule combines every fold x view (folds weigh equally: OOF rows each see one fold, so fold
weights are not identifiable from them). numpy only: the report reuses `combine` without torch.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from pipeline.core.registry import Registry
from pipeline.evaluation.metrics import Metric, scores

_logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)



def fit_view_weights(view_probs: np.ndarray, labels: np.ndarray, steps: int = 300, lr: float = 0.5) -> np.ndarray:
    """Weights on the simplex minimising the log-loss of sum_v w_v p_v (exponentiated gradient)."""
    n_views = len(view_probs)
    w = np.full(n_views, 1.0 / n_views)
    p_true = view_probs[:, np.arange(len(labels)), labels]  # [V, N]
    for _ in range(steps):
        mix = np.clip(w @ p_true, 1e-15, None)
        grad = -(p_true / mix).mean(axis=1)
        w = w * np.exp(-lr * grad)
        w /= w.sum()
    return w


COMBINE: Registry[Callable[[np.ndarray, np.ndarray], np.ndarray]] = Registry("combine rule")
COMBINE.add("mean_prob", lambda logits, w: np.tensordot(w, softmax(logits), axes=1))   # mean of probabilities
COMBINE.add("mean_logit", lambda logits, w: softmax(np.tensordot(w, logits, axes=1)))  # softmax of mean logits


def combine(logits: np.ndarray, rule: str, weights: np.ndarray) -> np.ndarray:
    """Probabilities from member logits `[M, N, C]` with per-member weights summing to 1, by a COMBINE rule."""
    return COMBINE[rule](logits, weights)


def _uniform(rule: str) -> Callable[[np.ndarray, np.ndarray], tuple[str, np.ndarray] | None]:
    return lambda logits, labels: (rule, np.full(len(logits), 1.0 / len(logits)))


def _weighted(logits: np.ndarray, labels: np.ndarray) -> tuple[str, np.ndarray] | None:
    return None if len(logits) == 1 else ("mean_prob", fit_view_weights(softmax(logits), labels))


# method -> fit(view logits [V, N, C], labels) -> (COMBINE rule, view weights), or None where it does not apply
METHODS: Registry[Callable[[np.ndarray, np.ndarray], tuple[str, np.ndarray] | None]] = Registry("ensemble method")
METHODS.add("mean_prob", _uniform("mean_prob"))
METHODS.add("mean_logit", _uniform("mean_logit"))
METHODS.add("weighted", _weighted)


def choose(logits: np.ndarray, labels: np.ndarray, views: list[str], methods: list[str], metric: Metric,
           positive: int | None = None) -> tuple[dict[str, dict], dict[str, dict], str]:
    """Every method on the plain view alone and on all views (`<method>+tta`), scored on OOF rows:
    (scores by candidate, recipe by candidate, the chosen candidate)."""
    candidates: dict[str, dict] = {}
    recipes: dict[str, dict] = {}
    view_sets = [["none"]] + ([views] if len(views) > 1 else [])
    for vs in view_sets:
        sub = logits[[views.index(v) for v in vs]]
        suffix = "" if vs == ["none"] else "+tta"
        for method in methods:
            fitted = METHODS[method](sub, labels)
            if fitted is None:
                continue
            rule, w = fitted
            name = f"{method}{suffix}"
            candidates[name] = scores(metric, labels, combine(sub, rule, w), positive)
            recipes[name] = {"combine": rule, "views": vs, "view_weights": [round(float(x), 6) for x in w]}
    chosen = max(candidates, key=lambda n: (metric.key(candidates[n]["score"]), -candidates[n]["logloss"]))
    return candidates, recipes, chosen
