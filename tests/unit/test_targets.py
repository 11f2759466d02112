"""pipeline/data/layouts/targets.py: resolve_targets turns the labels as spelled into classes, label
indices, the submission spec and the metric (class order, declared classes, submission kind, names)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import build
from pipeline.data.layouts.common import ImageFiles, PixelArray, RawCompetition
from pipeline.data.layouts.targets import resolve_targets
from pipeline.data.prepare import PrepareParams
from serve.errors import UserError


def params(**values) -> PrepareParams:
    return build(PrepareParams, values, "prepare")


def raw(labels: list[str], sample: dict[str, list[str]], labels_column: str | None = "label",
        train: ImageFiles | PixelArray | None = None) -> RawCompetition:
    """A RawCompetition as a reader returns it: `labels` from comp.zip:train.csv, a sample submission."""
    frame = pd.DataFrame(sample)
    images = PixelArray(np.zeros((len(labels), 2, 2, 1), np.uint8))
    return RawCompetition("pixel_csv", train or images, labels, "comp.zip:train.csv", labels_column,
                          PixelArray(np.zeros((len(frame), 2, 2, 1), np.uint8)), frame.iloc[:, 0].tolist(), frame,
                          "comp.zip:sample_submission.csv", str(frame.columns[0]))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


LABEL_SAMPLE = {"id": ["t0", "t1"], "label": ["0", "0"]}


def test_integer_classes_sort_numerically() -> None:
    t = resolve_targets(raw(["10", "2", "1", "2"], LABEL_SAMPLE), params())
    assert t.classes == ["1", "2", "10"]
    assert t.labels.dtype == np.int64 and t.labels.tolist() == [2, 1, 0, 1]


def test_string_classes_sort_by_code_point() -> None:
    t = resolve_targets(raw(["b", "B", "a", "10", "9"], LABEL_SAMPLE), params())
    assert t.classes == ["10", "9", "B", "a", "b"]  # not all integers: strings throughout
    assert t.labels.tolist() == [4, 2, 3, 0, 1]
    assert t.class_names == t.classes


def test_declared_classes_set_the_order() -> None:
    t = resolve_targets(raw(["1", "2", "1"], LABEL_SAMPLE), params(classes=[2, 1, 3]))
    assert t.classes == ["2", "1", "3"] and t.labels.tolist() == [1, 0, 1]
    assert t.submission.classes == ["2", "1", "3"]


def test_a_label_outside_the_declared_classes_is_refused_naming_the_row() -> None:
    with pytest.raises(UserError) as exc:
        resolve_targets(raw(["1", "2", "7", "1"], LABEL_SAMPLE), params(classes=[1, 2]))
    assert one_line(exc) == ("comp.zip:train.csv: row 3 (line 4), column 'label': label '7' is not a class "
                             "(prepare.classes: 1, 2)")


def test_a_label_outside_the_declared_classes_names_the_image_file_for_class_folders() -> None:
    train = ImageFiles([Path("a.png"), Path("b.png")], ["comp.zip:train/cat/a.png", "comp.zip:train/bird/b.png"])
    with pytest.raises(UserError) as exc:
        resolve_targets(raw(["cat", "bird"], LABEL_SAMPLE, labels_column=None, train=train),
                        params(classes=["cat", "dog"]))
    assert one_line(exc).startswith("comp.zip:train/bird/b.png: label 'bird' is not a class")


def test_one_class_is_refused() -> None:
    with pytest.raises(UserError, match=r"comp\.zip:train\.csv: only one class \('a'\)"):
        resolve_targets(raw(["a", "a"], LABEL_SAMPLE), params())


def test_one_column_of_labels_is_a_label_submission_scored_by_accuracy() -> None:
    t = resolve_targets(raw(["0", "1", "2"], LABEL_SAMPLE), params())
    assert t.submission.kind == "label" and t.metric == "accuracy" and t.positive is None
    assert t.submission.header == ["id", "label"] and t.submission.positive_class is None


def test_one_column_of_whole_numbers_with_two_classes_stays_a_label_submission() -> None:
    t = resolve_targets(raw(["0", "1"], {"id": ["t0", "t1"], "label": ["0", "1"]}), params())
    assert t.submission.kind == "label"


def test_fractional_one_column_with_two_classes_is_binary_prob_of_the_second_class() -> None:
    sample = {"id": ["t0", "t1"], "has_cactus": ["0.5", "0.5"]}
    t = resolve_targets(raw(["1", "0", "1"], sample, labels_column="has_cactus"), params())
    assert t.submission.kind == "binary_prob" and t.metric == "roc_auc"
    assert t.classes == ["0", "1"] and t.positive == 1 and t.submission.positive_class == "1"


def test_binary_prob_positive_class_can_be_chosen() -> None:
    sample = {"id": ["t0"], "p": ["0.5"]}
    t = resolve_targets(raw(["no", "yes"], sample), params(positive_class="no"))
    assert t.positive == 0 and t.submission.positive_class == "no"
    with pytest.raises(UserError) as exc:
        resolve_targets(raw(["no", "yes"], sample), params(positive_class="maybe"))
    assert one_line(exc) == "params.yaml: prepare.positive_class: 'maybe' is not a class (no, yes)"


def test_a_roc_auc_metric_makes_a_two_class_single_column_binary_prob() -> None:
    t = resolve_targets(raw(["0", "1"], LABEL_SAMPLE), params(metric="roc_auc"))
    assert t.submission.kind == "binary_prob" and t.metric == "roc_auc"


def test_fractional_one_column_with_three_classes_is_a_label_submission() -> None:
    t = resolve_targets(raw(["a", "b", "c"], {"id": ["t0"], "label": ["0.5"]}), params())
    assert t.submission.kind == "label"


def test_one_column_per_class_is_class_probs_in_the_samples_column_order() -> None:
    sample = {"id": ["t0"], "dog": ["0.3"], "cat": ["0.3"], "bird": ["0.4"]}
    t = resolve_targets(raw(["cat", "bird", "dog", "cat"], sample), params())
    assert t.submission.kind == "class_probs" and t.metric == "log_loss"
    assert t.classes == ["dog", "cat", "bird"] and t.submission.columns == ["dog", "cat", "bird"]
    assert t.labels.tolist() == [1, 2, 0, 1]


def test_class_probs_columns_must_be_the_classes() -> None:
    extra = {"id": ["t0"], "dog": ["0.5"], "cat": ["0.5"], "fox": ["0"]}
    with pytest.raises(UserError) as exc:
        resolve_targets(raw(["cat", "dog"], extra), params())
    assert one_line(exc).startswith("comp.zip:sample_submission.csv: probability column 'fox' is not a class")
    with pytest.raises(UserError) as exc:
        resolve_targets(raw(["cat", "dog", "fox"], {"id": ["t0"], "dog": ["0.5"], "cat": ["0.5"]}), params())
    assert one_line(exc) == ("comp.zip:sample_submission.csv: class 'fox' of the training labels has no "
                             "probability column")


def test_a_declared_kind_must_fit_the_sample() -> None:
    with pytest.raises(UserError, match=r"a 'label' submission has one column besides the id"):
        resolve_targets(raw(["a", "b"], {"id": ["t0"], "a": ["1"], "b": ["0"]}), params(submission="label"))
    with pytest.raises(UserError, match=r"binary probability submission needs two classes, the training labels have 3"):
        resolve_targets(raw(["a", "b", "c"], LABEL_SAMPLE), params(submission="binary_prob"))


def test_class_names_are_kept_and_their_count_must_match() -> None:
    t = resolve_targets(raw(["0", "1"], LABEL_SAMPLE), params(class_names=["zero", "one"]))
    assert t.class_names == ["zero", "one"] and t.submission.class_names == ["zero", "one"]
    with pytest.raises(UserError) as exc:
        resolve_targets(raw(["0", "1", "2"], LABEL_SAMPLE), params(class_names=["zero", "one"]))
    assert one_line(exc) == "params.yaml: prepare.class_names: 2 names for 3 classes (0, 1, 2)"


@pytest.mark.parametrize(("sample", "labels", "metric"), [
    (LABEL_SAMPLE, ["0", "1", "2"], "accuracy"),
    ({"id": ["t0"], "p": ["0.25"]}, ["0", "1"], "roc_auc"),
    ({"id": ["t0"], "0": ["0.5"], "1": ["0.5"]}, ["0", "1"], "log_loss"),
])
def test_metric_auto_follows_the_kind_and_an_explicit_metric_wins(sample: dict, labels: list[str],
                                                                   metric: str) -> None:
    assert resolve_targets(raw(labels, sample), params()).metric == metric
    assert resolve_targets(raw(labels, sample), params(metric="f1_macro")).metric == "f1_macro"
