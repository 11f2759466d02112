"""Batch jobs: large inputs predicted in the background by `foldwise predict`'s resumable engine.

    store = JobStore(Path("jobs"))
    job = store.create_from_file(upload, "test.csv")        # or create_from_path(resolved, "test.csv")
    runner = JobRunner(store, engine, batcher, config, metrics); runner.start()
    store.read(job_id)   # {"id", "state", "rows_done", "rows_total", "images_per_second", "eta_seconds", ...}

Everything lives on disk under --jobs-dir, one folder per job: `job.json` (state), `input.*`
(an uploaded file), `result.csv` and, while it runs, `result.csv.partial` + `.partial.json`
(predict_file's checkpoint after every chunk). A job folder appears whole (written beside it,
then renamed). One runner thread per server (a file lock elects it among worker processes)
runs queued jobs oldest first through `serve.predict.predict_file`, with onnxruntime calls
going through the server's batcher as runs of their own, so a job's output is byte-identical
to `foldwise predict --batch-size <job batch> --chunk-rows <job chunk rows>`. A server killed
mid-job (even with SIGKILL) finds the job `running` at the next start and continues after its
last finished chunk; a graceful stop checkpoints it the same way.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from serve.atomic import write_json
from serve.errors import UserError
from serve.http.batcher import Closed
from serve.http.errors import ApiError
from serve.predict import Interrupted, predict_file

_logger = logging.getLogger(__name__)
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
UPLOAD_FOLDER = re.compile(r"^\.new-(\d{1,9})-[0-9a-f]{16}$")  # JobStore._new: the receiving process's pid, the job id
UPLOAD_SUFFIXES = (".csv", ".npy")
ACTIVE = ("queued", "running")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV (lines after the header), for progress and ETA."""
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(0, lines + (last != b"\n") - 1)


def process_running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited: a zombie (ended, not yet reaped by its parent)
    counts as gone, where os.kill(pid, 0) alone would call it alive; another user's process counts
    as running. Linux reads the state from /proc; elsewhere os.kill alone decides."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # it ended in between, or there is no /proc (macOS): os.kill decides
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] != "Z"  # the state follows the command name, which may hold spaces


class JobStore:
    """Job folders under `root`; every read goes to disk (so all worker processes agree)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep_stale_uploads()

    def sweep_stale_uploads(self) -> None:
        """Remove the folders of uploads cut short by a crash: those whose process is gone. Another
        worker process (or server) on the same folder may be receiving an upload right now."""
        for folder in self.root.glob(".new-*"):
            upload = UPLOAD_FOLDER.match(folder.name)
            if not (upload and process_running(int(upload[1]))):
                shutil.rmtree(folder, ignore_errors=True)

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ApiError(404, f"no job '{job_id}'")
        return self.root / job_id

    def _new(self) -> tuple[str, Path]:
        job_id = secrets.token_hex(8)
        tmp = self.root / f".new-{os.getpid()}-{job_id}"  # the pid: sweep_stale_uploads spares live uploads
        tmp.mkdir()
        return job_id, tmp

    def _commit(self, tmp: Path, job: dict) -> dict:
        """Move the finished folder into place (a job appears whole or not at all)."""
        try:
            write_json(tmp / "job.json", job)
            os.replace(tmp, self.root / job["id"])
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _logger.info("job %s queued: %s", job["id"], job["input"])
        return job

    @staticmethod
    def _record(job_id: str, input_name: str, source: str, path: str) -> dict:
        return {"id": job_id, "state": "queued", "input": input_name, "source": source, "path": path,
                "created": _now(), "started": None, "finished": None, "rows_done": 0, "rows_total": None,
                "images_per_second": None, "eta_seconds": None, "error": None}

    @staticmethod
    def _upload_suffix(filename: str) -> str:
        suffix = Path(filename).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise ApiError(415, f"upload '{filename}': send a pixel .csv or a uint8 .npy (a folder of images: "
                                "put it under --data-root and send its path)")
        return suffix

    async def create_from_stream(self, blocks: AsyncIterator[bytes], filename: str) -> dict:
        """A job whose input is an uploaded file arriving as `blocks`, named `filename`."""
        suffix = self._upload_suffix(filename)
        job_id, tmp = self._new()
        try:
            with open(tmp / f"input{suffix}", "wb") as fh:
                async for block in blocks:
                    fh.write(block)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._commit(tmp, self._record(job_id, Path(filename).name, "upload", f"input{suffix}"))

    def create_from_file(self, fileobj: BinaryIO, filename: str) -> dict:
        """A job whose input is a (spooled) uploaded file."""
        suffix = self._upload_suffix(filename)
        job_id, tmp = self._new()
        with open(tmp / f"input{suffix}", "wb") as fh:
            shutil.copyfileobj(fileobj, fh, 1 << 20)
        return self._commit(tmp, self._record(job_id, Path(filename).name, "upload", f"input{suffix}"))

    def create_from_path(self, target: Path, shown: str) -> dict:
        """A job over a server-side file or folder (already checked to lie under --data-root)."""
        job_id, tmp = self._new()
        return self._commit(tmp, self._record(job_id, shown, "path", str(target)))

    def input_path(self, job: dict) -> Path:
        return self.root / job["id"] / job["path"] if job["source"] == "upload" else Path(job["path"])

    def read(self, job_id: str) -> dict:
        folder = self.folder(job_id)
        if (folder / "cancel").exists():
            raise ApiError(404, f"no job '{job_id}' (deleted)")
        try:
            return json.loads((folder / "job.json").read_text())
        except FileNotFoundError:
            raise ApiError(404, f"no job '{job_id}'") from None

    def update(self, job_id: str, **changes) -> dict | None:
        """Write `changes` into job.json; None when the job has been deleted meanwhile."""
        folder = self.root / job_id
        try:
            job = json.loads((folder / "job.json").read_text())
            job.update(changes)
            write_json(folder / "job.json", job)
            return job
        except FileNotFoundError:
            return None

    def all(self) -> list[dict]:
        jobs = []
        for folder in sorted(self.root.iterdir()):
            if JOB_ID.match(folder.name) and not (folder / "cancel").exists():
                try:
                    jobs.append(json.loads((folder / "job.json").read_text()))
                except (FileNotFoundError, json.JSONDecodeError):
                    continue
        return sorted(jobs, key=lambda j: j["created"])

    def next_active(self) -> dict | None:
        """The oldest queued or interrupted (`running` on disk, from a killed server) job."""
        active = [j for j in self.all() if j["state"] in ACTIVE]
        return active[0] if active else None

    def delete(self, job_id: str) -> dict:
        job = self.read(job_id)
        folder = self.folder(job_id)
        (folder / "cancel").touch()  # a running job stops after its current chunk and removes itself
        if job["state"] != "running":
            shutil.rmtree(folder, ignore_errors=True)
        return {"id": job_id, "deleted": True, "state": job["state"]}

    def result(self, job_id: str) -> Path:
        job = self.read(job_id)
        if job["state"] == "done":
            return self.root / job_id / "result.csv"
        if job["state"] == "failed":
            raise ApiError(409, f"job {job_id} failed: {job['error']}")
        total = f" of {job['rows_total']}" if job.get("rows_total") else ""
        raise ApiError(409, f"job {job_id} is {job['state']} ({job['rows_done']}{total} rows done); "
                            f"poll GET /jobs/{job_id} until its state is done")

    def sweep_deleted(self) -> None:
        """Remove folders of jobs deleted while marked running (e.g. after a crash); runner only."""
        for marker in self.root.glob("*/cancel"):
            if JOB_ID.match(marker.parent.name):
                shutil.rmtree(marker.parent, ignore_errors=True)


class BatchedEngine:
    """`predict_file`'s engine interface over the server's session, through the batcher."""

    def __init__(self, engine, batcher) -> None:
        self.info = engine.info
        self.provider = engine.provider
        self.batcher = batcher

    def predict_batched(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        parts = [self.batcher.predict_solo(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.info.classes)), np.float32)


class JobRunner(threading.Thread):
    """Runs the store's jobs one at a time while it holds the jobs folder's lock."""

    def __init__(self, store: JobStore, engine, batcher, model: Path, chunk_rows: int, batch_size: int,
                 metrics=None) -> None:
        super().__init__(name="foldwise-jobs", daemon=True)
        self.store = store
        self.engine = BatchedEngine(engine, batcher)
        self.model = Path(model)
        self.chunk_rows = chunk_rows
        self.batch_size = batch_size
        self.metrics = metrics
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.current: str | None = None

    def stop(self, timeout: float | None = 120.0) -> None:
        """Graceful: the running job stops after its current chunk (checkpointed) and stays queued."""
        self.stopping.set()
        self.wake.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        with open(self.store.root / ".runner.lock", "w") as lock:
            while not self.stopping.is_set():
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:  # another worker process runs the jobs
                    self.stopping.wait(1.0)
            while not self.stopping.is_set():
                self.store.sweep_deleted()  # between jobs: no job of ours is running
                job = self.store.next_active()
                if job is None:
                    self.wake.wait(1.0)
                    self.wake.clear()
                    continue
                try:
                    self._run(job)
                except Exception:
                    _logger.exception("job %s failed", job["id"])
                    self._end(job["id"], "failed", error="internal error (logged on the server)")

    def _shown(self, message: str, job: dict) -> str:
        """A message with the server's folders left out (the job folder, or the data path as sent)."""
        folder = str(self.store.root / job["id"]) + os.sep
        message = message.replace(folder, "")
        if job["source"] == "path":
            message = message.replace(job["path"], job["input"])
        return message

    def _end(self, job_id: str, state: str, **changes) -> None:
        if self.store.update(job_id, state=state, finished=_now(), eta_seconds=None, **changes) is None:
            return
        if self.metrics is not None:
            self.metrics.jobs.labels(state=state).inc()

    @staticmethod
    def _checkpointed_rows(folder: Path) -> int:
        """Rows predict_file will resume after (its checkpoint), 0 for a fresh start."""
        try:
            return int(json.loads((folder / "result.csv.partial.json").read_text())["rows"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            return 0

    def _run(self, job: dict) -> None:
        job_id, folder = job["id"], self.store.root / job["id"]
        if (folder / "cancel").exists():
            shutil.rmtree(folder, ignore_errors=True)
            return
        source = self.store.input_path(job)
        total = job.get("rows_total")
        if total is None and source.suffix.lower() == ".csv" and source.is_file():
            total = count_csv_rows(source)
        start_rows = self._checkpointed_rows(folder)
        self.store.update(job_id, state="running", started=job["started"] or _now(), rows_total=total)
        _logger.info("job %s %s", job_id, f"resumes after {start_rows} rows" if start_rows else "started")
        self.current = job_id
        stop = threading.Event()
        t0 = time.perf_counter()

        def progress(rows: int, known_total: int | None) -> None:
            n_total = known_total or total
            speed = (rows - start_rows) / max(time.perf_counter() - t0, 1e-9)
            eta = (n_total - rows) / speed if n_total and speed > 0 else None
            self.store.update(job_id, rows_done=rows, rows_total=n_total, images_per_second=round(speed, 1),
                              eta_seconds=round(eta, 1) if eta is not None else None)
            if self.stopping.is_set() or (folder / "cancel").exists():
                stop.set()

        try:
            result = predict_file(self.model, source, folder / "result.csv", batch_size=self.batch_size,
                                  chunk_rows=self.chunk_rows, engine=self.engine, progress=progress, stop=stop)
        except (Interrupted, Closed):
            if (folder / "cancel").exists():
                shutil.rmtree(folder, ignore_errors=True)
                _logger.info("job %s deleted while running", job_id)
            else:
                self.store.update(job_id, state="queued", eta_seconds=None)
                _logger.info("job %s checkpointed for the next start", job_id)
            return
        except UserError as exc:
            self._end(job_id, "failed", error=self._shown(str(exc), job))
            _logger.info("job %s failed: %s", job_id, self._shown(str(exc), job))
            return
        finally:
            self.current = None
        if (folder / "cancel").exists():
            shutil.rmtree(folder, ignore_errors=True)
            return
        self._end(job_id, "done", rows_done=result.rows, rows_total=result.rows,
                  images_per_second=round(result.images_per_second, 1))
        _logger.info("job %s done: %d rows, %.0f images/s", job_id, result.rows, result.images_per_second)
