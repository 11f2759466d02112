"""Bad input, table-driven: every row is an input, a `foldwise` command and the expected message.

Each case runs the real CLI entry point (`pipeline.cli.main`, in this process for speed) in a
folder of its own and asserts: exit code 2, exactly one `error:` line holding every fragment, no
traceback, no numpy internals (`np.int64(...)`) in the message, and the folder byte-identical
afterwards: no output or partial file left behind and every input unchanged (sha256 of every
file before and after).

    pytest tests/e2e/test_bad_inputs.py -q      # the input builders: tests/helpers/bad_inputs.py
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.bad_inputs import (
    CLASSES,
    CODE_PARAMS,
    IMG_PARAMS,
    PRED,
    SOL,
    SUB_OK,
    Case,
    _set,
    _truncated_png,
    broken,
    files,
    image_comp,
    nested_unsafe,
    png_header_only,
    predict_files,
    project,
    raw_zip,
    submission_project,
    train_params,
    zip_bomb,
)
from helpers.cli import run_in_process

CASES: dict[str, Case] = {
    # ---- download
    "download: path missing": Case(["download"], ["download.path: 'nope.zip' does not exist"],
                                   files({"params.yaml": "download:\n  source: local\n  path: nope.zip\n"})),
    "download: path not a zip": Case(["download"], ["notes.txt: not a zip archive"],
                                     files({"params.yaml": "download:\n  source: local\n  path: notes.txt\n",
                                            "notes.txt": "hello"})),
    "download: unknown source": Case(["download"], ["download.source: must be one of", "'ftp'"],
                                     files({"params.yaml": "download:\n  source: ftp\n"})),
    "download: unknown key": Case(["download"], ["download.competiton: unknown key"],
                                  files({"params.yaml": "download:\n  competiton: x\n"})),
    "download: dataset not owner/name": Case(["download"], ["download.dataset: must be owner/name"],
                                             files({"params.yaml": "download:\n  source: kaggle-dataset\n"
                                                                   "  dataset: fashionmnist\n"})),
    "download: kaggle without credentials": Case(["download"], ["no Kaggle credentials"],
                                                 files({"params.yaml": "download:\n  source: kaggle\n"})),
    "download: path is the archive itself": Case(
        ["download"], ["is the same file as download.path"],
        files({"params.yaml": "download:\n  source: local\n  path: data/raw/competition.zip\n",
               "data/raw/competition.zip": ""})),
    "download: folder holding data/raw": Case(
        ["download"], ["data/raw/competition.zip lies inside download.path"],
        files({"params.yaml": "download:\n  source: local\n  path: .\n", "train.csv": "label\n"})),
    "params: not YAML": Case(["download"], ["params.yaml: not valid YAML"],
                             files({"params.yaml": "download: [unclosed\n"})),
    # ---- prepare (the real slice, broken one way each)
    "prepare: non-numeric pixel": Case(["prepare"], ["train.csv: row 7 (line 8), column 'pixel45'", "'abc' is not"],
                                       project(mutate=broken("train.csv", lambda df: _set(df, 6, "pixel45", "abc")))),
    "prepare: pixel 256": Case(["prepare"], ["test.csv: row 1 (line 2), column 'pixel0': 256 is outside 0-255"],
                               project(mutate=broken("test.csv", lambda df: _set(df, 0, "pixel0", 256)))),
    "prepare: pixel 12.5": Case(["prepare"], ["column 'pixel5': 12.5 is not an integer 0-255"],
                                project(mutate=broken("train.csv", lambda df: _set(df, 2, "pixel5", 12.5)))),
    "prepare: label 10": Case(["prepare"], ["row 4 (line 5), column 'label': label '10' is not a class"],
                              project(mutate=broken("train.csv", lambda df: _set(df, 3, "label", 10)))),
    "prepare: empty pixel": Case(["prepare"], ["row 12 (line 13), column 'pixel3': empty value"],
                                 project(mutate=broken("train.csv", lambda df: _set(df, 11, "pixel3", None)))),
    "prepare: no target column": Case(["prepare"], ["train.csv: missing column 'label'"],
                                      project(mutate=broken("train.csv", lambda df: df.drop(columns="label")))),
    "prepare: duplicated test id": Case(["prepare"], ["test.csv: row 10 (line 11), column 'id'", "appears twice"],
                                        project(mutate=broken("test.csv",
                                                              lambda df: _set(df, 9, "id", df.loc[2, "id"])))),
    "prepare: missing pixel column": Case(["prepare"], ["test.csv: 783 pixel columns, expected 784"],
                                          project(mutate=broken("test.csv", lambda df: df.drop(columns="pixel783")))),
    "prepare: test id not in sample": Case(["prepare"], ["is not in", "sample_submission.csv"],
                                           project(mutate=broken("sample_submission.csv", lambda df: df.iloc[1:]))),
    "prepare: no train file": Case(["prepare"], ["no file 'train.csv'"],
                                   project(archive=raw_zip({"test.csv": "id\n",
                                                            "sample_submission.csv": "id,label\n1,0\n"}))),
    "prepare: layout not detectable": Case(["prepare"], ["no image files and no pixel CSV"],
                                           project(params="prepare:\n  layout: auto\n",
                                                   archive=raw_zip({"notes.csv": "a,b\n1,2\n",
                                                                    "sample_submission.csv": "id,label\n1,0\n"}))),
    "prepare: empty train file": Case(["prepare"], ["train.csv: file is empty"],
                                      project(archive=raw_zip({"train.csv": "", "test.csv": "id,label\n",
                                                               "sample_submission.csv": "id,label\n1,0\n"}))),
    "prepare: n_folds 1": Case(["prepare"], ["prepare.n_folds: must be at least 2, got 1"],
                               project(params=f"prepare:\n  class_names: {CLASSES}\n  n_folds: 1\n")),
    "prepare: too few rows per class": Case(["prepare"], ["fewer than prepare.n_folds=50"],
                                            project(params=f"prepare:\n  class_names: {CLASSES}\n  n_folds: 50\n")),
    "prepare: unknown layout": Case(["prepare"], ["prepare.layout: must be one of"],
                                    project(params=f"prepare:\n  class_names: {CLASSES}\n  layout: parquet\n")),
    # ---- image competitions (labels CSV + folders, class folders)
    "images: labelled id without an image": Case(
        ["prepare"], ["labels.csv: row 9 (line 10), column 'id': id 't99' has no image in", "train/"],
        project(params=IMG_PARAMS, archive=image_comp(labels={"t99": "coat"}))),
    "images: unreadable image": Case(
        ["prepare"], ["train/t3.png: not a readable image"],
        project(params=IMG_PARAMS, archive=image_comp(images={"train/t3.png": b"not an image at all"}))),
    "images: truncated image": Case(
        ["prepare"], ["train/t5.png: not a readable image"],
        project(params=IMG_PARAMS,
                archive=lambda p, ctx: image_comp(images={"train/t5.png": _truncated_png(ctx)})(p, ctx))),
    "images: decompression bomb": Case(
        ["prepare"], ["train/t2.png: image is 10000x10000 = 100,000,000 pixels, above the limit", "decompression bomb"],
        project(params=IMG_PARAMS, archive=image_comp(images={"train/t2.png": png_header_only(10000, 10000)}))),
    "images: empty label cell": Case(
        ["prepare"], ["labels.csv: row 4 (line 5), column 'label': empty label"],
        project(params=IMG_PARAMS, archive=image_comp(labels={"t3": ""}))),
    "images: empty class folder": Case(
        ["prepare"], ["train/Sandal/: empty class folder"],
        project(params=IMG_PARAMS, archive=image_comp(kind="class_folders", dirs=("train/Sandal/",)))),
    "images: probability column not a class": Case(
        ["prepare"], ["sample_submission.csv: probability column 'shirt' is not a class of the training labels"],
        project(params=IMG_PARAMS, archive=image_comp(
            sample="id,bag,coat,shirt\n" + "".join(f"s{i},0.3,0.3,0.4\n" for i in range(4))))),
    "images: no test images match": Case(
        ["prepare"], ["no folder of test images whose names match the ids of", "'x0'"],
        project(params=IMG_PARAMS, archive=image_comp(sample="id,label\nx0,coat\n"))),
    # ---- archive checks
    "archive: parent-directory member": Case(["prepare"], ["unsafe member name '../../etc/evil.csv'"],
                                             project(archive=raw_zip({"../../etc/evil.csv": "x"}))),
    "archive: absolute member": Case(["prepare"], ["unsafe member name '/abs/train.csv'"],
                                     project(archive=raw_zip({"/abs/train.csv": "x"}))),
    "archive: symlink member": Case(["prepare"], ["member 'train.csv' is a symlink"],
                                    project(archive=raw_zip({}, symlink="train.csv"))),
    "archive: zip bomb": Case(["prepare"], ["member 'train.csv' expands", "zip bomb"], project(archive=zip_bomb)),
    "archive: not a zip": Case(["prepare"], ["competition.zip: not a zip archive"],
                               project(archive=lambda p, ctx: p.write_text("not a zip"))),
    "archive: unsafe member in a nested zip": Case(["prepare"], ["unsafe member name '../train.csv'"],
                                                   project(archive=nested_unsafe)),
    # ---- train params
    "train: negative lr": Case(["train", "--fold", "0"], ["params.yaml: train.lr: must be > 0, got -1.0"],
                               train_params("  lr: -1\n")),
    "train: unknown model": Case(["train", "--fold", "0"], ["train.model: unknown timm model 'resnet9000'"],
                                 train_params("  model: resnet9000\n")),
    "train: misspelt key": Case(["train", "--fold", "0"], ["train.epoch: unknown key"], train_params("  epoch: 3\n")),
    "train: epochs not an integer": Case(["train", "--fold", "0"], ["train.epochs: must be an integer, got 2.5"],
                                         train_params("  epochs: 2.5\n")),
    "train: unknown augmentation": Case(["train", "--fold", "0"], ["train.augment", "unknown Albumentations transform"],
                                        train_params("  augment:\n    transform:\n      __class_fullname__: Blurr\n")),
    "train: fold listed twice": Case(["train", "--fold", "0"], ["train.folds[1]: fold 0 is listed twice"],
                                     train_params("  folds: [{fold: 0, seed: 0}, {fold: 0, seed: 1}]\n")),
    "train: fold not listed": Case(["train", "--fold", "7"], ["fold 7 is not in params.yaml train.folds"],
                                   train_params("  epochs: 1\n")),
    "train: unknown optimizer": Case(["train", "--fold", "0"], ["train.optimizer: unknown timm optimizer 'adamx'"],
                                     train_params("  optimizer: adamx\n")),
    "pseudo: threshold outside [0, 1]": Case(
        ["pseudo", "--fold", "0"], ["params.yaml: train.pseudo_labels.threshold: must be in [0, 1], got 1.5"],
        train_params("  pseudo_labels: {rounds: 1, threshold: 1.5}\n")),
    "distill: temperature 0": Case(["distill"], ["params.yaml: distill.temperature: must be > 0, got 0"],
                                   files({"params.yaml": "distill:\n  enabled: true\n  temperature: 0\n"})),
    "distill: a student the config rejects": Case(
        ["distill"], ["params.yaml: distill.model: unknown timm model 'resnet9000'"],
        files({"params.yaml": "distill:\n  enabled: true\n  model: resnet9000\n"})),
    # ---- predict: outputs that are inputs (nothing may be overwritten)
    "predict: output is the input": Case(PRED + ["--input", "test.csv", "--output", "test.csv"],
                                         ["--output test.csv is the same file as --input test.csv"], predict_files()),
    "predict: output symlinks to the input": Case(PRED + ["--input", "test.csv", "--output", "link.csv"],
                                                  ["--output link.csv is the same file as --input test.csv"],
                                                  predict_files(links={"link.csv": "test.csv"})),
    "predict: output hard-links the input": Case(PRED + ["--input", "test.csv", "--output", "hard.csv"],
                                                 ["--output hard.csv is the same file as --input test.csv"],
                                                 predict_files(links={"hard.csv": "hard:test.csv"})),
    "predict: output is the model": Case(PRED + ["--input", "test.csv", "--output", "model.onnx"],
                                         ["--output model.onnx is the same file as --model model.onnx"],
                                         predict_files()),
    "predict: output is the sample": Case(PRED + ["--input", "test.csv", "--sample", "sample.csv",
                                                  "--output", "sample.csv"],
                                          ["--output sample.csv is the same file as --sample sample.csv"],
                                          predict_files()),
    "predict: probs are the ids": Case(PRED + ["--input", "x.npy", "--ids", "ids.csv", "--output", "o.csv",
                                               "--probs", "ids.csv"],
                                       ["--probs ids.csv is the same file as --ids ids.csv"],
                                       predict_files(npy=np.zeros((12, 28, 28), np.uint8))),
    "predict: output and probs one file": Case(PRED + ["--input", "test.csv", "--output", "o.csv", "--probs", "o.csv"],
                                               ["--output and --probs are the same file"], predict_files()),
    "predict: output is the config": Case(PRED + ["--input", "test.csv", "--output", "params.yaml",
                                                  "--config", "params.yaml"],
                                          ["--output params.yaml is the same file as --config params.yaml"],
                                          predict_files(extra={"params.yaml": "predict:\n  batch_size: 8\n"})),
    # ---- predict: bad pixel CSV, npy, image folders
    "predict csv: non-numeric pixel": Case(PRED + ["--input", "test.csv", "--output", "o.csv"],
                                           ["test.csv: row 6 (line 7), column 'pixel100': 'x7' is not an integer"],
                                           predict_files(csv=lambda df: _set(df, 5, "pixel100", "x7"))),
    "predict csv: pixel 256": Case(PRED + ["--input", "test.csv", "--output", "o.csv"],
                                   ["test.csv: row 3 (line 4), column 'pixel9': 256 is outside 0-255"],
                                   predict_files(csv=lambda df: _set(df, 2, "pixel9", 256))),
    "predict csv: pixel -1": Case(PRED + ["--input", "test.csv", "--output", "o.csv"], ["-1 is outside 0-255"],
                                  predict_files(csv=lambda df: _set(df, 2, "pixel9", -1))),
    "predict csv: pixel 12.5": Case(PRED + ["--input", "test.csv", "--output", "o.csv"],
                                    ["column 'pixel9': 12.5 is not an integer 0-255"],
                                    predict_files(csv=lambda df: _set(df, 4, "pixel9", 12.5))),
    "predict csv: too few columns": Case(PRED + ["--input", "test.csv", "--output", "o.csv"],
                                         ["test.csv: 700 pixel columns, expected 784"],
                                         predict_files(csv=lambda df: df.iloc[:, :701])),
    "predict csv: sample lacks an id": Case(PRED + ["--input", "test.csv", "--sample", "short.csv",
                                                    "--output", "o.csv"],
                                            ["test.csv: id", "is not in short.csv"],
                                            predict_files(extra={"short.csv": "id,label\n"})),
    "predict: input missing": Case(PRED + ["--input", "nope.csv", "--output", "o.csv"], ["nope.csv: file not found"],
                                   predict_files()),
    "predict: unsupported input": Case(PRED + ["--input", "notes.txt", "--output", "o.csv"],
                                       ["notes.txt: unsupported input '.txt'"],
                                       predict_files(extra={"notes.txt": "x"})),
    "predict npy: float images": Case(PRED + ["--input", "x.npy", "--output", "o.csv"],
                                      ["x.npy: dtype float32, expected uint8"],
                                      predict_files(npy=np.zeros((4, 28, 28), np.float32))),
    "predict npy: RGB images": Case(PRED + ["--input", "x.npy", "--output", "o.csv"],
                                    ["x.npy: images of shape (28, 28, 3), the model expects (28, 28, 1)"],
                                    predict_files(npy=np.zeros((4, 28, 28, 3), np.uint8))),
    "predict npy: ids count": Case(PRED + ["--input", "x.npy", "--ids", "ids.csv", "--output", "o.csv"],
                                   ["x.npy: 5 images but 12 ids"], predict_files(npy=np.zeros((5, 28, 28), np.uint8))),
    "predict npy: not an array": Case(PRED + ["--input", "bad.npy", "--output", "o.csv"],
                                      ["bad.npy: not a readable .npy array"],
                                      predict_files(extra={"bad.npy": "not numpy"})),
    "predict folder: decompression bomb": Case(PRED + ["--input", "imgs", "--output", "o.csv"],
                                               ["b.png: image is 10000x10000 = 100,000,000 pixels, above the limit",
                                                "decompression bomb"],
                                               predict_files(images={"a.png": np.zeros((32, 32), np.uint8),
                                                                     "b.png": png_header_only(10000, 10000)})),
    "predict folder: corrupt image": Case(PRED + ["--input", "imgs", "--output", "o.csv"],
                                          ["b.png: not a readable image"],
                                          predict_files(images={"a.png": np.zeros((28, 28), np.uint8),
                                                                "b.png": b"\x89PNG\r\n\x1a\n broken"})),
    "predict folder: no images": Case(PRED + ["--input", "imgs", "--output", "o.csv"], ["imgs: no image files"],
                                      predict_files(images={"readme.txt": b"x"})),
    "predict: batch size 0": Case(PRED + ["--input", "test.csv", "--output", "o.csv", "--batch-size", "0"],
                                  ["predict.batch_size: must be at least 1, got 0"], predict_files()),
    # ---- score
    "score: missing id": Case(["score", "sub.csv", "sol.csv"], ["sub.csv: id '2' of sol.csv is missing"],
                              files({"sub.csv": "id,label\n0,1\n1,2\n", "sol.csv": SOL})),
    "score: wrong columns": Case(["score", "sub.csv", "sol.csv"],
                                 ["sub.csv: columns ['id', 'class']", "missing column 'label'"],
                                 files({"sub.csv": "id,class\n0,1\n1,2\n2,3\n", "sol.csv": SOL})),
    "score: duplicated id": Case(["score", "sub.csv", "sol.csv"], ["sub.csv: row 2 (line 3)", "id '0' appears twice"],
                                 files({"sub.csv": "id,label\n0,1\n0,2\n2,3\n", "sol.csv": SOL})),
    "score: empty submission": Case(["score", "sub.csv", "sol.csv"], ["sub.csv: file is empty"],
                                    files({"sub.csv": "", "sol.csv": SOL})),
    "score: no solution file": Case(["score", "sub.csv", "sol.csv"], ["sol.csv: file not found"],
                                    files({"sub.csv": SUB_OK})),
    # ---- submit --dry-run
    "submit: label not a class": Case(["submit", "--dry-run"], ["submission.csv: row 2 (line 3), column 'label'",
                                                                "'cat' is not a class"],
                                      submission_project("id,label\n0,1\n1,cat\n2,3\n")),
    "submit: wrong columns": Case(["submit", "--dry-run"], ["submission.csv: columns ['id', 'target']"],
                                  submission_project("id,target\n0,1\n1,2\n2,3\n")),
    "submit: missing row": Case(["submit", "--dry-run"], ["id '2' of", "is missing"],
                                submission_project("id,label\n0,1\n1,2\n")),
    "submit: bad poll_timeout": Case(["submit", "--dry-run"], ["submit.poll_timeout: must be >= 0, got -5.0"],
                                     submission_project(SUB_OK, params="submit:\n  poll_timeout: -5\n")),
    # ---- code competitions (foldwise kaggle ...): refused before anything is built or asked of Kaggle
    "kaggle package: no export": Case(["kaggle", "package", "--dry-run"], ["models/export.json: not found",
                                                                           "run the pipeline up to `export`"],
                                      files({"params.yaml": CODE_PARAMS})),
    "kaggle package: graph missing": Case(["kaggle", "package", "--dry-run"],
                                          ["models/ensemble_int8.onnx: not found (submit.graph chose int8)"],
                                          files({"params.yaml": CODE_PARAMS + "  graph: int8\n",
                                                 "models/export.json": '{"fp32": {"oof_score": 0.9}}'})),
    "kaggle package: dataset not owner/slug": Case(["kaggle", "package"], ["submit.dataset: must be owner/slug, got "
                                                                           "'model-only'"],
                                                   files({"params.yaml": "submit:\n  dataset: model-only\n"})),
    "kaggle package: no competition": Case(["kaggle", "package"], ["no competition", "set submit.competition"],
                                           files({"params.yaml": "submit:\n  mode: code\n"})),
    "kaggle package: no username": Case(["kaggle", "package", "--dry-run"],
                                        ["no Kaggle username", "set submit.dataset and submit.kernel"],
                                        files({"params.yaml": "submit:\n  competition: some-competition\n"})),
    "kaggle notebook: not packaged": Case(["kaggle", "notebook"], ["kaggle/dataset/foldwise-manifest.json: not found",
                                                                   "`foldwise kaggle package`"],
                                          files({"params.yaml": CODE_PARAMS})),
    "kaggle push: not packaged": Case(["kaggle", "push", "--dry-run"], ["foldwise-manifest.json: not found"],
                                      files({"params.yaml": CODE_PARAMS})),
    # ---- other writers
    "compare: plot over params.yaml": Case(["compare", "--plot", "params.yaml"],
                                           ["--plot params.yaml is the same file as params.yaml"],
                                           files({"params.yaml": "train:\n  epochs: 1\n"})),
    "preset: preset is the params file": Case(["preset", "params.yaml"],
                                              ["--params params.yaml is the same file as PRESET params.yaml"],
                                              files({"params.yaml": "train:\n  epochs: 1\n"})),
}


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (symlinks by their target text)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def ctx(real_slice, tiny_onnx) -> dict:
    return {"slice": real_slice, "onnx": tiny_onnx}


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, ctx: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    case = CASES[name]
    case.files(tmp_path, ctx)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv)
    kaggle_dir = tmp_path.parent / f"{tmp_path.name}-kaggle"  # no credentials, outside the snapshot
    kaggle_dir.mkdir()
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(kaggle_dir))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    result = run_in_process(case.argv, capsys)
    code, err = result.returncode, result.stderr
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    for needle in case.needles:
        assert needle in lines[0], lines[0]
    assert not re.search(r"\bnp\.\w+\(", lines[0]), lines[0]
    assert snapshot(tmp_path) == before, "an input changed or an output was left behind"
