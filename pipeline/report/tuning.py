"""The report's calibration and tuning sections.

    blocks = calibration_section(metrics, label_smoothing) + tuning_section(Path("tune/report"))

Calibration: the ensemble stage's decision (pipeline/evaluation/calibration.py): the OOF score
without and with a cross-fitted temperature, the temperature exported and the label smoothing
trained with. Tuning: what `foldwise tune` left in tune/report/ (summary.json and Optuna's plots:
optimization history, parameter importances, per-epoch values with the pruned trials, the
confirmation against the current params); one line saying so before a tuning run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.report.content import Block, Figure, Heading, Table, Text, not_applicable

TITLES = {"history": "Optimization history", "importances": "Parameter importances (fANOVA)",
          "intermediate": "Validation score per epoch (pruned trials stop early)",
          "confirmation": "Confirmation on folds no trial saw"}


def calibration_section(metrics: dict, label_smoothing: float | None) -> list[Block]:
    c = metrics.get("calibration")
    if not c:
        return not_applicable("Calibration", "Not recorded in metrics.json (an ensemble stage before calibration).",
                              "calibration")
    smoothing = f" Trained with label smoothing {label_smoothing}." if label_smoothing is not None else ""
    if not c.get("applies"):
        return not_applicable("Calibration", f"Not fitted: {c['why']}.{smoothing}", "calibration")
    key = f"OOF {metrics['metric']}"
    rows = [{"": "uncalibrated", key: c.get("oof_score_uncalibrated")},
            {"": "temperature, cross-fitted by fold", key: c.get("oof_score_cross_fitted")}]
    return [Heading("Calibration"),
            Text("Temperature scaling of the ensemble's probabilities, judged out of fold (each fold's rows scaled by "
                 f"a temperature fitted on the other folds): {'kept' if c['kept'] else 'not kept'} ({c['why']}); "
                 f"exported temperature {c['temperature']:.3f}.{smoothing}", id="calibration"),
            Table(pd.DataFrame([r for r in rows if r[key] is not None]), "calibration-table")]


def tuning_section(folder: Path) -> list[Block]:
    path = folder / "summary.json"
    if not path.exists():
        return not_applicable("Tuning", "No tuning run: `foldwise tune` writes tune/report/summary.json.", "tuning")
    summary = json.loads(path.read_text())
    s, c = summary["search"], summary.get("confirmation")
    text = (f"foldwise tune: study '{s['study']}', {s['finished']} finished trials ({s['pruned']} pruned), "
            f"{s['sampler']} sampler, {s['pruner']} pruner; best {s['metric']} {s['best_value']:.4f} on fold(s) "
            f"{', '.join(map(str, s['folds']))} (trial {s['best_trial']}; chosen on those rows, so biased upward).")
    if c:
        text += (f" Confirmation on fold(s) {', '.join(map(str, c['folds']))}, which no trial trained or was judged "
                 f"on: pooled OOF {c['metric']} tuned {c['tuned']['oof']['score']:.4f}, current "
                 f"{c['current']['oof']['score']:.4f}: {c['winner']} params win.")
    blocks: list[Block] = [Heading("Tuning"), Text(text, id="tuning"),
                           Table(pd.DataFrame([{"param": k, "best": str(v)} for k, v in s["best_params"].items()]),
                                 "tuned-params")]
    for name, file in summary.get("figures", {}).items():
        if (folder / file).exists():
            blocks += [Heading(TITLES.get(name, name), 3), Figure(folder / file, name, id=f"tune-{Path(file).stem}")]
    return blocks
