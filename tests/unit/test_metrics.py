"""Competition metrics (pipeline/evaluation/metrics.py): each metric on small hand-computed examples and
its edge cases, the directions, from_meta, scores(), sort_classes, the defaults by submission kind, and
the per-epoch true-class log loss."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation.metrics import (
    DEFAULT_FOR_SUBMISSION,
    METRICS,
    NAMES,
    from_meta,
    scores,
    sort_classes,
    true_class_log_loss,
)
from serve.submission import KINDS


def _onehot(pred: list[int], k: int) -> np.ndarray:
    """Probabilities whose most probable class is `pred` (not one-hot: 0.6 on it, the rest shared)."""
    p = np.full((len(pred), k), 0.4 / (k - 1))
    p[np.arange(len(pred)), pred] = 0.6
    return p


def _pairwise_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """AUC by counting: the share of (positive, negative) pairs ranked right, ties counting half."""
    pos, neg = score[positive], score[~positive]
    return float(np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg]))


def test_accuracy_is_the_share_of_rows_whose_most_probable_class_is_right() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3]])
    assert METRICS["accuracy"].score(np.array([0, 1, 2, 1]), probs) == 0.75
    assert METRICS["accuracy"].score([0, 1], [[0.9, 0.1], [0.2, 0.8]]) == 1.0  # lists are fine
    assert type(METRICS["accuracy"].score([0], [[1.0, 0.0]])) is float


def test_log_loss_is_the_mean_cross_entropy() -> None:
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert METRICS["log_loss"].score(np.array([0, 1]), probs) == pytest.approx(expected, rel=1e-9)


def test_log_loss_is_lower_for_better_probs() -> None:
    m = METRICS["log_loss"]
    labels = np.array([0, 1, 1])
    good = m.score(labels, [[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    poor = m.score(labels, [[0.6, 0.4], [0.45, 0.55], [0.5, 0.5]])
    assert good < poor
    assert m.better(good, poor) and not m.better(poor, good)


def test_log_loss_clips_a_zero_probability_and_normalises_rows() -> None:
    m = METRICS["log_loss"]
    zero = m.score(np.array([0]), np.array([[0.0, 1.0]]))
    assert math.isfinite(zero) and zero == pytest.approx(-math.log(1e-15), rel=1e-6)
    assert m.score([0, 1], [[0.4, 0.4], [0.1, 0.3]]) == pytest.approx(m.score([0, 1], [[0.5, 0.5], [0.25, 0.75]]))


def test_log_loss_scores_classes_that_no_label_holds() -> None:
    probs = np.array([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2]])  # class 2 is never the label
    assert METRICS["log_loss"].score(np.array([0, 1]), probs) == pytest.approx(-(math.log(0.5) + math.log(0.2)) / 2)


def test_roc_auc_binary_is_the_auc_of_the_positive_class() -> None:
    labels = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - p1, p1], axis=1)
    assert METRICS["roc_auc"].score(labels, probs) == pytest.approx(0.75)  # 3 of 4 pairs ranked right
    assert METRICS["roc_auc"].score(labels, probs[:, ::-1]) == pytest.approx(0.25)
    assert METRICS["roc_auc"].score(labels, probs, positive=0) == pytest.approx(0.75)  # by symmetry


def test_roc_auc_with_positive_scores_that_class_against_the_rest() -> None:
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.4, 0.5], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]])
    # class 2's probabilities: positives 0.4, 0.9; negatives 0.1, 0.5 -> 3 of 4 pairs
    assert METRICS["roc_auc"].score(labels, probs, positive=2) == pytest.approx(0.75)
    assert METRICS["roc_auc"].score(labels, probs, positive=0) == pytest.approx(1.0)


def test_roc_auc_of_more_classes_is_the_macro_one_vs_rest_auc() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.45, 0.35], [0.35, 0.4, 0.25],  # no ties within a column
                      [0.3, 0.25, 0.45], [0.55, 0.35, 0.1], [0.15, 0.2, 0.65]])
    expected = np.mean([_pairwise_auc(probs[:, c], labels == c) for c in range(3)])
    assert 0.5 < expected < 1.0
    assert METRICS["roc_auc"].score(labels, probs) == pytest.approx(expected)


def test_roc_auc_ignores_a_class_absent_from_the_labels() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    ranked = np.eye(4)[labels] * 0.7 + 0.075  # each row's own class ranked first; class 3 never a label
    assert METRICS["roc_auc"].score(labels, ranked) == pytest.approx(1.0)


def test_roc_auc_is_nan_when_the_labels_hold_one_class() -> None:
    assert math.isnan(METRICS["roc_auc"].score(np.array([1, 1, 1]), _onehot([0, 1, 1], 2)))
    assert math.isnan(METRICS["roc_auc"].score(np.array([2, 2]), _onehot([0, 2], 3)))


def test_f1_macro_averages_each_class_f1() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = _onehot([0, 1, 1, 1], 2)
    # class 0: precision 1, recall 1/2 -> 2/3; class 1: precision 2/3, recall 1 -> 4/5
    assert METRICS["f1_macro"].score(labels, probs) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_f1_macro_counts_a_class_never_predicted_nor_labelled_as_zero() -> None:
    labels = np.array([0, 0, 1, 1])
    assert METRICS["f1_macro"].score(labels, _onehot([0, 1, 1, 1], 3)) == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)


def test_qwk_on_a_hand_computed_example() -> None:
    # observed [[1, 1], [0, 2]] / 4, expected outer([.5, .5], [.25, .75]); weight 1 off the diagonal:
    # kappa = 1 - 0.25 / (0.375 + 0.125) = 0.5
    assert METRICS["qwk"].score(np.array([0, 0, 1, 1]), _onehot([0, 1, 1, 1], 2)) == pytest.approx(0.5)
    assert METRICS["qwk"].score(np.array([0, 1, 2]), _onehot([0, 1, 2], 3)) == pytest.approx(1.0)


def test_qwk_penalises_a_far_miss_more_than_a_near_one() -> None:
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    near = METRICS["qwk"].score(labels, _onehot([0, 1, 2, 2, 0, 1, 2, 3], 4))
    far = METRICS["qwk"].score(labels, _onehot([0, 1, 2, 0, 0, 1, 2, 3], 4))
    assert 0 < far < near < 1


def test_qwk_of_a_single_class_is_one_when_right_and_zero_when_wrong() -> None:
    assert METRICS["qwk"].score(np.array([1, 1, 1]), _onehot([1, 1, 1], 3)) == 1.0  # scikit-learn would say nan
    assert METRICS["qwk"].score(np.array([0, 0]), _onehot([1, 1], 2)) == 0.0


def test_directions_and_sort_keys() -> None:
    for name in ("accuracy", "roc_auc", "f1_macro", "qwk"):
        m = METRICS[name]
        assert m.higher_is_better and m.better(0.9, 0.8) and not m.better(0.8, 0.9) and not m.better(0.8, 0.8)
        assert max([0.7, 0.9, 0.8], key=m.key) == 0.9
    ll = METRICS["log_loss"]
    assert not ll.higher_is_better and ll.better(0.21, 0.25) and not ll.better(0.25, 0.21)
    assert max([0.3, 0.21, 0.25], key=ll.key) == 0.21
    assert ll.to_dict() == {"name": "log_loss", "higher_is_better": False}
    assert {m.uses for m in METRICS.values()} == {"probs", "labels"}
    assert METRICS["log_loss"].uses == "probs" and METRICS["accuracy"].uses == "labels"


def test_from_meta_takes_the_named_metric_and_defaults_to_accuracy() -> None:
    assert from_meta({"metric": {"name": "qwk", "higher_is_better": True}}) is METRICS["qwk"]
    assert from_meta({}) is METRICS["accuracy"]  # data prepared before metrics existed
    assert from_meta({"metric": {}}) is METRICS["accuracy"]


def test_scores_give_the_metric_with_accuracy_and_log_loss_rounded() -> None:
    labels = np.array([0, 1, 1])
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    out = scores(METRICS["roc_auc"], labels, probs)
    assert set(out) == {"score", "accuracy", "logloss"}
    assert out["score"] == 0.5  # positives 0.6, 0.1 vs negative 0.3
    assert out["accuracy"] == round(2 / 3, 6)
    assert out["logloss"] == round(-(math.log(0.7) + math.log(0.6) + math.log(0.1)) / 3, 6)
    assert scores(METRICS["roc_auc"], labels, probs, positive=0)["score"] == 0.5
    assert scores(METRICS["accuracy"], labels, probs)["score"] == out["accuracy"]


def test_sort_classes_orders_integers_numerically_and_strings_by_code_point() -> None:
    assert sort_classes(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_classes([10, 2, 1]) == [1, 2, 10]
    assert sort_classes(["-1", "3", "-10"]) == ["-10", "-1", "3"]
    assert sort_classes(["cat", "Dog", "ant"]) == ["Dog", "ant", "cat"]
    assert sort_classes(["10", "9", "b"]) == ["10", "9", "b"]  # not all integers: strings order


def test_the_default_metric_of_each_submission_kind_is_registered() -> None:
    assert set(DEFAULT_FOR_SUBMISSION) == set(KINDS)
    assert DEFAULT_FOR_SUBMISSION == {"label": "accuracy", "binary_prob": "roc_auc", "class_probs": "log_loss"}
    assert all(name in METRICS for name in DEFAULT_FOR_SUBMISSION.values())
    assert NAMES == METRICS.names()


def test_true_class_log_loss_is_minus_the_mean_log_of_the_true_class() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 0])
    expected = -(math.log(0.7) + math.log(0.8) + math.log(0.3)) / 3
    assert true_class_log_loss(probs, labels) == pytest.approx(expected)
    assert true_class_log_loss(probs, labels) == pytest.approx(METRICS["log_loss"].score(labels, probs))
    assert true_class_log_loss(np.array([[0.0, 1.0]]), np.array([0])) == pytest.approx(-math.log(1e-15))
