"""On digit-like glyphs where a flip changes the class (tests/helpers/glyphs.py), `foldwise init`
writes a recipe without flips, and `foldwise tune` with flips in its space finds on fold 0 that
they hurt; the confirmation on fold 1 (no trial saw it) shows it against params that flip."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from helpers.cli import run_cli
from helpers.glyphs import build_glyphs
from helpers.project import make_project

pytestmark = pytest.mark.e2e
HFLIP = {"transform": {"__class_fullname__": "Compose", "p": 1.0,
                       "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5}]}}
TINY = {"model": "foldwise_cnn", "model_kwargs": {"widths": [8, 16, 32]}, "steps": 200, "batch_size": 32}


def test_tune_finds_that_flips_hurt_on_glyphs_and_the_confirmation_shows_it(tmp_path: Path) -> None:
    zip_path, _ = build_glyphs(tmp_path / "zips", n_train=560, n_test=28)
    project = make_project(tmp_path / "project", zip_path)
    init = run_cli("init", "data/slice.zip", cwd=project)
    assert init.returncode == 0, init.stderr
    params = yaml.safe_load((project / "params.yaml").read_text())
    recipe_augment = json.dumps(params["train"]["augment"])
    assert "HorizontalFlip" not in recipe_augment and "Affine" in recipe_augment   # glyphs: shifts, no flip
    # the current params flip (Fashion-MNIST's recipe); the space offers flips and none, on a tiny model
    params["train"].update(TINY, augment=HFLIP)
    params["tune"].update(space={"train.augment": {"categorical": {"hflip": HFLIP, "none": {}}}}, sampler="grid",
                          n_trials=2, pruner="none", folds=[0], confirm_folds=[1])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = run_cli("tune", cwd=project, env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="foldwise", storage=f"sqlite:///{project / 'tune/study.db'}")
    by_choice = {t.params["train.augment"]: t.value for t in study.trials}
    assert by_choice["none"] > by_choice["hflip"] + 0.03, by_choice               # the search: flips hurt on fold 0
    c = json.loads((project / "tune/report/summary.json").read_text())["confirmation"]
    assert c["winner"] == "tuned" and c["folds"] == [1]                           # ... and on fold 1, unseen
    assert c["tuned"]["oof"]["accuracy"] > c["current"]["oof"]["accuracy"] + 0.03, c
    assert yaml.safe_load((project / "presets/tuned.yaml").read_text())["train"]["augment"] == {}
    print(f"glyphs: fold 0 none {by_choice['none']:.4f} vs hflip {by_choice['hflip']:.4f}; confirmation fold 1 "
          f"none {c['tuned']['oof']['accuracy']:.4f} vs hflip {c['current']['oof']['accuracy']:.4f}")
