"""Submission validation and scoring: the rules, and one-line errors naming file, row and column."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.evaluation.score import score_submission
from serve.errors import UserError
from serve.submission import validate_submission

CLASSES = [str(i) for i in range(10)]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return write(tmp_path / "sample_submission.csv", "id,label\n0,0\n1,0\n2,0\n3,0\n")


def test_valid_submission_passes(tmp_path: Path, sample: Path) -> None:
    sub = write(tmp_path / "sub.csv", "id,label\n3,9\n1,0\n2,5\n0,1\n")
    assert len(validate_submission(sub, sample, CLASSES)) == 4


@pytest.mark.parametrize("text, needles", [
    ("id,label\n0,1\n1,1\n2,1\n", ["sub.csv", "id '3'", "is missing"]),
    ("id,label\n0,1\n1,1\n2,1\n3,1\n4,1\n", ["sub.csv", "row 5 (line 6)", "id '4' is not in"]),
    ("id,label,extra\n0,1,x\n1,1,x\n2,1,x\n3,1,x\n", ["sub.csv", "extra column 'extra'"]),
    ("label,id\n1,0\n1,1\n1,2\n1,3\n", ["sub.csv", "columns out of order"]),
    ("id,label\n0,1\n1,10\n2,1\n3,1\n", ["sub.csv", "row 2 (line 3)", "column 'label'", "'10' is not a class"]),
    ("id,label\n0,1\n1,\n2,1\n3,1\n", ["sub.csv", "row 2 (line 3)", "column 'label'", "empty value"]),
    ("id,label\n0,1\n1,1\n1,1\n3,1\n", ["sub.csv", "row 3 (line 4)", "id '1' appears twice"]),
    ("id,label\n0,cat\n1,1\n2,1\n3,1\n", ["row 1 (line 2)", "'cat' is not a class"]),
])
def test_invalid_submissions_are_refused(tmp_path: Path, sample: Path, text: str, needles: list[str]) -> None:
    sub = write(tmp_path / "sub.csv", text)
    with pytest.raises(UserError) as exc:
        validate_submission(sub, sample, CLASSES)
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)


def test_score_counts_only_solution_ids(tmp_path: Path) -> None:
    sub = write(tmp_path / "sub.csv", "id,label\n0,1\n1,2\n2,3\n3,4\n")
    sol = write(tmp_path / "sol.csv", "id,label,Usage\n1,2,Public\n3,0,Public\n")
    result = score_submission(sub, sol)
    assert (result.accuracy, result.n_scored, result.n_correct) == (0.5, 2, 1)








def test_a_public_score_comes_with_its_binomial_interval() -> None:
    """Wilson 95% interval: textbook values; 3,000 public rows carry about ±0.9 points at 93%."""
    from pipeline.evaluation.confidence import compare_to_oof, wilson

    lo, hi = wilson(0.5, 100)
    assert round(lo, 4) == 0.4038 and round(hi, 4) == 0.5962
    lo, hi = wilson(0.9313, 3000)
    assert 0.0089 < (hi - lo) / 2 < 0.0093
    assert compare_to_oof(0.9313, 3000, 0.9259).endswith("OOF 0.9259 is inside it: the gap is noise")
    assert compare_to_oof(0.9313, 3000, 0.9100).endswith("OOF 0.9100 is outside it")
    assert "n unknown" in compare_to_oof(0.9313, None, 0.9259)
