"""The download stage's library: the `download` params, local archives and folders, and a labelled
Kaggle dataset turned into a competition (the Kaggle API calls are in pipeline/kaggle/download.py).

    copy_local(Path("~/Downloads/comp.zip"), paths.ARCHIVE)          # a zip, or a folder zipped
    dataset_to_competition(dataset_zip, params, paths.ARCHIVE, paths.SOLUTION)

Sources (`download.source`): `embedded` (the vendored default, offline), `local` (a zip or folder
path), `kaggle` (a competition through the real kaggle API) and `kaggle-dataset` (e.g.
zalando-research/fashionmnist, whose test CSV has labels: it becomes a local competition,
train.csv / test.csv with ids / sample_submission.csv, plus data/raw/solution.csv for `foldwise score`).
"""
from __future__ import annotations

import csv
import io
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.data.archive import CompetitionArchive
from serve.atomic import atomic_path
from serve.errors import UserError

_logger = logging.getLogger(__name__)


@dataclass
class DownloadParams:
    """params.yaml `download`: where the competition archive comes from."""
    source: Literal["embedded", "local", "kaggle", "kaggle-dataset"] = "embedded"
    path: str = "data/embedded/fashion-mnist/fashion-mnist.zip"  # embedded / local: a zip or folder
    competition: str = "fashion-mnist"  # kaggle: the competition slug
    dataset: str = "zalando-research/fashionmnist"  # kaggle-dataset: owner/name
    dataset_train_file: str = "fashion-mnist_train.csv"  # kaggle-dataset: labelled training CSV
    dataset_test_file: str = "fashion-mnist_test.csv"    # kaggle-dataset: labelled test CSV (-> solution)
    dataset_target: str = "label"                        # kaggle-dataset: the label column

    def validate(self, err) -> None:
        if self.source == "kaggle" and not self.competition.strip():
            raise err("must name a competition slug when source is kaggle", "competition")
        if self.source == "kaggle-dataset" and self.dataset.count("/") != 1:
            raise err(f"must be owner/name when source is kaggle-dataset, got {self.dataset!r}", "dataset")


def zip_folder(folder: Path, target: Path) -> None:
    """Zip a folder deterministically (sorted names, fixed timestamps) so its hash is stable."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def copy_local(source: Path, target: Path) -> None:
    if source.is_dir():
        zip_folder(source, target)
        return
    if not source.is_file():
        raise UserError(f"params.yaml: download.path: '{source}' does not exist")
    if not zipfile.is_zipfile(source):
        raise UserError(f"{source}: not a zip archive (download.path must be a zip or a folder)")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def dataset_to_competition(dataset_zip: Path, params: DownloadParams, target: Path, solution: Path) -> int:
    """A labelled dataset zip -> a competition zip (train.csv, test.csv with ids, sample_submission.csv)
    and its solution file (id, label), streamed row by row. Returns the number of test rows."""
    arch = CompetitionArchive(dataset_zip)
    for name, key in ((params.dataset_train_file, "dataset_train_file"),
                      (params.dataset_test_file, "dataset_test_file")):
        if not arch.has(name):
            raise UserError(f"kaggle dataset '{params.dataset}': no file '{name}' (download.{key}); "
                            f"it has {', '.join(arch.names[:10])}")
    label, test_label = params.dataset_target, arch.label(params.dataset_test_file)

    def member(zf: zipfile.ZipFile, name: str):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        return zf.open(info, "w")

    n = 0
    with atomic_path(target) as tmp_zip, atomic_path(solution) as tmp_sol, tempfile.TemporaryFile("w+") as sample, \
            zipfile.ZipFile(tmp_zip, "w") as out, open(tmp_sol, "w", newline="") as sol:
        with member(out, "train.csv") as dst, arch.open(params.dataset_train_file) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        with member(out, "test.csv") as dst_bin, arch.open(params.dataset_test_file) as src_bin:
            reader = csv.reader(io.TextIOWrapper(src_bin, encoding="utf-8", newline=""))
            dst = io.TextIOWrapper(dst_bin, encoding="utf-8", newline="")
            header = next(reader, None)
            if header is None or label not in header:
                raise UserError(f"{test_label}: no column '{label}' (download.dataset_target); "
                                f"columns start {(header or [])[:5]}")
            li = header.index(label)
            tw, sw, lw = (csv.writer(f, lineterminator="\n") for f in (dst, sample, sol))
            tw.writerow(["id"] + header[:li] + header[li + 1:])
            sw.writerow(["id", label])
            lw.writerow(["id", label])
            for n, row in enumerate(reader, start=1):
                if len(row) != len(header):
                    raise UserError(f"{test_label}: row {n} (line {n + 1}) has {len(row)} fields, "
                                    f"the header has {len(header)}")
                tw.writerow([n - 1] + row[:li] + row[li + 1:])
                sw.writerow([n - 1, 0])
                lw.writerow([n - 1, row[li]])
            dst.flush()
            dst.detach()
        sample.seek(0)
        with member(out, "sample_submission.csv") as dst_bin:
            dst_bin.write(sample.read().encode())
    return n


def local_solution(path: Path) -> Path | None:
    """A labelled part of the test set shipped beside a local archive (`public_solution.csv`,
    `solution.csv`), which lets `submit` score the submission locally."""
    folder = path if path.is_dir() else path.parent
    for name in ("public_solution.csv", "solution.csv"):
        if (folder / name).is_file():
            return folder / name
    return None
