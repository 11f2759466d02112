"""serve/readers.py and serve/csvfiles.py: the held-out readers (pixel CSV, .npy, image folder) stream
uint8 chunks [N, C, H, W] in order with their ids; a bad pixel cell is a one-line UserError naming
the file, row and column with the value as written; the CSV helpers' row/line wording and checks."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from serve.csvfiles import as_written, first_duplicate, first_empty_cell, read_csv_strings, where
from serve.errors import UserError
from serve.images import ImageSpec
from serve.readers import ImageFolderReader, NpyReader, PixelCsvReader, parse_pixel_frame, pixel_columns_of

SPEC = ImageSpec(2, 2, 1)  # 4 pixel columns per row
PIXELS = ["pixel0", "pixel1", "pixel2", "pixel3"]


def pixel_csv(path: Path, rows: list[list[object]], header: list[str] | None = None) -> Path:
    header = header or ["id", *PIXELS]
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def five_rows(with_id: bool = True) -> list[list[object]]:
    """Row r holds pixels 10r, 10r+1, 10r+2, 10r+3; ids '007', 'b', ... (a leading zero kept as text)."""
    ids = ["007", "b", "c", "d", "e"]
    return [([ids[r]] if with_id else []) + [10 * r + k for k in range(4)] for r in range(5)]


def error_of(call: Callable[[], object]) -> str:
    with pytest.raises(UserError) as exc:
        call()
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- PixelCsvReader ------------------------------------------------------------------------------

def test_pixel_csv_chunks_keep_order_ids_and_shape(tmp_path: Path) -> None:
    reader = PixelCsvReader(pixel_csv(tmp_path / "test.csv", five_rows()), SPEC, "id")
    chunks = list(reader.chunks(2))
    assert [len(c.ids) for c in chunks] == [2, 2, 1]
    assert [i for c in chunks for i in c.ids] == ["007", "b", "c", "d", "e"]
    images = np.concatenate([c.images for c in chunks])
    assert images.dtype == np.uint8 and images.shape == (5, 1, 2, 2)
    assert images[3, 0].tolist() == [[30, 31], [32, 33]]  # row-major H, W
    assert all(c.images.flags["C_CONTIGUOUS"] for c in chunks)
    resumed = list(reader.chunks(2, skip=3))
    assert [i for c in resumed for i in c.ids] == ["d", "e"] and np.array_equal(resumed[0].images, images[3:])


def test_pixel_csv_without_an_id_column_numbers_its_rows(tmp_path: Path) -> None:
    reader = PixelCsvReader(pixel_csv(tmp_path / "test.csv", five_rows(False), PIXELS), SPEC, "id")
    assert reader.id_column is None
    assert [i for c in reader.chunks(3) for i in c.ids] == ["0", "1", "2", "3", "4"]
    assert [i for c in reader.chunks(3, skip=2) for i in c.ids] == ["2", "3", "4"]


def test_pixel_csv_finds_the_id_column_in_any_case_and_drops_ignored_columns(tmp_path: Path) -> None:
    rows = [[r[0], "x", *r[1:]] for r in five_rows()]
    path = pixel_csv(tmp_path / "test.csv", rows, ["ID", "Usage", *PIXELS])
    reader = PixelCsvReader(path, SPEC, "id", ignore_columns=["usage"])
    assert reader.id_column == "ID" and reader.pixel_columns == PIXELS
    assert next(iter(reader.chunks(5))).ids[0] == "007"


def test_pixel_csv_rows_are_converted_to_the_model_spec(tmp_path: Path) -> None:
    reader = PixelCsvReader(pixel_csv(tmp_path / "test.csv", five_rows()), ImageSpec(4, 4, 3), "id",
                            pixel_shape=(2, 2, 1))
    images = next(iter(reader.chunks(5))).images
    assert images.shape == (5, 3, 4, 4) and images.dtype == np.uint8
    assert (images[:, 0] == images[:, 2]).all()  # grayscale replicated to RGB


@pytest.mark.parametrize("cell, what", [
    ("abc", "'abc' is not an integer 0-255"),
    ("12.5", "12.5 is not an integer 0-255"),
    ("256", "256 is outside 0-255"),
    ("-1", "-1 is outside 0-255"),
    (None, "empty value"),
])
def test_a_bad_pixel_cell_names_file_row_column_and_value(tmp_path: Path, cell: object, what: str) -> None:
    rows = five_rows()
    rows[3][3] = cell  # row 4 (line 5), column pixel2: in the second chunk of two rows
    path = pixel_csv(tmp_path / "test.csv", rows)
    reader = PixelCsvReader(path, SPEC, "id")
    message = error_of(lambda: list(reader.chunks(2)))
    assert message == f"{path}: row 4 (line 5), column 'pixel2': {what}"


def test_a_pixel_csv_with_the_wrong_number_of_pixel_columns_is_refused(tmp_path: Path) -> None:
    path = pixel_csv(tmp_path / "test.csv", [["a", 1, 2, 3]], ["id", "pixel0", "pixel1", "pixel2"])
    message = error_of(lambda: PixelCsvReader(path, SPEC, "id"))
    assert message == f"{path}: 3 pixel columns, expected 4 for images of shape (2, 2, 1) (H, W, C)"


def test_a_missing_or_unreadable_pixel_csv_is_a_user_error(tmp_path: Path) -> None:
    missing, empty = tmp_path / "none.csv", tmp_path / "empty.csv"
    assert error_of(lambda: PixelCsvReader(missing, SPEC, "id")) == f"{missing}: file not found"
    empty.write_text("")
    assert error_of(lambda: PixelCsvReader(empty, SPEC, "id")) == f"{empty}: not a readable CSV with a header row"


def test_parse_pixel_frame_counts_rows_from_its_offset() -> None:
    frame = pd.DataFrame({"p0": [1, 2], "p1": [3.0, 300.0]})
    message = error_of(lambda: parse_pixel_frame(frame, ["p0", "p1"], (1, 2, 1), "train.csv", row_offset=10))
    assert message == "train.csv: row 12 (line 13), column 'p1': 300 is outside 0-255"  # 300.0 shown as written
    ok = parse_pixel_frame(pd.DataFrame({"p0": [0, 255], "p1": [7.0, 8.0]}), ["p0", "p1"], (1, 2, 1), "x.csv")
    assert ok.dtype == np.uint8 and ok.shape == (2, 1, 2, 1) and ok[1, 0, :, 0].tolist() == [255, 8]
    assert pixel_columns_of(["id", "a", "b"], (1, 2, 1), "x.csv", exclude=["id"]) == ["a", "b"]


# -- NpyReader -----------------------------------------------------------------------------------

def test_npy_chunks_keep_order_and_ids(tmp_path: Path) -> None:
    array = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    np.save(tmp_path / "x.npy", array)
    reader = NpyReader(tmp_path / "x.npy", (2, 2, 3), ids=["a", "b", "c", "d", "e"])
    chunks = list(reader.chunks(2))
    assert len(reader) == 5 and [c.ids for c in chunks] == [["a", "b"], ["c", "d"], ["e"]]
    images = np.concatenate([c.images for c in chunks])
    assert images.dtype == np.uint8 and images.shape == (5, 3, 2, 2)
    assert np.array_equal(images, array.transpose(0, 3, 1, 2))
    assert [c.ids for c in reader.chunks(2, skip=3)] == [["d", "e"]]


def test_npy_of_grayscale_images_without_a_channel_axis(tmp_path: Path) -> None:
    np.save(tmp_path / "g.npy", np.zeros((3, 2, 2), np.uint8))
    reader = NpyReader(tmp_path / "g.npy", (2, 2, 1))
    assert reader.ids == ["0", "1", "2"]
    assert next(iter(reader.chunks(10))).images.shape == (3, 1, 2, 2)


def test_a_bad_npy_is_refused_in_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 2, 2, 1), np.float32))
    assert error_of(lambda: NpyReader(path, (2, 2, 1))) == f"{path}: dtype float32, expected uint8 images"
    np.save(path, np.zeros((3, 4, 4, 1), np.uint8))
    assert error_of(lambda: NpyReader(path, (2, 2, 1))) == (
        f"{path}: images of shape (4, 4, 1), the model expects (2, 2, 1) (H, W, C)")
    assert error_of(lambda: NpyReader(path, (4, 4, 1), ids=["a"])) == f"{path}: 3 images but 1 ids"
    assert error_of(lambda: NpyReader(tmp_path / "none.npy", (2, 2, 1))).endswith("none.npy: file not found")
    (tmp_path / "text.npy").write_text("not numpy")
    assert "not a readable .npy array" in error_of(lambda: NpyReader(tmp_path / "text.npy", (2, 2, 1)))


# -- ImageFolderReader ---------------------------------------------------------------------------

def test_image_folder_chunks_are_sorted_resized_and_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, size in (("b.png", (5, 9)), ("a.jpg", (12, 7)), ("c.bmp", (4, 4))):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), "L").save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    spec = ImageSpec(6, 6, 3)
    reader = ImageFolderReader(tmp_path, spec, workers=2)
    chunks = list(reader.chunks(2))
    assert len(reader) == 3 and [c.ids for c in chunks] == [["a", "b"], ["c"]]
    images = np.concatenate([c.images for c in chunks])
    assert images.dtype == np.uint8 and images.shape == (3, 3, 6, 6)
    by_name = ImageFolderReader(tmp_path, spec, id_form="name", workers=1)
    assert [i for c in by_name.chunks(10) for i in c.ids] == ["a.jpg", "b.png", "c.bmp"]
    assert np.array_equal(next(iter(by_name.chunks(10))).images, images)  # 1 thread or 2: the same pixels
    assert [c.ids for c in reader.chunks(2, skip=1)] == [["b", "c"]]


def test_an_image_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    assert error_of(lambda: ImageFolderReader(tmp_path, SPEC)).startswith(f"{tmp_path}: no image files (.png, ")


# -- csvfiles.py ---------------------------------------------------------------------------------

def test_where_counts_rows_from_one_and_lines_from_two() -> None:
    assert where("sub.csv", 0) == "sub.csv: row 1 (line 2)"
    assert where(Path("a/b.csv"), 9, "label") == "a/b.csv: row 10 (line 11), column 'label'"


@pytest.mark.parametrize("value, shown", [
    (np.int64(256), "256"), (12.5, "12.5"), (3.0, "3"), (np.float64(7.0), "7"), ("abc", "'abc'"), (-1, "-1"),
])
def test_as_written_shows_a_cell_as_it_reads_in_the_file(value: object, shown: str) -> None:
    assert as_written(value) == shown


def test_first_duplicate_is_the_row_of_the_second_occurrence() -> None:
    assert first_duplicate(pd.Series(["a", "b", "c", "b", "a"])) == 3
    assert first_duplicate(pd.Series(["a", "b"])) is None
    assert first_duplicate(pd.Series([], dtype=str)) is None


def test_first_empty_cell_scans_rows_first_and_counts_blanks() -> None:
    df = pd.DataFrame({"id": ["1", "2", "3"], "a": ["x", "y", "  "], "b": ["x", "", "z"]})
    assert first_empty_cell(df) == (1, "b")
    assert first_empty_cell(pd.DataFrame({"id": ["1", " "], "a": ["", "x"]})) == (0, "a")
    assert first_empty_cell(pd.DataFrame({"id": ["1"], "a": ["x"]})) is None


def test_read_csv_strings_keeps_every_cell_as_text(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("id,label\n007,1\n8,\n")
    df = read_csv_strings(tmp_path / "s.csv")
    assert df.to_dict("list") == {"id": ["007", "8"], "label": ["1", ""]}
    assert error_of(lambda: read_csv_strings(tmp_path / "none.csv")) == f"{tmp_path / 'none.csv'}: file not found"
    (tmp_path / "empty.csv").write_text("")
    assert error_of(lambda: read_csv_strings(tmp_path / "empty.csv")) == (
        f"{tmp_path / 'empty.csv'}: file is empty (expected a CSV with a header row)")
