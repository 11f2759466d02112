"""Kaggle downloads through the real client: a competition's files, or a dataset's, as one zip.

    zip_path = download_competition("fashion-mnist", Path(tmp))      # the download stage, `foldwise init SLUG`
    zip_path = download_dataset("zalando-research/fashionmnist", Path(tmp))
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline.kaggle.client import api, call
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def _one_zip(folder: Path, what: str) -> Path:
    zips = sorted(folder.glob("*.zip"))
    if len(zips) != 1:
        raise UserError(f"{what}: expected one zip, got {[p.name for p in folder.iterdir()]}")
    return zips[0]


def download_competition(slug: str, folder: Path) -> Path:
    """The competition's files (rules accepted, credentials present) as the one zip Kaggle sends, in `folder`."""
    client = api()
    _logger.info("downloading competition '%s' from Kaggle", slug)
    call(lambda: client.competition_download_files(slug, path=str(folder), quiet=True), slug, "downloading competition")
    return _one_zip(folder, f"kaggle competition '{slug}'")


def download_dataset(ref: str, folder: Path) -> Path:
    """Dataset `owner/name` as one zip in `folder`."""
    client = api()
    _logger.info("downloading dataset '%s' from Kaggle", ref)
    call(lambda: client.dataset_download_files(ref, path=str(folder), unzip=False, quiet=True), ref,
         "downloading dataset")
    return _one_zip(folder, f"kaggle dataset '{ref}'")
