"""`foldwise ladder` (pipeline/tools/ladder.py): what each rung sets, the interval beside its score, and
bad options refused in one line before any experiment runs (the runs themselves: tests/e2e/test_experiments.py)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import ROOT
from pipeline.evaluation.confidence import score_interval, wilson
from pipeline.evaluation.metrics import METRICS
from pipeline.report.ladder import ladder_table, remedy_notes
from pipeline.tools.ladder import RUNGS, overrides, run_ladder
from serve.errors import UserError


@pytest.mark.parametrize("name", RUNGS.names())
def test_every_rung_trains_the_chosen_folds(name: str) -> None:
    train = {"folds": [{"fold": 0, "seed": 0}, {"fold": 1, "seed": 1}], "model": "foldwise_air",
             "weight_decay": 0.05, "drop_rate": 0.1, "patience": None,
             "augment": {"transform": {"__class_fullname__": "Compose", "transforms": []}}}
    sets = overrides(RUNGS[name], train, [1], epochs=3)
    assert sets["folds"] == [{"fold": 1, "seed": 1}] and sets["epochs"] == 3 and sets["steps"] is None
    if name == "default":
        assert set(sets) == {"folds", "epochs", "steps"}                # params.yaml as it is
    else:
        assert sets["model"].startswith("foldwise_") and sets["model"] != "foldwise_air"


def test_remedies_add_up_and_take_params_yaml_values_or_a_fallback() -> None:
    train = {"folds": [{"fold": 0, "seed": 0}], "weight_decay": 0.0, "drop_rate": 0.3, "patience": None,
             "augment": {"transform": {}}}
    cnn = overrides(RUNGS["cnn"], train, [0], None)
    assert cnn["weight_decay"] == 0.0 and cnn["drop_rate"] == 0.0 and cnn["augment"] == {} and "epochs" not in cnn
    stop = overrides(RUNGS["early_stopping"], train, [0], None)
    assert stop["weight_decay"] == 0.05 and stop["drop_rate"] == 0.3 and stop["patience"] == 2
    assert stop["augment"] == {"transform": {}}
    assert "no augmentation" in overrides(RUNGS["augment"], {**train, "augment": {}}, [0], None)


def test_a_rungs_interval_is_wilsons_for_accuracy_and_a_bootstrap_otherwise() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    probs = rng.dirichlet(np.ones(3), 500)
    probs[np.arange(250), labels[:250]] += 2
    probs /= probs.sum(1, keepdims=True)
    acc = float((probs.argmax(1) == labels).mean())
    assert score_interval(METRICS["accuracy"], labels, probs) == wilson(acc, 500)
    lo, hi = score_interval(METRICS["log_loss"], labels, probs)
    point = METRICS["log_loss"].score(labels, probs)
    assert lo < point < hi and hi - lo < 0.3
    assert score_interval(METRICS["log_loss"], labels, probs) == (lo, hi)   # seeded: the same rows, the same interval


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _commit(folder: Path) -> None:
    git = lambda *a: subprocess.run(["git", *a], cwd=folder, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")


def test_a_ladder_needs_a_git_commit_for_its_experiments(project: Path) -> None:
    with pytest.raises(UserError, match="needs a git repository with a commit"):
        run_ladder(["linear"], [0], None)


@pytest.mark.parametrize(("rungs", "folds", "needle"), [
    (["linear", "resnet"], [0], "--rungs: unknown ladder rung 'resnet' (known: linear, mlp, cnn"),
    (["linear"], [0, 7], "--folds: 7 not in params.yaml train.folds"),
])
def test_bad_options_are_refused_before_any_experiment(project: Path, rungs, folds, needle) -> None:
    _commit(project)
    before = (project / "params.yaml").read_bytes()
    with pytest.raises(UserError) as err:
        run_ladder(rungs, folds, None)
    assert needle in str(err.value)
    assert (project / "params.yaml").read_bytes() == before and not (project / "ladder").exists()


def test_each_remedy_is_one_sentence_with_its_interval_verdict() -> None:
    def rung(name, score, lo, hi, gap, seconds):
        return {"name": name, "adds": f"+ {name}", "metric": "accuracy", "score": score, "ci": [lo, hi], "gap": gap,
                "train_seconds": seconds, "params": 10, "flops_per_image": 2e6, "epochs_run": 6, "stopped_early": False}
    summary = {"rungs": [rung("cnn", 0.930, 0.925, 0.935, 0.020, 100), rung("dropout", 0.932, 0.927, 0.937, 0.010, 110),
                         rung("augment", 0.950, 0.946, 0.954, 0.005, 120)]}
    first, second = remedy_notes(summary)
    assert first.startswith("dropout (+ dropout): +0.20 pts accuracy against cnn (the intervals overlap")
    assert "gap +2.00 -> +1.00 pts; 1.1x the training time" in first
    assert "+1.80 pts accuracy against dropout (outside the other interval)" in second
    table = ladder_table(summary)
    assert table["Δ vs previous (pts)"].tolist() == ["", "+0.20", "+1.80"] and table["95% CI"][0] == "0.9250-0.9350"
