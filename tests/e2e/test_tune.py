"""`foldwise tune` on a tiny model and the real slice: a study killed with SIGKILL mid-trial and
run again continues (its trials and best value carried over, the killed trial failed and retried),
two processes share the study, the pruner stops trials, and the confirmation writes a preset that
`foldwise preset` accepts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from helpers.cli import BIN, run_cli
from helpers.data import write_zip
from helpers.project import dvc, make_project

pytestmark = pytest.mark.e2e
TRAIN = {"model": "foldwise_cnn", "model_kwargs": {"widths": [8, 16, 16]}, "batch_size": 32, "epochs": 4,
         "num_workers": 0}
HFLIP = {"transform": {"__class_fullname__": "Compose", "p": 1.0,
                       "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5}]}}
TUNE = {"space": {"train.lr": {"log_float": [1.0e-5, 0.03]},
                  "train.augment": {"categorical": {"hflip": HFLIP, "none": {}}}},
        "n_trials": 6, "pruner": "median", "folds": [0]}


@pytest.fixture(scope="module")
def project(tmp_path_factory, real_slice) -> Path:
    base = tmp_path_factory.mktemp("tune")
    proj = make_project(base / "project", write_zip(base / "slice.zip", real_slice), train=TRAIN, tune=TUNE)
    assert dvc(proj, "repro", "prepare").returncode == 0
    return proj


GRACE = 10  # seconds without a heartbeat before a trial counts as killed (FOLDWISE_TUNE_GRACE; default 20)


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "FOLDWISE_TUNE_GRACE": str(GRACE)}


def _study(project: Path) -> optuna.Study:
    return optuna.load_study(study_name="foldwise", storage=f"sqlite:///{project / 'tune/study.db'}")


def _kill_mid_trial(project: Path) -> None:
    """SIGKILL `foldwise tune` once three trials are finished (the pruner's start-up) and a fourth has
    checkpointed an epoch."""
    proc = subprocess.Popen([str(BIN / "foldwise"), "tune", "--no-confirm"], cwd=project, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        started = list((project / "tune/trials/foldwise").glob("*"))
        if len(started) >= 4 and list((project / "tune/checkpoints").glob("*/fold0/last.pt")):
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_study_continues_two_processes_share_it_and_the_preset_validates(project: Path) -> None:
    _kill_mid_trial(project)
    before = _study(project)
    done = [t for t in before.trials if t.state == optuna.trial.TrialState.COMPLETE]
    running = [t for t in before.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len(done) >= 3 and len(running) == 1, [t.state for t in before.trials]
    best_before, killed = before.best_value, running[0]
    # a trial that cannot learn (lr 1e-7), asked for next: the median pruner must stop it
    before.enqueue_trial({"train.lr": 1.0e-7, "train.augment": "none"})
    time.sleep(GRACE + 1)  # the killed trial's heartbeat is stale now: the next run fails and retries it
    second = subprocess.Popen([str(BIN / "foldwise"), "tune", "--no-confirm"], cwd=project, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run_cli("tune", cwd=project, env={"OMP_NUM_THREADS": "1", "FOLDWISE_TUNE_GRACE": str(GRACE)},
                    timeout=600)
    out, err = second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr[-2000:], err[-2000:])
    after = _study(project)
    states = {t.number: t.state for t in after.trials}
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = [t for t in after.trials if t.state in ended]
    assert {t.number for t in done} <= {t.number for t in finished}           # carried over
    assert len(finished) >= TUNE["n_trials"] and after.best_value >= best_before
    assert states[killed.number] == optuna.trial.TrialState.FAIL
    retried = [t for t in after.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retried and retried[0].params == killed.params
    resumed = retried[0]  # it resumed the killed fold from its checkpoint: fewer epochs reported than trained
    assert resumed.state != optuna.trial.TrialState.COMPLETE or \
        len(resumed.intermediate_values) < TRAIN["epochs"]
    pruned = [t for t in finished if t.state == optuna.trial.TrialState.PRUNED]
    assert any(t.params["train.lr"] == 1.0e-7 for t in pruned), "the median pruner did not stop the lr 1e-7 trial"
    summary = json.loads((project / "tune/report/summary.json").read_text())
    assert 1 <= summary["search"]["pruned"] <= len(pruned)
    assert f"({summary['search']['pruned']} pruned" in first.stdout, first.stdout
    c = summary["confirmation"]
    assert c["folds"] == [1] and c["winner"] in ("tuned", "current")
    assert {"tuned", "current"} <= set(c) and c["tuned"]["rows"] == c["current"]["rows"] > 0
    assert f"-> {c['winner']} params win" in first.stdout
    preset = project / "presets/tuned.yaml"
    tuned = yaml.safe_load(preset.read_text())["train"]
    assert set(tuned) == {"lr", "augment"}
    # the preset is the best trial this process saw (the second one may finish a better one after it)
    assert tuned["lr"] == summary["search"]["best_params"]["train.lr"]
    seen = after.trials[summary["search"]["best_trial"]]
    assert seen.state == optuna.trial.TrialState.COMPLETE and seen.value == summary["search"]["best_value"]
    applied = run_cli("preset", "presets/tuned.yaml", cwd=project)
    assert applied.returncode == 0, applied.stderr
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["lr"] == tuned["lr"]
    for name in summary["figures"].values():
        assert (project / "tune/report" / name).stat().st_size > 5000


@pytest.mark.parametrize("args, params, words", [
    ([], {"space": {"train.lrr": {"float": [0.1, 0.2]}}}, ["params.yaml: tune.space.train.lrr: not a train key"]),
    ([], {"space": {"train.sched": {"categorical": ["cosine", "warp"]}}}, ["tune.space.train.sched", "'warp'"]),
    (["--n-trials", "0"], {}, ["tune.n_trials: must be at least 1"]),
    (["--timeout", "0s"], {}, ["tune.timeout: must be a positive duration"]),
    ([], {"folds": [7]}, ["tune.folds: fold 7 is not in train.folds"]),
])
def test_bad_tune_input_is_one_line_naming_the_key(tmp_path: Path, args: list[str], params: dict,
                                                    words: list[str]) -> None:
    from helpers.cli import ROOT, assert_one_line_error

    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["tune"].update(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    before = (tmp_path / "params.yaml").read_bytes()
    r = run_cli("tune", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert_one_line_error(r, *words)
    assert (tmp_path / "params.yaml").read_bytes() == before and not (tmp_path / "tune").exists()
