"""Leaderboard intervals (pipeline/evaluation/confidence.py): the Wilson interval against known values,
the phrase comparing a score with the OOF accuracy, and the report's table rows."""
from __future__ import annotations

import pytest

from pipeline.evaluation.confidence import compare_to_oof, oof_vs_public_rows, wilson


def test_wilson_matches_known_intervals() -> None:
    assert wilson(0.9313, 3000) == pytest.approx((0.9217, 0.9398), abs=5e-5)  # the module docstring's example
    assert wilson(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=5e-5)     # the textbook case
    assert wilson(0.0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)         # not the Wald interval's (0, 0)


def test_wilson_contains_p_stays_in_0_1_and_narrows_with_more_rows() -> None:
    for p in (0.0, 0.03, 0.5, 0.93, 0.999):
        lo, hi = wilson(p, 50)
        assert 0.0 <= lo <= p <= hi <= 1.0
    assert 0.9 < wilson(1.0, 50)[0] and wilson(1.0, 50)[1] <= 1.0
    assert wilson(0.5, 100)[0] == pytest.approx(1 - wilson(0.5, 100)[1])  # symmetric about 1/2
    widths = [hi - lo for lo, hi in (wilson(0.93, n) for n in (100, 1000, 10000))]
    assert widths[0] > widths[1] > widths[2]
    lo99, hi99 = wilson(0.93, 100, z=2.576)  # 99%: a wider interval
    assert lo99 < wilson(0.93, 100)[0] and hi99 > wilson(0.93, 100)[1]


def test_wilson_clamps_a_proportion_outside_0_1() -> None:
    assert wilson(1.2, 10) == wilson(1.0, 10)
    assert wilson(-0.1, 10) == wilson(0.0, 10)


@pytest.mark.parametrize("n", [0, -5])
def test_wilson_refuses_no_rows(n: int) -> None:
    with pytest.raises(ValueError, match=f"n must be positive, got {n}"):
        wilson(0.9, n)


def test_compare_to_oof_says_when_the_oof_accuracy_is_inside_the_interval() -> None:
    assert compare_to_oof(0.9313, 3000, 0.9259) == (
        "95% CI 0.9217-0.9398 on 3000 rows (±0.91 pts); OOF 0.9259 is inside it: the gap is noise")


def test_compare_to_oof_says_when_the_oof_accuracy_is_outside_the_interval() -> None:
    assert compare_to_oof(0.9313, 3000, 0.95) == (
        "95% CI 0.9217-0.9398 on 3000 rows (±0.91 pts); OOF 0.9500 is outside it")
    assert compare_to_oof(0.9313, 3000, 0.9200).endswith("OOF 0.9200 is outside it")


def test_compare_to_oof_without_an_oof_gives_the_interval_only() -> None:
    assert compare_to_oof(0.9313, 3000, None) == "95% CI 0.9217-0.9398 on 3000 rows (±0.91 pts)"


@pytest.mark.parametrize("n", [None, 0])
def test_compare_to_oof_without_a_row_count_says_so(n: int | None) -> None:
    assert compare_to_oof(0.9313, n, 0.9259) == "n unknown: no interval (set submit.public_rows)"


def test_oof_vs_public_rows_puts_the_oof_first_then_each_score_against_it() -> None:
    rows = oof_vs_public_rows(0.9259, 60000, [("public", 0.9313, 3000), ("private", 0.9, 3000), ("local", 0.93, None)])
    assert [r["score"] for r in rows] == ["OOF accuracy (cross-validated)", "public", "private", "local"]
    assert all(set(r) == {"score", "accuracy", "rows", "95% CI", "vs OOF"} for r in rows)
    assert rows[0] == {"score": "OOF accuracy (cross-validated)", "accuracy": 0.9259, "rows": 60000,
                       "95% CI": "0.9238-0.9280", "vs OOF": ""}
    assert rows[1] == {"score": "public", "accuracy": 0.9313, "rows": 3000, "95% CI": "0.9217-0.9398",
                       "vs OOF": "+0.54 pts (noise: OOF inside CI)"}
    assert rows[2]["vs OOF"] == "-2.59 pts (outside CI)"
    assert rows[3]["95% CI"] == "n unknown" and rows[3]["vs OOF"] == "+0.41 pts"  # no interval, no verdict


def test_oof_vs_public_rows_without_an_oof_or_its_row_count() -> None:
    rows = oof_vs_public_rows(None, None, [("public", 0.9313, 3000)])
    assert rows == [{"score": "public", "accuracy": 0.9313, "rows": 3000, "95% CI": "0.9217-0.9398", "vs OOF": ""}]
    assert oof_vs_public_rows(0.9259, None, []) == [{"score": "OOF accuracy (cross-validated)", "accuracy": 0.9259,
                                                     "rows": None, "95% CI": "", "vs OOF": ""}]


def test_a_perfect_oof_is_inside_the_interval_of_a_perfect_score() -> None:
    """At p = 1 (or 0) the Wilson bound is exactly 1 (or 0), not a rounding error short of it."""
    for n in (50, 100, 3000):
        assert wilson(1.0, n)[1] == 1.0 and wilson(0.0, n)[0] == 0.0
    assert compare_to_oof(1.0, 3000, 1.0).endswith("is inside it: the gap is noise")
