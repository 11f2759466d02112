"""Stage `report`: one self-contained HTML page with every plot and metric of the run.

    foldwise report              # reads params.yaml `report`; writes reports/

Writes `reports/index.html` (images embedded as data URIs, so it opens offline and can be
mailed or handed in as is) and, beside it, the PNGs it shows, plus
`reports/oof_predictions.csv` (actual vs predicted class per OOF row: DVC's confusion plot).
Sections: per-fold curves (best epoch marked), fold table (mean ± std), OOF score, ensemble and
TTA gains, the chosen method; OOF confusion matrix (counts, row-normalised), per-class
precision/recall/F1, most-confused pairs; grids of misclassified and of least confident correct
OOF images; export parity and INT8/FP16 deltas; inference throughput (when `foldwise bench
infer` has run); the submission's scores; environment and params.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.confidence import compare_to_oof, oof_vs_public_rows
from pipeline.config import ReportParams, load_section, read_params
from pipeline.ensemble import combine
from serve.atomic import atomic_path, write_text
from serve.errors import UserError

_logger = logging.getLogger(__name__)
PREPARED = Path("data/prepared")
OUT = Path("reports")
BENCH_INFER = Path("bench/infer.json")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save(fig, path: Path, dpi: int) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def oof_probabilities(models: Path = Path("models")) -> np.ndarray:
    """The chosen ensemble's OOF probabilities `[N, C]`, rebuilt from the ensemble stage's outputs."""
    spec = json.loads((models / "ensemble.json").read_text())
    logits = np.load(models / "oof_logits.npy")
    sub = logits[[spec["all_views"].index(v) for v in spec["views"]]]
    return combine(sub, spec["combine"], np.asarray(spec["view_weights"]))


def labelled_test_scores(meta: dict, prepared: Path, models: Path, source_json: Path) -> dict | None:
    """Each fold alone vs the exported ensemble on the test rows a solution file labels (the
    embedded competition's public part, a kaggle-dataset's test set); None without one. The
    ensemble's gain over single folds is only measurable here: each OOF row sees one fold."""
    source = _read_json(source_json) or {}
    solution = source.get("solution")
    if not solution or not Path(solution).is_file() or not (models / "ensemble.onnx").exists():
        return None
    from serve.engine import run_graph  # noqa: PLC0415

    ids = pd.read_csv(prepared / "test_ids.csv", dtype=str).iloc[:, 0]
    sol = pd.read_csv(solution, dtype=str)
    pos = pd.Series(np.arange(len(ids)), index=ids.to_numpy())
    target = [c for c in sol.columns[1:] if c.lower() != "usage"][0]  # the true label per id
    y_all = sol[target].map({c: i for i, c in enumerate(meta["classes"])})
    known = sol[sol.columns[0]].isin(pos.index) & y_all.notna()
    rows = pos[sol.loc[known, sol.columns[0]]].to_numpy()
    y = y_all[known].to_numpy().astype(np.int64)
    images = np.load(prepared / "test_images.npy", mmap_mode="r")
    probs, fold_probs = run_graph(models / "ensemble.onnx", np.ascontiguousarray(np.asarray(images[rows]).transpose(0, 3, 1, 2)))
    spec = json.loads((models / "ensemble.json").read_text())
    folds = {int(k): float((fold_probs[:, i].argmax(1) == y).mean()) for i, k in enumerate(spec["folds"])}
    return {"solution": solution, "rows": int(len(rows)), "folds": folds,
            "ensemble": float((probs.argmax(1) == y).mean())}


def per_class(conf: np.ndarray, names: list[str]) -> pd.DataFrame:
    tp = np.diag(conf).astype(float)
    precision = tp / np.maximum(conf.sum(0), 1)
    recall = tp / np.maximum(conf.sum(1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return pd.DataFrame({"class": names, "precision": precision, "recall": recall, "f1": f1,
                         "support": conf.sum(1)})


def confused_pairs(conf: np.ndarray, names: list[str], top: int = 8) -> pd.DataFrame:
    off = conf.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:top]
    rows = [(names[i], names[j], int(off[i, j]), off[i, j] / max(conf[i].sum(), 1))
            for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share of true class"])


def confusion_view(conf: np.ndarray, names: list[str], most: int = 25) -> tuple[np.ndarray, list[str]]:
    """The confusion matrix to draw: all classes, or the `most` classes involved in the most mistakes."""
    if len(names) <= most:
        return conf, names
    off = conf - np.diag(np.diag(conf))
    keep = np.sort(np.argsort(-(off.sum(0) + off.sum(1)), kind="stable")[:most])
    return conf[np.ix_(keep, keep)], [names[i] for i in keep]


def plot_curves(curves: dict[int, pd.DataFrame], best: dict[int, int], path: Path, dpi: int) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for k, df in curves.items():
        color = f"C{k % 10}"
        axes[0].plot(df["epoch"], df["train_loss"], "--", color=color, alpha=0.7)
        axes[0].plot(df["epoch"], df["val_loss"], "-", color=color, label=f"fold {k}")
        axes[1].plot(df["epoch"], df["train_accuracy"], "--", color=color, alpha=0.7)
        axes[1].plot(df["epoch"], df["val_accuracy"], "-", color=color, label=f"fold {k}")
        b = df[df["epoch"] == best.get(k, -1)]
        if len(b):
            axes[1].plot(b["epoch"], b["val_accuracy"], "*", color=color, markersize=13)
            axes[0].plot(b["epoch"], b["val_loss"], "*", color=color, markersize=13)
    for ax, what in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.set_title(f"{what}: validation (solid), train (dashed), best epoch (star)")
    axes[1].legend(loc="lower right")
    _save(fig, path, dpi)


def plot_confusion(conf: np.ndarray, names: list[str], path: Path, dpi: int) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(16, 6.5))
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    for ax, mat, title, fmt in ((axes[0], conf, "counts", "{:d}"), (axes[1], norm, "row-normalised (recall)", "{:.2f}")):
        ax.imshow(mat if mat is norm else np.log1p(mat), cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"OOF confusion matrix, {title}")
        hi = mat.max()
        for i in range(len(names)):
            for j in range(len(names)):
                v = mat[i, j]
                ax.text(j, i, fmt.format(int(v) if fmt == "{:d}" else v), ha="center", va="center", fontsize=7,
                        color="white" if (v > 0.6 * hi) else "black")
    _save(fig, path, dpi)


def plot_grid(images: np.ndarray, titles: list[str], path: Path, dpi: int, cols: int = 8) -> None:
    """Images in a grid with a title above each: one mosaic in one axes (a subplot per image costs
    matplotlib ~0.1 s each); grayscale images keep their own contrast, as imshow would give them."""
    plt = _plt()
    n, (h, w, c) = len(images), (images.shape[1:] if len(images) else (8, 8, 1))
    rows, band, gap = max(-(-n // cols), 1), max(h // 3, 4), max(w // 10, 1)
    cell_h, cell_w = band + h + gap, w + gap
    mosaic = np.full((rows * cell_h, cols * cell_w, c), 255, np.uint8)
    for i, img in enumerate(images):
        img = np.asarray(img, np.float32)
        if c == 1:  # stretch each grayscale image to its own range, as a single imshow would
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(img)
        r, k = divmod(i, cols)
        mosaic[r * cell_h + band:r * cell_h + band + h, k * cell_w:k * cell_w + w] = img.clip(0, 255).astype(np.uint8)
    fig, ax = plt.subplots(figsize=(cols * 1.6, rows * 1.9))
    ax.imshow(mosaic.squeeze(-1) if c == 1 else mosaic, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
              interpolation="nearest", aspect="auto")
    for i, title in enumerate(titles[:n]):
        r, k = divmod(i, cols)
        ax.text(k * cell_w + w / 2, r * cell_h + band - 0.5, title, ha="center", va="bottom", fontsize=6.5)
    ax.axis("off")
    _save(fig, path, dpi)


def plot_cv_vs_lb(history: dict, path: Path, dpi: int) -> int:
    """OOF accuracy (x) against the public (Kaggle) or local score (y) of every file submitted or
    scored from this project; returns how many points were plotted."""
    points = [(h.get("oof_score", h["oof_accuracy"]),
               h["public_score"] if h.get("public_score") is not None else h["local_score"],
               h.get("public_score") is not None)
              for h in history.values() if h.get("oof_accuracy") is not None
              and (h.get("public_score") is not None or h.get("local_score") is not None)]
    if not points:
        return 0
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for kaggle, marker, label in ((True, "o", "Kaggle public score"), (False, "s", "local score (solution file)")):
        pts = [(x, y) for x, y, k in points if k == kaggle]
        if pts:
            ax.scatter([x for x, _ in pts], [y for _, y in pts], marker=marker, label=label)
    lo = min(min(x, y) for x, y, _ in points) - 0.005
    hi = max(max(x, y) for x, y, _ in points) + 0.005
    ax.plot([lo, hi], [lo, hi], "--", color="grey", linewidth=1, label="CV = LB")
    ax.set_xlabel("OOF score (CV)")
    ax.set_ylabel("leaderboard / held-out score")
    ax.set_title("CV against LB, every submission file")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path, dpi)
    return len(points)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" id="{path.stem}">'


def _table(df: pd.DataFrame, table_id: str, floatfmt: str = "{:.4f}") -> str:
    return df.to_html(index=False, table_id=table_id, border=0, classes="t",
                      float_format=lambda v: floatfmt.format(v), escape=True)


def environment(models: Path = Path("models")) -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("torch", "timm", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "albumentations", "dvc"):
        try:  # the installed distribution's version: importing torch and timm would take seconds
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist != "onnxruntime-gpu":
                env[dist] = "not installed"
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env["cpu"] = f"{cpu} ({os.cpu_count()} cores)"
    configs = sorted((models / "folds").glob("fold*/config.json"))
    env["trained on"] = json.loads(configs[0].read_text()).get("device", "?") if configs else "?"
    return env


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table.t{border-collapse:collapse;margin:.6em 0}table.t td,table.t th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f5f5f5}img{max-width:100%}.kpi{display:flex;gap:1.2em;flex-wrap:wrap}
.kpi div{background:#f5f7fa;border-radius:6px;padding:.6em 1em}.kpi b{display:block;font-size:1.5em}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}.muted{color:#777}"""


def run(params: ReportParams, prepared: Path = PREPARED, models: Path = Path("models"), out: Path = OUT,
        metrics_path: Path = Path("metrics.json"), receipt_path: Path = Path("submissions/receipt.json"),
        bench_path: Path = BENCH_INFER, source_json: Path = Path("data/raw/source.json"),
        history_path: Path = Path("submissions/history.json")) -> Path:
    try:
        meta = json.loads((prepared / "meta.json").read_text())
        metrics = json.loads(metrics_path.read_text())
        labels = np.load(prepared / "train_labels.npy")
        images = np.load(prepared / "train_images.npy", mmap_mode="r")
        probs = oof_probabilities(models)
    except FileNotFoundError as exc:
        raise UserError(f"{exc.filename}: not found (run the pipeline up to the ensemble stage first)") from None
    names = meta["class_names"] or meta["classes"]
    metric = metrics.get("metric", "accuracy")
    out.mkdir(parents=True, exist_ok=True)
    covered = ~np.isnan(probs[:, 0])
    rows = np.flatnonzero(covered)
    y, p = labels[rows], probs[rows]
    pred, conf_p = p.argmax(1), p.max(1)
    n_cls = len(names)
    conf = np.bincount(y * n_cls + pred, minlength=n_cls * n_cls).reshape(n_cls, n_cls)
    with atomic_path(out / "oof_predictions.csv") as tmp:
        pd.DataFrame({"row": rows, "actual": [names[i] for i in y], "predicted": [names[i] for i in pred]}).to_csv(
            tmp, index=False)

    # curves and fold table
    fold_rows, curves, best = [], {}, {}
    for k in sorted(int(f) for f in metrics["folds"]):
        fm = _read_json(models / "folds" / f"fold{k}" / "metrics.json") or {}
        curve_path = models / "curves" / f"fold{k}.csv"
        if curve_path.exists():
            curves[k] = pd.read_csv(curve_path)
        best[k] = metrics["folds"][str(k)].get("best_epoch")
        fold_rows.append({"fold": k, "seed": fm.get("seed"), "best epoch": best[k],
                          **({metric: metrics["folds"][str(k)]["score"]} if metric != "accuracy" else {}),
                          "accuracy": metrics["folds"][str(k)]["accuracy"],
                          "log-loss": metrics["folds"][str(k)]["logloss"],
                          "train s": fm.get("train_seconds"), "images/s": fm.get("train_images_per_second")})
    folds_df = pd.DataFrame(fold_rows)
    plot_curves(curves, best, out / "curves.png", params.dpi)
    plot_confusion(*confusion_view(conf, names), out / "confusion.png", params.dpi)

    wrong = rows[pred != y]
    wrong_conf = conf_p[pred != y]
    order = wrong[np.argsort(-wrong_conf)][:params.grid_images]
    title = lambda r: f"#{r} {names[labels[r]]}\n→ {names[probs[r].argmax()]} {probs[r].max():.2f}"  # noqa: E731
    plot_grid(np.asarray(images[order]), [title(r) for r in order], out / "misclassified.png", params.dpi)
    right = rows[pred == y]
    order_r = right[np.argsort(conf_p[pred == y])][:params.grid_images]
    plot_grid(np.asarray(images[order_r]), [title(r) for r in order_r], out / "least_confident_correct.png",
              params.dpi)

    cands = metrics["candidates"]
    best_tta = max((v["accuracy"] for n, v in cands.items() if n.endswith("+tta")), default=None)
    best_plain = max(v["accuracy"] for n, v in cands.items() if not n.endswith("+tta"))
    test_scores = labelled_test_scores(meta, prepared, models, source_json)
    kpis = ([(f"OOF {metric}", f"{metrics['oof_score']:.4f}")] if metric not in ("accuracy", "log_loss") else [])
    kpis += [("OOF accuracy", f"{metrics['oof_accuracy']:.4f}"), ("OOF log-loss", f"{metrics['oof_logloss']:.4f}"),
            ("folds mean ± std", f"{folds_df['accuracy'].mean():.4f} ± {folds_df['accuracy'].std(ddof=0):.4f}"),
            ("TTA gain (OOF)", f"{100 * (best_tta - best_plain):+.2f} pts" if best_tta is not None else "no TTA")]
    if test_scores:
        best_single = max(test_scores["folds"].values())
        kpis.append(("ensemble gain over best fold (labelled test rows)",
                     f"{100 * (test_scores['ensemble'] - best_single):+.2f} pts"))
    kpis.append(("chosen method", metrics["method"]))
    receipt = _read_json(receipt_path)
    if receipt:
        if receipt.get("public_score") is not None:
            kpis.append(("Kaggle public score", f"{receipt['public_score']:.5f} " + (
                f"({compare_to_oof(receipt['public_score'], receipt.get('public_rows'), metrics['oof_accuracy'])})"
                if metric == "accuracy" else f"(OOF {metric} {metrics['oof_score']:.4f})")))
        if receipt.get("local_score"):
            local = receipt["local_score"]
            value = local.get("score", local.get("accuracy"))
            kpis.append((f"local {local.get('metric', 'accuracy')} (solution file)", f"{value:.4f}" + (
                f" ({compare_to_oof(value, local.get('rows'), metrics['oof_accuracy'])})" if metric == "accuracy" else "")))
    cand_df = pd.DataFrame([{"candidate": n, **({f"OOF {metric}": v["score"]} if metric not in ("accuracy", "log_loss")
                                                else {}), "OOF accuracy": v["accuracy"], "OOF log-loss": v["logloss"],
                             "chosen": "✔" if n == metrics["method"] else ""} for n, v in cands.items()])

    sections = [f"<h1>foldwise report</h1><p class=muted>{html.escape(str(meta.get('n_train')))} training images, "
                f"{n_cls} classes, {len(folds_df)} folds</p>",
                '<div class="kpi" id="kpis">' + "".join(f"<div>{html.escape(k)}<b>{html.escape(v)}</b></div>"
                                                       for k, v in kpis) + "</div>",
                "<h2>Training curves</h2>" + _img(out / "curves.png", "training curves"),
                "<h2>Folds</h2>" + _table(folds_df.assign(**{"train s": folds_df["train s"].map("{:.0f}".format),
                                                              "images/s": folds_df["images/s"].map("{:.0f}".format)}),
                                          "fold-table")
                + (f"<p id=test-folds>On the {test_scores['rows']} test rows labelled by {html.escape(test_scores['solution'])}: "
                   + ", ".join(f"fold {k} {v:.4f}" for k, v in test_scores["folds"].items())
                   + f"; the exported ensemble {test_scores['ensemble']:.4f}.</p>" if test_scores else
                   "<p class=muted>Ensemble gain over single folds is not measurable out-of-fold (each OOF row is "
                   "seen by one fold); a solution file for part of the test set would show it.</p>"),
                "<h2>Ensemble candidates (scored out-of-fold)</h2>" + _table(cand_df, "candidates"),
                "<h2>Confusion matrix (OOF)</h2>" + _img(out / "confusion.png", "confusion matrix"),
                "<h3>Per class</h3>" + _table(per_class(conf, names), "per-class"),
                "<h3>Most confused pairs</h3>" + _table(confused_pairs(conf, names), "confused-pairs"),
                "<h2>Misclassified OOF images</h2><p class=muted>most confident mistakes first: true → predicted, "
                "confidence</p>" + _img(out / "misclassified.png", "misclassified"),
                "<h2>Least confident correct OOF images</h2>" + _img(out / "least_confident_correct.png",
                                                                     "least confident correct")]
    export = _read_json(models / "export.json")
    if export:
        rows_e = [{"graph": g, f"OOF {metric}": export[g].get("oof_score", export[g].get("oof_accuracy")),
                   "OOF accuracy": export[g].get("oof_accuracy"),
                   "Δ vs fp32 (pts)": 100 * (export[g].get("oof_accuracy_delta") or 0.0),
                   "max |Δprob| vs fp32": export[g].get("max_abs_diff_vs_fp32"),
                   "argmax agreement": export[g].get("argmax_agreement_vs_fp32"),
                   "MB": export[g].get("bytes", 0) / 1e6, "note": export[g].get("why_not", "")}
                  for g in ("fp32", "int8", "fp16") if g in export]
        par = export["parity"]
        sections.append(f"<h2>Export</h2><p id=parity>Parity gate (onnxruntime vs PyTorch on {par.get('rows')} OOF "
                        f"images): max |Δprob| {par.get('max_abs_diff'):.2e}, argmax identical: "
                        f"{par.get('argmax_identical')}.</p>" + _table(pd.DataFrame(rows_e), "export", "{:.5g}"))
    bench = _read_json(bench_path)
    if bench:
        sections.append("<h2>Inference throughput (images/s)</h2>" +
                        _table(pd.DataFrame(bench["rows"]), "throughput", "{:.1f}") +
                        f"<p class=muted>from {bench_path}, measured {html.escape(bench.get('time', ''))}</p>")
    if receipt:
        keep = {k: receipt.get(k) for k in ("mode", "file", "sha256", "competition", "message", "uploaded", "ref",
                                            "status", "public_score", "metric", "oof_score", "oof_accuracy", "reason",
                                            "kernel", "kernel_version", "dataset", "dataset_version")
                if k in receipt or k in ("file", "sha256", "uploaded")}
        if receipt.get("local_score"):
            keep["local score"] = f"{receipt['local_score'].get('score', receipt['local_score']['accuracy']):.4f} " \
                                  f"on {receipt['local_score']['rows']} rows " \
                                  f"of {receipt['local_score']['solution']}"
        sections.append("<h2>Submission</h2>" + _table(pd.DataFrame({"": list(keep), "value": [str(v) for v in keep.values()]}),
                                                       "submission"))
        scored = [(name, v, n) for name, v, n in (
            ("Kaggle public score", receipt.get("public_score"), receipt.get("public_rows")),
            ("local score (solution file)", (receipt.get("local_score") or {}).get("accuracy"),
             (receipt.get("local_score") or {}).get("rows"))) if v is not None]
        if scored and metric == "accuracy":  # the binomial interval is for a proportion of right rows
            sections.append("<h2>OOF against the public score</h2><p class=muted>binomial (Wilson) 95% intervals: a "
                            "public gain inside the interval is noise; choose by OOF</p>"
                            + _table(pd.DataFrame(oof_vs_public_rows(metrics["oof_accuracy"], len(rows), scored)),
                                     "oof-vs-public"))
    history = _read_json(history_path) or {}
    if plot_cv_vs_lb(history, out / "cv_vs_lb.png", params.dpi):
        sections.append("<h2>CV against LB</h2>" + _img(out / "cv_vs_lb.png", "CV against LB"))
    env = environment(models)
    sections.append("<h2>Environment</h2>" + _table(pd.DataFrame({"": list(env), "value": list(env.values())}), "env"))
    sections.append("<h2>Params</h2><pre>" + html.escape(json.dumps(read_params(), indent=2, default=str)) + "</pre>")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>foldwise report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(sections) + "</body></html>")
    write_text(out / "index.html", page)
    _logger.info("wrote %s (%d KB)", out / "index.html", len(page) // 1024)
    return out / "index.html"


def main() -> None:
    run(load_section("report", ReportParams))
