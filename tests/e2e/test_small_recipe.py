"""A small competition (240 RGB photos of four classes): the recipe `foldwise init` writes scores
well above chance out of fold, where the Fashion-MNIST recipe (6 epochs of batch 128: 6 updates)
stays near it; both trained by the train@k code on the same prepared data and folds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.cli import ROOT, run_cli
from helpers.competitions import build
from helpers.project import dvc, make_project
from pipeline.core import paths
from pipeline.core.config import build as build_params
from pipeline.training.fold import run_fold
from pipeline.training.params import TrainParams

pytestmark = pytest.mark.e2e
FOLDS = [{"fold": 0, "seed": 0}, {"fold": 1, "seed": 1}]


def _oof_accuracy(train: dict, prepared: Path, out: Path) -> float:
    """Both folds trained in-process on `prepared`; accuracy over every OOF row."""
    params = build_params(TrainParams, {**train, "folds": FOLDS}, "train")
    labels = np.load(paths.Prepared(prepared).train_labels)
    right = rows = 0
    for spec in FOLDS:
        run_fold(params, spec["fold"], spec["seed"], prepared=prepared, folds=out / "folds",
                 checkpoints=out / "checkpoints", curves=out / "curves")
        files = paths.FoldFiles(paths.fold_dir(spec["fold"], out / "folds"))
        idx = np.load(files.oof_rows)
        right += int((np.load(files.oof_probs).argmax(1) == labels[idx]).sum())
        rows += len(idx)
    return right / rows


def test_the_init_recipe_learns_a_small_competition_where_the_default_recipe_stays_near_chance(
        tmp_path: Path, one_torch_thread) -> None:
    zip_path, _ = build("cifar", tmp_path / "zips", n_train=240, n_test=20, classes=[0, 1, 5, 8])
    project = make_project(tmp_path / "project", zip_path, prepare={"n_folds": 2})
    init = run_cli("init", "data/slice.zip", cwd=project)
    assert init.returncode == 0, init.stderr
    assert dvc(project, "repro", "prepare").returncode == 0
    prepared = project / "data/prepared"
    assert json.loads((prepared / "meta.json").read_text())["n_folds"] == 2
    recipe = yaml.safe_load((project / "params.yaml").read_text())["train"]
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]   # Fashion-MNIST's recipe
    fitted, default = _oof_accuracy(recipe, prepared, tmp_path / "recipe"), _oof_accuracy(shipped, prepared,
                                                                                        tmp_path / "shipped")
    print(f"small competition (4 classes, chance 0.25): OOF accuracy init recipe {fitted:.4f}, "
          f"Fashion-MNIST recipe {default:.4f}")
    assert fitted > 0.6 and default < 0.45 and fitted > default + 0.25
