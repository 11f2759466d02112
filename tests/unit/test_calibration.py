"""Temperature scaling: fitted on OOF log loss, kept only where the cross-fitted score wins."""
from __future__ import annotations

import numpy as np

from pipeline.evaluation.calibration import cross_fitted, decide, fit_temperature, temper
from pipeline.evaluation.ensemble import softmax
from pipeline.evaluation.metrics import METRICS


def _overconfident(n: int = 3000, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[labels]
    return softmax(3.0 * logits), labels, rng.integers(0, 5, n)  # logits scaled up 3x: overconfident


def test_the_fitted_temperature_undoes_overconfidence_and_keeps_the_argmax() -> None:
    probs, labels, _ = _overconfident()
    t = fit_temperature(probs, labels)
    assert 1.5 < t < 4
    assert np.array_equal(temper(probs, t).argmax(1), probs.argmax(1))
    assert np.allclose(temper(probs, 1.0), probs)


def test_calibration_is_kept_for_log_loss_where_the_cross_fitted_score_wins() -> None:
    probs, labels, groups = _overconfident()
    d = decide(METRICS["log_loss"], probs, labels, groups)
    assert d["kept"] and d["oof_score_cross_fitted"] < d["oof_score_uncalibrated"]
    assert 1.5 < d["temperature"] < 4
    cf = cross_fitted(probs, labels, groups)
    assert np.isclose(METRICS["log_loss"].score(labels, cf), d["oof_score_cross_fitted"], atol=1e-6)


def test_calibration_is_not_kept_where_it_does_not_win_or_the_metric_ignores_it() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 2000)
    probs = softmax(rng.normal(0, 1, (2000, 4)) + np.eye(4)[labels])  # already calibrated: T = 1 fits
    groups = rng.integers(0, 5, 2000)
    d = decide(METRICS["log_loss"], probs, labels, groups)
    assert d["temperature"] == 1.0 or d["kept"]
    assert not decide(METRICS["accuracy"], probs, labels, groups)["applies"]
    assert decide(METRICS["log_loss"], probs, labels, np.zeros(2000, int))["kept"] is False
