"""The distilled student as ONNX graphs with ensemble.onnx's contract: uint8 images in, `probs`
[N, classes] and `fold_probs` [N, 1, classes] out, the same metadata (plus `model_kind: student`),
parity-gated, with INT8 and FP16 variants.

    graphs = export_student(final_pt, probe_pt, meta, export_params, out_dir, parity_x, calib_x, (x_eval, y_eval))

Scores, and how each stays honest: the FP32 student's score is the cross-fitted students' OOF
score (pipeline/training/distill.py). A variant's change against FP32 cannot be measured on the
final student (it trained on every row), so it is measured on `probe_pt`, the first cross-fitted
student, exported the same way and run on that fold's validation rows, which neither it nor its
teacher saw: variant score = student OOF + (variant - FP32 on those rows).
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.core import paths
from pipeline.evaluation.metrics import Metric
from pipeline.export.graph import export_onnx, graph_metadata, stamp
from pipeline.export.params import ExportParams
from pipeline.export.parity import parity_check
from pipeline.export.variants import quantize_int8, to_fp16
from pipeline.modeling.classifier import load_fold_model
from pipeline.modeling.ensemble import EnsembleModel
from pipeline.modeling.nets import fuse_for_inference
from serve.engine import run_graph
from serve.errors import first_line

_logger = logging.getLogger(__name__)
SPEC = {"folds": [], "views": ["none"], "method": "student", "combine": "mean_prob", "view_weights": [1.0],
        "fold_weights": [1.0], "temperature": 1.0}


def student_module(model_pt: Path) -> EnsembleModel:
    """One model as a one-member, one-view ensemble: the same inputs and outputs as ensemble.onnx."""
    model = fuse_for_inference(load_fold_model(model_pt)[0])
    return EnsembleModel([model], ["none"], [1.0], [1.0], "mean_prob").eval()


def export_one_model(model_pt: Path, meta: dict, path: Path, example_nchw: np.ndarray, phash: str,
                     kind: str = "student", opset: int = 18) -> tuple[EnsembleModel, dict]:
    """One model's FP32 graph with ensemble.onnx's contract and metadata (`foldwise bench infer` also
    exports one fold model this way, to time it beside the student); returns the module and metadata."""
    model = student_module(model_pt)
    metadata = {**graph_metadata(meta, SPEC, phash), "model_kind": kind}
    export_onnx(model, torch.from_numpy(example_nchw[:2]), path, {**metadata, "precision": "fp32"}, opset)
    return model, metadata


def _write_graphs(model_pt: Path, meta: dict, params: ExportParams, out: dict[str, Path], parity_x: np.ndarray,
                  calib_x: np.ndarray, phash: str) -> dict:
    """student.onnx (parity-gated), student_int8.onnx and student_fp16.onnx at `out`'s paths."""
    model, metadata = export_one_model(model_pt, meta, out["student"], parity_x, phash, opset=params.opset)
    parity = parity_check(out["student"], model, parity_x, params)
    quantize_int8(out["student"], out["student_int8"], calib_x)
    stamp(out["student_int8"], {**metadata, "precision": "int8 (QDQ, per-channel, static)"})
    to_fp16(out["student"], out["student_fp16"])
    stamp(out["student_fp16"], {**metadata, "precision": "fp16"})
    return parity


def _variant_deltas(probe_pt: Path, meta: dict, params: ExportParams, x: np.ndarray, y: np.ndarray,
                    metric: Metric, positive: int | None, calib_x: np.ndarray) -> dict[str, dict]:
    """Each variant's score change against FP32, on the probe student's own validation rows."""
    with tempfile.TemporaryDirectory(prefix="foldwise-probe-") as tmp:
        out = {g: Path(tmp) / name for g, name in paths.STUDENT_FILES.items()}
        _write_graphs(probe_pt, meta, params, out, x[:params.parity_rows], calib_x, "probe")
        scored: dict[str, dict] = {}
        base = None
        for g, path in out.items():
            try:
                probs, _ = run_graph(path, x)
            except Exception as exc:  # noqa: BLE001  (onnxruntime has no CPU kernel for some fp16 ops)
                scored[g] = {"checked": False, "why_not": f"onnxruntime CPU could not run it: {first_line(exc)}"}
                continue
            score = metric.score(y, probs, positive)
            base = score if g == "student" else base
            scored[g] = {"checked": True, "probe_score": round(score, 6), "probe_rows": int(len(y)),
                         "probe_delta": round(score - base, 6)}
    return scored


def export_student(final_pt: Path, probe_pt: Path, meta: dict, params: ExportParams, out_dir: Path,
                   parity_x: np.ndarray, calib_x: np.ndarray, probe_eval: tuple[np.ndarray, np.ndarray],
                   oof: dict, metric: Metric, positive: int | None, phash: str,
                   final_name: str = paths.STUDENT.name) -> dict:
    """The three student graphs in `out_dir` (renamed `final_name` afterwards, beside export.json) and each
    one's entry for student.json (module docstring)."""
    out = {g: out_dir / name for g, name in paths.STUDENT_FILES.items()}
    parity = _write_graphs(final_pt, meta, params, out, parity_x, calib_x, phash)
    deltas = _variant_deltas(probe_pt, meta, params, *probe_eval, metric, positive, calib_x)
    graphs = {}
    for g, path in out.items():
        entry = {"file": f"{final_name}/{path.name}", "bytes": path.stat().st_size, "metric": metric.name,
                 **deltas[g]}
        if deltas[g]["checked"]:
            entry["oof_score"] = round(oof["oof_score"] + deltas[g]["probe_delta"], 6)
        graphs[g] = entry
    graphs["student"]["parity"] = parity
    _logger.info("student graphs: parity max |Δp| %.1e; OOF %s fp32 %.4f%s", parity["max_abs_diff"], metric.name,
                 oof["oof_score"], "".join(f", {g.removeprefix('student_')} {e['oof_score']:.4f}"
                                           for g, e in graphs.items() if g != "student" and "oof_score" in e))
    return graphs


def read_student(student_dir: Path = paths.STUDENT) -> dict | None:
    """models/student/student.json when distillation ran, else None."""
    path = student_dir / "student.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return report if report.get("enabled") else None


def student_on_rows(student: dict, student_dir: Path, rows: np.ndarray, labels: np.ndarray, metric: Metric,
                    positive: int | None) -> dict[str, dict]:
    """The student's graph entries for export.json, scored on `rows` (the rows export scores the
    ensemble's graphs on): each row by the cross-fitted student that never saw it, plus each
    variant's change measured on the probe student (module docstring)."""
    folds = [paths.FoldFiles(paths.fold_dir(int(k), student_dir / "folds")) for k in student["folds"]]
    oof_rows = np.concatenate([np.load(f.oof_rows) for f in folds])
    oof_probs = np.concatenate([np.load(f.oof_probs) for f in folds])
    pick = np.isin(oof_rows, rows)
    y, p = labels[oof_rows[pick]], oof_probs[pick]
    base = metric.score(y, p, positive)
    out = {}
    for g, e in student["graphs"].items():
        entry = {**e, "rows": int(pick.sum()), "oof_accuracy": round(float((p.argmax(1) == y).mean()), 6)}
        if e.get("checked"):
            entry["oof_score"] = round(base + e.get("probe_delta", 0.0), 6)
        out[g] = entry
    return out
