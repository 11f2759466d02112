"""pipeline/data/download.py: copy_local (zips copied, folders zipped deterministically, bad paths refused),
dataset_to_competition (a labelled dataset zip -> competition zip + solution), local_solution, and the
`download` params' validation."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.config import build
from pipeline.data.download import DownloadParams, copy_local, dataset_to_competition, local_solution
from serve.errors import UserError


def write_zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def read_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_copy_local_copies_a_zip_byte_for_byte(tmp_path: Path) -> None:
    src = write_zip(tmp_path / "comp.zip", {"train.csv": "label,p0\n1,2\n"})
    copy_local(src, tmp_path / "raw" / "competition.zip")
    assert (tmp_path / "raw" / "competition.zip").read_bytes() == src.read_bytes()


def test_copy_local_zips_a_folder_deterministically(tmp_path: Path) -> None:
    folder = tmp_path / "comp"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "b.png").write_bytes(b"bee")
    (folder / "train" / "a.png").write_bytes(b"ay")
    (folder / "sample_submission.csv").write_text("id,label\n")
    copy_local(folder, tmp_path / "one.zip")
    os.utime(folder / "train" / "a.png", (1_000_000, 1_000_000))  # a new mtime changes nothing
    copy_local(folder, tmp_path / "two.zip")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.zip") as zf:
        assert zf.namelist() == ["sample_submission.csv", "train/a.png", "train/b.png"]  # sorted
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert read_members(tmp_path / "one.zip")["train/b.png"] == b"bee"


def test_copy_local_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "comp.tar").write_text("not a zip")
    with pytest.raises(UserError) as exc:
        copy_local(tmp_path / "comp.tar", tmp_path / "out.zip")
    assert one_line(exc) == f"{tmp_path / 'comp.tar'}: not a zip archive (download.path must be a zip or a folder)"
    assert not (tmp_path / "out.zip").exists()


def test_copy_local_refuses_a_missing_path_naming_download_path(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        copy_local(tmp_path / "nowhere.zip", tmp_path / "out.zip")
    assert one_line(exc) == f"params.yaml: download.path: '{tmp_path / 'nowhere.zip'}' does not exist"


TRAIN_CSV = "label,pixel0,pixel1\n3,0,255\n1,7,8\n"
TEST_CSV = "label,pixel0,pixel1\n2,10,11\n0,12,13\n5,14,15\n"


def dataset_params(**values) -> DownloadParams:
    return build(DownloadParams, {"source": "kaggle-dataset", "dataset": "owner/name", "dataset_train_file": "tr.csv",
                                  "dataset_test_file": "te.csv", **values}, "download")


def test_dataset_to_competition_writes_a_competition_and_its_solution(tmp_path: Path) -> None:
    dataset = write_zip(tmp_path / "ds.zip", {"tr.csv": TRAIN_CSV, "te.csv": TEST_CSV})
    n = dataset_to_competition(dataset, dataset_params(), tmp_path / "competition.zip", tmp_path / "solution.csv")
    assert n == 3
    members = read_members(tmp_path / "competition.zip")
    assert sorted(members) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert members["train.csv"].decode() == TRAIN_CSV
    assert members["test.csv"].decode() == "id,pixel0,pixel1\n0,10,11\n1,12,13\n2,14,15\n"
    assert members["sample_submission.csv"].decode() == "id,label\n0,0\n1,0\n2,0\n"
    assert (tmp_path / "solution.csv").read_text() == "id,label\n0,2\n1,0\n2,5\n"


def test_dataset_to_competition_takes_the_label_column_from_anywhere_and_nested_zips(tmp_path: Path) -> None:
    test_csv = "pixel0,klass,pixel1\n10,b,11\n"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("te.csv", test_csv)
    dataset = write_zip(tmp_path / "ds.zip", {"data/tr.csv": "klass,pixel0,pixel1\na,1,2\n",
                                              "te.csv.zip": inner.getvalue()})
    n = dataset_to_competition(dataset, dataset_params(dataset_target="klass"), tmp_path / "c.zip",
                               tmp_path / "sol.csv")
    assert n == 1
    assert read_members(tmp_path / "c.zip")["test.csv"].decode() == "id,pixel0,pixel1\n0,10,11\n"
    assert pd.read_csv(tmp_path / "sol.csv", dtype=str).to_dict("list") == {"id": ["0"], "klass": ["b"]}


@pytest.mark.parametrize(("members", "key", "name"), [
    ({"te.csv": TEST_CSV}, "dataset_train_file", "tr.csv"),
    ({"tr.csv": TRAIN_CSV}, "dataset_test_file", "te.csv"),
])
def test_dataset_to_competition_refuses_a_missing_member(tmp_path: Path, members: dict, key: str,
                                                         name: str) -> None:
    dataset = write_zip(tmp_path / "ds.zip", members)
    with pytest.raises(UserError) as exc:
        dataset_to_competition(dataset, dataset_params(), tmp_path / "c.zip", tmp_path / "sol.csv")
    message = one_line(exc)
    assert message.startswith(f"kaggle dataset 'owner/name': no file '{name}' (download.{key}); it has ")
    assert not (tmp_path / "c.zip").exists() and not (tmp_path / "sol.csv").exists()


def test_dataset_to_competition_refuses_a_missing_target_column(tmp_path: Path) -> None:
    dataset = write_zip(tmp_path / "ds.zip", {"tr.csv": TRAIN_CSV, "te.csv": "pixel0,pixel1\n1,2\n"})
    with pytest.raises(UserError) as exc:
        dataset_to_competition(dataset, dataset_params(), tmp_path / "c.zip", tmp_path / "sol.csv")
    assert one_line(exc) == (f"{dataset}:te.csv: no column 'label' (download.dataset_target); "
                             "columns start ['pixel0', 'pixel1']")
    assert not (tmp_path / "c.zip").exists() and not (tmp_path / "sol.csv").exists()


def test_dataset_to_competition_refuses_a_ragged_test_row(tmp_path: Path) -> None:
    dataset = write_zip(tmp_path / "ds.zip", {"tr.csv": TRAIN_CSV, "te.csv": "label,pixel0\n1,2\n3\n"})
    with pytest.raises(UserError) as exc:
        dataset_to_competition(dataset, dataset_params(), tmp_path / "c.zip", tmp_path / "sol.csv")
    assert one_line(exc) == f"{dataset}:te.csv: row 2 (line 3) has 1 fields, the header has 2"


def test_local_solution_is_found_beside_an_archive_or_in_a_folder(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "comp.zip", {"a.csv": "x\n"})
    assert local_solution(archive) is None
    (tmp_path / "solution.csv").write_text("id,label\n")
    assert local_solution(archive) == tmp_path / "solution.csv"
    (tmp_path / "public_solution.csv").write_text("id,label\n")
    assert local_solution(archive) == tmp_path / "public_solution.csv"  # preferred
    assert local_solution(tmp_path) == tmp_path / "public_solution.csv"


def test_download_params_defaults_are_valid() -> None:
    p = build(DownloadParams, {}, "download")
    assert p.source == "embedded" and p.path.endswith(".zip")


@pytest.mark.parametrize(("values", "message"), [
    ({"source": "kaggle", "competition": "  "},
     "params.yaml: download.competition: must name a competition slug when source is kaggle"),
    ({"source": "kaggle-dataset", "dataset": "fashionmnist"},
     "params.yaml: download.dataset: must be owner/name when source is kaggle-dataset, got 'fashionmnist'"),
    ({"source": "ftp"}, "params.yaml: download.source: must be one of embedded, local, kaggle, kaggle-dataset, "
                        "got 'ftp'"),
    ({"paht": "x.zip"}, "params.yaml: download.paht: unknown key"),
])
def test_download_params_validation_names_the_key(values: dict, message: str) -> None:
    with pytest.raises(UserError) as exc:
        build(DownloadParams, values, "download")
    assert one_line(exc).startswith(message)


def test_download_params_other_sources_ignore_the_kaggle_keys() -> None:
    p = build(DownloadParams, {"source": "local", "path": "/data/comp", "competition": "", "dataset": "x"}, "download")
    assert p.source == "local" and p.path == "/data/comp"
