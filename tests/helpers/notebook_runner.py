"""Run a notebook the way a Kaggle session does: a fresh kernel, /kaggle/input and /kaggle/working
given by folders, and (internet off) no network from inside the kernel.

    nb, log = execute(notebook_text, input_dir, working_dir, offline=True)

The kernel is this venv's ipykernel, started by nbclient. `offline` puts OFFLINE_CELL first: it
makes every non-Unix socket connection and every DNS lookup in the kernel process fail, points
subprocesses (pip) at a dead proxy with no package index, and proves it by failing to reach
PyPI. The notebook reads FOLDWISE_KAGGLE_INPUT / FOLDWISE_KAGGLE_WORKING instead of /kaggle/...
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

OFFLINE_CELL = '''\
# Internet off (added by the test harness): no network connection from this process, none for pip.
import os
import socket
import urllib.request

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _refuse(sock):
    if sock.family != socket.AF_UNIX:
        raise OSError(101, "Network is unreachable (the internet is off in this session)")


def _guarded_connect(self, address):
    _refuse(self)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _refuse(self)
    return _connect_ex(self, address)


def _no_dns(*args, **kwargs):
    raise socket.gaierror(-3, "Temporary failure in name resolution (the internet is off in this session)")


socket.socket.connect, socket.socket.connect_ex = _guarded_connect, _guarded_connect_ex
socket.getaddrinfo = socket.gethostbyname = _no_dns
for _var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ[_var] = "http://127.0.0.1:9"
for _var in ("no_proxy", "NO_PROXY", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
    os.environ.pop(_var, None)
os.environ["PIP_NO_INDEX"] = "1"
try:
    urllib.request.urlopen("https://pypi.org/simple/onnxruntime/", timeout=5)
except OSError as exc:
    print(f"internet off: {exc}")
else:
    raise AssertionError("the network is still reachable from the kernel")
'''


def kernel_env(input_dir: Path, working_dir: Path) -> dict:
    """The kernel's environment: this one without Kaggle credentials, plus the /kaggle folders and a
    temporary folder of its own beside them (removed with them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    tmp = working_dir.parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {**env, "FOLDWISE_KAGGLE_INPUT": str(input_dir), "FOLDWISE_KAGGLE_WORKING": str(working_dir),
            "TMPDIR": str(tmp)}


def execute(text: str, input_dir: Path, working_dir: Path, offline: bool = True, timeout: int = 600,
            kernel_name: str = "python3"):
    """Execute the notebook JSON `text`; (executed notebook, Kaggle-style log: a JSON list of stream
    records). A failing cell raises nbclient's CellExecutionError after the log is complete."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.reads(text, as_version=4)
    if offline:
        nb.cells.insert(0, nbformat.v4.new_code_cell(OFFLINE_CELL, id="harness-offline"))
    working_dir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=False,
                            resources={"metadata": {"path": str(working_dir)}})
    start = time.time()
    error = None
    try:
        client.execute(env=kernel_env(input_dir, working_dir))
    except CellExecutionError as exc:
        error = exc
    log = []
    for cell in nb.cells:  # each output stamped with its cell's end (nbclient records cell timings)
        done = cell.get("metadata", {}).get("execution", {}).get("shell.execute_reply")
        at = (datetime.fromisoformat(done.replace("Z", "+00:00")).timestamp() - start) if done else 0.0
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                log.append({"stream_name": out["name"], "time": round(at, 3), "data": out["text"]})
            elif out.get("output_type") == "error":
                log.append({"stream_name": "stderr", "time": round(at, 3),
                            "data": f"{out['ename']}: {out['evalue']}\n"})
    if error is not None:
        error.kaggle_log = json.dumps(log)
        raise error
    return nb, json.dumps(log)


def stdout_of(nb) -> str:
    """Everything the notebook printed."""
    return "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", [])
                   if out.get("output_type") == "stream")
