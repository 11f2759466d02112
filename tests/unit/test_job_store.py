"""JobStore's start-up sweep: uploads cut short by a crash go, uploads another worker is receiving stay.

    pytest tests/unit/test_job_store.py
"""
from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

from serve.http.jobs import JobStore, process_running


def test_a_starting_worker_spares_an_upload_another_live_worker_is_receiving(tmp_path: Path) -> None:
    """Two worker processes share --jobs-dir: one starting up must not remove the other's upload in flight
    (it did: the job then failed with `input.csv: file not found`, seen in a CI run)."""
    receiving = JobStore(tmp_path)
    job_id, in_flight = receiving._new()
    (in_flight / "input.csv").write_text("id,pixel0\n1,0\n")
    JobStore(tmp_path)  # the second worker starts
    assert (in_flight / "input.csv").read_text() == "id,pixel0\n1,0\n"
    job = receiving._commit(in_flight, receiving._record(job_id, "big.csv", "upload", "input.csv"))
    assert receiving.input_path(job).read_text() == "id,pixel0\n1,0\n"
    assert receiving.next_active()["id"] == job_id


def test_the_upload_of_a_process_that_died_is_removed_at_the_next_start(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    crashed = tmp_path / f".new-{dead}-0123456789abcdef"
    crashed.mkdir()
    (crashed / "input.csv").write_text("id,pixel0\n")
    old_style = tmp_path / ".new-0123456789abcdef"  # written before the pid was in the name
    old_style.mkdir()
    store = JobStore(tmp_path)
    assert not crashed.exists() and not old_style.exists()
    job = store.create_from_file(io.BytesIO(b"id,pixel0\n1,0\n"), "x.csv")
    assert store.input_path(job).read_bytes() == b"id,pixel0\n1,0\n"
    assert not list(tmp_path.glob(".new-*"))


def test_a_zombie_counts_as_gone_and_a_live_child_as_running(tmp_path: Path) -> None:
    """A worker that exited but was not yet reaped (a zombie) left its upload for good: os.kill(pid, 0)
    succeeds on a zombie, so the sweep took it for alive."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert process_running(child.pid)
        upload = tmp_path / f".new-{child.pid}-0123456789abcdef"
        upload.mkdir()
        JobStore(tmp_path)
        assert upload.exists()  # its process is still receiving
        child.stdin.close()  # it exits; not reaped until wait()
        deadline = time.monotonic() + 30
        while process_running(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not process_running(child.pid)
        assert Path(f"/proc/{child.pid}").exists()  # a zombie: ended, its entry kept until wait() reaps it
        JobStore(tmp_path)
        assert not upload.exists()
    finally:
        child.wait(timeout=30)
    assert not process_running(child.pid)
