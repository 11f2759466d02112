"""A copy of the project in a temporary folder, on a small competition, run with the real DVC.

    project = make_project(tmp / "project", zip_path, train={"epochs": 1})
    result = dvc(project, "repro")
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from helpers.cli import BIN, ROOT

PROJECT_FILES = [".dvc/config", ".dvc/.gitignore", ".dvcignore", "dvc.yaml", "params.yaml", "pipeline", "serve",
                 "tune/report/README.md", "ladder/README.md"]


def dvc(project: Path, *args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=timeout)


def make_project(dst: Path, zip_path: Path, **sections) -> Path:
    """A copy of the project whose download stage takes `zip_path` and whose params take `sections`."""
    for rel in PROJECT_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "data").mkdir(exist_ok=True)
    shutil.copy2(zip_path, dst / "data/slice.zip")
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["download"].update(source="local", path="data/slice.zip")
    params["prepare"].update(n_folds=2)
    params["train"].update(folds=[{"fold": 0, "seed": 0}, {"fold": 1, "seed": 1}], epochs=1, model="test_resnet",
                           batch_size=64)
    params["export"].update(parity_rows=64, speed_seconds=0.05, speed_batch=64)  # tiny models: timing needs no more
    params["report"].update(embedding="pca")  # t-SNE costs ~3 s a report; tests/unit/test_learned.py runs it
    for name, values in sections.items():
        params[name].update(values)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def with_train(folder: Path, **changes) -> Path:
    """folder/params.yaml: the shipped params with `changes` to the train section."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(changes)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
