"""The report's calibration and tuning sections, from what the ensemble stage and `foldwise tune` wrote."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipeline.report.content import to_html
from pipeline.report.tuning import calibration_section, tuning_section


def test_the_calibration_section_shows_both_scores_the_decision_and_the_smoothing() -> None:
    metrics = {"metric": "log_loss", "calibration": {
        "applies": True, "kept": True, "temperature": 1.7, "oof_score_uncalibrated": 0.31,
        "oof_score_cross_fitted": 0.27, "why": "cross-fitted temperature beats the uncalibrated OOF score"}}
    page = to_html(calibration_section(metrics, 0.0), "t")
    assert "kept" in page and "1.700" in page and "0.3100" in page and "0.2700" in page
    assert "label smoothing 0.0" in page
    off = to_html(calibration_section({"metric": "accuracy", "calibration": {
        "applies": False, "kept": False, "temperature": 1.0, "why": "accuracy does not score calibration"}}, 0.1), "t")
    assert "Not fitted: accuracy does not score calibration" in off
    assert "Not recorded in metrics.json" in to_html(calibration_section({"metric": "accuracy"}, None), "t")


def test_the_tuning_section_appears_after_a_tuning_run_with_its_plots(tmp_path: Path) -> None:
    assert "No tuning run" in to_html(tuning_section(tmp_path), "t")    # before any `foldwise tune`: says so
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(tmp_path / "history.png")
    summary = {"search": {"study": "foldwise", "finished": 12, "pruned": 4, "sampler": "tpe", "pruner": "median",
                          "metric": "accuracy", "best_value": 0.9412, "folds": [0], "best_trial": 3,
                          "best_params": {"train.lr": 0.004, "train.augment": "none"}},
               "confirmation": {"folds": [1, 2], "metric": "accuracy", "winner": "current",
                                "tuned": {"oof": {"score": 0.9401}}, "current": {"oof": {"score": 0.9410}}},
               "figures": {"history": "history.png", "importances": "importances.png"}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    page = to_html(tuning_section(tmp_path), "t")
    assert "12 finished trials (4 pruned)" in page and "biased upward" in page
    assert "tuned 0.9401, current 0.9410" in page and "current params win" in page
    assert 'id="tune-history"' in page and "tune-importances" not in page   # only the plots that exist
    assert "train.augment" in page
