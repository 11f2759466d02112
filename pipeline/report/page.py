"""The report as one self-contained HTML page: every plot and metric of the run.

    index = build_report(params, Inputs())      # the report stage: reports/index.html and its PNGs

reports/index.html embeds its images as data URIs, so it opens offline and can be mailed or
handed in as is; beside it: the PNGs it shows and reports/oof_predictions.csv (actual vs
predicted class per OOF row: DVC's confusion plot). Sections, in order: key figures; per-fold
curves (best epoch marked); fold table; ensemble candidates; calibration; tuning (after `foldwise
tune`: pipeline/report/tuning.py); OOF confusion matrix, per-class
precision/recall/F1, most-confused pairs; grids of misclassified and of least confident correct
OOF images; export parity and INT8/FP16 deltas; inference throughput (when `foldwise bench
infer` has run); the submission and its scores beside the OOF score; CV against LB;
environment and params.
"""
from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.config import read_params
from pipeline.evaluation.confidence import compare_to_oof, oof_vs_public_rows
from pipeline.report.figures import plot_confusion, plot_curves, plot_cv_vs_lb, plot_grid
from pipeline.report.params import ReportParams
from pipeline.report.tables import (
    confused_pairs,
    confusion_view,
    environment,
    labelled_test_scores,
    oof_probabilities,
    per_class,
    read_json,
)
from pipeline.report.tuning import calibration_section, tuning_section
from serve.atomic import atomic_path, write_text
from serve.errors import UserError

_logger = logging.getLogger(__name__)
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table.t{border-collapse:collapse;margin:.6em 0}
table.t td,table.t th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f5f5f5}img{max-width:100%}.kpi{display:flex;gap:1.2em;flex-wrap:wrap}
.kpi div{background:#f5f7fa;border-radius:6px;padding:.6em 1em}.kpi b{display:block;font-size:1.5em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}.muted{color:#777}"""


@dataclass(frozen=True)
class Inputs:
    """What the report reads (dvc.yaml's deps of the report stage)."""
    prepared: Path = paths.PREPARED
    models: Path = paths.MODELS
    metrics: Path = paths.METRICS_JSON
    receipt: Path = paths.RECEIPT
    bench: Path = paths.BENCH_INFER
    source_json: Path = paths.SOURCE_JSON
    history: Path = paths.HISTORY
    tune: Path = paths.TUNE_REPORT


@dataclass
class Oof:
    """The chosen ensemble's OOF predictions on the rows it covers."""
    rows: np.ndarray      # training rows with an OOF prediction
    labels: np.ndarray    # every training row's class
    probs: np.ndarray     # [N, C] (NaN where not covered)
    pred: np.ndarray      # predicted class of `rows`
    names: list[str]

    @property
    def confusion(self) -> np.ndarray:
        n = len(self.names)
        return np.bincount(self.labels[self.rows] * n + self.pred, minlength=n * n).reshape(n, n)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" id="{path.stem}">'


def _table(df: pd.DataFrame, table_id: str, floatfmt: str = "{:.4f}") -> str:
    return df.to_html(index=False, table_id=table_id, border=0, classes="t",
                      float_format=lambda v: floatfmt.format(v), escape=True)


def _fold_table(metrics: dict, models: Path) -> tuple[pd.DataFrame, dict[int, pd.DataFrame], dict[int, int]]:
    """(fold table, curves by fold, best epoch by fold)."""
    metric = metrics.get("metric", "accuracy")
    fold_rows, curves, best = [], {}, {}
    for k in sorted(int(f) for f in metrics["folds"]):
        fm = read_json(paths.FoldFiles(paths.fold_dir(k, models / paths.FOLDS.name)).metrics) or {}
        curve_path = paths.curves_csv(k, models / paths.CURVES.name)
        if curve_path.exists():
            curves[k] = pd.read_csv(curve_path)
        scored = metrics["folds"][str(k)]
        best[k] = scored.get("best_epoch")
        fold_rows.append({"fold": k, "seed": fm.get("seed"), "best epoch": best[k],
                          **({metric: scored["score"]} if metric != "accuracy" else {}),
                          "accuracy": scored["accuracy"], "log-loss": scored["logloss"],
                          "train s": fm.get("train_seconds"), "images/s": fm.get("train_images_per_second")})
    return pd.DataFrame(fold_rows), curves, best


def _trained_smoothing(metrics: dict, models: Path) -> float | None:
    """The label smoothing the folds were trained with (their config.json)."""
    for k in sorted(int(f) for f in metrics["folds"]):
        config = read_json(paths.FoldFiles(paths.fold_dir(k, models / paths.FOLDS.name)).config) or {}
        return (config.get("params") or {}).get("label_smoothing")
    return None


def _kpis(metrics: dict, folds_df: pd.DataFrame, test_scores: dict | None, receipt: dict | None) -> str:
    """The key figures: OOF scores, folds' spread, TTA and ensemble gains, method, public and local scores."""
    metric, cands = metrics.get("metric", "accuracy"), metrics["candidates"]
    best_tta = max((v["accuracy"] for n, v in cands.items() if n.endswith("+tta")), default=None)
    best_plain = max(v["accuracy"] for n, v in cands.items() if not n.endswith("+tta"))
    kpis = ([(f"OOF {metric}", f"{metrics['oof_score']:.4f}")] if metric not in ("accuracy", "log_loss") else [])
    kpis += [("OOF accuracy", f"{metrics['oof_accuracy']:.4f}"), ("OOF log-loss", f"{metrics['oof_logloss']:.4f}"),
             ("folds mean ± std", f"{folds_df['accuracy'].mean():.4f} ± {folds_df['accuracy'].std(ddof=0):.4f}"),
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
    return '<div class="kpi" id="kpis">' + "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>"
                                                   for k, v in kpis) + "</div>"


def _training_sections(metrics: dict, folds_df: pd.DataFrame, test_scores: dict | None, out: Path) -> list[str]:
    """Curves, the fold table (with each fold's labelled-test score when known), the candidates."""
    metric = metrics.get("metric", "accuracy")
    cand_df = pd.DataFrame([{"candidate": n, **({f"OOF {metric}": v["score"]} if metric not in ("accuracy", "log_loss")
                                                else {}), "OOF accuracy": v["accuracy"], "OOF log-loss": v["logloss"],
                             "chosen": "✔" if n == metrics["method"] else ""}
                            for n, v in metrics["candidates"].items()])
    shown = folds_df.assign(**{"train s": folds_df["train s"].map("{:.0f}".format),
                               "images/s": folds_df["images/s"].map("{:.0f}".format)})
    tests = (f"<p id=test-folds>On the {test_scores['rows']} test rows labelled by "
             f"{html.escape(test_scores['solution'])}: "
             + ", ".join(f"fold {k} {v:.4f}" for k, v in test_scores["folds"].items())
             + f"; the exported ensemble {test_scores['ensemble']:.4f}.</p>" if test_scores else
             "<p class=muted>Ensemble gain over single folds is not measurable out-of-fold (each OOF row is "
             "seen by one fold); a solution file for part of the test set would show it.</p>")
    return ["<h2>Training curves</h2>" + _img(out / "curves.png", "training curves"),
            "<h2>Folds</h2>" + _table(shown, "fold-table") + tests,
            "<h2>Ensemble candidates (scored out-of-fold)</h2>" + _table(cand_df, "candidates")]


def _error_sections(oof: Oof, images: np.ndarray, params: ReportParams, out: Path) -> list[str]:
    """Confusion matrix, per-class scores, most confused pairs, the two image grids (drawn here)."""
    conf, names, labels, probs, rows, pred = oof.confusion, oof.names, oof.labels, oof.probs, oof.rows, oof.pred
    plot_confusion(*confusion_view(conf, names), out / "confusion.png", params.dpi)
    y, conf_p = labels[rows], probs[rows].max(1)

    def title(r: int) -> str:
        return f"#{r} {names[labels[r]]}\n→ {names[probs[r].argmax()]} {probs[r].max():.2f}"

    wrong = rows[pred != y]
    order = wrong[np.argsort(-conf_p[pred != y])][:params.grid_images]
    plot_grid(np.asarray(images[order]), [title(r) for r in order], out / "misclassified.png", params.dpi)
    right = rows[pred == y]
    order_r = right[np.argsort(conf_p[pred == y])][:params.grid_images]
    plot_grid(np.asarray(images[order_r]), [title(r) for r in order_r], out / "least_confident_correct.png",
              params.dpi)
    return ["<h2>Confusion matrix (OOF)</h2>" + _img(out / "confusion.png", "confusion matrix"),
            "<h3>Per class</h3>" + _table(per_class(conf, names), "per-class"),
            "<h3>Most confused pairs</h3>" + _table(confused_pairs(conf, names), "confused-pairs"),
            "<h2>Misclassified OOF images</h2><p class=muted>most confident mistakes first: true → predicted, "
            "confidence</p>" + _img(out / "misclassified.png", "misclassified"),
            "<h2>Least confident correct OOF images</h2>" + _img(out / "least_confident_correct.png",
                                                                 "least confident correct")]


def _export_sections(export: dict | None, bench: dict | None, bench_path: Path, metric: str) -> list[str]:
    """Parity and each graph's OOF score and size; the throughput `foldwise bench infer` measured."""
    sections = []
    if export:
        rows_e = [{"graph": g, f"OOF {metric}": export[g].get("oof_score", export[g].get("oof_accuracy")),
                   "OOF accuracy": export[g].get("oof_accuracy"),
                   "Δ vs fp32 (pts)": 100 * (export[g].get("oof_accuracy_delta") or 0.0),
                   "max |Δprob| vs fp32": export[g].get("max_abs_diff_vs_fp32"),
                   "argmax agreement": export[g].get("argmax_agreement_vs_fp32"),
                   "MB": export[g].get("bytes", 0) / 1e6, "note": export[g].get("why_not", "")}
                  for g in paths.GRAPH_FILES if g in export]
        par = export["parity"]
        sections.append(f"<h2>Export</h2><p id=parity>Parity gate (onnxruntime vs PyTorch on {par.get('rows')} OOF "
                        f"images): max |Δprob| {par.get('max_abs_diff'):.2e}, argmax identical: "
                        f"{par.get('argmax_identical')}.</p>" + _table(pd.DataFrame(rows_e), "export", "{:.5g}"))
    if bench:
        sections.append("<h2>Inference throughput (images/s)</h2>" +
                        _table(pd.DataFrame(bench["result"]), "throughput", "{:.1f}") +
                        f"<p class=muted>from {bench_path}, measured {html.escape(bench.get('time', ''))} on "
                        f"{html.escape(bench.get('cpu', ''))}</p>")
    return sections


def _submission_sections(receipt: dict | None, metrics: dict, oof_rows: int) -> list[str]:
    """The receipt, and the public / local score's binomial interval beside the OOF accuracy."""
    if not receipt:
        return []
    keep = {k: receipt.get(k) for k in ("mode", "file", "sha256", "competition", "message", "uploaded", "ref",
                                        "status", "public_score", "metric", "oof_score", "oof_accuracy", "reason",
                                        "kernel", "kernel_version", "dataset", "dataset_version")
            if k in receipt or k in ("file", "sha256", "uploaded")}
    local = receipt.get("local_score") or {}
    if local:
        keep["local score"] = (f"{local.get('score', local['accuracy']):.4f} on {local['rows']} rows of "
                               f"{local['solution']}")
    sections = ["<h2>Submission</h2>" + _table(pd.DataFrame({"": list(keep), "value": [str(v) for v in keep.values()]}),
                                               "submission")]
    scored = [(name, v, n) for name, v, n in (
        ("Kaggle public score", receipt.get("public_score"), receipt.get("public_rows")),
        ("local score (solution file)", local.get("accuracy"), local.get("rows"))) if v is not None]
    if scored and metrics.get("metric", "accuracy") == "accuracy":  # the binomial interval: a proportion of right rows
        sections.append("<h2>OOF against the public score</h2><p class=muted>binomial (Wilson) 95% intervals: a "
                        "public gain inside the interval is noise; choose by OOF</p>"
                        + _table(pd.DataFrame(oof_vs_public_rows(metrics["oof_accuracy"], oof_rows, scored)),
                                 "oof-vs-public"))
    return sections


def _load(inputs: Inputs) -> tuple[dict, dict, Oof, np.ndarray]:
    files = paths.Prepared(inputs.prepared)
    try:
        meta = json.loads(files.meta.read_text())
        metrics = json.loads(inputs.metrics.read_text())
        labels = np.load(files.train_labels)
        images = np.load(files.train_images, mmap_mode="r")
        probs = oof_probabilities(inputs.models / paths.ENSEMBLE_JSON.name, inputs.models / paths.OOF_LOGITS.name)
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found (run the pipeline up to the ensemble stage first)") from None
    rows = np.flatnonzero(~np.isnan(probs[:, 0]))
    oof = Oof(rows, labels, probs, probs[rows].argmax(1), meta["class_names"] or meta["classes"])
    return meta, metrics, oof, images


def build_report(params: ReportParams, inputs: Inputs = Inputs(), out: Path = paths.REPORTS) -> Path:
    """Draw the figures and write `out`/index.html and `out`/oof_predictions.csv; returns the page's path."""
    meta, metrics, oof, images = _load(inputs)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "oof_predictions.csv") as tmp:
        pd.DataFrame({"row": oof.rows, "actual": [oof.names[i] for i in oof.labels[oof.rows]],
                      "predicted": [oof.names[i] for i in oof.pred]}).to_csv(tmp, index=False)
    folds_df, curves, best = _fold_table(metrics, inputs.models)
    plot_curves(curves, best, out / "curves.png", params.dpi)
    test_scores = labelled_test_scores(meta, inputs.prepared, inputs.models, inputs.source_json)
    receipt = read_json(inputs.receipt)
    sections = [f"<h1>foldwise report</h1><p class=muted>{html.escape(str(meta.get('n_train')))} training images, "
                f"{len(oof.names)} classes, {len(folds_df)} folds</p>", _kpis(metrics, folds_df, test_scores, receipt),
                *_training_sections(metrics, folds_df, test_scores, out),
                *calibration_section(metrics, _trained_smoothing(metrics, inputs.models)),
                *tuning_section(inputs.tune), *_error_sections(oof, images, params, out),
                *_export_sections(read_json(inputs.models / paths.EXPORT_JSON.name), read_json(inputs.bench),
                                  inputs.bench, metrics.get("metric", "accuracy")),
                *_submission_sections(receipt, metrics, len(oof.rows))]
    if plot_cv_vs_lb(read_json(inputs.history) or {}, out / "cv_vs_lb.png", params.dpi):
        sections.append("<h2>CV against LB</h2>" + _img(out / "cv_vs_lb.png", "CV against LB"))
    env = environment(inputs.models)
    sections.append("<h2>Environment</h2>" + _table(pd.DataFrame({"": list(env), "value": list(env.values())}), "env"))
    sections.append("<h2>Params</h2><pre>" + html.escape(json.dumps(read_params(), indent=2, default=str)) + "</pre>")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>foldwise report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(sections) + "</body></html>")
    write_text(out / "index.html", page)
    _logger.info("wrote %s (%d KB)", out / "index.html", len(page) // 1024)
    return out / "index.html"
