"""pipeline/bench/export_cost.py: the RGB competition `foldwise bench export` times the export stage on."""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.bench.export_cost import write_rgb_competition
from pipeline.core.config import read_params
from pipeline.tools.init import run

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_competition_is_an_rgb_labels_csv_one_that_init_reads(tmp_path: Path) -> None:
    embedded = ROOT / read_params(ROOT / "params.yaml")["download"]["path"]
    zip_path = tmp_path / "data/rgb.zip"
    write_rgb_competition(embedded, zip_path, rows=120, test_rows=30, size=40)
    with zipfile.ZipFile(zip_path) as zf:
        assert set(zf.namelist()) == {"labels.csv", "sample_submission.csv", "train.zip", "test.zip"}
        with zipfile.ZipFile(io.BytesIO(zf.read("train.zip"))) as train:
            names = train.namelist()
            image = np.asarray(Image.open(io.BytesIO(train.read(names[1]))))
    assert len(names) == 120 and image.shape == (40, 40, 3)
    assert len({int(image[..., c].max()) for c in range(3)}) > 1    # tinted: the channels differ
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    found = run(str(zip_path), tmp_path / "params.yaml")
    assert found["layout"] == "labels_csv" and found["n_train"] == 120 and found["n_test"] == 30
    assert found["spec"].channels == 3 and (found["spec"].height, found["spec"].width) == (40, 40)
    assert sorted(found["targets"].classes) == [str(c) for c in range(10)]


def test_the_record_gives_the_epochs_each_fold_ran_not_train_epochs(tmp_path: Path) -> None:
    """init's recipe sets train.steps, which decides the epochs; the record reads them off the folds."""
    from pipeline.bench.export_cost import _epochs_run
    from pipeline.core import paths
    from serve.atomic import write_json

    for fold, epochs in ((0, 20), (1, 19)):
        write_json(tmp_path / paths.FOLDS / f"fold{fold}/metrics.json", {"fold": fold, "epochs_run": epochs})
    assert _epochs_run(tmp_path) == [20, 19]
