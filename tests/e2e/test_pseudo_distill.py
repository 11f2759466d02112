"""Pseudo-labels and distillation through the real DVC pipeline on the real slice: the rounds and
the student are stages `dvc status` tracks, the student's graphs compete in export's choice, and
predict and the server run the student's graph (the honesty itself: tests/e2e/test_honesty.py).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers.cli import run_cli
from helpers.data import write_zip
from helpers.project import dvc, make_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory, real_slice):
    base = tmp_path_factory.mktemp("pseudo")
    project = make_project(base / "project", write_zip(base / "slice.zip", real_slice),
                           distill={"enabled": True, "model": "test_resnet", "epochs": 1},
                           export={"predict_tolerance": 0.5})  # tiny models: let the fastest graph win
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["pseudo_labels"].update(rounds=1, threshold=0.0)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(project, "repro", "predict")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project, result


def test_each_fold_gains_a_pseudo_label_round_from_its_own_round_zero(project) -> None:
    project, result = project
    for k in (0, 1):
        assert f"Running stage 'pseudo@{k}'" in result.stdout
        rounds = json.loads((project / f"models/pseudo/fold{k}/rounds.json").read_text())
        assert rounds["rounds"] == 1 and [h["round"] for h in rounds["history"]] == [0, 1]
        assert rounds["history"][1]["pseudo_labelled"] == 120  # every test image of the slice (threshold 0)
    spec = json.loads((project / "models/ensemble.json").read_text())
    assert spec["fold_dirs"] == ["models/pseudo/fold0", "models/pseudo/fold1"]  # the ensemble of the last round
    metrics = json.loads((project / "metrics.json").read_text())
    assert metrics["pseudo_labels"]["rounds"] == 1 and "round0_oof_score_no_tta" in metrics["pseudo_labels"]


def test_the_student_is_scored_out_of_fold_and_exported_with_the_ensembles_contract(project) -> None:
    project, _ = project
    student = json.loads((project / "models/student/student.json").read_text())
    assert student["enabled"] and student["oof"]["rows"] == 400 and set(student["folds"]) == {"0", "1"}
    assert student["graphs"]["student"]["parity"]["passed"]
    export = json.loads((project / "models/export.json").read_text())
    assert {"student", "student_int8"} <= set(export["speed"]["images_per_second"])
    assert export["student"]["oof_score"] == student["oof"]["oof_score"]
    out = project / "student_preds.csv"
    probs = project / "student_probs.csv"
    res = run_cli("predict", "--model", "models/student/student.onnx", "--input", "data/prepared/test_images.npy",
                  "--ids", "data/prepared/test_ids.csv", "--output", str(out), "--probs", str(probs), cwd=project)
    assert res.returncode == 0, res.stderr
    sub = pd.read_csv(project / "submissions/submission.csv", dtype=str)
    assert pd.read_csv(out, dtype=str)["id"].tolist() == sub["id"].tolist()
    p = pd.read_csv(probs).iloc[:, 1:].to_numpy()
    assert np.allclose(p.sum(1), 1.0, atol=1e-4)


def test_dvc_status_knows_what_each_round_and_the_student_depend_on(project) -> None:
    project, _ = project
    status = dvc(project, "status", "--with-deps", "predict").stdout
    assert status.strip().endswith("Data and pipelines are up to date."), status
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["pseudo_labels"]["weight"] = 0.5
    params["distill"]["temperature"] = 3.0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = dvc(project, "status", "--with-deps", "predict").stdout
    assert "pseudo@0:" in stale and "pseudo@1:" in stale and "distill:" in stale
    assert "train@0:" not in stale and "train@1:" not in stale  # round 0 does not depend on the rounds' params
