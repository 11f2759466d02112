"""Stage `download`: get the competition archive into data/raw/.

    foldwise download            # reads params.yaml `download`

Writes `data/raw/competition.zip` (Kaggle's own layout) and `data/raw/source.json` (where it
came from, its sha256). Sources: `embedded` (the vendored default, offline), `local` (a zip or
folder path) and `kaggle` (the real kaggle API, `competition_download_files`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from pipeline.config import DownloadParams, load_section
from serve.atomic import atomic_path, write_json
from serve.errors import UserError

_logger = logging.getLogger(__name__)
RAW_DIR = Path("data/raw")
ARCHIVE = RAW_DIR / "competition.zip"
SOURCE_JSON = RAW_DIR / "source.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    from pipeline.kaggle_client import api  # noqa: PLC0415

    client = api()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        _logger.info("downloading competition '%s' from Kaggle", slug)
        client.competition_download_files(slug, path=tmp, quiet=False)
        zips = sorted(Path(tmp).glob("*.zip"))
        if len(zips) != 1:
            raise UserError(f"kaggle competition '{slug}': expected one zip, got {[p.name for p in Path(tmp).iterdir()]}")
        os.replace(zips[0], target)


def run(params: DownloadParams) -> dict:
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    if params.source in ("embedded", "local"):
        _copy_local(Path(params.path), ARCHIVE)
    else:
        _download_kaggle(params.competition, ARCHIVE)
    record = {
        "source": params.source,
        "path": params.path if params.source != "kaggle" else None,
        "competition": params.competition if params.source == "kaggle" else None,
        "sha256": sha256(ARCHIVE),
        "bytes": ARCHIVE.stat().st_size,
    }
    write_json(SOURCE_JSON, record)
    _logger.info("%s: %d bytes from %s", ARCHIVE, record["bytes"], params.source)
    return record


def main() -> None:
    run(load_section("download", DownloadParams))
