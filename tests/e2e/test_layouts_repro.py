"""Any Kaggle image-classification competition: five shapes built from real pixels (tests/helpers/competitions.py).

For each shape: `foldwise init` detects the layout and writes params.yaml, `dvc repro` runs end to
end (through `submit`; the report too where the metric is not accuracy), the submission passes
validation against the sample submission, and `foldwise score` gives the competition's metric well
above chance. Two projects run `dvc repro` at a time (2 cores: stages of one project wait on I/O and
start-up while another computes).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers.cli import BIN, run_cli
from helpers.competitions import LAYOUT, METRIC, SHAPES, build
from helpers.project import make_project
from helpers.report_files import check_pdf

pytestmark = pytest.mark.e2e
CHANCE = {"digits": 0.1, "cifar": 0.1, "cactus": 0.5, "seedlings": 0.1, "breeds": float(np.log(10))}
TRAIN = {"model": "foldwise_cnn", "epochs": 8, "batch_size": 32, "lr": 0.003, "warmup_epochs": 1.0,
         "model_kwargs": {"widths": [16, 32, 64]}}
# cifar needs 12 epochs for its bar (0.4875 against 0.50 at 10); the others clear theirs by 0.2 or more
# at 12 (digits 0.70, seedlings 0.71 against 0.50; cactus AUC 0.90 against 0.70; breeds log loss 1.45
# against 1.73) and train 8. cifar starts first: the longest project, two at a time.
EPOCHS = {"cifar": 12}


def project(dst: Path, zip_path: Path) -> Path:
    """A copy of the project with tiny training; `foldwise init data/slice.zip` then writes its sections."""
    return make_project(dst, zip_path, prepare={"n_folds": 2}, train=TRAIN,
                        export={"parity_rows": 32, "eval_rows": 400, "calibration_rows": 64})


def _repro(proj: Path, shape: str) -> tuple[int, str]:
    """`dvc repro` in `proj` with one torch thread (two projects share the two cores). The report's
    path depends on the metric only (tests/e2e/test_repro.py draws it for accuracy), so projects
    scored by accuracy stop at `submit` and the report runs where the metric is another."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    targets = ["submit"] if METRIC[shape] == "accuracy" else []
    r = subprocess.run([str(BIN / "dvc"), "repro", *targets], cwd=proj, env=env, capture_output=True, text=True,
                       timeout=1500)
    return r.returncode, r.stdout + r.stderr


def _tiny_training(proj: Path, shape: str) -> None:
    """After `foldwise init`: its recipe (augmentation, smoothing) on the tests' tiny model and budget."""
    path = proj / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train"].update(TRAIN, steps=None, epochs=EPOCHS.get(shape, TRAIN["epochs"]))
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def competitions(tmp_path_factory) -> dict:
    """Every shape: its zip, solution, project (after `foldwise init`) and `dvc repro` result;
    two projects run at a time (the stages are mostly single-threaded start-up and I/O)."""
    from concurrent.futures import ThreadPoolExecutor

    base = tmp_path_factory.mktemp("layouts")
    out = {}
    for shape in SHAPES:
        zip_path, solution = build(shape, base / "zips")
        proj = project(base / shape, zip_path)
        out[shape] = {"zip": zip_path, "solution": solution, "project": proj,
                      "init": run_cli("init", "data/slice.zip", cwd=proj)}
        _tiny_training(proj, shape)
    ready = sorted((s for s in SHAPES if out[s]["init"].returncode == 0), key=lambda s: -EPOCHS.get(s, 0))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for shape, (code, log) in zip(ready, pool.map(lambda s: _repro(out[s]["project"], s), ready)):
            out[shape].update(returncode=code, log=log)
    for shape in SHAPES:
        out[shape].setdefault("returncode", None)
        out[shape].setdefault("log", "init failed")
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_init_detects_the_layout_and_repro_runs_end_to_end(competitions, shape: str) -> None:
    c = competitions[shape]
    assert c["init"].returncode == 0, c["init"].stderr
    assert f"layout        {LAYOUT[shape]}" in c["init"].stdout, c["init"].stdout
    assert f"metric        {METRIC[shape]}" in c["init"].stdout
    params = yaml.safe_load((c["project"] / "params.yaml").read_text())
    assert params["prepare"]["layout"] == LAYOUT[shape] and params["prepare"]["metric"] == METRIC[shape]
    assert params["download"] == {**params["download"], "source": "local", "path": "data/slice.zip"}
    assert c["returncode"] == 0, c["log"][-4000:]
    meta = json.loads((c["project"] / "data/prepared/meta.json").read_text())
    assert meta["layout"] == LAYOUT[shape] and meta["metric"]["name"] == METRIC[shape]


@pytest.mark.parametrize("shape", SHAPES)
def test_submission_is_valid_and_scores_well_above_chance(competitions, shape: str, tmp_path: Path) -> None:
    c = competitions[shape]
    assert c["returncode"] == 0, c["log"][-4000:]
    proj = c["project"]
    sub = pd.read_csv(proj / "submissions/submission.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(proj / "data/prepared/sample_submission.csv", dtype=str, keep_default_na=False)
    assert list(sub.columns) == list(sample.columns) and sub.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
    dry = run_cli("submit", "--dry-run", cwd=proj)  # validates against the sample submission again
    assert dry.returncode == 0, dry.stderr
    score = run_cli("score", str(proj / "submissions/submission.csv"), str(c["solution"]))
    assert score.returncode == 0, score.stderr
    name, value = score.stdout.split()[:2]
    assert name == METRIC[shape], score.stdout
    if METRIC[shape] == "log_loss":
        assert float(value) < 0.75 * CHANCE[shape], score.stdout
    else:
        assert float(value) > CHANCE[shape] + 0.5 * (1 - CHANCE[shape]) - 0.05, score.stdout
    metrics = json.loads((proj / "metrics.json").read_text())
    assert metrics["metric"] == METRIC[shape] and "oof_accuracy" in metrics
    if METRIC[shape] != "accuracy":  # the report, where its metric-specific parts run
        page = (proj / "reports/index.html").read_text()
        assert f"OOF {METRIC[shape]}" in page or "OOF log-loss" in page, page[:2000]
        text = check_pdf(proj / "reports", tmp_path)  # the PDF too, for this layout, metric and image kind
        assert "What the network learned" in text and "Penultimate features in 2-D" in text


def test_classes_are_written_back_as_the_competition_spells_them(competitions) -> None:
    seedlings = competitions["seedlings"]["project"]
    species = set(pd.read_csv(seedlings / "submissions/submission.csv")["species"])
    assert species <= {"T-shirt top", "Trouser", "Pull-over", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle-boot"} and len(species) > 3
    cactus = pd.read_csv(competitions["cactus"]["project"] / "submissions/submission.csv")
    assert cactus["id"].str.endswith(".jpg").all() and cactus["has_cactus"].between(0, 1).all()
    breeds = pd.read_csv(competitions["breeds"]["project"] / "submissions/submission.csv")
    assert np.allclose(breeds.iloc[:, 1:].sum(axis=1), 1, atol=1e-3)
    digits = pd.read_csv(competitions["digits"]["project"] / "submissions/submission.csv")
    assert list(digits.columns) == ["ImageId", "Label"] and digits["ImageId"].tolist() == list(range(1, 81))


def test_a_log_loss_competition_gets_no_smoothing_and_a_temperature_only_where_it_wins_out_of_fold(competitions):
    """breeds (log loss): init's recipe trains without label smoothing; the ensemble's temperature is
    decided on its cross-fitted OOF score, exported in the graph and shown in the report."""
    import onnx

    proj = competitions["breeds"]["project"]
    assert yaml.safe_load((proj / "params.yaml").read_text())["train"]["label_smoothing"] == 0.0
    metrics = json.loads((proj / "metrics.json").read_text())
    c = metrics["calibration"]
    assert c["applies"] and {"oof_score_uncalibrated", "oof_score_cross_fitted"} <= set(c)
    assert c["kept"] == (c["oof_score_cross_fitted"] < c["oof_score_uncalibrated"])
    reported = c["oof_score_cross_fitted"] if c["kept"] else c["oof_score_uncalibrated"]
    assert abs(metrics["oof_score"] - reported) < 1e-4                              # the honest one is reported
    meta = {p.key: p.value for p in onnx.load(str(proj / "models/ensemble.onnx")).metadata_props}
    assert json.loads(meta["temperature"]) == c["temperature"] and (c["temperature"] == 1.0) != c["kept"]
    assert 'id=calibration>' in (proj / "reports/index.html").read_text()
    cactus = json.loads((competitions["cactus"]["project"] / "metrics.json").read_text())["calibration"]
    assert not cactus["applies"] and cactus["temperature"] == 1.0                   # ROC AUC: ranks only
