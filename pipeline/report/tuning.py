"""The report's calibration and tuning sections.

    sections = calibration_section(metrics, train_params) + tuning_section(Path("tune/report"))

Calibration: the ensemble stage's decision (pipeline/evaluation/calibration.py): the OOF score
without and with a cross-fitted temperature, the temperature exported and the label smoothing
trained with. Tuning: what `foldwise tune` left in tune/report/ (summary.json and Optuna's plots:
optimization history, parameter importances, per-epoch values with the pruned trials, the
confirmation against the current params); nothing before a tuning run.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

TITLES = {"history": "Optimization history", "importances": "Parameter importances (fANOVA)",
          "intermediate": "Validation score per epoch (pruned trials stop early)",
          "confirmation": "Confirmation on folds no trial saw"}


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" id="tune-{path.stem}">'


def _table(rows: list[dict], table_id: str) -> str:
    return pd.DataFrame(rows).to_html(index=False, table_id=table_id, border=0, classes="t", escape=True,
                                      float_format=lambda v: f"{v:.4f}")


def calibration_section(metrics: dict, label_smoothing: float | None) -> list[str]:
    c = metrics.get("calibration")
    if not c:
        return []
    smoothing = f" Trained with label smoothing {label_smoothing}." if label_smoothing is not None else ""
    if not c.get("applies"):
        return [f"<h2>Calibration</h2><p id=calibration class=muted>Not fitted: {html.escape(c['why'])}."
                f"{smoothing}</p>"]
    rows = [{"": "uncalibrated", f"OOF {metrics['metric']}": c.get("oof_score_uncalibrated")},
            {"": "temperature, cross-fitted by fold", f"OOF {metrics['metric']}": c.get("oof_score_cross_fitted")}]
    return ["<h2>Calibration</h2><p id=calibration>Temperature scaling of the ensemble's probabilities, judged "
            "out of fold (each fold's rows scaled by a temperature fitted on the other folds): "
            f"{'kept' if c['kept'] else 'not kept'} ({html.escape(c['why'])}); exported temperature "
            f"{c['temperature']:.3f}.{smoothing}</p>" + _table([r for r in rows if r[f"OOF {metrics['metric']}"]
                                                                 is not None], "calibration-table")]


def tuning_section(folder: Path) -> list[str]:
    path = folder / "summary.json"
    if not path.exists():
        return []
    summary = json.loads(path.read_text())
    s, c = summary["search"], summary.get("confirmation")
    text = (f"<h2>Tuning</h2><p id=tuning>foldwise tune: study '{html.escape(s['study'])}', {s['finished']} "
            f"finished trials ({s['pruned']} pruned), {html.escape(s['sampler'])} sampler, {html.escape(s['pruner'])} "
            f"pruner; best {html.escape(s['metric'])} {s['best_value']:.4f} on fold(s) "
            f"{', '.join(map(str, s['folds']))} (trial {s['best_trial']}; chosen on those rows, so biased upward).")
    if c:
        text += (f" Confirmation on fold(s) {', '.join(map(str, c['folds']))}, which no trial trained or was judged "
                 f"on: pooled OOF {html.escape(c['metric'])} tuned {c['tuned']['oof']['score']:.4f}, current "
                 f"{c['current']['oof']['score']:.4f}: <b>{html.escape(c['winner'])} params win</b>.")
    parts = [text + "</p>", _table([{"param": k, "best": str(v)} for k, v in s["best_params"].items()],
                                   "tuned-params")]
    for name, file in summary.get("figures", {}).items():
        if (folder / file).exists():
            parts.append(f"<h3>{html.escape(TITLES.get(name, name))}</h3>" + _img(folder / file, name))
    return ["".join(parts)]
