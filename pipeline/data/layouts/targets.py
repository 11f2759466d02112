"""From the labels as spelled to what the model learns and what the submission holds.

    t = resolve_targets(raw, params)     # classes, label indices, submission spec, metric

Classes come from the data (`prepare.classes` may declare them): integers in numeric order,
otherwise strings in code-point order, so the order is the same on every machine. They are
written back into the submission exactly as spelled. The submission kind comes from the sample
submission: one column per class -> `class_probs` (classes then follow the sample's column order);
one column -> `label`, or `binary_prob` for two classes when the sample holds fractional
probabilities (e.g. 0.5) or the metric is ROC AUC. The metric defaults by kind: accuracy, ROC
AUC, log loss.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.data.layouts.common import RawCompetition
from pipeline.evaluation.metrics import DEFAULT_FOR_SUBMISSION, sort_classes
from serve.csvfiles import where
from serve.errors import UserError
from serve.submission import SubmissionSpec

if TYPE_CHECKING:  # the reader only reads attributes of prepare's params (no import cycle at run time)
    from pipeline.data.prepare import PrepareParams

_logger = logging.getLogger(__name__)


@dataclass
class Targets:
    classes: list[str]
    class_names: list[str]
    labels: np.ndarray          # int64 class index per training row
    submission: SubmissionSpec
    metric: str
    positive: int | None        # index of the positive class (binary_prob), else None


def _fractional(series: pd.Series) -> bool:
    numbers = pd.to_numeric(series, errors="coerce")
    return bool(numbers.notna().all() and ((numbers % 1) != 0).any() and numbers.between(0, 1).all())


def _label_error(raw: RawCompetition, row: int, value: str, allowed: list[str]) -> UserError:
    shown = ", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")
    place = (where(raw.labels_file, row, raw.labels_column) if raw.labels_column is not None
             else raw.train.names[row] if hasattr(raw.train, "names") else raw.labels_file)
    return UserError(f"{place}: label '{value}' is not a class (prepare.classes: {shown})")


def resolve_targets(raw: RawCompetition, params: PrepareParams) -> Targets:
    observed = sort_classes(raw.train_labels)
    if params.classes:
        classes = [str(c) for c in params.classes]
        allowed = set(classes)
        for row, value in enumerate(raw.train_labels):
            if value not in allowed:
                raise _label_error(raw, row, value, classes)
    else:
        classes = observed
    if len(classes) < 2:
        raise UserError(f"{raw.labels_file}: only one class ('{classes[0]}') in the training labels; "
                        "a classifier needs at least two")
    columns = [str(c) for c in raw.sample.columns[1:]]
    kind = params.submission
    if kind == "auto":
        if len(columns) > 1:
            kind = "class_probs"
        elif len(classes) == 2 and (_fractional(raw.sample[columns[0]]) or params.metric == "roc_auc"):
            kind = "binary_prob"
        else:
            kind = "label"
    positive = None
    if kind == "class_probs":
        missing = [c for c in columns if c not in set(classes)]
        if missing:
            raise UserError(f"{raw.sample_name}: probability column '{missing[0]}' is not a class of the training "
                            f"labels ({raw.labels_file}; {len(classes)} classes)")
        unlisted = [c for c in classes if c not in set(columns)]
        if unlisted:
            raise UserError(f"{raw.sample_name}: class '{unlisted[0]}' of the training labels has no probability "
                            "column")
        classes = columns  # the model's output order is the submission's column order
    elif len(columns) != 1:
        raise UserError(f"{raw.sample_name}: a '{kind}' submission has one column besides the id, got {columns}")
    elif kind == "binary_prob":
        if len(classes) != 2:
            raise UserError(f"{raw.sample_name}: a binary probability submission needs two classes, the training "
                            f"labels have {len(classes)}")
        pos = str(params.positive_class) if params.positive_class is not None else classes[1]
        if pos not in classes:
            raise UserError(f"params.yaml: prepare.positive_class: '{pos}' is not a class ({', '.join(classes)})")
        positive = classes.index(pos)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.fromiter((index[v] for v in raw.train_labels), dtype=np.int64, count=len(raw.train_labels))
    names = [str(n) for n in params.class_names] if params.class_names else list(classes)
    if len(names) != len(classes):
        raise UserError(f"params.yaml: prepare.class_names: {len(names)} names for {len(classes)} classes "
                        f"({', '.join(classes[:10])})")
    metric = params.metric if params.metric != "auto" else DEFAULT_FOR_SUBMISSION[kind]
    spec = SubmissionSpec(kind, raw.id_column, columns, classes,
                          classes[positive] if positive is not None else None, names)
    _logger.info("%d classes (%s%s), submission %s, metric %s", len(classes), ", ".join(classes[:6]),
                 ", ..." if len(classes) > 6 else "", kind, metric)
    return Targets(classes, names, labels, spec, metric, positive)
