"""pipeline/data/archive.py: extract_competition (nested zips and 7z unpacked, folders linked or copied,
unsafe members, symlinks, zip bombs and over-deep nesting refused) and CompetitionArchive (has/open/label)."""
from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import py7zr
import pytest

from helpers.competitions import zip_bytes
from pipeline.data.archive import MAX_DEPTH, RATIO_FLOOR, CompetitionArchive, extract_competition
from serve.errors import UserError


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_a_nested_train_zip_is_unpacked_into_train_and_removed(tmp_path: Path) -> None:
    inner = zip_bytes({"1.png": b"one", "2.png": b"two"})
    archive = write(tmp_path / "comp.zip", zip_bytes({"train.zip": inner, "sample_submission.csv": "id,label\n"}))
    out = extract_competition(archive, tmp_path / "out")
    assert out == tmp_path / "out"
    assert files_under(out) == {"sample_submission.csv": b"id,label\n", "train/1.png": b"one", "train/2.png": b"two"}


def test_an_inner_zip_holding_its_own_folder_lands_beside_it_not_doubled(tmp_path: Path) -> None:
    inner = zip_bytes({"train/a.png": b"a", "train/b.png": b"b"})
    csv_zip = zip_bytes({"train.csv": "label,p0\n1,2\n"})
    archive = write(tmp_path / "comp.zip", zip_bytes({"train.zip": inner, "data/train.csv.zip": csv_zip}))
    out = extract_competition(archive, tmp_path / "out")
    assert files_under(out) == {"data/train.csv": b"label,p0\n1,2\n", "train/a.png": b"a", "train/b.png": b"b"}


def test_empty_folders_in_the_archive_are_kept(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train/cat/1.png", b"x")
        zf.writestr(zipfile.ZipInfo("train/dog/"), b"")
    out = extract_competition(write(tmp_path / "c.zip", buf.getvalue()), tmp_path / "out")
    assert (out / "train/dog").is_dir() and not any((out / "train/dog").iterdir())


def test_a_folder_source_is_linked_or_copied_and_the_users_files_are_untouched(tmp_path: Path) -> None:
    src = tmp_path / "mine"
    write(src / "sample_submission.csv", b"id,label\n")
    write(src / "test.zip", zip_bytes({"x.png": b"x", "y.png": b"y"}))
    before = files_under(src)
    out = extract_competition(src, tmp_path / "out")
    assert files_under(out) == {"sample_submission.csv": b"id,label\n", "test/x.png": b"x", "test/y.png": b"y"}
    assert files_under(src) == before  # the nested zip was unpacked from our copy, never from the user's folder


def test_a_missing_archive_says_to_run_the_download_stage(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nothing\.zip: not found \(run the download stage first\)"):
        extract_competition(tmp_path / "nothing.zip", tmp_path / "out")


@pytest.mark.parametrize("name", ["../x.csv", "a/../../x.csv", "/etc/x.csv", "C:/x.csv", "..\\x.csv"])
def test_an_unsafe_member_name_is_refused_naming_archive_and_member(tmp_path: Path, name: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.csv", "a\n")
        zf.writestr(zipfile.ZipInfo(name), "evil")
    archive = write(tmp_path / "evil.zip", buf.getvalue())
    with pytest.raises(UserError) as exc:
        extract_competition(archive, tmp_path / "out" / "comp")
    message = one_line_error(exc)
    assert str(archive) in message and f"unsafe member name '{name}'" in message
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "out" / "x.csv").exists()
    assert not (tmp_path / "out" / "comp" / "ok.csv").exists(), "members are checked before anything is written"


def test_an_unsafe_member_of_a_nested_archive_names_the_nested_archive(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escape.txt", "evil")
    archive = write(tmp_path / "comp.zip", zip_bytes({"train.zip": buf.getvalue()}))
    with pytest.raises(UserError) as exc:
        extract_competition(archive, tmp_path / "out")
    assert f"{archive}:train.zip: unsafe member name '../../escape.txt'" in one_line_error(exc)
    assert not (tmp_path / "escape.txt").exists()


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.csv")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    archive = write(tmp_path / "links.zip", buf.getvalue())
    with pytest.raises(UserError) as exc:
        extract_competition(archive, tmp_path / "out")
    assert f"{archive}: member 'link.csv' is a symlink" in one_line_error(exc)
    assert not (tmp_path / "out" / "link.csv").exists()


def test_a_member_with_a_zip_bomb_ratio_is_refused_before_writing(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("small.csv", "a\n")
        zf.writestr("zeros.bin", bytes(RATIO_FLOOR + (1 << 20)))  # 17 MiB of zeros deflate > 200x
    archive = write(tmp_path / "bomb.zip", buf.getvalue())
    with pytest.raises(UserError) as exc:
        extract_competition(archive, tmp_path / "out")
    message = one_line_error(exc)
    assert str(archive) in message and "member 'zeros.bin' expands" in message and "zip bomb" in message
    assert not (tmp_path / "out" / "small.csv").exists()


def test_a_highly_compressible_member_under_16_mib_is_not_called_a_bomb(tmp_path: Path) -> None:
    archive = write(tmp_path / "ok.zip", zip_bytes({"zeros.bin": bytes(1 << 20)}))
    out = extract_competition(archive, tmp_path / "out")
    assert (out / "zeros.bin").stat().st_size == 1 << 20


def nested(depth: int) -> bytes:
    """A zip holding `depth` zips one inside the other, the innermost holding data.csv."""
    data = zip_bytes({"data.csv": "a\n1\n"})
    for level in range(depth):
        data = zip_bytes({f"level{level}.zip": data})
    return data


def test_archives_nested_up_to_the_limit_are_unpacked(tmp_path: Path) -> None:
    archive = write(tmp_path / "comp.zip", nested(MAX_DEPTH))  # the outer zip and MAX_DEPTH zips nested in it
    out = extract_competition(archive, tmp_path / "out")
    assert files_under(out) == {"data.csv": b"a\n1\n"}


def test_archives_nested_too_deep_are_refused(tmp_path: Path) -> None:
    archive = write(tmp_path / "comp.zip", nested(MAX_DEPTH + 1))
    with pytest.raises(UserError) as exc:
        extract_competition(archive, tmp_path / "out")
    assert f"{archive}: archives nested deeper than {MAX_DEPTH} levels" in one_line_error(exc)


def test_a_7z_inside_the_zip_is_unpacked(tmp_path: Path) -> None:
    seven = tmp_path / "train.7z"
    with py7zr.SevenZipFile(seven, "w") as sz:
        sz.writestr(b"png-1", "train/1.png")
        sz.writestr(b"png-2", "train/2.png")
    archive = write(tmp_path / "comp.zip", zip_bytes({"train.7z": seven.read_bytes(), "trainLabels.csv": "id\n"}))
    out = extract_competition(archive, tmp_path / "out")
    assert files_under(out) == {"train/1.png": b"png-1", "train/2.png": b"png-2", "trainLabels.csv": b"id\n"}
    assert not any(p.name.startswith(".unpack") for p in out.iterdir()), "the 7z staging folder is removed"


def test_a_top_level_7z_is_unpacked(tmp_path: Path) -> None:
    seven = tmp_path / "comp.7z"
    with py7zr.SevenZipFile(seven, "w") as sz:
        sz.writestr(b"id,label\n", "sample_submission.csv")
    out = extract_competition(seven, tmp_path / "out")
    assert files_under(out) == {"sample_submission.csv": b"id,label\n"}


def test_a_file_that_is_not_a_zip_is_refused_naming_it(tmp_path: Path) -> None:
    archive = write(tmp_path / "comp.zip", zip_bytes({"train.zip": b"not really a zip"}))
    with pytest.raises(UserError) as exc:
        extract_competition(archive, tmp_path / "out")
    assert f"{archive}:train.zip: not a zip archive" in one_line_error(exc)


def test_archive_has_opens_and_labels_members_by_path_or_file_name(tmp_path: Path) -> None:
    path = write(tmp_path / "comp.zip", zip_bytes({"data/train.csv": "a\n1\n", "sample_submission.csv": "id\n"}))
    arch = CompetitionArchive(path)
    assert arch.names == ["data/train.csv", "sample_submission.csv"]
    assert arch.has("train.csv") and arch.has("data/train.csv") and not arch.has("test.csv")
    with arch.open("train.csv") as fh:
        assert fh.read() == b"a\n1\n"
    assert arch.label("train.csv") == f"{path}:data/train.csv"
    assert arch.label("test.csv") == f"{path}:test.csv"


def test_archive_finds_a_member_inside_name_zip(tmp_path: Path) -> None:
    inner = zip_bytes({"train.csv": "label,p0\n3,4\n"})
    path = write(tmp_path / "comp.zip", zip_bytes({"train.csv.zip": inner}))
    arch = CompetitionArchive(path)
    assert arch.has("train.csv")
    with arch.open("train.csv") as fh:
        assert fh.read() == b"label,p0\n3,4\n"
    assert arch.label("train.csv") == f"{path}:train.csv.zip"
    with arch.open("train.csv.zip") as fh:  # asked by its own name: the inner zip itself
        assert fh.read() == inner


def test_archive_name_zip_without_that_file_inside_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "comp.zip", zip_bytes({"train.csv.zip": zip_bytes({"other.csv": "x\n"})}))
    with pytest.raises(UserError) as exc:
        CompetitionArchive(path).open("train.csv")
    assert f"{path}:train.csv.zip: expected one 'train.csv' inside, found 0" in one_line_error(exc)


def test_archive_missing_and_ambiguous_members_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "comp.zip", zip_bytes({"a/train.csv": "1\n", "b/train.csv": "2\n", "x.csv": "3\n"}))
    arch = CompetitionArchive(path)
    with pytest.raises(UserError) as exc:
        arch.open("test.csv")
    assert f"{path}: no file 'test.csv' (has: a/train.csv, b/train.csv, x.csv)" in one_line_error(exc)
    with pytest.raises(UserError, match=r"'train\.csv' is ambiguous \(a/train\.csv, b/train\.csv\)"):
        arch.has("train.csv")


def test_archive_reads_a_folder_in_place(tmp_path: Path) -> None:
    write(tmp_path / "comp" / "sub" / "train.csv", b"a\n")
    arch = CompetitionArchive(tmp_path / "comp")
    assert arch.names == ["sub/train.csv"] and arch.has("train.csv")
    with arch.open("train.csv") as fh:
        assert fh.read() == b"a\n"
    with pytest.raises(UserError, match=r"gone: not found \(run the download stage first\)"):
        CompetitionArchive(tmp_path / "gone")
