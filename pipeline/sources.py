"""Stage `download`: get the competition archive into data/raw/.

    foldwise download            # reads params.yaml `download`

Writes `data/raw/competition.zip` (Kaggle's own layout) and `data/raw/source.json` (where it
came from, its sha256). Sources: `embedded` (the vendored default, offline), `local` (a zip or
folder path), `kaggle` (the real kaggle API, `competition_download_files`) and `kaggle-dataset`
(`dataset_download_files`, e.g. zalando-research/fashionmnist, whose test CSV has labels: it
becomes a local competition, train.csv / test.csv with ids / sample_submission.csv, plus
`data/raw/solution.csv` for `foldwise score`).
"""
from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from pipeline.config import DownloadParams, load_section
from serve.atomic import atomic_path, sha256_file, write_json
from serve.errors import UserError
from serve.paths import inside, refuse_overwrite

_logger = logging.getLogger(__name__)
RAW_DIR = Path("data/raw")
ARCHIVE = RAW_DIR / "competition.zip"
SOURCE_JSON = RAW_DIR / "source.json"
SOLUTION = RAW_DIR / "solution.csv"


def sha256(path: Path) -> str:
    return sha256_file(path)


def _zip_folder(folder: Path, target: Path) -> None:
    """Zip a folder deterministically (sorted names, fixed timestamps) so its hash is stable."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _copy_local(source: Path, target: Path) -> None:
    if source.is_dir():
        _zip_folder(source, target)
        return
    if not source.is_file():
        raise UserError(f"params.yaml: download.path: '{source}' does not exist")
    if not zipfile.is_zipfile(source):
        raise UserError(f"{source}: not a zip archive (download.path must be a zip or a folder)")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _download_kaggle(slug: str, target: Path) -> None:
    from pipeline.kaggle.client import api, call  # noqa: PLC0415

    client = api()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        _logger.info("downloading competition '%s' from Kaggle", slug)
        call(lambda: client.competition_download_files(slug, path=tmp, quiet=True), slug, "downloading competition")
        zips = sorted(Path(tmp).glob("*.zip"))
        if len(zips) != 1:
            raise UserError(f"kaggle competition '{slug}': expected one zip, got {[p.name for p in Path(tmp).iterdir()]}")
        os.replace(zips[0], target)


def dataset_to_competition(dataset_zip: Path, params: DownloadParams, target: Path, solution: Path) -> int:
    """A labelled dataset zip -> a competition zip (train.csv, test.csv with ids, sample_submission.csv)
    and its solution file (id, label), streamed row by row. Returns the number of test rows."""
    from pipeline.archive import CompetitionArchive  # noqa: PLC0415  (refuses unsafe members)

    arch = CompetitionArchive(dataset_zip)
    for name, key in ((params.dataset_train_file, "dataset_train_file"), (params.dataset_test_file, "dataset_test_file")):
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


def _download_kaggle_dataset(params: DownloadParams, target: Path, solution: Path) -> None:
    from pipeline.kaggle.client import api, call  # noqa: PLC0415

    client = api()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        _logger.info("downloading dataset '%s' from Kaggle", params.dataset)
        call(lambda: client.dataset_download_files(params.dataset, path=tmp, unzip=False, quiet=True),
             params.dataset, "downloading dataset")
        zips = sorted(Path(tmp).glob("*.zip"))
        if len(zips) != 1:
            raise UserError(f"kaggle dataset '{params.dataset}': expected one zip, got "
                            f"{[p.name for p in Path(tmp).iterdir()]}")
        rows = dataset_to_competition(zips[0], params, target, solution)
        _logger.info("dataset '%s' -> %s (%d test rows) and %s", params.dataset, target, rows, solution)


def local_solution(path: Path) -> Path | None:
    """A labelled part of the test set shipped beside a local archive (`public_solution.csv`,
    `solution.csv`), which lets `submit` score the submission locally."""
    folder = path if path.is_dir() else path.parent
    for name in ("public_solution.csv", "solution.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def run(params: DownloadParams) -> dict:
    if params.source in ("embedded", "local"):
        source = Path(params.path)
        refuse_overwrite({str(ARCHIVE): ARCHIVE, str(SOURCE_JSON): SOURCE_JSON}, {"download.path": source})
        if source.is_dir() and inside(ARCHIVE, source):
            raise UserError(f"{ARCHIVE} lies inside download.path {source}: the archive would hold itself; "
                            "point download.path at the competition's own folder")
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    if params.source in ("embedded", "local"):
        _copy_local(Path(params.path), ARCHIVE)
    elif params.source == "kaggle":
        _download_kaggle(params.competition, ARCHIVE)
    else:
        _download_kaggle_dataset(params, ARCHIVE, SOLUTION)
    solution = None
    if params.source == "kaggle-dataset":
        solution = SOLUTION
    elif params.source in ("embedded", "local"):
        solution = local_solution(Path(params.path))
    record = {
        "source": params.source,
        "path": params.path if params.source in ("embedded", "local") else None,
        "competition": params.competition if params.source == "kaggle" else None,
        "dataset": params.dataset if params.source == "kaggle-dataset" else None,
        "solution": str(solution) if solution else None,
        "solution_sha256": sha256(solution) if solution else None,
        "sha256": sha256(ARCHIVE),
        "bytes": ARCHIVE.stat().st_size,
    }
    write_json(SOURCE_JSON, record)
    _logger.info("%s: %d bytes from %s", ARCHIVE, record["bytes"], params.source)
    return record


def main() -> None:
    run(load_section("download", DownloadParams))
