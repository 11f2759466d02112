"""Any Kaggle image-classification competition: five shapes built from real pixels (tests/competitions.py).

For each shape: `foldwise init` detects the layout and writes params.yaml, `dvc repro` runs end to
end, the submission passes validation against the sample submission, and `foldwise score` gives
the competition's metric well above chance. The five projects run `dvc repro` at the same time
(2 cores: stages of one project wait on I/O and start-up while another computes). Then: the same
image files give identical pixels through `prepare` and through `foldwise predict`.
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

from competitions import LAYOUT, METRIC, SHAPES, build
from conftest import BIN, run_cli
from test_e2e import make_project

pytestmark = pytest.mark.e2e
CHANCE = {"digits": 0.1, "cifar": 0.1, "cactus": 0.5, "seedlings": 0.1, "breeds": float(np.log(10))}
TRAIN = {"model": "foldwise_cnn", "epochs": 12, "batch_size": 32, "lr": 0.003, "warmup_epochs": 1.0,
         "model_kwargs": {"widths": [16, 32, 64]}}


def project(dst: Path, zip_path: Path) -> Path:
    """A copy of the project with tiny training; `foldwise init data/slice.zip` then writes its sections."""
    return make_project(dst, zip_path, prepare={"n_folds": 2}, train=TRAIN,
                        export={"parity_rows": 32, "eval_rows": 400, "calibration_rows": 64})


def _repro(proj: Path) -> tuple[int, str]:
    """`dvc repro` in `proj` with one torch thread (two projects share the two cores)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(BIN / "dvc"), "repro"], cwd=proj, env=env, capture_output=True, text=True, timeout=1500)
    return r.returncode, r.stdout + r.stderr


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
    ready = [s for s in SHAPES if out[s]["init"].returncode == 0]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for shape, (code, log) in zip(ready, pool.map(lambda s: _repro(out[s]["project"]), ready)):
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
def test_submission_is_valid_and_scores_well_above_chance(competitions, shape: str) -> None:
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


def test_prepare_and_predict_give_identical_pixels_for_the_same_files(tmp_path: Path, tiny_onnx) -> None:
    """Images of several sizes and modes (RGBA, palette, 16-bit, EXIF-rotated JPEG, grayscale) through
    prepare's decode and through predict's reader: the same uint8 pixels, the same predictions."""
    from PIL import Image

    from pipeline.core.config import build as build_params
    from pipeline.data.prepare import PrepareParams, prepare
    from serve.engine import Engine
    from serve.readers import ImageFolderReader

    rng = np.random.default_rng(0)
    folder = tmp_path / "comp"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    base = (rng.random((40, 52)) * 255).astype(np.uint8)
    made = {
        "rgba.png": Image.fromarray(np.dstack([base, base[::-1], base[:, ::-1], (base > 60) * 255]).astype(np.uint8), "RGBA"),
        "palette.png": Image.fromarray(base, "L").convert("P"),
        "sixteen.png": Image.fromarray(base.astype(np.uint16) * 257),
        "gray.jpg": Image.fromarray(base[:30], "L"),
        "big.png": Image.fromarray(np.kron(base, np.ones((3, 3), np.uint8)), "L"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    for name, im in made.items():
        im.save(folder / "test" / name, **({"exif": exif} if name.endswith(".jpg") else {}))
    for i in range(6):
        Image.fromarray(np.roll(base, i), "L").save(folder / "train" / f"t{i}.png")
    pd.DataFrame({"id": [f"t{i}" for i in range(6)], "label": ["a", "b"] * 3}).to_csv(folder / "labels.csv", index=False)
    pd.DataFrame({"id": sorted(made), "label": "a"}).to_csv(folder / "sample_submission.csv", index=False)
    params = build_params(PrepareParams, {"n_folds": 2, "image_size": [28, 28], "channels": 1}, "prepare")
    meta = prepare(params, folder, tmp_path / "prepared")
    assert meta["layout"] == "labels_csv" and meta["id_form"] == "name"
    prepared = np.load(tmp_path / "prepared/test_images.npy")
    engine = Engine(tiny_onnx)  # a 28x28x1 model: its spec is prepare's (size, channels, resize)
    assert engine.info.image.shape == (28, 28, 1)
    reader = ImageFolderReader(folder / "test", engine.info.image, id_form="name")
    served = np.concatenate([c.images for c in reader.chunks(2)]).transpose(0, 2, 3, 1)
    ids = pd.read_csv(tmp_path / "prepared/test_ids.csv")["id"].tolist()
    assert ids == sorted(made) and [f.name for f in reader.files] == ids
    assert served.dtype == np.uint8 and np.array_equal(served, prepared)
    a = run_cli("predict", "--model", str(tiny_onnx), "--input", str(folder / "test"), "--output", str(tmp_path / "a.csv"),
                "--probs", str(tmp_path / "pa.csv"))
    b = run_cli("predict", "--model", str(tiny_onnx), "--input", str(tmp_path / "prepared/test_images.npy"),
                "--ids", str(tmp_path / "prepared/test_ids.csv"), "--output", str(tmp_path / "b.csv"),
                "--probs", str(tmp_path / "pb.csv"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    pa, pb = (pd.read_csv(tmp_path / f, dtype=str) for f in ("pa.csv", "pb.csv"))
    assert pa["id"].tolist() == [Path(i).stem for i in ids] and pb["id"].tolist() == ids  # file order both
    assert pa.iloc[:, 1:].equals(pb.iloc[:, 1:])  # the same pixels: the same probabilities, to the digit


def test_an_image_without_a_label_row_is_left_out_with_a_counted_warning(tmp_path: Path, caplog) -> None:
    """Warn and count, not fail: Kaggle folders sometimes hold extra files, and refusing the whole
    competition for them would help nobody; the count says how many were left out."""
    from PIL import Image

    from pipeline.core.config import build as build_params
    from pipeline.data.prepare import PrepareParams, prepare

    folder = tmp_path / "comp"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    for i in range(9):
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(folder / "train" / f"{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "test" / "x.png")
    pd.DataFrame({"id": range(6), "label": ["a", "b"] * 3}).to_csv(folder / "labels.csv", index=False)
    pd.DataFrame({"id": ["x"], "label": ["a"]}).to_csv(folder / "sample_submission.csv", index=False)
    with caplog.at_level("WARNING"):
        meta = prepare(build_params(PrepareParams, {"n_folds": 2}, "prepare"), folder, tmp_path / "out")
    assert meta["n_train"] == 6 and meta["classes"] == ["a", "b"]
    assert any("3 image files have no row in" in r.getMessage() for r in caplog.records), caplog.text
    assert any("3 image files have no row in" in n for n in meta["notes"])
