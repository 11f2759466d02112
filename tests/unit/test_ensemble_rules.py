"""Ensemble rules (pipeline/evaluation/ensemble.py): softmax, the COMBINE rules on hand examples, the
view weights fitted on the OOF log-loss, and choose(): its candidates, recipes and winner."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation.ensemble import choose, combine, fit_view_weights, softmax
from pipeline.evaluation.metrics import METRICS, scores, true_class_log_loss


def test_softmax_rows_are_probabilities() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 5, 4)) * 4  # [views, rows, classes]
    p = softmax(logits)
    assert p.shape == logits.shape
    assert np.all(p > 0) and np.allclose(p.sum(axis=-1), 1.0)
    assert np.array_equal(p.argmax(-1), logits.argmax(-1))
    assert softmax(np.array([0.0, math.log(3.0)])) == pytest.approx([0.25, 0.75])


def test_softmax_is_shift_invariant_and_does_not_overflow() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]])
    shifted = logits + np.array([[100.0], [-50.0]])  # a constant per row
    assert np.allclose(softmax(shifted), softmax(logits))
    big = softmax(np.array([[1000.0, 0.0], [1000.0, 1000.0]]))
    assert np.all(np.isfinite(big)) and np.allclose(big, [[1.0, 0.0], [0.5, 0.5]])


# Two members, one row, two classes: probabilities [0.5, 0.5] and [0.75, 0.25].
TWO = np.array([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])


def test_mean_prob_averages_the_members_probabilities() -> None:
    assert combine(TWO, "mean_prob", np.array([0.5, 0.5])) == pytest.approx(np.array([[0.625, 0.375]]))
    assert combine(TWO, "mean_prob", np.array([0.25, 0.75])) == pytest.approx(np.array([[0.6875, 0.3125]]))


def test_mean_logit_is_the_softmax_of_the_mean_logits() -> None:
    r3 = math.sqrt(3.0)  # mean logits [ln 3 / 2, 0] -> [sqrt 3, 1] / (sqrt 3 + 1)
    assert combine(TWO, "mean_logit", np.array([0.5, 0.5])) == pytest.approx(np.array([[r3 / (r3 + 1), 1 / (r3 + 1)]]))
    half = np.array([0.5, 0.5])
    assert combine(TWO, "mean_logit", half)[0, 0] > combine(TWO, "mean_prob", half)[0, 0]  # the rules differ


def test_combine_rules_agree_for_one_member_or_all_weight_on_one() -> None:
    one_hot = np.array([0.0, 1.0])
    for rule in ("mean_prob", "mean_logit"):
        assert combine(TWO, rule, one_hot) == pytest.approx(softmax(TWO[1]))
        assert combine(TWO[:1], rule, np.array([1.0])) == pytest.approx(softmax(TWO[0]))
    logits = np.random.default_rng(1).normal(size=(3, 6, 4))
    for rule in ("mean_prob", "mean_logit"):
        assert np.allclose(combine(logits, rule, np.full(3, 1 / 3)).sum(-1), 1.0)


def test_fit_view_weights_puts_the_weight_on_the_informative_view() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    informative = np.full((6, 3), 0.05)
    informative[np.arange(6), labels] = 0.9
    uniform = np.full((6, 3), 1 / 3)
    w = fit_view_weights(np.stack([uniform, informative]), labels)
    assert w.shape == (2,) and w[1] > 0.99
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)


def test_fit_view_weights_of_identical_views_stays_uniform() -> None:
    probs = softmax(np.random.default_rng(2).normal(size=(8, 3)))
    w = fit_view_weights(np.stack([probs, probs, probs]), np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    assert w == pytest.approx(np.full(3, 1 / 3))


def test_fit_view_weights_stay_on_the_simplex_and_beat_uniform_and_each_view() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=40)
    signal = np.array([[[0.5]], [[1.0]], [[0.0]]])  # how much each view knows of the label
    view_probs = softmax(rng.normal(size=(3, 40, 4)) * 2 + 2 * np.eye(4)[labels] * signal)
    w = fit_view_weights(view_probs, labels)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)

    def loss(weights: np.ndarray) -> float:
        return true_class_log_loss(np.tensordot(weights, view_probs, axes=1), labels)

    assert loss(w) <= loss(np.full(3, 1 / 3)) + 1e-9
    assert all(loss(w) <= loss(np.eye(3)[v]) + 1e-6 for v in range(3))


def _logits_plain_right_tta_confident() -> tuple[np.ndarray, np.ndarray]:
    """Four rows of class 0: the plain view is right on all of them, barely; hflip is very sure of
    three and wrong on the fourth. Accuracy prefers the plain view, log loss the TTA views."""
    none = np.array([[0.2, 0.0]] * 4)
    hflip = np.array([[5.0, 0.0]] * 3 + [[0.0, 1.0]])
    return np.stack([none, hflip]), np.zeros(4, dtype=np.int64)


def test_choose_names_each_method_with_and_without_tta_and_skips_weighted_for_one_view() -> None:
    logits, labels = _logits_plain_right_tta_confident()
    cands, recipes, _ = choose(logits, labels, ["none", "hflip"], ["mean_prob", "mean_logit", "weighted"],
                               METRICS["accuracy"])
    assert list(cands) == ["mean_prob", "mean_logit", "mean_prob+tta", "mean_logit+tta", "weighted+tta"]
    assert list(recipes) == list(cands)
    assert all(set(c) == {"score", "accuracy", "logloss"} for c in cands.values())


def test_choose_without_tta_views_scores_the_plain_view_only() -> None:
    logits, labels = _logits_plain_right_tta_confident()
    cands, recipes, chosen = choose(logits[:1], labels, ["none"], ["mean_prob", "mean_logit", "weighted"],
                                    METRICS["log_loss"])
    assert list(cands) == ["mean_prob", "mean_logit"]
    assert cands["mean_prob"] == cands["mean_logit"] == scores(METRICS["log_loss"], labels, softmax(logits[0]))
    assert chosen == "mean_prob"  # a tie: the first listed
    assert recipes["mean_logit"] == {"combine": "mean_logit", "views": ["none"], "view_weights": [1.0]}


def test_choose_scores_plain_candidates_on_the_none_view_and_tta_ones_on_all_views() -> None:
    logits, labels = _logits_plain_right_tta_confident()
    metric = METRICS["log_loss"]
    cands, _, _ = choose(logits, labels, ["none", "hflip"], ["mean_prob", "mean_logit"], metric)
    assert cands["mean_prob"] == scores(metric, labels, softmax(logits[0]))
    assert cands["mean_prob+tta"] == scores(metric, labels, combine(logits, "mean_prob", np.array([0.5, 0.5])))
    assert cands["mean_logit+tta"] == scores(metric, labels, combine(logits, "mean_logit", np.array([0.5, 0.5])))


def test_choose_picks_by_the_metrics_direction() -> None:
    logits, labels = _logits_plain_right_tta_confident()
    views, methods = ["none", "hflip"], ["mean_prob", "mean_logit", "weighted"]
    cands, _, by_accuracy = choose(logits, labels, views, methods, METRICS["accuracy"])
    assert by_accuracy == "mean_prob" and cands["mean_prob"]["accuracy"] == 1.0  # the best accuracy ...
    assert min(c["logloss"] for c in cands.values()) < cands["mean_prob"]["logloss"]  # ... not the best log loss
    cands, _, by_logloss = choose(logits, labels, views, methods, METRICS["log_loss"])
    assert by_logloss.endswith("+tta")
    assert cands[by_logloss]["score"] == min(c["score"] for c in cands.values())  # lower is better


def test_choose_breaks_a_tie_of_the_metric_by_the_lower_log_loss() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=12)
    right = np.eye(3)[labels]
    logits = np.stack([right * 1.0 + rng.uniform(0, 0.3, (12, 3)), right * 4.0 + rng.uniform(0, 0.3, (12, 3))])
    cands, _, chosen = choose(logits, labels, ["none", "hflip"], ["mean_prob", "mean_logit", "weighted"],
                              METRICS["accuracy"])
    assert {c["score"] for c in cands.values()} == {1.0}  # every candidate is right on every row
    losses = sorted(c["logloss"] for c in cands.values())
    assert losses[0] < losses[1]
    assert cands[chosen]["logloss"] == losses[0]


def test_choose_passes_the_positive_class_to_the_metric() -> None:
    labels = np.array([0, 1, 2, 2, 1, 0])
    logits = np.log(np.array([[[0.8, 0.1, 0.1], [0.1, 0.4, 0.5], [0.3, 0.3, 0.4],
                               [0.05, 0.05, 0.9], [0.2, 0.6, 0.2], [0.5, 0.2, 0.3]]]))
    cands, _, _ = choose(logits, labels, ["none"], ["mean_prob"], METRICS["roc_auc"], positive=2)
    assert cands["mean_prob"]["score"] == round(METRICS["roc_auc"].score(labels, softmax(logits[0]), 2), 6)
    assert cands["mean_prob"]["score"] != round(METRICS["roc_auc"].score(labels, softmax(logits[0])), 6)


def test_choose_recipes_hold_the_rule_the_views_and_rounded_weights() -> None:
    logits, labels = _logits_plain_right_tta_confident()
    _, recipes, _ = choose(logits, labels, ["none", "hflip"], ["mean_prob", "mean_logit", "weighted"],
                           METRICS["accuracy"])
    assert recipes["mean_prob"] == {"combine": "mean_prob", "views": ["none"], "view_weights": [1.0]}
    assert recipes["mean_logit+tta"] == {"combine": "mean_logit", "views": ["none", "hflip"],
                                         "view_weights": [0.5, 0.5]}
    weighted = recipes["weighted+tta"]
    assert weighted["combine"] == "mean_prob" and weighted["views"] == ["none", "hflip"]
    fitted = fit_view_weights(softmax(logits), labels)
    assert weighted["view_weights"] == [round(float(x), 6) for x in fitted]
    assert sum(weighted["view_weights"]) == pytest.approx(1.0, abs=1e-5)
    assert all(isinstance(x, float) for x in weighted["view_weights"])  # JSON-able, not numpy


def test_choose_with_three_views_fits_three_weights() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=10)
    logits = rng.normal(size=(3, 10, 3)) + np.eye(3)[labels] * np.array([[[0.0]], [[3.0]], [[1.0]]])
    _, recipes, _ = choose(logits, labels, ["none", "hflip", "vflip"], ["weighted", "mean_prob"], METRICS["accuracy"])
    assert list(recipes) == ["mean_prob", "weighted+tta", "mean_prob+tta"]
    assert recipes["weighted+tta"]["views"] == ["none", "hflip", "vflip"]
    w = recipes["weighted+tta"]["view_weights"]
    assert len(w) == 3 and w[1] == max(w)  # the informative view weighs most
    assert recipes["mean_prob+tta"]["view_weights"] == [round(1 / 3, 6)] * 3
