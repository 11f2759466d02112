"""Helpers of the benches that time whole `dvc repro` runs: a throw-away copy of the project and a
timed command in it (`foldwise bench parallel`, `foldwise bench export`), and its folds' metrics.

    copy_project(Path("."), Path("bench/x/project"), epochs=1, train_rows=None)
    seconds = run_timed(["dvc", "repro"], Path("bench/x/project"), threads=2, show=r"Running stage")
    fold_metrics(Path("bench/x/project"))     # {"fold0": models/folds/fold0/metrics.json, ...}
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from pipeline.core import paths
from pipeline.core.config import read_params
from serve.errors import UserError

_logger = logging.getLogger(__name__)
PROJECT_FILES = (".dvc/config", ".dvcignore", "dvc.yaml", "params.yaml", "pipeline", "serve", "data/embedded")


def first_rows(src_zip: Path, dst_zip: Path, train_file: str, rows: int) -> None:
    """A copy of a competition zip whose training CSV keeps its header and first `rows` rows."""
    import zipfile

    with zipfile.ZipFile(src_zip) as zin, zipfile.ZipFile(dst_zip, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == train_file:
                data = b"".join(data.splitlines(keepends=True)[:rows + 1])
            zout.writestr(item.filename, data)


def copy_project(src: Path, dst: Path, epochs: int | None, train_rows: int | None) -> None:
    """The project's code, params and embedded data copied to `dst` (a git repository of its own), with
    `train.epochs` and the number of training rows optionally overridden."""
    import yaml

    for rel in PROJECT_FILES:
        s = src / rel
        if s.is_dir():
            shutil.copytree(s, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif s.exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dst / rel)
    params = read_params(dst / "params.yaml")
    if epochs is not None:
        params["train"]["epochs"] = epochs
    if train_rows is not None:  # the same competition with fewer training images (a shorter run)
        source = src / params["download"]["path"]
        if params["download"]["source"] not in ("embedded", "local") or source.suffix != ".zip":
            raise UserError("--train-rows needs download.source embedded or local with a zip (download.path)")
        first_rows(source, dst / "data/bench.zip", params["prepare"]["train_file"], train_rows)
        params["download"].update(source="local", path="data/bench.zip")
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)


def run_timed(cmd: list[str], cwd: Path, threads: int, show: str | None = None) -> float:
    """Seconds `cmd` took in `cwd` with `threads` OpenMP threads. Its output (stdout and stderr) is
    read as it comes: lines matching the regular expression `show` are logged at once (progress of a
    long run), the last lines are kept for the one-line error when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    shown = re.compile(show) if show else None
    tail: deque[str] = deque(maxlen=3)
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line.strip():
                tail.append(line)
            if shown is not None and shown.search(line):
                _logger.info("  %s (%.0f s)", line.strip(), time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise UserError(f"bench: `{' '.join(cmd)}` failed in {cwd}: " + " ".join(tail)[:400])
    return seconds


def fold_metrics(project: Path) -> dict[str, dict]:
    """{fold folder name: its metrics.json} of every trained fold under the project's models/folds/."""
    files = sorted((project / paths.FOLDS).glob("fold*/metrics.json"))
    return {p.parent.name: json.loads(p.read_text()) for p in files}
