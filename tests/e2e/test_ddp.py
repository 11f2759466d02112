"""One fold over two torchrun processes (torch.distributed DDP, gloo on CPU): the validation metric
covers every OOF row exactly once, and a SIGKILL of a rank is resumed after the last epoch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from helpers.cli import BIN, assert_one_line_error, run_cli
from helpers.data import write_zip
from helpers.project import dvc, make_project

pytestmark = pytest.mark.e2e
EPOCHS = 8
TRAIN = {"model": "foldwise_cnn", "model_kwargs": {"widths": [8, 16, 16]}, "epochs": EPOCHS, "batch_size": 32,
         "deterministic": True, "ema": True, "ema_decay": 0.9}


def torchrun(project: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "torchrun"), "--nproc-per-node", "2", "--no-python", "foldwise", "train",
                             "--fold", "0"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def test_ddp_fold_gathers_every_oof_row_once_and_resumes_after_a_rank_is_killed(tmp_path: Path, real_slice) -> None:
    project = make_project(tmp_path / "project", write_zip(tmp_path / "slice.zip", real_slice), train=TRAIN)
    assert dvc(project, "repro", "prepare").returncode == 0
    ckpt = project / "models/checkpoints/fold0/last.pt"
    # 1. start the fold on two processes; once epoch 1 is checkpointed, SIGKILL rank 1
    proc = torchrun(project)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    ranks = {p.environ().get("RANK"): p for p in psutil.Process(proc.pid).children(recursive=True)
             if p.is_running() and "RANK" in p.environ()}
    assert "1" in ranks, "no rank 1 process found"
    os.kill(ranks["1"].pid, signal.SIGKILL)
    killed_output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, killed_output  # torchrun stops the job when a rank dies
    killed_at = torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= killed_at < EPOCHS and not (project / "models/folds/fold0/model.pt").exists(), killed_output[-2000:]
    # 2. the same command again: rank 0 reads the checkpoint, every rank resumes, the fold finishes
    proc = torchrun(project)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert f"resuming from {ckpt.relative_to(project)} after epoch {killed_at}" in output, output[-3000:]
    assert "DDP over 2 processes (gloo" in output
    curves = pd.read_csv(project / "models/curves/fold0.csv")
    assert curves["epoch"].tolist() == list(range(1, EPOCHS + 1))
    # 3. the OOF predictions: every row of fold 0 exactly once, and the metric is computed on all of them
    fold = project / "models/folds/fold0"
    rows, probs = np.load(fold / "oof_rows.npy"), np.load(fold / "oof_probs.npy")
    folds = pd.read_csv(project / "data/prepared/folds.csv")["fold"].to_numpy()
    assert np.array_equal(rows, np.flatnonzero(folds == 0)) and len(probs) == len(rows)
    assert f"{len(rows)} rows, each exactly once" in output
    labels = np.load(project / "data/prepared/train_labels.npy")[rows]
    metrics = json.loads((fold / "metrics.json").read_text())
    best = curves.loc[curves["epoch"] == metrics["best_epoch"], "val_accuracy"].item()
    assert metrics["val_accuracy"] == round(float((probs.argmax(1) == labels).mean()), 6) == round(best, 6)
    assert metrics["val_accuracy"] > 0.2  # learned something (chance: 0.1)
    # 4. SyncBatchNorm is a CUDA feature of torch: on CPU processes, one clear line
    refused = run_cli("train", "--fold", "0", "--sync-bn", cwd=project)
    assert_one_line_error(refused, "--sync-bn applies to DDP runs under torchrun")
