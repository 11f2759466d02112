"""Stage `distill`: a student learns the fold models' soft predictions, is scored out of fold and
exported as its own ONNX graphs (pipeline/training/distill.py: why the score is honest;
pipeline/export/student.py: the graphs). With `distill.enabled: false` (the default) it only records
that it is off, in a second and without importing torch.

    python -m pipeline.stages.distill        # what dvc.yaml runs; by hand: foldwise distill

Reads params.yaml `distill`, `train` (the student's recipe) and `export` (the parity gate, the
variants' rows), data/prepared/ and each fold's final model (models/folds/, models/pseudo/).
Writes models/student/: student.json, student.onnx, student_int8.onnx, student_fp16.onnx, model.pt
and the cross-fitted students (folds/fold<k>/).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.core import paths
from pipeline.core.config import build, load_section, params_hash, read_params
from pipeline.core.console import run_stage
from pipeline.training.distill import DistillParams, student_oof, train_students
from serve.atomic import write_json
from serve.errors import UserError

_logger = logging.getLogger(__spec__.name if __spec__ else __name__)  # pipeline.stages.<name>, also under -m
HONESTY = ("student k trained on fold k's training rows with the soft targets of fold k's model, which trained on "
           "those rows only: neither saw fold k's rows, so the students' scores there are out of fold. The exported "
           "student trained on every row; the cross-fitted OOF score is its estimate. A variant's change against "
           "FP32 is measured on the first cross-fitted student's own validation rows.")


def run(d: DistillParams, prepared: Path = paths.PREPARED, out: Path = paths.STUDENT) -> dict:
    from pipeline.export.params import ExportParams
    from pipeline.training.distill import distill_error, student_params
    from pipeline.training.params import TrainParams

    train = load_section("train", TrainParams)
    student_params(train, d, distill_error)
    export = load_section("export", ExportParams)
    files = paths.Prepared(prepared)
    if not files.meta.is_file():
        raise UserError(f"{files.meta}: not found (run the prepare and train stages first)")
    meta = json.loads(files.meta.read_text())
    teachers = paths.final_fold_dirs(meta["n_folds"])
    work = out.with_name(out.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    try:
        return _train_and_export(d, train, export, meta, teachers, work, prepared, out)
    except BaseException:  # nothing half-written stays beside the stage's output
        shutil.rmtree(work, ignore_errors=True)
        raise


def _train_and_export(d: DistillParams, train, export, meta: dict, teachers: dict, work: Path, prepared: Path,
                      out: Path) -> dict:
    from pipeline.evaluation.metrics import from_meta
    from pipeline.export.student import export_student

    files = paths.Prepared(prepared)
    metric, positive = from_meta(meta), meta.get("positive")
    result = train_students(train, d, teachers, work, prepared)
    labels = result.pop("labels")
    oof = student_oof(work, sorted(teachers), labels, metric, positive)
    k0 = min(teachers)
    images = np.load(files.train_images, mmap_mode="r")
    val0 = np.load(paths.FoldFiles(paths.fold_dir(k0, work / "folds")).oof_rows)[:export.eval_rows]
    calib = np.sort(np.random.default_rng(0).choice(len(images), min(export.calibration_rows, len(images)), False))

    def nchw(rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(images[rows]).transpose(0, 3, 1, 2))

    final_dir = paths.fold_dir(k0, work / "final")
    graphs = export_student(paths.FoldFiles(final_dir).model, paths.FoldFiles(paths.fold_dir(k0, work / "folds")).model,
                            meta, export, work, nchw(val0[:export.parity_rows]), nchw(calib),
                            (nchw(val0), labels[val0]), oof, metric, positive,
                            params_hash({"distill": d.__dict__, "train": result["params"]}))
    shutil.copy2(paths.FoldFiles(final_dir).model, work / "model.pt")
    shutil.rmtree(work / "final")
    report = {"enabled": True, "model": d.model, "temperature": d.temperature, "alpha": d.alpha,
              "test_images": result["test_images"], "test_weight": d.test_weight,
              "teachers": {str(k): str(v) for k, v in teachers.items()}, "oof": oof, "folds": result["folds"],
              "final": result["final"], "graphs": graphs, "honesty": HONESTY}
    write_json(work / "student.json", report)
    shutil.rmtree(out, ignore_errors=True)
    work.replace(out)
    _logger.info("student %s: OOF %s %.4f (95%% CI %.4f-%.4f) from %d teachers", d.model, metric.name,
                 oof["oof_score"], *oof["interval_95"], len(teachers))
    return report


def main() -> dict:
    """Distil the fold models into one student as params.yaml `distill` says (or record that it is off)."""
    d = build(DistillParams, read_params().get("distill"), "distill")
    if not d.enabled:
        shutil.rmtree(paths.STUDENT, ignore_errors=True)
        paths.STUDENT.mkdir(parents=True)
        report = {"enabled": False, "why": "distill.enabled is false"}
        write_json(paths.STUDENT / "student.json", report)
        return report
    return run(d)


if __name__ == "__main__":
    run_stage(main)
