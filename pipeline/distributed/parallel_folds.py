"""Every stale `train@k` at once: one Ray task per fold, then DVC records them as if `dvc repro` had.

    foldwise train --parallel                          # local Ray: the folds share this machine's cores
    foldwise train --parallel --cpus-per-fold 1        # e.g. two 1-thread folds at a time on 2 cores
    foldwise train --parallel --address head:6379      # a Ray cluster (or RAY_ADDRESS); one fold per GPU
                                                       # when the cluster has GPUs (--gpus-per-fold 1)

1. `dvc repro` of what the folds depend on (download, prepare: nothing if up to date), then
   `dvc status` names the stale fold stages; a fold whose deps and params did not change is
   not retrained.
2. data/prepared goes into Ray's object store once; each fold is a task with the resources it
   needs (`num_cpus` = its torch threads, `num_gpus`: Ray pins the process to its GPU through
   CUDA_VISIBLE_DEVICES), spread over the nodes. The worker writes the data into its own
   temporary folder, runs the same `run_fold` (pipeline/training/fold.py) as the train stage, and returns the
   files of the stage's outputs; no filesystem is shared. A checkpoint of an interrupted
   earlier run of the fold (models/checkpoints/fold<k>/last.pt) travels with the task, so the
   fold resumes.
3. The driver writes each fold's files where dvc.yaml says and runs `dvc commit` on the stage:
   dvc.lock (and the run-cache) then hold it as if `dvc repro` had built it, so `dvc status` is
   clean for the folds and the next `dvc repro` goes on with `ensemble`.

Same seeds and the same number of threads give the same weights and OOF predictions as the
sequential `dvc repro` (on CPU in deterministic mode).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import build, load_section
from pipeline.distributed import dvcstate
from pipeline.distributed.cluster import connect, node_id
from pipeline.training.params import TrainParams
from serve.atomic import write_bytes
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def read_tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by path relative to it."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not found (run the prepare stage first)")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def train_fold_task(fold: int, seed: int, params: dict, prepared: dict[str, bytes], checkpoint: bytes | None,
                    threads: int) -> dict:
    """On a Ray worker: train one fold in a private folder; return its output files and metrics."""
    import torch

    from pipeline.training.fold import run_fold  # torch and timm only on the workers

    log = logging.getLogger("pipeline")
    if not log.handlers:  # worker output reaches the driver's console through Ray's log forwarding
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"foldwise-fold{fold}-") as tmp:
        base = Path(tmp)
        write_tree(base / paths.PREPARED, prepared)
        if checkpoint is not None:
            write_tree(base / paths.checkpoint(fold).parent, {paths.checkpoint(fold).name: checkpoint})
        metrics = run_fold(build(TrainParams, params, "train"), fold, seed, prepared=base / paths.PREPARED,
                           folds=base / paths.FOLDS, checkpoints=base / paths.CHECKPOINTS, curves=base / paths.CURVES)
        made = {rel: data for rel, data in ((p.relative_to(base).as_posix(), p) for p in sorted(base.rglob("*"))
                                            if p.is_file())
                if not rel.startswith((paths.PREPARED.as_posix() + "/", paths.CHECKPOINTS.as_posix() + "/"))}
        files = {rel: p.read_bytes() for rel, p in made.items()}
    return {"files": files, "metrics": metrics, "node": node_id(), "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - t0}


def _owner(rel: str, outs: tuple[str, ...]) -> str | None:
    for out in outs:
        if rel == out or rel.startswith(out.rstrip("/") + "/"):
            return out
    return None


def install_outputs(root: Path, stage: dvcstate.FoldStage, files: dict[str, bytes]) -> None:
    """Put a fold's files where dvc.yaml says: each output replaced whole (no stale file survives)."""
    by_out: dict[str, dict[str, bytes]] = {out: {} for out in stage.outs}
    for rel, data in files.items():
        out = _owner(rel, stage.outs)
        if out is None:
            raise RuntimeError(f"{stage.name}: the worker wrote {rel}, which is none of the stage's outs {stage.outs}")
        by_out[out][rel] = data
    for out, produced in by_out.items():
        if not produced:
            raise RuntimeError(f"{stage.name}: the worker produced nothing for out {out}")
        target = root / out
        if list(produced) == [out]:  # a file output
            write_bytes(target, produced[out])
            continue
        staging = target.with_name(f".{target.name}.parallel.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        write_tree(staging, {rel[len(out):].lstrip("/"): data for rel, data in produced.items()})
        old = target.with_name(f".{target.name}.parallel.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def _task_error(exc: BaseException) -> BaseException:
    """The exception a Ray task raised (RayTaskError wraps it)."""
    return getattr(exc, "cause", None) or exc


def plan(root: Path) -> tuple[list[dvcstate.FoldStage], list[dvcstate.FoldStage]]:
    """(stale, up-to-date) fold stages, once what they depend on is reproduced."""
    stages = dvcstate.fold_stages(root)
    dvcstate.reproduce_upstream(root, stages)
    stale = dvcstate.stale_stages(root, stages)
    fresh = [s for s in stages if s not in stale]
    _logger.info("stale: %s; up to date: %s", ", ".join(s.name for s in stale) or "none",
                 ", ".join(s.name for s in fresh) or "none")
    return stale, fresh


def train_parallel(root: Path = Path("."), address: str | None = None, cpus_per_fold: float | None = None,
                   gpus_per_fold: float | None = None) -> list[dict]:
    """Train the stale fold stages of the project at `root` on Ray; returns one summary per fold trained."""
    params = load_section("train", TrainParams, root / "params.yaml")
    stale, _ = plan(root)
    if not stale:
        return []
    ray = connect(address)
    resources = ray.cluster_resources()
    gpus = gpus_per_fold if gpus_per_fold is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    cpus = cpus_per_fold if cpus_per_fold is not None else max(1.0, float(int(resources.get("CPU", 1) // len(stale))))
    if cpus <= 0 or gpus < 0:
        raise UserError(f"--cpus-per-fold must be > 0 and --gpus-per-fold >= 0, got {cpus}, {gpus}")
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        raise UserError(f"each fold asks for {cpus:g} CPUs and {gpus:g} GPUs on one node; the Ray cluster's "
                        "nodes have " + ", ".join(f"{n.get('CPU', 0):g} CPUs/{n.get('GPU', 0):g} GPUs" for n in nodes))
    threads = max(1, int(cpus))
    prepared = ray.put(read_tree(root / paths.PREPARED))
    task = ray.remote(train_fold_task).options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD",
                                               max_retries=1)
    pending = {}
    for s in stale:
        ckpt = root / paths.checkpoint(s.fold)
        pending[task.remote(s.fold, s.seed, dataclasses.asdict(params), prepared,
                            ckpt.read_bytes() if ckpt.is_file() else None, threads)] = s
    _logger.info("%d folds on Ray: %g CPUs (%d torch threads) and %g GPUs each", len(stale), cpus, threads, gpus)
    done, errors, t0 = [], [], time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)  # and any others done by now
        finished = []
        for ref in ready:
            stage = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:
                cause = _task_error(exc)
                if not isinstance(cause, UserError):
                    raise
                errors.append(f"{stage.name}: {cause}")
                continue
            install_outputs(root, stage, result["files"])
            finished.append(stage.name)
            m = result["metrics"]
            done.append({"stage": stage.name, "fold": stage.fold, "seed": stage.seed, "node": result["node"],
                         "threads": result["threads"], "seconds": round(result["seconds"], 1),
                         "val_accuracy": m.get("val_accuracy")})
            _logger.info("%s done on node %s in %.0f s (val accuracy %.4f); %d/%d folds, %.0f s so far", stage.name,
                         result["node"], result["seconds"], m.get("val_accuracy", float("nan")), len(done),
                         len(stale), time.perf_counter() - t0)
        dvcstate.commit(root, finished)  # each fold is recorded as soon as it is back
    if errors:
        raise UserError(f"{errors[0]} ({len(done)} of {len(stale)} folds trained and recorded"
                        + (f"; {len(errors) - 1} more failed" if len(errors) > 1 else "") + ")")
    return done


def main(address: str | None = None, cpus_per_fold: float | None = None, gpus_per_fold: float | None = None,
         dry_run: bool = False) -> None:
    if dry_run:
        stale, fresh = plan(Path("."))
        print(f"stale: {', '.join(s.name for s in stale) or 'none'}; "
              f"up to date: {', '.join(s.name for s in fresh) or 'none'} (--dry-run: nothing trained)")
        return
    done = train_parallel(Path("."), address, cpus_per_fold, gpus_per_fold)
    for d in done:
        print(f"{d['stage']}: fold {d['fold']} seed {d['seed']} on node {d['node']} ({d['threads']} threads): "
              f"val accuracy {d['val_accuracy']:.4f} in {d['seconds']:.0f} s")
    if done:
        print(f"recorded in dvc.lock: {', '.join(d['stage'] for d in done)}; `dvc repro` goes on from ensemble")
    else:
        print("every fold stage is up to date: nothing to train")
