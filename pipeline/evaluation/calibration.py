"""Temperature scaling of the ensemble's probabilities, fitted and judged out of fold.

    decision = decide(metric, probs, labels, fold_of_row)   # {"kept": bool, "temperature": T, scores...}
    calibrated = temper(probs, decision["temperature"])      # softmax(log p / T)

For metrics that score the probabilities themselves (Metric.calibrates: log loss), one temperature
T is fitted on the OOF log loss. Fitting and scoring on the same rows would flatter it, so the
decision is cross-fitted: each fold's rows are scaled by a T fitted on the other folds' rows, and
calibration is kept only where that cross-fitted OOF score beats the uncalibrated one. The kept T
(refitted on every OOF row) goes into the ONNX graph (pipeline/modeling/ensemble.py). A temperature
never changes which class is most probable, so accuracy, F1 and QWK are untouched.
"""
from __future__ import annotations

import logging

import numpy as np

from pipeline.evaluation.metrics import Metric, true_class_log_loss

_logger = logging.getLogger(__name__)
BOUNDS = (0.05, 20.0)  # the temperatures searched


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 softens, T < 1 sharpens; T = 1 returns `probs` unchanged."""
    if temperature == 1.0:
        return probs
    z = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the log loss of temper(probs, T) on these rows (bounded scalar search, scipy)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda log_t: true_class_log_loss(temper(probs, float(np.exp(log_t))), labels),
                          bounds=tuple(np.log(BOUNDS)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def cross_fitted(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each group's rows tempered by a T fitted on the other groups' rows."""
    out = np.empty_like(probs)
    for g in np.unique(groups):
        rows = groups == g
        t = fit_temperature(probs[~rows], labels[~rows]) if (~rows).any() else 1.0
        out[rows] = temper(probs[rows], t)
    return out


def decide(metric: Metric, probs: np.ndarray, labels: np.ndarray, groups: np.ndarray,
           positive: int | None = None) -> dict:
    """Whether temperature scaling wins out of fold for `metric`; the temperature to export (1.0 if not)."""
    if not metric.calibrates:
        return {"applies": False, "kept": False, "temperature": 1.0,
                "why": f"{metric.name} does not score calibration"}
    if len(np.unique(groups)) < 2:
        return {"applies": True, "kept": False, "temperature": 1.0, "why": "one fold: nothing to cross-fit on"}
    plain = metric.score(labels, probs, positive)
    crossed = metric.score(labels, cross_fitted(probs, labels, groups), positive)
    kept = metric.better(crossed, plain)
    t = fit_temperature(probs, labels) if kept else 1.0
    _logger.info("calibration: OOF %s %.4f uncalibrated, %.4f with a cross-fitted temperature -> %s (T = %.3f)",
                 metric.name, plain, crossed, "kept" if kept else "not kept", t)
    return {"applies": True, "kept": bool(kept), "temperature": round(t, 6),
            "oof_score_uncalibrated": round(plain, 6), "oof_score_cross_fitted": round(crossed, 6),
            "why": "cross-fitted temperature " + ("beats" if kept else "does not beat") + " the uncalibrated OOF score"}
