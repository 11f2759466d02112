"""pipeline/data/layouts/: each reader (pixel_csv, labels_csv, class_folders) on a tiny competition built
in tmp_path, `detect` (which layout and why), `read_competition` with an explicit prepare.layout, and the
sample submission's errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.config import build
from pipeline.data.layouts import LAYOUTS, detect, read_competition
from pipeline.data.layouts.common import Files, ImageFiles, PixelArray, sample_submission
from pipeline.data.prepare import PrepareParams
from serve.errors import UserError

LABEL = "comp.zip"  # how Files names the competition in messages


def params(**values) -> PrepareParams:
    return build(PrepareParams, values, "prepare")


def png(path: Path, value: int, size: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def csv(path: Path, frame: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(frame).to_csv(path, index=False)


def pixel_rows(n: int, n_pixels: int, start: int) -> dict[str, list[int]]:
    values = (np.arange(n * n_pixels).reshape(n, n_pixels) + start) % 256
    return {f"pixel{j}": values[:, j].tolist() for j in range(n_pixels)}


def pixel_competition(root: Path, test_ids: list[str] | None, n_pixels: int = 64) -> Path:
    """train.csv `label` + pixels, test.csv [ImageId +] pixels, sample `ImageId,Label` (Digit Recognizer)."""
    csv(root / "train.csv", {"label": ["3", "07", "3", "1"], **pixel_rows(4, n_pixels, 0)})
    test = pixel_rows(3, n_pixels, 100)
    csv(root / "test.csv", {"ImageId": test_ids, **test} if test_ids else test)
    csv(root / "sample_submission.csv", {"ImageId": ["1", "2", "3"], "Label": ["0", "0", "0"]})
    return root


def labels_competition(root: Path, ext: str = "") -> Path:
    """labels.csv `id,label` naming train/*.png (ids with or without `.png`), test/*.png, a sample."""
    for i, name in enumerate("abcd"):
        png(root / "train" / f"{name}.png", 10 * i)
    for i, name in enumerate("xy"):
        png(root / "test" / f"{name}.png", 200 + i)
    csv(root / "labels.csv", {"id": [f"{n}{ext}" for n in "abcd"], "label": ["cat", "dog", "cat", "dog"]})
    csv(root / "sample_submission.csv", {"id": [f"y{ext}", f"x{ext}"], "label": ["cat", "cat"]})
    return root


def folders_competition(root: Path) -> Path:
    """train/<class name with spaces>/*.png, test/*.png, sample `file,species` (Plant Seedlings)."""
    for cls, n in (("Black-grass", 2), ("Common Chickweed", 3)):
        for i in range(n):
            png(root / "train" / cls / f"{i}.png", 30 * i + n)
    png(root / "test" / "t1.png", 1)
    png(root / "test" / "t2.png", 2)
    csv(root / "sample_submission.csv", {"file": ["t1.png", "t2.png"], "species": ["Black-grass"] * 2})
    return root


def error_of(call, *args) -> str:
    with pytest.raises(UserError) as exc:
        call(*args)
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_pixel_csv_without_test_ids_takes_the_sample_ids_in_file_order(tmp_path: Path) -> None:
    files = Files(pixel_competition(tmp_path, test_ids=None), LABEL)
    raw = LAYOUTS["pixel_csv"](files, params())
    assert raw.layout == "pixel_csv" and isinstance(raw.train, PixelArray)
    assert raw.train.images.shape == (4, 8, 8, 1) and raw.train.images.dtype == np.uint8
    assert raw.train.images[1].ravel().tolist() == [(64 + j) % 256 for j in range(64)]
    assert raw.train_labels == ["3", "07", "3", "1"]  # as spelled: "07" stays "07"
    assert raw.test_ids == ["1", "2", "3"] and raw.test.images.shape == (3, 8, 8, 1)
    assert raw.test.images[0, 0, 0, 0] == 100
    assert raw.id_column == "ImageId" and raw.labels_file == f"{LABEL}:train.csv"
    assert raw.found["pixel_shape"] == [8, 8, 1] and raw.found["test_file"] == "test.csv"


def test_pixel_csv_target_column_is_found_whatever_its_case(tmp_path: Path) -> None:
    raw = LAYOUTS["pixel_csv"](Files(pixel_competition(tmp_path, test_ids=None), LABEL), params())
    assert raw.labels_column == "label" and raw.found["target_column"] == "label"  # the sample says "Label"


def test_pixel_csv_with_test_ids_keeps_the_test_files_order(tmp_path: Path) -> None:
    raw = LAYOUTS["pixel_csv"](Files(pixel_competition(tmp_path, test_ids=["3", "1", "2"]), LABEL), params())
    assert raw.test_ids == ["3", "1", "2"]
    assert raw.test.images[0, 0, 0, 0] == 100 and raw.test.images.shape == (3, 8, 8, 1)


def test_pixel_csv_test_ids_must_be_the_sample_ids(tmp_path: Path) -> None:
    files = Files(pixel_competition(tmp_path, test_ids=["3", "1", "9"]), LABEL)
    message = error_of(LAYOUTS["pixel_csv"], files, params())
    assert message == f"{LABEL}:test.csv: test id '9' is not in {LABEL}:sample_submission.csv"


def test_pixel_csv_infers_square_rgb_and_refuses_a_non_square_count(tmp_path: Path) -> None:
    raw = LAYOUTS["pixel_csv"](Files(pixel_competition(tmp_path / "rgb", None, n_pixels=48), LABEL), params())
    assert raw.train.images.shape == (4, 4, 4, 3)
    message = error_of(LAYOUTS["pixel_csv"], Files(pixel_competition(tmp_path / "odd", None, n_pixels=10), LABEL),
                       params())
    assert f"{LABEL}:train.csv: 10 pixel columns is not a square image; set prepare.pixel_shape" in message


@pytest.mark.parametrize(("ext", "form"), [("", "stem"), (".png", "name")])
def test_labels_csv_matches_ids_with_or_without_the_extension(tmp_path: Path, ext: str, form: str) -> None:
    raw = LAYOUTS["labels_csv"](Files(labels_competition(tmp_path, ext), LABEL), params())
    assert raw.layout == "labels_csv" and isinstance(raw.train, ImageFiles)
    assert [p.name for p in raw.train.paths] == ["a.png", "b.png", "c.png", "d.png"]
    assert raw.train.names[0] == f"{LABEL}:train/a.png"
    assert raw.train_labels == ["cat", "dog", "cat", "dog"]
    assert raw.test_ids == [f"y{ext}", f"x{ext}"] and [p.name for p in raw.test.paths] == ["y.png", "x.png"]
    assert raw.id_form == form and raw.labels_column == "label" and raw.labels_file == f"{LABEL}:labels.csv"
    assert raw.found["train_images"] == "train" and raw.found["test_images"] == "test"
    assert raw.notes == []


def test_labels_csv_row_without_an_image_is_an_error_naming_the_csv_and_row(tmp_path: Path) -> None:
    root = labels_competition(tmp_path)
    csv(root / "labels.csv", {"id": ["a", "b", "c", "d", "e"], "label": ["cat", "dog", "cat", "dog", "cat"]})
    message = error_of(LAYOUTS["labels_csv"], Files(root, LABEL), params())
    assert message == f"{LABEL}:labels.csv: row 5 (line 6), column 'id': id 'e' has no image in {LABEL}:train/"


def test_labels_csv_image_without_a_row_is_left_out_with_a_warning(tmp_path: Path, caplog) -> None:
    root = labels_competition(tmp_path)
    png(root / "train" / "extra.png", 99)
    png(root / "train" / "more.png", 98)
    with caplog.at_level("WARNING", logger="pipeline.data.layouts.labels_csv"):
        raw = LAYOUTS["labels_csv"](Files(root, LABEL), params())
    assert [p.stem for p in raw.train.paths] == ["a", "b", "c", "d"]
    expected = f"{LABEL}:train/: 2 image files have no row in {LABEL}:labels.csv; left out"
    assert raw.notes == [expected]
    assert expected in caplog.messages


def test_class_folders_keeps_class_names_as_spelled(tmp_path: Path) -> None:
    raw = LAYOUTS["class_folders"](Files(folders_competition(tmp_path), LABEL), params())
    assert raw.layout == "class_folders" and raw.labels_column is None
    assert raw.train_labels == ["Black-grass"] * 2 + ["Common Chickweed"] * 3
    assert raw.train.names[2] == f"{LABEL}:train/Common Chickweed/0.png"
    assert raw.labels_file == f"{LABEL}:train"
    assert raw.test_ids == ["t1.png", "t2.png"] and raw.id_form == "name" and raw.id_column == "file"
    assert raw.found["train_images"] == "train" and raw.found["test_images"] == "test"


def test_class_folders_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    root = folders_competition(tmp_path)
    (root / "train" / "Loose Silky-bent").mkdir()
    message = error_of(LAYOUTS["class_folders"], Files(root, LABEL), params())
    assert message.startswith(f"{LABEL}:train/Loose Silky-bent/: empty class folder")


@pytest.mark.parametrize(("build_comp", "layout", "why"), [
    (lambda root: pixel_competition(root, None), "pixel_csv", f"{LABEL}:train.csv has 65 columns (pixels)"),
    (lambda root: labels_competition(root), "labels_csv", f"{LABEL}:labels.csv names the images in {LABEL}:train/"),
    (folders_competition, "class_folders", f"{LABEL}:train/ has 2 class folders of images"),
], ids=["pixel_csv", "labels_csv", "class_folders"])
def test_detect_picks_the_layout_and_says_why(tmp_path: Path, build_comp, layout: str, why: str) -> None:
    files = Files(build_comp(tmp_path), LABEL)
    assert detect(files, params()) == (layout, why)
    assert read_competition(files, params()).layout == layout


def test_detect_without_images_or_a_pixel_csv_asks_for_prepare_layout(tmp_path: Path) -> None:
    csv(tmp_path / "train.csv", {"id": ["a"], "label": ["1"]})
    csv(tmp_path / "sample_submission.csv", {"id": ["b"], "label": ["1"]})
    message = error_of(detect, Files(tmp_path, LABEL), params())
    assert message.startswith(f"{LABEL}: no image files and no pixel CSV") and "prepare.layout" in message


def test_read_competition_uses_an_explicit_layout_without_detecting(tmp_path: Path) -> None:
    files = Files(pixel_competition(tmp_path, None, n_pixels=16), LABEL)  # too few columns for `auto`
    with pytest.raises(UserError):
        read_competition(files, params())
    raw = read_competition(files, params(layout="pixel_csv"))
    assert raw.layout == "pixel_csv" and raw.train.images.shape == (4, 4, 4, 1)
    message = error_of(read_competition, Files(folders_competition(tmp_path / "f"), LABEL), params(layout="labels_csv"))
    assert "no labels CSV" in message and "prepare.train_file" in message  # the named reader ran, not detection


def test_sample_submission_missing_is_an_error(tmp_path: Path) -> None:
    csv(tmp_path / "train.csv", {"id": ["a"], "label": ["1"]})
    message = error_of(sample_submission, Files(tmp_path, LABEL), params())
    assert message == (f"{LABEL}: no sample submission CSV found (sample*submission*.csv); "
                       "set prepare.sample_submission")


def test_two_sample_submissions_are_an_error_unless_one_is_named(tmp_path: Path) -> None:
    csv(tmp_path / "sample_submission.csv", {"id": ["a"], "label": ["1"]})
    csv(tmp_path / "extra" / "SampleSubmission_v2.csv", {"id": ["b"], "label": ["1"]})
    files = Files(tmp_path, LABEL)
    assert error_of(sample_submission, files, params()).startswith(f"{LABEL}: 2 sample submission CSV found")
    path, sample, id_col = sample_submission(files, params(sample_submission="extra/SampleSubmission_v2.csv"))
    assert path == tmp_path / "extra" / "SampleSubmission_v2.csv" and sample["id"].tolist() == ["b"]


def test_sample_submission_duplicate_id_is_an_error_naming_the_row(tmp_path: Path) -> None:
    csv(tmp_path / "sample_submission.csv", {"id": ["a", "b", "a"], "label": ["1", "1", "1"]})
    message = error_of(sample_submission, Files(tmp_path, LABEL), params())
    assert message == f"{LABEL}:sample_submission.csv: row 3 (line 4), column 'id': id 'a' appears twice"


def test_sample_submission_cells_are_strings_and_the_id_column_must_come_first(tmp_path: Path) -> None:
    csv(tmp_path / "sample_submission.csv", {"id": ["007", "8"], "label": ["0.5", ""]})
    _, sample, id_col = sample_submission(Files(tmp_path, LABEL), params())
    assert id_col == "id" and sample["id"].tolist() == ["007", "8"] and sample["label"].tolist() == ["0.5", ""]
    message = error_of(sample_submission, Files(tmp_path, LABEL), params(id_column="LABEL"))
    assert "the id column 'label' must come first" in message
