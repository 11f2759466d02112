#!/usr/bin/env python
"""Calibration on a log-loss competition: the figures of docs/results.md, "Calibration".

    .venv/bin/python docs/results/logloss_calibration.py [WORKDIR]     # from the project root; ~10 min on 2 cores

The breeds shape of tests/helpers/competitions.py (1,500 RGB photos of 40-48 px, 10 classes,
one probability column per class, scored by log loss): `foldwise init`, then `dvc repro ensemble`
twice, with init's recipe (label smoothing 0) and with smoothing 0.1 (Fashion-MNIST's); prints the
OOF log loss without and with the cross-fitted temperature, and whether the ensemble kept it.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from helpers.cli import run_cli
from helpers.competitions import build
from helpers.project import dvc, make_project

base = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/logloss")
shutil.rmtree(base, ignore_errors=True)
zip_path, _ = build("breeds", base / "zips", n_train=1500, n_test=100)
out = {}
for name, smoothing in (("recipe_smoothing_0", None), ("smoothing_0.1", 0.1)):
    proj = make_project(base / name, zip_path, prepare={"n_folds": 5})
    assert run_cli("init", "data/slice.zip", cwd=proj).returncode == 0
    params = yaml.safe_load((proj / "params.yaml").read_text())
    if smoothing is not None:
        params["train"]["label_smoothing"] = smoothing
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    r = dvc(proj, "repro", "ensemble")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((proj / "metrics.json").read_text())
    out[name] = {"train": {k: params["train"][k] for k in ("steps", "batch_size", "label_smoothing")},
                 "calibration": m["calibration"], "oof_score": m["oof_score"], "oof_accuracy": m["oof_accuracy"]}
    print(name, json.dumps(out[name]), flush=True)
(base / "result.json").write_text(json.dumps(out, indent=1))
