"""What DVC knows about the fold stages: which `train@k` are stale, what they write, and how to
record folds built elsewhere as if `dvc repro` had built them.

    stages = fold_stages(Path("."))              # every train@k: fold, seed, outs (from dvc.yaml)
    reproduce_upstream(root, stages)             # `dvc repro` of what the folds depend on (prepare, ...)
    stale = stale_stages(root, stages)           # `dvc status --json` of the folds
    commit(root, ["train@0", "train@3"])         # `dvc commit --force`: dvc.lock (and the run-cache)

DVC itself answers every question here (its CLI for `repro`, its Python API `dvc.repo.Repo` for the
stage graph, `status` and `commit`); nothing is re-implemented.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from serve.errors import UserError

_logger = logging.getLogger(__name__)
TRAIN_CMD = re.compile(r"^python\s+-m\s+pipeline\.stages\.train\s+--fold\s+(\d+)\s+--seed\s+(\d+)\s*$")


@dataclass(frozen=True)
class FoldStage:
    """One `train@k` stage as dvc.yaml resolves it."""
    name: str            # train@k
    fold: int
    seed: int
    outs: tuple[str, ...]  # paths relative to the project root, as dvc.yaml says


def dvc_bin() -> str:
    """The `dvc` next to this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def dvc_env() -> dict[str, str]:
    """The environment for DVC: this Python's folder first on PATH, so its stages' `python -m
    pipeline.stages...` run in the project's venv whether or not it is activated."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the DVC CLI in `root`; UserError with DVC's own last lines if it fails."""
    result = subprocess.run([dvc_bin(), *args], cwd=root, capture_output=True, text=True, env=dvc_env())
    if check and result.returncode != 0:
        said = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])[:400]
        raise UserError(f"dvc {' '.join(args)} failed in {root}: {said}")
    return result


def fold_stages(root: Path, group: str = "train") -> list[FoldStage]:
    """Every `<group>@k` stage of the project, with its fold, seed and outputs (DVC's Python API)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            stages = [s for s in repo.index.stages if getattr(s, "name", "").startswith(f"{group}@")]
            found = []
            for s in stages:
                m = TRAIN_CMD.match(s.cmd or "")
                if not m:
                    raise UserError(f"dvc.yaml: stage {s.name}: cmd {s.cmd!r} is not "
                                    "`python -m pipeline.stages.train --fold K --seed S`, "
                                    "which parallel folds run on the workers")
                found.append(FoldStage(s.name, int(m.group(1)), int(m.group(2)), tuple(o.def_path for o in s.outs)))
    except DvcException as exc:
        raise UserError(f"{root}: not a DVC project with a pipeline ({exc})") from None
    if not found:
        raise UserError(f"{root / 'dvc.yaml'}: no {group}@k stages")
    return sorted(found, key=lambda f: f.fold)


def upstream_stage_names(root: Path, names: list[str]) -> list[str]:
    """The stages the given ones depend on, directly or not (DVC's stage graph)."""
    import networkx as nx  # a DVC dependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        by_name = {s.name: s for s in repo.index.stages}  # (`addressing` would be relative to the cwd)
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        up = set()
        for name in names:
            up |= {s.name for s in nx.descendants(graph, by_name[name])}
    return sorted(up - set(names))


def reproduce_upstream(root: Path, stages: list[FoldStage]) -> None:
    """`dvc repro` of everything the fold stages depend on (download, prepare, ...): nothing if up to date."""
    upstream = upstream_stage_names(root, [s.name for s in stages])
    if upstream:
        _logger.info("dvc repro %s (what the folds depend on)", " ".join(upstream))
        dvc(root, "repro", *upstream)


def stale_stages(root: Path, stages: list[FoldStage]) -> list[FoldStage]:
    """The fold stages `dvc status` reports as changed (deps, params, outs, or never built)."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:  # stage names resolve against the working directory
        changed = repo.status(targets=[s.name for s in stages])
    return [s for s in stages if s.name in changed]


def commit(root: Path, names: list[str]) -> None:
    """`dvc commit --force`: record the stages' current deps, params and outs in dvc.lock, their
    outputs in DVC's cache, and the runs in the run-cache, as `dvc repro` would have."""
    from dvc.repo import Repo

    if not names:
        return
    with contextlib.chdir(root), Repo(".") as repo:
        for name in names:
            repo.commit(name, force=True)
    _logger.info("dvc commit: %s recorded in dvc.lock", ", ".join(names))
