"""The report's numbers: OOF probabilities of the chosen ensemble, per-class scores, confusion,
per-fold test scores on a labelled part of the test set, the environment. numpy, pandas and
onnxruntime only (the report imports neither torch nor timm).
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.provenance import machine, versions
from pipeline.evaluation.calibration import temper
from pipeline.evaluation.ensemble import combine
from serve.engine import run_graph


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def oof_probabilities(ensemble_json: Path = paths.ENSEMBLE_JSON, oof_logits: Path = paths.OOF_LOGITS) -> np.ndarray:
    """The chosen ensemble's OOF probabilities `[N, C]`, rebuilt from the ensemble stage's outputs."""
    spec = json.loads(ensemble_json.read_text())
    logits = np.load(oof_logits)
    sub = logits[[spec["all_views"].index(v) for v in spec["views"]]]
    return temper(combine(sub, spec["combine"], np.asarray(spec["view_weights"])), spec.get("temperature", 1.0))


def labelled_test_scores(meta: dict, prepared: Path, models: Path, source_json: Path) -> dict | None:
    """Each fold alone vs the exported ensemble on the test rows a solution file labels (the
    embedded competition's public part, a kaggle-dataset's test set); None without one. The
    ensemble's gain over single folds is only measurable here: each OOF row sees one fold."""
    source = read_json(source_json) or {}
    solution = source.get("solution")
    graph = paths.graph("fp32", models)
    if not solution or not Path(solution).is_file() or not graph.exists():
        return None
    files = paths.Prepared(prepared)
    ids = pd.read_csv(files.test_ids, dtype=str).iloc[:, 0]
    sol = pd.read_csv(solution, dtype=str)
    pos = pd.Series(np.arange(len(ids)), index=ids.to_numpy())
    target = [c for c in sol.columns[1:] if c.lower() != "usage"][0]  # the true label per id
    y_all = sol[target].map({c: i for i, c in enumerate(meta["classes"])})
    known = sol[sol.columns[0]].isin(pos.index) & y_all.notna()
    rows = pos[sol.loc[known, sol.columns[0]]].to_numpy()
    y = y_all[known].to_numpy().astype(np.int64)
    images = np.load(files.test_images, mmap_mode="r")
    probs, fold_probs = run_graph(graph, np.ascontiguousarray(np.asarray(images[rows]).transpose(0, 3, 1, 2)))
    spec = json.loads((models / paths.ENSEMBLE_JSON.name).read_text())
    folds = {int(k): float((fold_probs[:, i].argmax(1) == y).mean()) for i, k in enumerate(spec["folds"])}
    scores = {"solution": solution, "rows": int(len(rows)), "folds": folds,
              "ensemble": float((probs.argmax(1) == y).mean())}
    student = paths.graph("student", models)
    if student.exists():  # the distilled student, on the same rows
        student_probs, _ = run_graph(student, np.ascontiguousarray(np.asarray(images[rows]).transpose(0, 3, 1, 2)))
        scores["student"] = float((student_probs.argmax(1) == y).mean())
    return scores


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


def environment(models: Path = paths.MODELS) -> dict[str, Any]:
    """Python, platform, the versions of the libraries that matter, the CPU, the training device."""
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    found = versions(("torch", "timm", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "albumentations", "dvc"))
    runtime = "onnxruntime-gpu" if found["onnxruntime-gpu"] != "not installed" else "onnxruntime"  # one is there
    env.update({k: v for k, v in found.items()
                if k != "python" and (k == runtime or not k.startswith("onnxruntime"))})
    env["cpu"] = machine()
    configs = sorted((models / paths.FOLDS.name).glob("fold*/config.json"))
    env["trained on"] = json.loads(configs[0].read_text()).get("device", "?") if configs else "?"
    return env
