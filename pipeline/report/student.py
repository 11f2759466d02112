"""The report's section on pseudo-labels and the distilled student: each score with how it stays
out of fold, the public part beside it with its interval, speed and size side by side.

    blocks = student_section(run)      # pipeline/report/sections.py

Reads metrics.json `pseudo_labels` (the pseudo@k rounds), models/student/student.json (the distill
stage) and models/export.json (the graphs timed side by side, predict's choice).
"""
from __future__ import annotations

import pandas as pd

from pipeline.core import paths
from pipeline.evaluation.confidence import wilson
from pipeline.report.content import Block, Heading, Table, Text, not_applicable
from pipeline.report.run import Run
from pipeline.report.tables import read_json


def _pseudo(run: Run) -> list[Block]:
    pl = run.metrics.get("pseudo_labels")
    if not pl or not pl.get("rounds"):
        return [Text("Pseudo-labels: off (train.pseudo_labels.rounds: 0).", id="pseudo", muted=True)]
    rows = [{"fold": int(k), "round": h["round"], f"val {run.metric}": h["val_score"],
             "pseudo-labelled test images": h["pseudo_labelled"], "train s": h["train_seconds"]}
            for k, history in pl["folds"].items() for h in history]
    return [Text(f"Pseudo-labels, {pl['rounds']} round(s): fold k retrained with the test images labelled by fold "
                 f"k's own model of the round before, which never saw fold k's rows, so each validation score stays "
                 f"out of fold. OOF {run.metric} without TTA: round 0 {pl['round0_oof_score_no_tta']:.4f}, last "
                 f"round {run.metrics['oof_score_no_tta']:.4f}.", id="pseudo"),
            Table(pd.DataFrame(rows), "pseudo_rounds", "{:.4f}")]


def _public(run: Run, key: str) -> tuple[float | None, str]:
    ts = run.test_scores or {}
    value = ts.get(key) if key != "fold" else (sum(ts["folds"].values()) / len(ts["folds"]) if ts.get("folds")
                                                else None)
    if value is None:
        return None, ""
    lo, hi = wilson(value, ts["rows"])
    return value, f"{lo:.4f}-{hi:.4f}"


def _student(run: Run) -> list[Block]:
    student = read_json(run.inputs.models / paths.STUDENT.name / "student.json") or {}
    if not student.get("enabled"):
        return [Text("Distillation: off (distill.enabled: false).", id="student", muted=True)]
    ex = run.export or {}
    speed = (ex.get("speed") or {}).get("images_per_second", {})
    n_folds = len(ex.get("folds") or run.metrics.get("folds") or [1])
    fold_mean = run.metrics.get("fold_score_mean")
    oof = student["oof"]
    lines = [("ensemble (fp32)", run.metrics.get("oof_score"), "", "ensemble", "fp32"),
             ("one fold model (mean)", fold_mean, "", "fold", None),
             ("student (fp32)", oof["oof_score"], "{:.4f}-{:.4f}".format(*oof["interval_95"]), "student", "student")]
    lines += [(f"student ({g.removeprefix('student_')})", e.get("oof_score"), "", "student", g)
              for g, e in student["graphs"].items() if g != "student"]
    ens_bytes = (ex.get("fp32") or {}).get("bytes")
    rows = []
    for name, score, interval, public_key, graph in lines:
        public, public_ci = _public(run, public_key) if graph in ("fp32", "student", None) else (None, "")
        nbytes = (ex.get(graph) or {}).get("bytes") if graph else (ens_bytes / n_folds if ens_bytes else None)
        rate = speed.get(graph)
        rows.append({"model": name, "OOF": score, "OOF CI": interval, "public": public, "public CI": public_ci,
                     "img/s": f"{rate:.0f}" if rate else "", "MB": f"{nbytes / 1e6:.2f}" if nbytes else "",
                     "× ens.": f"{rate / speed['fp32']:.2f}" if rate and speed.get("fp32") else ""})
    choice = ex.get("predict_graph") or {}
    bench = [r for r in ((run.bench or {}).get("result") or []) if "student_vs_one_fold" in r]
    against_fold = [Text("foldwise bench infer (" + ", ".join(
        f"batch {r['batch']}: student {r['student_fp32']:.0f} images/s, {r['student_vs_one_fold']:.2f}x one fold "
        f"model, {r['student_vs_ensemble']:.2f}x the ensemble" for r in bench) + "; MB: one fold model "
        f"{bench[0]['one_fold_bytes'] / 1e6:.2f}, student {bench[0]['student_fp32_bytes'] / 1e6:.2f}).",
        id="student_bench")] if bench else []
    return [Text(f"Distilled student {student['model']} (temperature {student['temperature']}, alpha "
                 f"{student['alpha']}, {student['test_images']} test images). {student['honesty']}", id="student"),
            Table(pd.DataFrame(rows), "student_vs_ensemble", "{:.4f}"), *against_fold,
            Text(f"predict runs {choice.get('graph', '?')}: {choice.get('reason', 'export has not run')}. The public "
                 "part is reported beside the OOF score, never used to choose.", muted=True)]


def student_section(run: Run) -> list[Block]:
    """Pseudo-label rounds and the distilled student, or one line each saying they are off."""
    if not run.metrics.get("pseudo_labels") and not (run.inputs.models / paths.STUDENT.name / "student.json").is_file():
        return not_applicable("Pseudo-labels and distillation", "Neither stage has run.", "student")
    return [Heading("Pseudo-labels and distillation"), *_pseudo(run), *_student(run)]
