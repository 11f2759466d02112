"""Training engine: kill-and-resume equals an uninterrupted run (fp32 and bf16); stale checkpoints are not resumed.
(What a params change re-runs is checked on test_repro's project.)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers.cli import BIN
from helpers.data import write_zip
from helpers.project import dvc, make_project

TINY = {"epochs": 6, "batch_size": 32, "model": "foldwise_cnn", "model_kwargs": {"widths": [8, 16, 16]},
        "deterministic": True, "ema": True, "ema_decay": 0.9, "mixup_alpha": 0.2, "num_workers": 0,
        "folds": [{"fold": 0, "seed": 3}, {"fold": 1, "seed": 1}]}


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory, real_slice):
    """A project copy that has run download+prepare on the slice, with tiny train params."""
    base = tmp_path_factory.mktemp("resume")
    project = make_project(base / "project", write_zip(base / "slice.zip", real_slice), train=TINY)
    result = dvc(project, "repro", "prepare")
    assert result.returncode == 0, result.stderr[-2000:]
    return project


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _kill_after_first_checkpoint(cmd: list[str], cwd: Path, ckpt: Path, env: dict) -> None:
    """Start `cmd` in its own process group and SIGKILL the whole group once `ckpt` exists (after an epoch)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_then_repro_resumes_and_equals_an_uninterrupted_run(prepared_project: Path) -> None:
    project = prepared_project
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ckpt = project / "models/checkpoints/fold0/last.pt"
    # 1. interrupted: start the stage, SIGKILL it (dvc and the training process) after its first epoch
    _kill_after_first_checkpoint([str(BIN / "dvc"), "repro", "train@0"], project, ckpt, env)
    assert ckpt.exists(), "no checkpoint was written before the kill"
    killed_at = _load(ckpt)["epoch"]
    assert 1 <= killed_at < TINY["epochs"], f"killed after epoch {killed_at}: not mid-fold"
    assert not (project / "models/folds/fold0/model.pt").exists()
    # 2. dvc repro again: resumes from the checkpoint and finishes
    resumed = dvc(project, "repro", "train@0")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resuming from {ckpt.relative_to(project)} after epoch" in resumed.stderr + resumed.stdout
    resumed_model = _load(project / "models/folds/fold0/model.pt")
    resumed_oof = np.load(project / "models/folds/fold0/oof_probs.npy")
    resumed_curves = (project / "models/curves/fold0.csv").read_text()
    # 3. uninterrupted run of the same fold and seed, from scratch
    ckpt.unlink()
    fresh = subprocess.run([str(BIN / "foldwise"), "train", "--fold", "0"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "resuming" not in fresh.stderr
    fresh_model = _load(project / "models/folds/fold0/model.pt")
    assert fresh_model["epoch"] == resumed_model["epoch"]
    assert fresh_model["state_dict"].keys() == resumed_model["state_dict"].keys()
    for key, value in fresh_model["state_dict"].items():
        assert torch.equal(value, resumed_model["state_dict"][key]), key
    assert np.array_equal(np.load(project / "models/folds/fold0/oof_probs.npy"), resumed_oof)
    strip = lambda text: [ln.split(",")[:6] for ln in text.splitlines()]  # noqa: E731  (drop timings)
    assert strip((project / "models/curves/fold0.csv").read_text()) == strip(resumed_curves)


def test_a_checkpoint_of_other_params_is_not_resumed(prepared_project: Path, tmp_path: Path) -> None:
    from pipeline.core.config import build
    from pipeline.training.fold import run_fold as run
    from pipeline.training.params import TrainParams

    os.chdir(prepared_project)
    params = build(TrainParams, {**TINY, "epochs": 1}, "train")
    run(params, fold=1, seed=1, folds=tmp_path / "m", checkpoints=tmp_path / "c", curves=tmp_path / "v")
    first = _load(tmp_path / "c/fold1/last.pt")
    run(build(TrainParams, {**TINY, "epochs": 1, "lr": 0.001}, "train"), fold=1, seed=1,
        folds=tmp_path / "m", checkpoints=tmp_path / "c", curves=tmp_path / "v")
    second = _load(tmp_path / "c/fold1/last.pt")
    assert first["signature"] != second["signature"] and second["epoch"] == 1


def test_bf16_kill_and_resume_is_bit_identical(prepared_project: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    """bf16 autocast (forced: on a CPU without native bf16 it is emulated), deterministic, the airbench-style
    net: a `foldwise train` process SIGKILLed after an epoch, resumed, ends with the weights of an
    uninterrupted run."""
    from pipeline.core.config import build
    from pipeline.training.fold import run_fold as run
    from pipeline.training.params import TrainParams

    train = {**TINY, "epochs": 5, "amp": "bf16", "model": "foldwise_air",
             "model_kwargs": {"stem": 4, "widths": [8, 8, 8]}}
    project = tmp_path / "bf16"
    (project / "data").mkdir(parents=True)
    (project / "data/prepared").symlink_to(prepared_project / "data/prepared")
    (project / "params.yaml").write_text(yaml.safe_dump({"train": train}, sort_keys=False))
    ckpt = project / "models/checkpoints/fold0/last.pt"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    _kill_after_first_checkpoint([str(BIN / "foldwise"), "train", "--fold", "0"], project, ckpt, env)
    killed_at = _load(ckpt)["epoch"]
    assert 1 <= killed_at < train["epochs"], f"killed after epoch {killed_at}: not mid-fold"

    monkeypatch.chdir(project)
    params = build(TrainParams, train, "train")
    caplog.set_level("INFO", logger="pipeline.training.fold")
    run(params, fold=0, seed=3)  # resumes from the killed process's checkpoint
    assert f"resuming from models/checkpoints/fold0/last.pt after epoch {killed_at}" in caplog.text
    run(params, fold=0, seed=3, folds=tmp_path / "m", checkpoints=tmp_path / "c", curves=tmp_path / "v")
    resumed, fresh = _load(project / "models/folds/fold0/model.pt"), _load(tmp_path / "m/fold0/model.pt")
    assert fresh["epoch"] == resumed["epoch"]
    for key, value in fresh["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert np.array_equal(np.load(project / "models/folds/fold0/oof_probs.npy"),
                          np.load(tmp_path / "m/fold0/oof_probs.npy"))
    config = json.loads((project / "models/folds/fold0/config.json").read_text())
    assert config["precision"].startswith("bf16 autocast (train.amp: bf16") and config["cpu"]
