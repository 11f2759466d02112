"""Projects and environments for the Kaggle tests (tests/e2e/test_kaggle*.py), with the emulator.

    env = clean_env(emulator, tmp_path)          # the emulator's credentials, nothing of the user's
    project = code_project(base, real_slice, tiny_onnx)   # prepared, the tiny ensemble as `export` left it
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import yaml

from helpers.cli import EMBEDDED, run_cli
from helpers.data import write_zip
from helpers.kaggle_emulator import KaggleEmulator
from helpers.project import make_project

SLUG = "fashion-mnist-code"
USER = "foldwise-test"          # the emulator's username
DATASET = f"{USER}/{SLUG}-foldwise"
KERNEL = f"{USER}/{SLUG}-foldwise-infer"


def solution(real_slice, path: Path) -> Path:
    """The public-solution labels of the slice's test ids."""
    sol = pd.read_csv(EMBEDDED / "public_solution.csv", dtype=str)
    sol[sol["id"].isin(real_slice["test.csv"]["id"])].to_csv(path, index=False)
    return path


def clean_env(emulator: KaggleEmulator, tmp: Path, **extra: str) -> dict:
    """The emulator's credentials and nothing of the real user's (KAGGLE_CONFIG_DIR is empty)."""
    cfg = tmp / "kaggle-config"
    cfg.mkdir(exist_ok=True)
    return {**emulator.env(), "KAGGLE_CONFIG_DIR": str(cfg), **extra}


def set_params(project: Path, **sections: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for name, values in sections.items():
        params[name].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def no_key(emulator: KaggleEmulator, *outputs: str) -> None:
    for text in outputs:
        assert emulator.key not in text


def export_record(model: Path) -> dict:
    """models/export.json as `export` writes it for a graph with no INT8/FP16 variant scored."""
    return {"folds": [0, 1], "views": ["none", "hflip"], "method": "mean_prob", "opset": 18,
            "fp32": {"bytes": model.stat().st_size, "rows": 400, "metric": "accuracy", "oof_score": 0.1025,
                     "oof_accuracy": 0.1025},
            "int8": {"bytes": 0, "checked": False, "why_not": "not exported in this test"}}


def code_project(base: Path, real_slice, tiny_onnx: Path) -> tuple[Path, Path, Path]:
    """(project, competition zip, public solution) with kaggle/dataset/ built by `foldwise kaggle package --dry-run`."""
    zip_path = write_zip(base / "competition.zip", real_slice)
    solution_path = solution(real_slice, base / "solution.csv")
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
    return project, zip_path, solution_path


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst

