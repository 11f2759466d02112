"""A prepared project for the code-competition tests: a real slice of the embedded competition,
`download` + `prepare` run for real, and the tiny exported ensemble (conftest's `tiny_onnx`) in
models/ as `export` would leave it, with `submit.mode: code`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli, write_zip
from test_e2e import make_project
from test_kaggle import _solution

SLUG = "fashion-mnist-code"
USER = "foldwise-test"          # the emulator's username
DATASET = f"{USER}/{SLUG}-foldwise"
KERNEL = f"{USER}/{SLUG}-foldwise-infer"


def export_record(model: Path) -> dict:
    """models/export.json as `export` writes it for a graph with no INT8/FP16 variant scored."""
    return {"folds": [0, 1], "views": ["none", "hflip"], "method": "mean_prob", "opset": 18,
            "fp32": {"bytes": model.stat().st_size, "rows": 400, "metric": "accuracy", "oof_score": 0.1025,
                     "oof_accuracy": 0.1025},
            "int8": {"bytes": 0, "checked": False, "why_not": "not exported in this test"}}


@pytest.fixture(scope="module")
def code_project(tmp_path_factory, real_slice, tiny_onnx):
    """(project, competition zip, public solution) with kaggle/dataset/ built by `foldwise kaggle package --dry-run`."""
    base = tmp_path_factory.mktemp("code")
    zip_path = write_zip(base / "competition.zip", real_slice)
    solution = _solution(real_slice, base / "solution.csv")
    project = make_project(base / "project", zip_path,
                           submit={"mode": "code", "competition": SLUG, "wheels": [], "poll_interval": 0.05,
                                   "poll_timeout": 60, "kernel_timeout": 300})
    for cmd in (["download"], ["prepare"]):
        r = run_cli(*cmd, cwd=project)
        assert r.returncode == 0, r.stderr
    (project / "models").mkdir()
    shutil.copyfile(tiny_onnx, project / "models/ensemble.onnx")
    (project / "models/export.json").write_text(json.dumps(export_record(tiny_onnx), indent=2))
    r = run_cli("kaggle", "package", "--dry-run", cwd=project, env={"KAGGLE_USERNAME": USER})
    assert r.returncode == 0, r.stderr
    return project, zip_path, solution


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst

