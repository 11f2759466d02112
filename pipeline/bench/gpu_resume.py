"""Kill-and-resume for `foldwise bench gpu`: a fold trained in a subprocess, SIGKILLed after its first
epoch's checkpoint, resumed, against an uninterrupted run of the same epochs (deterministic mode).

    result = kill_and_resume(params, Path("bench/gpu-work/resume"), steps_per_epoch=10)
    python -m pipeline.bench.gpu_resume RUN_DIR      # the worker: run_fold with RUN_DIR/params.json

Both runs go through `run_fold`, the train stage's own code, so the checkpoint, its signature and
the resume are the pipeline's. On the CPU the weights must be identical; on CUDA,
torch.use_deterministic_algorithms makes them so on one device, and 1e-5 is allowed (stated in
the result) for kernels whose order of atomic adds the driver may still vary.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.bench.gpu_data import write_prepared
from pipeline.core import paths
from pipeline.training.params import TrainParams
from serve.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _worker(run_dir: Path) -> subprocess.Popen:
    """The worker in its own session (killed as a group), its output appended to RUN_DIR/worker.log."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    with open(run_dir / "worker.log", "a") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "pipeline.bench.gpu_resume", str(run_dir)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, run_dir: Path, timeout: float = 600) -> None:
    code = proc.wait(timeout=timeout)
    if code != 0:
        tail = (run_dir / "worker.log").read_text().splitlines()[-5:]
        raise UserError(f"bench gpu: the training worker in {run_dir} failed (exit {code}): {' | '.join(tail)}")


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(paths.FoldFiles(paths.fold_dir(0, run_dir / "folds")).model, map_location="cpu",
                      weights_only=True)["state_dict"]


def kill_and_resume(params: TrainParams, work: Path, steps_per_epoch: int) -> dict:
    prepared = write_prepared(work / "prepared", steps_per_epoch * params.batch_size, seed=1)
    runs = {}
    for name in ("straight", "killed"):
        run_dir = work / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "params.json").write_text(json.dumps({"prepared": str(prepared),
                                                         "params": dataclasses.asdict(params)}))
        runs[name] = run_dir
    straight = _worker(runs["straight"])   # both runs at once: they share nothing but the device
    killed = _worker(runs["killed"])
    ckpt = paths.checkpoint(0, runs["killed"] / "checkpoints")
    deadline = time.monotonic() + 600
    while not ckpt.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    finished_early = paths.FoldFiles(paths.fold_dir(0, runs["killed"] / "folds")).model.exists()
    _finish(straight, runs["straight"])
    _finish(_worker(runs["killed"]), runs["killed"])
    resumed = "resuming from" in (runs["killed"] / "worker.log").read_text()
    a, b = _weights(runs["straight"]), _weights(runs["killed"])
    diff = max((float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel()), default=0.0)
    tolerance = 1e-5 if params.device == "cuda" else 0.0
    return {"epochs": params.epochs, "steps_per_epoch": steps_per_epoch, "killed_after_epoch": 1,
            "finished_before_kill": finished_early, "resumed": resumed, "deterministic": True,
            "identical": all(torch.equal(a[k], b[k]) for k in a), "max_abs_diff": diff, "tolerance": tolerance,
            "passed": resumed and not finished_early and diff <= tolerance}


def _run_worker(run_dir: Path) -> None:
    from pipeline.core.config import build
    from pipeline.core.console import configure
    from pipeline.training.fold import run_fold

    configure()
    spec = json.loads((run_dir / "params.json").read_text())
    params = build(TrainParams, spec["params"], "train")
    run_fold(params, 0, 0, Path(spec["prepared"]), folds=run_dir / "folds", checkpoints=run_dir / "checkpoints",
             curves=run_dir / "curves")


if __name__ == "__main__":
    _run_worker(Path(sys.argv[1]))
