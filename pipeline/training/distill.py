"""Distillation: one small student learns the fold models' soft predictions; its score is measured
on rows that no model in its chain ever saw.

    report = run_distill(train_params, distill_params, teachers={0: Path("models/folds/fold0"), ...})

Two kinds of student, trained with the train section's recipe (distill's model, epochs on top):
- **k cross-fitted students** score the recipe. Student k trains on fold k's training rows, with the
  soft targets of fold k's final model (which trained on those rows only) and, with
  `distill.test_images`, that model's soft targets on the test images. Neither the student nor its
  teacher saw fold k's rows, so student k's score there is out of fold; the k scores together are
  the student's OOF score, comparable with the ensemble's (each row by a model that never saw it).
- **the final student**, the one exported, trains on every row with the mean of the k teachers'
  soft targets. It has seen every row, so no row scores it: its expected score is the cross-fitted
  students' OOF (the same recipe on four fifths of the rows: if anything a little pessimistic).

Writes (through pipeline/stages/distill.py) models/student/: the students' fold files, the final
student's model.pt, and student.json. Loss: pipeline/training/targets.py (Hinton's, at
`distill.temperature`, mixing the labels at 1 - `distill.alpha`).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core import paths

if TYPE_CHECKING:
    from pipeline.training.params import TrainParams

_logger = logging.getLogger(__name__)


@dataclass
class DistillParams:
    """params.yaml `distill`: the student, the temperature and the targets' mix (the distill stage)."""
    enabled: bool = False                # off: the stage records that it is off, in a second
    model: str = "foldwise_air"          # any timm or foldwise model (train.model's kind)
    model_kwargs: dict = field(default_factory=dict)
    epochs: int | None = None            # null: train.epochs
    temperature: float = 2.0             # > 0: the teacher's probabilities softened as softmax(log p / T)
    alpha: float = 0.7                   # weight of the teacher's soft targets; 1 - alpha: the labels'
    test_images: bool = True             # also learn the teacher's soft targets on the test images
    test_weight: float = 1.0             # a test image's loss weight (a training image's: 1)

    def validate(self, err) -> None:
        if self.temperature <= 0:
            raise err(f"must be > 0, got {self.temperature}", "temperature")
        if not 0 <= self.alpha <= 1:
            raise err(f"must be in [0, 1], got {self.alpha}", "alpha")
        if self.test_weight <= 0:
            raise err(f"must be > 0, got {self.test_weight}", "test_weight")
        if self.epochs is not None and self.epochs < 1:
            raise err(f"must be at least 1 (or null), got {self.epochs}", "epochs")


def student_params(train: TrainParams, d: DistillParams, err) -> TrainParams:
    """The student's training params: train's recipe with distill's model and epochs, validated
    (a student the config rejects fails naming distill's key)."""
    from pipeline.training.params import TrainParams

    if train.mixup_alpha > 0 or train.cutmix_alpha > 0:
        raise err("the student learns soft targets, which timm's Mixup cannot mix: set train.mixup_alpha "
                  "and train.cutmix_alpha to 0", "enabled")
    p = dataclasses.replace(train, model=d.model, model_kwargs=dict(d.model_kwargs),
                            epochs=d.epochs or train.epochs, steps=None if d.epochs else train.steps,
                            pseudo_labels=dataclasses.replace(train.pseudo_labels, rounds=0))
    probe = TrainParams(model=p.model, optimizer=p.optimizer, augment={})
    probe.validate(lambda msg, key=None: err(msg, "model" if key == "model" else key))
    return p


def _teacher_outputs(teachers: dict[int, Path], images: np.ndarray, test: np.ndarray | None,
                     params: TrainParams) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """Each teacher's probabilities on every training image and on the test images."""
    from pipeline.training.pseudo import teacher_probs

    out = {}
    for k, d in teachers.items():
        t0 = time.perf_counter()
        out[k] = (teacher_probs(d, images, params), None if test is None else teacher_probs(d, test, params))
        _logger.info("teacher fold %d: soft targets of %d training and %d test images in %.0f s", k, len(images),
                     0 if test is None else len(test), time.perf_counter() - t0)
    return out


def train_students(train: TrainParams, d: DistillParams, teachers: dict[int, Path], work: Path,
                   prepared: Path = paths.PREPARED, checkpoints: Path = paths.CHECKPOINTS / "student") -> dict:
    """The k cross-fitted students and the final one (module docstring) under `work`; returns
    their metrics, the students' OOF probabilities and rows."""
    from pipeline.data.batches import load_prepared
    from pipeline.training.fold import fold_seed, run_fold
    from pipeline.training.pseudo import load_test_images
    from pipeline.training.targets import TargetPlan

    err = distill_error
    params = student_params(train, d, err)
    meta, images, labels, _ = load_prepared(prepared, min(teachers))
    test = np.asarray(load_test_images(prepared, "params.yaml: distill.test_images")) if d.test_images else None
    outputs = _teacher_outputs(teachers, images, test, params)
    n_classes = len(meta["classes"])

    def plan_for(soft_train: np.ndarray, soft_test: np.ndarray | None, every_row: bool):
        def plan(meta: dict, images: np.ndarray, labels: np.ndarray, train_rows: np.ndarray) -> TargetPlan:
            rows = np.arange(len(labels)) if every_row else train_rows
            return TargetPlan.build(images, labels, rows, n_classes, params.label_smoothing,
                                    teacher=soft_train[rows], alpha=d.alpha, temperature=d.temperature,
                                    extra_images=test, extra_soft=soft_test, extra_weight=d.test_weight)
        return plan

    folds: dict[str, dict] = {}
    for k in sorted(teachers):
        soft_train, soft_test = outputs[k]
        folds[str(k)] = run_fold(params, k, fold_seed(train, k, None), prepared, folds=work / "folds",
                                 checkpoints=checkpoints, curves=work / "folds",
                                 targets=plan_for(soft_train, soft_test, every_row=False))
    mean_train = np.mean([o[0] for o in outputs.values()], axis=0)
    mean_test = None if test is None else np.mean([o[1] for o in outputs.values()], axis=0)
    k0 = min(teachers)
    t0 = time.perf_counter()
    final = run_fold(params, k0, fold_seed(train, k0, None), prepared, folds=work / "final",
                     checkpoints=checkpoints / "final", curves=work / "final",
                     targets=plan_for(mean_train, mean_test, every_row=True))
    final_metrics = {"train_seconds": round(time.perf_counter() - t0, 1), "epochs": final["epochs_run"],
                     "in_sample_val_accuracy": final["val_accuracy"],
                     "note": f"trained on every row: fold {k0}'s validation score is in-sample and not its score"}
    return {"params": dataclasses.asdict(params), "folds": folds, "final": final_metrics,
            "test_images": 0 if test is None else int(len(test)), "labels": labels, "meta": meta}


def distill_error(msg: str, key: str | None = None) -> Exception:
    """The one-line error of a `distill` param (`params.yaml: distill.<key>: <msg>`)."""
    from serve.errors import UserError

    return UserError(f"params.yaml: distill{'.' + key if key else ''}: {msg}")


def student_oof(work: Path, folds: list[int], labels: np.ndarray, metric, positive) -> dict:
    """The cross-fitted students' OOF score: each row by the student whose chain never saw it."""
    from pipeline.evaluation.confidence import score_interval

    rows = np.concatenate([np.load(paths.FoldFiles(paths.fold_dir(k, work / "folds")).oof_rows) for k in folds])
    probs = np.concatenate([np.load(paths.FoldFiles(paths.fold_dir(k, work / "folds")).oof_probs) for k in folds])
    lo, hi = score_interval(metric, labels[rows], probs, positive)
    return {"metric": metric.name, "oof_score": round(metric.score(labels[rows], probs, positive), 6),
            "oof_accuracy": round(float((probs.argmax(1) == labels[rows]).mean()), 6),
            "interval_95": [round(lo, 6), round(hi, 6)], "rows": int(len(rows))}
