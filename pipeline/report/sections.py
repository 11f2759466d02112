"""The report's sections, in order: each draws its figures into `out` and returns its blocks.

    blocks = [b for build in SECTIONS.values() for b in build(run, out, params)]   # pipeline/report/page.py

Key figures; training curves; folds; ensemble candidates; calibration; tuning (after `foldwise
tune`); the ladder (after `foldwise ladder`); what the network learned (filters, activations,
embedding); OOF confusion matrix, per-class scores, confused pairs; misclassified and least
confident correct images; export; pseudo-labels and the distilled student; inference
throughput (after `foldwise bench infer`); submission; OOF against the public score; CV against
LB; environment; params. A section that does not apply to the run says so (pipeline/report/content.py `not_applicable`).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import read_params
from pipeline.evaluation.confidence import compare_to_oof, oof_vs_public_rows
from pipeline.report.content import Block, Code, Figure, Heading, Kpis, Table, Text, not_applicable
from pipeline.report.figures import plot_confusion, plot_curves, plot_cv_vs_lb, plot_grid
from pipeline.report.ladder import ladder_section
from pipeline.report.learned import learned_section
from pipeline.report.params import ReportParams
from pipeline.report.run import Run
from pipeline.report.student import student_section
from pipeline.report.tables import confused_pairs, confusion_view, environment, per_class
from pipeline.report.tuning import calibration_section, tuning_section

Section = Callable[[Run, Path, ReportParams], list[Block]]


def _key_values(d: dict, table_id: str) -> Table:
    return Table(pd.DataFrame({"": list(d), "value": [str(v) for v in d.values()]}), table_id)


def key_figures(run: Run) -> list[tuple[str, str]]:
    """OOF scores, folds' spread, TTA and ensemble gains, method, public and local scores."""
    metrics, metric, test_scores, receipt = run.metrics, run.metric, run.test_scores, run.receipt
    cands = metrics["candidates"]
    best_tta = max((v["accuracy"] for n, v in cands.items() if n.endswith("+tta")), default=None)
    best_plain = max(v["accuracy"] for n, v in cands.items() if not n.endswith("+tta"))
    kpis = ([(f"OOF {metric}", f"{metrics['oof_score']:.4f}")] if metric not in ("accuracy", "log_loss") else [])
    kpis += [("OOF accuracy", f"{metrics['oof_accuracy']:.4f}"), ("OOF log-loss", f"{metrics['oof_logloss']:.4f}"),
             ("folds mean ± std", f"{run.folds['accuracy'].mean():.4f} ± {run.folds['accuracy'].std(ddof=0):.4f}"),
             ("TTA gain (OOF)", f"{100 * (best_tta - best_plain):+.2f} pts" if best_tta is not None else "no TTA")]
    if test_scores:
        kpis.append(("ensemble gain over best fold (labelled test rows)",
                     f"{100 * (test_scores['ensemble'] - max(test_scores['folds'].values())):+.2f} pts"))
    kpis.append(("chosen method", metrics["method"]))
    if receipt and receipt.get("public_score") is not None:
        kpis.append(("Kaggle public score", f"{receipt['public_score']:.5f} " + (
            f"({compare_to_oof(receipt['public_score'], receipt.get('public_rows'), metrics['oof_accuracy'])})"
            if metric == "accuracy" else f"(OOF {metric} {metrics['oof_score']:.4f})")))
    if receipt and receipt.get("local_score"):
        local = receipt["local_score"]
        value = local.get("score", local.get("accuracy"))
        kpis.append((f"local {local.get('metric', 'accuracy')} (solution file)", f"{value:.4f}" + (
            f" ({compare_to_oof(value, local.get('rows'), metrics['oof_accuracy'])})" if metric == "accuracy" else "")))
    return kpis


def title(run: Run, out: Path, params: ReportParams) -> list[Block]:
    return [Heading("foldwise report", 1),
            Text(f"{run.meta.get('n_train')} training images, {len(run.oof.names)} classes, {len(run.folds)} folds",
                 muted=True), Kpis(key_figures(run))]


def training(run: Run, out: Path, params: ReportParams) -> list[Block]:
    """Curves, the fold table (with each fold's labelled-test score when known), the candidates."""
    metric, metrics, tests = run.metric, run.metrics, run.test_scores
    plot_curves(run.curves, run.best_epoch, out / "curves.png", params.dpi)
    cand = pd.DataFrame([{"candidate": n, **({f"OOF {metric}": v["score"]} if metric not in ("accuracy", "log_loss")
                                             else {}), "OOF accuracy": v["accuracy"], "OOF log-loss": v["logloss"],
                          "chosen": "✔" if n == metrics["method"] else ""} for n, v in metrics["candidates"].items()])
    shown = run.folds.assign(**{"train s": run.folds["train s"].map("{:.0f}".format),
                                "images/s": run.folds["images/s"].map("{:.0f}".format)})
    test_text = (Text(f"On the {tests['rows']} test rows labelled by {tests['solution']}: "
                      + ", ".join(f"fold {k} {v:.4f}" for k, v in tests["folds"].items())
                      + f"; the exported ensemble {tests['ensemble']:.4f}.", id="test-folds") if tests else
                 Text("Ensemble gain over single folds is not measurable out-of-fold (each OOF row is seen by one "
                      "fold); a solution file for part of the test set would show it.", muted=True))
    return [Heading("Training curves"), Figure(out / "curves.png", "training curves"),
            Heading("Folds"), Table(shown, "fold-table"), test_text,
            Heading("Ensemble candidates (scored out-of-fold)"), Table(cand, "candidates")]


def calibration(run: Run, out: Path, params: ReportParams) -> list[Block]:
    smoothing = next((c.get("params", {}).get("label_smoothing") for c in run.fold_configs.values()), None)
    return calibration_section(run.metrics, smoothing)


def tuning(run: Run, out: Path, params: ReportParams) -> list[Block]:
    return tuning_section(run.inputs.tune)


def ladder(run: Run, out: Path, params: ReportParams) -> list[Block]:
    return ladder_section(run.inputs.ladder, out, params.dpi)


def learned(run: Run, out: Path, params: ReportParams) -> list[Block]:
    return learned_section(run, out, params)


def errors(run: Run, out: Path, params: ReportParams) -> list[Block]:
    """Confusion matrix, per-class scores, most confused pairs, the two image grids."""
    oof, images = run.oof, run.images
    conf, names, labels, probs, rows, pred = oof.confusion, oof.names, oof.labels, oof.probs, oof.rows, oof.pred
    plot_confusion(*confusion_view(conf, names), out / "confusion.png", params.dpi)
    y, conf_p = labels[rows], probs[rows].max(1)

    def caption(r: int) -> str:
        return f"#{r} {names[labels[r]]}\n→ {names[probs[r].argmax()]} {probs[r].max():.2f}"

    wrong = rows[pred != y]
    order = wrong[np.argsort(-conf_p[pred != y])][:params.grid_images]
    plot_grid(np.asarray(images[order]), [caption(r) for r in order], out / "misclassified.png", params.dpi)
    right = rows[pred == y]
    order_r = right[np.argsort(conf_p[pred == y])][:params.grid_images]
    plot_grid(np.asarray(images[order_r]), [caption(r) for r in order_r], out / "least_confident_correct.png",
              params.dpi)
    return [Heading("Confusion matrix (OOF)"), Figure(out / "confusion.png", "confusion matrix"),
            Heading("Per class", 3), Table(per_class(conf, names), "per-class"),
            Heading("Most confused pairs", 3), Table(confused_pairs(conf, names), "confused-pairs"),
            Heading("Misclassified OOF images"),
            Text("most confident mistakes first: true → predicted, confidence", muted=True),
            Figure(out / "misclassified.png", "misclassified"),
            Heading("Least confident correct OOF images"),
            Figure(out / "least_confident_correct.png", "least confident correct")]


def export(run: Run, out: Path, params: ReportParams) -> list[Block]:
    """Parity and each graph's OOF score and size."""
    ex = run.export
    if not ex:
        return not_applicable("Export", "No models/export.json: the export stage has not run.", "parity")
    rows = [{"graph": g, f"OOF {run.metric}": ex[g].get("oof_score", ex[g].get("oof_accuracy")),
             "OOF accuracy": ex[g].get("oof_accuracy"),
             "Δ vs fp32 (pts)": 100 * (ex[g].get("oof_accuracy_delta") or 0.0),
             "max |Δprob| vs fp32": ex[g].get("max_abs_diff_vs_fp32"),
             "argmax agreement": ex[g].get("argmax_agreement_vs_fp32"),
             "MB": ex[g].get("bytes", 0) / 1e6, "note": ex[g].get("why_not", "")}
            for g in paths.GRAPH_FILES if g in ex]
    par = ex["parity"]
    return [Heading("Export"),
            Text(f"Parity gate (onnxruntime vs PyTorch on {par.get('rows')} OOF images): max |Δprob| "
                 f"{par.get('max_abs_diff'):.2e}, argmax identical: {par.get('argmax_identical')}.", id="parity"),
            Table(pd.DataFrame(rows), "export", "{:.5g}")]


def pseudo_and_student(run: Run, out: Path, params: ReportParams) -> list[Block]:
    return student_section(run)


def throughput(run: Run, out: Path, params: ReportParams) -> list[Block]:
    """The throughput `foldwise bench infer` measured."""
    if not run.bench:
        return not_applicable("Inference throughput", "Not measured: run `foldwise bench infer`.", "throughput")
    df = pd.DataFrame(run.bench["result"])
    student = [c for c in df.columns if c.startswith(("student_", "one_fold")) and not c.endswith("_bytes")]
    extra = [Table(df[["batch", *student]], "throughput_student", "{:.1f}")] if student else []
    return [Heading("Inference throughput (images/s)"),
            Table(df[[c for c in df.columns if c not in student and not c.endswith("_bytes")]], "throughput", "{:.1f}"),
            *extra,
            Text(f"from {run.inputs.bench}, measured {run.bench.get('time', '')} on {run.bench.get('cpu', '')}",
                 muted=True)]


def submission(run: Run, out: Path, params: ReportParams) -> list[Block]:
    """The receipt, and the public / local score's binomial interval beside the OOF accuracy."""
    receipt, metrics = run.receipt, run.metrics
    if not receipt:
        return not_applicable("Submission", "No submissions/receipt.json: the submit stage has not run.",
                              "submission")
    keep = {k: receipt.get(k) for k in ("mode", "file", "sha256", "competition", "message", "uploaded", "ref",
                                        "status", "public_score", "metric", "oof_score", "oof_accuracy", "reason",
                                        "kernel", "kernel_version", "dataset", "dataset_version")
            if k in receipt or k in ("file", "sha256", "uploaded")}
    local = receipt.get("local_score") or {}
    if local:
        keep["local score"] = (f"{local.get('score', local['accuracy']):.4f} on {local['rows']} rows of "
                               f"{local['solution']}")
    blocks: list[Block] = [Heading("Submission"), _key_values(keep, "submission")]
    scored = [(name, v, n) for name, v, n in (
        ("Kaggle public score", receipt.get("public_score"), receipt.get("public_rows")),
        ("local score (solution file)", local.get("accuracy"), local.get("rows"))) if v is not None]
    if scored and run.metric == "accuracy":  # the binomial interval: a proportion of right rows
        blocks += [Heading("OOF against the public score"),
                   Text("binomial (Wilson) 95% intervals: a public gain inside the interval is noise; choose by OOF",
                        muted=True),
                   Table(pd.DataFrame(oof_vs_public_rows(metrics["oof_accuracy"], len(run.oof.rows), scored)),
                         "oof-vs-public")]
    return blocks


def cv_vs_lb(run: Run, out: Path, params: ReportParams) -> list[Block]:
    if not plot_cv_vs_lb(run.history, out / "cv_vs_lb.png", params.dpi):
        return not_applicable("CV against LB", "No scored submission yet (submissions/history.json).", "cv-vs-lb")
    return [Heading("CV against LB"), Figure(out / "cv_vs_lb.png", "CV against LB")]


def environment_and_params(run: Run, out: Path, params: ReportParams) -> list[Block]:
    env = environment(run.inputs.models)
    return [Heading("Environment"), _key_values(env, "env"),
            Heading("Params"), Code(json.dumps(read_params(), indent=2, default=str))]


SECTIONS: dict[str, Section] = {
    "title": title, "training": training, "calibration": calibration, "tuning": tuning, "ladder": ladder,
    "learned": learned, "errors": errors, "export": export, "student": pseudo_and_student,
    "throughput": throughput, "submission": submission,
    "cv_vs_lb": cv_vs_lb, "environment": environment_and_params}
