"""`foldwise bench parallel`: every fold with `foldwise train --parallel` (N single-thread Ray
workers) vs the sequential `dvc repro train@0 ...` (one process, N threads), side by side in one run.

    foldwise bench parallel --epochs 1          # 5 folds, 1 epoch each (the default has 4 epochs)
    foldwise bench parallel --epochs 1 --rounds 2   # two rounds, alternating which side goes first
    foldwise bench parallel --epochs 1 --train-rows 12000   # the first 12,000 training images only

Two copies of the project are made under bench/parallel-folds/ (same code, params and data;
prepare runs once, untimed); only `train.epochs` is overridden. Each side's wall time includes all
it needs: DVC, process start-up, for the parallel side starting Ray and `dvc commit`. Prints both
times, their ratio, per-fold validation accuracy on both sides, the CPU and the load average, and
writes bench/parallel.json.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from pipeline.bench.project_copy import copy_project, fold_metrics, run_timed
from pipeline.core import paths
from pipeline.core.config import read_params
from pipeline.core.provenance import machine
from pipeline.distributed import dvcstate
from serve.errors import UserError

_logger = logging.getLogger(__name__)
FOLD_DONE = r"fold \d+: best epoch"  # the lines of the timed runs shown as they come (one per fold)


def _fold_accuracy(project: Path) -> dict[str, float]:
    return {name: m["val_accuracy"] for name, m in fold_metrics(project).items()}


def _reset_folds(project: Path) -> None:
    """Back to 'every fold stale': no fold outputs, no checkpoints to resume, no run-cache to restore
    from (the sequential side also runs `dvc repro --force`, which never restores)."""
    for rel in ("models", ".dvc/cache/runs"):
        shutil.rmtree(project / rel, ignore_errors=True)


def bench_parallel(epochs: int | None = 1, workers: int = 2, rounds: int = 1, train_rows: int | None = None,
                   root: Path = Path("."), workdir: Path = paths.BENCH / "parallel-folds", keep: bool = False) -> dict:
    """Time both sides `rounds` times (alternating which goes first); returns the measurements."""
    if workers < 1 or rounds < 1:
        raise UserError(f"--workers and --rounds must be at least 1, got {workers}, {rounds}")
    shutil.rmtree(workdir, ignore_errors=True)
    seq, par = workdir / "sequential", workdir / "parallel"
    copy_project(root, seq, epochs, train_rows)
    stages = dvcstate.fold_stages(seq)
    _logger.info("bench: preparing the data once (untimed)")
    dvcstate.reproduce_upstream(seq, stages)
    shutil.copytree(seq, par, symlinks=True)
    names = [s.name for s in stages]
    runs = []
    for r in range(rounds):
        order = [("sequential", seq), ("parallel", par)]
        if r % 2:
            order.reverse()
        times = {}
        for side, project in order:
            _reset_folds(project)
            load = os.getloadavg()[0]
            _logger.info("bench round %d: %s side (%d folds)", r + 1, side, len(names))
            if side == "sequential":  # DVC's own loop: one fold after another, `workers` threads each
                times[side] = run_timed([dvcstate.dvc_bin(), "repro", "--force", "--single-item", *names], project,
                                        threads=workers, show=FOLD_DONE)
            else:  # one Ray task per fold, `workers` of them at a time, one thread each
                times[side] = run_timed([str(Path(sys.executable).parent / "foldwise"), "train", "--parallel",
                                         "--cpus-per-fold", "1"], project, threads=1, show=FOLD_DONE)
            times[f"{side}_load_before"] = round(load, 2)
        runs.append({"round": r + 1, "first": order[0][0], **{k: round(v, 1) for k, v in times.items()},
                     "ratio": round(times["sequential"] / times["parallel"], 3)})
        _logger.info("bench round %d: sequential %.0f s, parallel %.0f s, ratio %.2f", r + 1, times["sequential"],
                     times["parallel"], runs[-1]["ratio"])
    result = {"cpu": machine(), "folds": len(names), "epochs": read_params(seq / "params.yaml")["train"]["epochs"],
              "workers": workers,
              "train_rows": len(np.load(paths.Prepared(seq / paths.PREPARED).train_labels, mmap_mode="r")),
              "runs": runs, "accuracy_sequential": _fold_accuracy(seq), "accuracy_parallel": _fold_accuracy(par),
              "load_after": [round(x, 2) for x in os.getloadavg()]}
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result
