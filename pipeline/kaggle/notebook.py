"""`foldwise kaggle notebook`: write the offline inference notebook for a code competition.

    foldwise kaggle notebook                       # -> kaggle/kernel/<kernel slug>.ipynb
    foldwise kaggle notebook --output my.ipynb

Built with nbformat from kaggle/dataset/foldwise-manifest.json (`foldwise kaggle package` writes
it) and data/prepared/meta.json (where the competition keeps its test files and sample
submission). The notebook finds the dataset and the competition under /kaggle/input, installs
`serve/` from the dataset's wheel (and missing dependencies from its wheels, offline), predicts
the test files exactly as `foldwise predict` does (CUDA when the session has a GPU), validates
/kaggle/working/submission.csv against the sample submission, and prints the throughput and the
time a hidden test set `submit.hidden_scale` times larger would take. Its first cell ends in
`foldwise-notebook sha256:<tag>`, the hash of everything else in it: `push` looks for that tag.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pipeline.core import paths
from pipeline.kaggle import cells
from pipeline.kaggle.package import DATASET_DIR, MANIFEST, Refs
from pipeline.kaggle.params import SubmitParams
from serve.atomic import write_text
from serve.errors import UserError

_logger = logging.getLogger(__name__)
KERNEL_DIR = paths.KAGGLE_KERNEL
BATCH_SIZE = 256  # `foldwise predict`'s default, so both write the same bytes


def test_files(meta: dict) -> tuple[str, str]:
    """(test input, sample submission) relative to the competition's folder, as `prepare` found them."""
    files = meta.get("files") or {}
    test = files.get("test_file") or files.get("test_images")
    if not test:
        if meta.get("layout") != "pixel_csv":
            raise UserError("data/prepared/meta.json: does not say where the test files are; run `foldwise prepare` "
                            "again (this version records them)")
        test = "test.csv"
    return test, files.get("sample_submission") or "sample_submission.csv"


def build(manifest: dict, meta: dict, refs_: Refs, params: SubmitParams):
    """The notebook (an nbformat NotebookNode) and its content tag."""
    import nbformat

    test, sample = test_files(meta)
    settings = cells.SETTINGS.format(
        competition=refs_.competition, dataset=refs_.dataset, model=manifest["model"],
        model_sha256=manifest["model_sha256"], serve_wheel=manifest["serve_wheel"], test=test, sample=sample,
        hidden_scale=float(params.hidden_scale), batch_size=BATCH_SIZE)
    sources = [cells.header(refs_.competition, refs_.dataset, manifest), settings, cells.LOCATE, cells.INSTALL,
               cells.PREDICT, cells.VALIDATE]
    tag = hashlib.sha256("\n\0".join(sources).encode()).hexdigest()
    sources[0] = sources[0].replace("{TAG}", f"sha256:{tag[:16]}")
    v4 = nbformat.v4
    nb = v4.new_notebook(metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "foldwise": {"tag": tag, "dataset": refs_.dataset, "competition": refs_.competition,
                     "model": manifest["model"], "dataset_tag": manifest["tag"]}})
    nb.cells = [v4.new_markdown_cell(sources[0], id="foldwise-0")]
    nb.cells += [v4.new_code_cell(src, id=f"foldwise-{i}") for i, src in enumerate(sources[1:], 1)]
    nbformat.validate(nb)
    return nb, tag


def default_path(refs_: Refs) -> Path:
    return KERNEL_DIR / f"{refs_.kernel.split('/')[1]}.ipynb"


def write(refs_: Refs, params: SubmitParams, output: Path | None = None, dataset_dir: Path = DATASET_DIR,
          prepared: Path = paths.PREPARED) -> tuple[Path, str]:
    """Write the notebook (atomically); return its path and tag."""
    import nbformat

    manifest_path = dataset_dir / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path}: not found; run `foldwise kaggle package` (or `--dry-run`) first")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("dataset") != refs_.dataset:
        raise UserError(f"{manifest_path}: built for dataset '{manifest.get('dataset')}', but submit.dataset is "
                        f"'{refs_.dataset}'; run `foldwise kaggle package` again")
    meta_path = paths.Prepared(prepared).meta
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: not found; run `foldwise prepare` first")
    nb, tag = build(manifest, json.loads(meta_path.read_text()), refs_, params)
    path = output or default_path(refs_)
    write_text(path, nbformat.writes(nb) + "\n")
    print(f"notebook: wrote {path} ({len(nb.cells)} cells, foldwise-notebook sha256:{tag[:16]}) for dataset "
          f"'{refs_.dataset}' and competition '{refs_.competition}'")
    return path, tag


def read_tag(path: Path) -> str:
    """The content tag of a notebook this module wrote."""
    try:
        return json.loads(path.read_text())["metadata"]["foldwise"]["tag"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path}: not a notebook written by `foldwise kaggle notebook`; run it first") from None
