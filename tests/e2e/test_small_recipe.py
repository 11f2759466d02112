"""A small competition (240 RGB photos of four classes): the recipe `foldwise init` writes scores
well above chance out of fold, where the Fashion-MNIST recipe (6 epochs of batch 128: 6 updates)
stays near it; both trained by `dvc repro` on the same prepared data and folds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers.cli import ROOT, run_cli
from helpers.competitions import build
from helpers.project import dvc, make_project

pytestmark = pytest.mark.e2e


def _oof(project: Path) -> float:
    r = dvc(project, "repro", "ensemble", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return json.loads((project / "metrics.json").read_text())["oof_accuracy"]


def test_the_init_recipe_learns_a_small_competition_where_the_default_recipe_stays_near_chance(tmp_path: Path):
    zip_path, _ = build("cifar", tmp_path / "zips", n_train=240, n_test=20, classes=[0, 1, 5, 8])
    project = make_project(tmp_path / "project", zip_path, prepare={"n_folds": 2})
    assert run_cli("init", "data/slice.zip", cwd=project).returncode == 0
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["folds"] = [{"fold": k, "seed": k} for k in range(2)]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    recipe = _oof(project)
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    params["train"] = {**shipped, "folds": params["train"]["folds"]}           # Fashion-MNIST's recipe
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    default = _oof(project)
    print(f"small competition (4 classes, chance 0.25): OOF accuracy init recipe {recipe:.4f}, "
          f"Fashion-MNIST recipe {default:.4f}")
    assert recipe > 0.6 and default < 0.45 and recipe > default + 0.25
