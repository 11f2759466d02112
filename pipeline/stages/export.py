"""Stage `export`: the ensemble as one ONNX graph, parity-gated, plus FP16 and INT8 variants, each
scored out of fold and timed side by side (pipeline/export/).

    python -m pipeline.stages.export        # what dvc.yaml runs; by hand: foldwise export

Writes models/ensemble.onnx, models/ensemble_int8.onnx, models/ensemble_fp16.onnx and
models/export.json (parity, each graph's OOF score and speed, the graph predict will use: the
distilled student's graphs of models/student/ compete when the distill stage made them). The
gate: onnxruntime must match PyTorch on real OOF images or the stage fails and writes nothing.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core import paths
from pipeline.core.config import load_section, params_hash
from pipeline.core.console import run_stage
from pipeline.evaluation.metrics import from_meta
from pipeline.export.choice import choose_predict_graph
from pipeline.export.graph import export_onnx, graph_metadata, stamp
from pipeline.export.oof import own_fold_probs
from pipeline.export.params import ExportParams
from pipeline.export.parity import parity_check
from pipeline.export.speed import measure_speed
from pipeline.export.student import read_student, student_on_rows
from pipeline.export.variants import oof_scores, quantize_int8, score_variant, to_fp16
from pipeline.modeling.ensemble import load_ensemble
from serve.atomic import atomic_path, write_json

_logger = logging.getLogger(__spec__.name if __spec__ else __name__)  # pipeline.stages.<name>, also under -m


def _rows(params: ExportParams, row_folds: np.ndarray, folds: list[int], n: int) -> tuple[np.ndarray, ...]:
    """(OOF rows scoring each graph, their first rows for the parity gate, calibration rows), seeded."""
    rng = np.random.default_rng(0)
    trained = np.flatnonzero(np.isin(row_folds, folds))
    eval_rows = np.sort(rng.choice(trained, size=min(params.eval_rows, len(trained)), replace=False))
    calib_rows = np.sort(rng.choice(n, size=min(params.calibration_rows, n), replace=False))
    return eval_rows, eval_rows[:params.parity_rows], calib_rows


class StepClock:
    """Seconds of each step of the stage, in order (models/export.json `seconds`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - self._last, 2)
        self._last = now


def run(params: ExportParams, prepared: Path = paths.PREPARED, ensemble_json: Path = paths.ENSEMBLE_JSON,
        out_dir: Path = paths.MODELS, report_path: Path = paths.EXPORT_JSON, student_dir: Path = paths.STUDENT) -> dict:
    clock, t0 = StepClock(), time.perf_counter()
    files = paths.Prepared(prepared)
    meta = json.loads(files.meta.read_text())
    metric, positive = from_meta(meta), meta.get("positive")
    model, spec = load_ensemble(ensemble_json)
    images = np.load(files.train_images, mmap_mode="r")
    labels = np.load(files.train_labels)
    row_folds = pd.read_csv(files.folds)["fold"].to_numpy()
    eval_rows, parity_rows, calib_rows = _rows(params, row_folds, spec["folds"], len(images))
    def nchw(rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(images[rows]).transpose(0, 3, 1, 2))
    metadata = graph_metadata(meta, spec, params_hash({"export": params.__dict__, "ensemble": spec}))
    report: dict = {"folds": spec["folds"], "views": spec["views"], "method": spec["method"], "opset": params.opset}
    clock.done("load")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp_dir:
        work = Path(tmp_dir)
        tmp = {g: work / name for g, name in paths.GRAPH_FILES.items()}
        export_onnx(model, torch.from_numpy(nchw(parity_rows[:2])), tmp["fp32"], {**metadata, "precision": "fp32"},
                    params.opset)
        clock.done("fp32_graph")
        report["parity"] = parity_check(tmp["fp32"], model, nchw(parity_rows), params)
        clock.done("parity")
        x_eval, y_eval, f_eval = nchw(eval_rows), labels[eval_rows], row_folds[eval_rows]
        own = own_fold_probs(tmp["fp32"], x_eval, f_eval, spec["folds"], work)
        report["fp32"] = {"bytes": tmp["fp32"].stat().st_size, "rows": int(len(eval_rows)),
                          **oof_scores(own, y_eval, metric, positive)}
        clock.done("fp32_oof")
        quantize_int8(tmp["fp32"], tmp["int8"], nchw(calib_rows))
        stamp(tmp["int8"], {**metadata, "precision": "int8 (QDQ, per-channel, static)"})
        clock.done("int8_graph")
        scored = (x_eval, y_eval, f_eval, spec["folds"], report["fp32"], own, metric, positive, work)
        report["int8"] = score_variant(tmp["int8"], *scored)
        clock.done("int8_oof")
        to_fp16(tmp["fp32"], tmp["fp16"])
        stamp(tmp["fp16"], {**metadata, "precision": "fp16"})
        clock.done("fp16_graph")
        report["fp16"] = score_variant(tmp["fp16"], *scored)
        clock.done("fp16_oof")
        timed = {g: tmp[g] for g in tmp if g == "fp32" or report[g].get("checked")}
        student = read_student(student_dir)
        if student is not None:  # the distilled student's graphs compete on the same rule (pipeline/export/student.py)
            report.update(student_on_rows(student, student_dir, eval_rows, labels, metric, positive))
            timed.update({g: student_dir.parent / e["file"] for g, e in student["graphs"].items() if e["checked"]})
            clock.done("student_oof")
        report["speed"] = measure_speed(timed, x_eval, params.speed_batch, min_seconds=params.speed_seconds)
        report["predict_graph"] = choose_predict_graph(report, params.predict_tolerance)
        clock.done("speed")
        for g, src in tmp.items():
            with atomic_path(paths.graph(g, out_dir)) as final:
                src.replace(final)
    report["export_seconds"] = round(time.perf_counter() - t0, 1)
    report["seconds"] = clock.seconds
    write_json(report_path, report)
    _logger.info("ensemble.onnx: %d folds x %d views, parity max |Δp| %.1e on %d OOF images; OOF %s "
                 "fp32 %.4f%s", len(spec["folds"]), len(spec["views"]), report["parity"]["max_abs_diff"],
                 report["parity"]["rows"], metric.name, report["fp32"]["oof_score"],
                 f", int8 {report['int8'].get('oof_score', float('nan')):.4f}")
    _logger.info("predict will use %s: %s", report["predict_graph"]["file"], report["predict_graph"]["reason"])
    _logger.info("export took %.0f s: %s", report["export_seconds"],
                 ", ".join(f"{k} {v:.1f}" for k, v in clock.seconds.items()))
    return report


def main() -> dict:
    """Export the ensemble of models/ensemble.json as params.yaml `export` says."""
    return run(load_section("export", ExportParams))


if __name__ == "__main__":
    run_stage(main)
