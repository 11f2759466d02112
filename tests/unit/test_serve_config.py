"""`foldwise serve`'s placement of worker processes and threads (ServeConfig.placed), its checks of
--workers/--threads, and the bench's view of a multi-process server (process tree, summed RSS)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve.errors import UserError
from serve.http.config import AUTO_WORKERS, MAX_AUTO_WORKERS, SMALL_BATCH, ServeConfig
from serve.http.loadgen import process_tree, rss_mib

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


S = SMALL_BATCH


@pytest.mark.parametrize(("workers", "threads", "provider", "cores", "placed"), [
    (None, None, CPU, 2, (2, 2, S)),                 # two workers, threads for every core; small batches on 1
    (None, None, CPU, 16, (AUTO_WORKERS, 16, S)),
    (None, None, CPU, 1, (1, None, 0)),              # one core: one worker, onnxruntime's default threads
    (None, 1, CPU, 2, (2, 1, 0)),                    # --threads given: as many workers as fit in the cores
    (None, 2, CPU, 16, (MAX_AUTO_WORKERS, 2, S)),    # ... at most MAX_AUTO_WORKERS
    (None, 8, CPU, 2, (1, 8, 0)),                    # more threads than cores: one worker, as asked
    (4, None, CPU, 2, (4, 1, 0)),                    # --workers given: THREADS_PER_CORE x cores threads in all
    (3, None, CPU, 12, (3, 8, S)),
    (1, None, CPU, 8, (1, None, 0)),                 # one worker: onnxruntime's default (all cores)
    (2, 3, CPU, 2, (2, 3, S)),                       # both given: kept as written
    (None, None, CUDA, 16, (1, None, 0)),            # a GPU: one session owns it
    (None, 4, CUDA, 16, (1, 4, 0)),
])
def test_placed_decides_only_what_was_not_given(workers, threads, provider, cores, placed) -> None:
    config = ServeConfig(model="m.onnx", workers=workers, threads=threads).placed(provider, cores)
    assert (config.workers, config.threads, config.small_batch) == placed
    given = ServeConfig(model="m.onnx", workers=workers, threads=threads, small_batch=5)
    assert given.placed(provider, cores).small_batch == 5
    assert ServeConfig.from_json(config.to_json()) == config   # what the worker processes receive


@pytest.mark.parametrize(("field", "value", "message"), [
    ("workers", 0, "--workers: must be at least 1, got 0"),
    ("threads", 0, "--threads: must be at least 1, got 0"),
    ("small_batch", -1, "--small-batch: must be 0 or more, got -1"),
])
def test_validate_names_a_bad_placement(tmp_path: Path, field: str, value: int, message: str) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    ServeConfig(model=str(model)).validate()   # all unset: fine, placed() decides
    ServeConfig(model=str(model), small_batch=0).validate()
    with pytest.raises(UserError, match=f"^{message}$"):
        ServeConfig(model=str(model), **{field: value}).validate()


def test_process_tree_and_rss_cover_child_processes() -> None:
    # the child reports the grandchild's pid once the grandchild's Python is up (just after exec its RSS is a
    # few KiB: the race that failed this test once in a fresh-clone CI run)
    child = ("import subprocess, sys, time; "
             "p = subprocess.Popen([sys.executable, '-c', 'import time; print(1, flush=True); time.sleep(30)'], "
             "stdout=subprocess.PIPE); p.stdout.readline(); print(p.pid, flush=True); time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while grandchild not in process_tree(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process_tree(parent.pid)
        assert tree[0] == parent.pid and grandchild in tree
        assert rss_mib(parent.pid) > rss_mib(grandchild) > 1   # the parent's own memory plus its child's
    finally:
        parent.kill()
        parent.wait()
        subprocess.run(["kill", str(grandchild)], check=False)
    with pytest.raises(ProcessLookupError):
        rss_mib(parent.pid)
