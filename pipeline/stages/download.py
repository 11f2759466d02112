"""Stage `download`: params `download` -> data/raw/competition.zip (Kaggle's own layout) and
data/raw/source.json (where it came from, its sha256, a solution file if one came with it).

    python -m pipeline.stages.download        # what dvc.yaml runs; by hand: foldwise download
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import load_section
from pipeline.core.console import run_stage
from pipeline.data.download import DownloadParams, copy_local, dataset_to_competition, local_solution
from pipeline.kaggle.download import download_competition, download_dataset
from serve.atomic import sha256_file, write_json
from serve.errors import UserError
from serve.paths import inside, refuse_overwrite

_logger = logging.getLogger(__spec__.name if __spec__ else __name__)  # pipeline.stages.<name>, also under -m


def fetch(params: DownloadParams, archive: Path = paths.ARCHIVE, solution_path: Path = paths.SOLUTION) -> Path | None:
    """Put the competition at `archive`; the solution file that came with it, if any."""
    local = params.source in ("embedded", "local")
    if local:
        source = Path(params.path)
        refuse_overwrite({str(archive): archive, str(paths.SOURCE_JSON): paths.SOURCE_JSON}, {"download.path": source})
        if source.is_dir() and inside(archive, source):
            raise UserError(f"{archive} lies inside download.path {source}: the archive would hold itself; "
                            "point download.path at the competition's own folder")
    archive.parent.mkdir(parents=True, exist_ok=True)
    if local:
        copy_local(Path(params.path), archive)
        return local_solution(Path(params.path))
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".download-") as tmp:
        if params.source == "kaggle":
            os.replace(download_competition(params.competition, Path(tmp)), archive)
            return None
        rows = dataset_to_competition(download_dataset(params.dataset, Path(tmp)), params, archive, solution_path)
    _logger.info("dataset '%s' -> %s (%d test rows) and %s", params.dataset, archive, rows, solution_path)
    return solution_path


def main() -> dict:
    """Download the competition named by params.yaml `download`."""
    params = load_section("download", DownloadParams)
    solution = fetch(params)
    record = {
        "source": params.source,
        "path": params.path if params.source in ("embedded", "local") else None,
        "competition": params.competition if params.source == "kaggle" else None,
        "dataset": params.dataset if params.source == "kaggle-dataset" else None,
        "solution": str(solution) if solution else None,
        "solution_sha256": sha256_file(solution) if solution else None,
        "sha256": sha256_file(paths.ARCHIVE),
        "bytes": paths.ARCHIVE.stat().st_size,
    }
    write_json(paths.SOURCE_JSON, record)
    _logger.info("%s: %d bytes from %s", paths.ARCHIVE, record["bytes"], params.source)
    return record


if __name__ == "__main__":
    run_stage(main)
