"""prepare: parsing, validation errors (one line naming file/row/column), folds, safe archives."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.data import BAD_PREPARE_INPUTS, broken, write_zip
from pipeline.core.config import build
from pipeline.data.archive import CompetitionArchive
from pipeline.data.prepare import PrepareParams, stratified_folds
from pipeline.data.prepare import prepare as run
from serve.errors import UserError

CLASSES = [f"c{i}" for i in range(10)]


def params(**overrides) -> PrepareParams:
    return build(PrepareParams, {"class_names": CLASSES, "classes": [str(i) for i in range(10)], "n_folds": 2,
                                 "pixel_shape": [28, 28, 1], **overrides}, "prepare")


def test_prepare_writes_validated_arrays_and_folds(slice_zip: Path, tmp_path: Path, real_slice) -> None:
    meta = run(params(), slice_zip, tmp_path / "out")
    out = tmp_path / "out"
    train = np.load(out / "train_images.npy")
    assert train.dtype == np.uint8 and train.shape == (400, 28, 28, 1)
    expected = real_slice["train.csv"].drop(columns="label").to_numpy().reshape(400, 28, 28, 1)
    assert np.array_equal(train, expected)
    assert np.array_equal(np.load(out / "train_labels.npy"), real_slice["train.csv"]["label"].to_numpy())
    assert np.load(out / "test_images.npy").shape == (120, 28, 28, 1)
    assert pd.read_csv(out / "test_ids.csv", dtype=str)["id"].tolist() == real_slice["test.csv"]["id"].tolist()
    folds = pd.read_csv(out / "folds.csv")
    assert list(folds.columns) == ["row", "label", "fold"] and set(folds["fold"]) == {0, 1}
    assert meta["id_column"] == "id" and meta["target_column"] == "label"
    assert meta["classes"] == [str(i) for i in range(10)] and meta["image_shape"] == [28, 28, 1]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert 0.2 < meta["mean"][0] < 0.4


def test_image_shape_inferred_as_square_grayscale(slice_zip: Path, tmp_path: Path) -> None:
    assert run(params(pixel_shape=None), slice_zip, tmp_path / "out")["image_shape"] == [28, 28, 1]


def test_folds_are_stratified_balanced_and_seeded() -> None:
    labels = np.repeat(np.arange(10), [50 + 3 * i for i in range(10)])
    folds = stratified_folds(labels, 5, seed=7)
    assert np.array_equal(folds, stratified_folds(labels, 5, seed=7))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=8))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for cls in range(10):
        per_fold = np.bincount(folds[labels == cls], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


@pytest.mark.parametrize("case", sorted(BAD_PREPARE_INPUTS))
def test_bad_input_fails_with_one_line_naming_the_place(case: str, real_slice, tmp_path: Path) -> None:
    name, mutate, needles = BAD_PREPARE_INPUTS[case]
    archive = write_zip(tmp_path / "bad.zip", broken(real_slice, name, mutate))
    with pytest.raises(UserError) as exc:
        run(params(), archive, tmp_path / "out")
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "out").exists(), "nothing may be written for bad input"




def test_test_ids_must_match_the_sample_submission(real_slice, tmp_path: Path) -> None:
    frames = dict(real_slice)
    frames["sample_submission.csv"] = real_slice["sample_submission.csv"].iloc[1:]
    with pytest.raises(UserError, match=r"test\.csv: test id '.+' is not in .*sample_submission\.csv"):
        run(params(), write_zip(tmp_path / "a.zip", frames), tmp_path / "out")


def test_unsafe_member_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../../etc/evil.csv", "x")
    with pytest.raises(UserError, match=r"unsafe member name '\.\./\.\./etc/evil\.csv'"):
        CompetitionArchive(path)
    with zipfile.ZipFile(tmp_path / "abs.zip", "w") as zf:
        zf.writestr("/abs/train.csv", "x")
    with pytest.raises(UserError, match="unsafe member name"):
        CompetitionArchive(tmp_path / "abs.zip")


def test_nested_zip_members_and_subfolders_are_found(real_slice, tmp_path: Path) -> None:
    inner = write_zip(tmp_path / "train.csv.zip", {"train.csv": real_slice["train.csv"]})
    frames = {"comp/test.csv": real_slice["test.csv"],
              "comp/sample_submission.csv": real_slice["sample_submission.csv"],
              "train.csv.zip": inner.read_bytes()}
    meta = run(params(), write_zip(tmp_path / "nested.zip", frames), tmp_path / "out")
    assert meta["n_train"] == 400 and meta["n_test"] == 120


def test_not_a_zip_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_text("hello")
    with pytest.raises(UserError, match=r"x\.zip: not a zip archive"):
        CompetitionArchive(tmp_path / "x.zip")
