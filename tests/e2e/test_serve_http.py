"""`foldwise serve`: the real server (uvicorn on a free 127.0.0.1 port) driven by real HTTP clients.

tritonclient (the official Open Inference Protocol client) against Engine.predict bit for bit;
/predict against `foldwise predict`'s output; a SIGKILLed job resumed byte-identical; every
refusal with its status and a one-line JSON message; queue full and graceful shutdown; metrics
and access logs; `foldwise bench serve` end to end on a tiny budget.
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.http as triton
from PIL import Image

from helpers.cli import assert_one_line_error, run_cli
from helpers.server import Server, assert_json_error
from serve.engine import Engine
from serve.http.config import AUTO_WORKERS, SMALL_BATCH
from serve.http.jobs import process_running
from serve.http.loadgen import process_tree
from serve.predict import predict_file

TOKEN = "test-token-0123456789abcdef"


def slice_images(real_slice, n: int) -> tuple[list[str], np.ndarray]:
    test = real_slice["test.csv"].iloc[:n]
    return test["id"].tolist(), test.drop(columns="id").to_numpy().astype(np.uint8).reshape(-1, 1, 28, 28)


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tiny_onnx: Path, real_slice, tmp_path_factory):
    """One server with auth, a data root (with a symlink leading out of it) and small limits."""
    work = tmp_path_factory.mktemp("served")
    (work / "token").write_text(TOKEN + "\n")
    root = work / "data"
    (root / "images").mkdir(parents=True)
    real_slice["test.csv"].iloc[:40].to_csv(root / "test.csv", index=False)
    (root / "escape").symlink_to("/etc")
    server = Server(tiny_onnx, work, "--token-file", str(work / "token"), "--data-root", str(root),
                    "--jobs-dir", str(work / "jobs"), "--max-body-mb", "1", "--max-images", "64",
                    "--max-pixels", "1000000", "--max-delay-ms", "20", token=TOKEN)
    assert "model 'ensemble'" in server.log.read_text() and "on CPUExecutionProvider" in server.log.read_text()
    yield server, work
    assert server.stop() == 0  # SIGTERM: a graceful stop, exit code 0
    assert "Application shutdown complete" in server.log.read_text()


def test_triton_client_infer_equals_engine_predict_bit_for_bit(served, tiny_onnx: Path, real_slice) -> None:
    server, _ = served
    engine = Engine(tiny_onnx, threads=1)
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    auth = server.headers  # passed as dict(auth): tritonclient writes its own headers into the dict it gets
    assert client.is_server_live() and client.is_server_ready()  # health probes need no token
    assert client.is_model_ready("ensemble", headers=auth)
    meta = client.get_model_metadata("ensemble", headers=auth)
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"probs": [-1, 10], "label": [-1]}
    assert json.loads(meta["parameters"]["classes"]) == [str(i) for i in range(10)]
    assert meta["parameters"]["provider"] == "CPUExecutionProvider"

    _, images = slice_images(real_slice, 24)
    expected = engine.predict(images)
    for binary_in in (True, False):
        for binary_out in (True, False):
            tensor = triton.InferInput("images", list(images.shape), "UINT8")
            tensor.set_data_from_numpy(images, binary_data=binary_in)
            outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("probs", "label")]
            result = client.infer("ensemble", [tensor], outputs=outputs, headers=dict(auth), request_id="r1")
            assert result.as_numpy("probs").dtype == np.float32
            assert np.array_equal(result.as_numpy("probs"), expected), (binary_in, binary_out)
            labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
            assert labels == [str(i) for i in expected.argmax(1)]
            assert result.get_response()["id"] == "r1"

    # concurrent clients: the batcher merges their requests; each still gets exactly its own rows
    results: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        c = triton.InferenceServerClient(server.url.removeprefix("http://"))
        part = images[i:i + 1 + i % 3]
        t = triton.InferInput("images", list(part.shape), "UINT8")
        t.set_data_from_numpy(part)
        results[i] = c.infer("ensemble", [t], headers=dict(auth)).as_numpy("probs")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, probs in results.items():
        assert np.array_equal(probs, expected[i:i + 1 + i % 3]), i
    metrics = server.get("/metrics").text
    count = float(next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("foldwise_batch_size_count")))
    total = float(next(ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("foldwise_batch_size_sum")))
    assert count >= 1 and total >= 4 * 24 + sum(1 + i % 3 for i in range(16))
    assert 'foldwise_provider_info{model="ensemble",provider="CPUExecutionProvider"} 1.0' in metrics
    assert 'foldwise_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"}' in metrics
    assert "foldwise_queue_images" in metrics and "foldwise_request_seconds_bucket" in metrics


def test_predict_endpoint_equals_foldwise_predict(served, tiny_onnx: Path, real_slice, tmp_path: Path) -> None:
    server, _ = served
    ids, images = slice_images(real_slice, 20)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in zip(ids, images):
        (folder / f"{i}.png").write_bytes(png_bytes(img[0]))
    predict_file(tiny_onnx, folder, tmp_path / "out.csv", probs_output=tmp_path / "probs.csv", threads=1)
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    probs = pd.read_csv(tmp_path / "probs.csv", dtype=str)
    classes = [str(i) for i in range(10)]
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in sorted(folder.iterdir())]
    response = server.post("/predict", files=files, headers={"Accept": "text/csv"})
    assert response.status_code == 200, response.text
    got = pd.read_csv(io.StringIO(response.text), dtype=str)
    assert list(got.columns) == ["id", "label", *classes]
    assert got[["id", "label"]].equals(out) and got[["id", *classes]].equals(probs)

    csv = tmp_path / "t.csv"
    real_slice["test.csv"].iloc[:30].to_csv(csv, index=False)
    predict_file(tiny_onnx, csv, tmp_path / "out2.csv", probs_output=tmp_path / "probs2.csv", threads=1)
    response = server.post("/predict?format=csv", files=[("file", ("t.csv", csv.read_bytes(), "text/csv"))])
    got = pd.read_csv(io.StringIO(response.text), dtype=str)
    assert got[["id", "label"]].equals(pd.read_csv(tmp_path / "out2.csv", dtype=str))
    assert got[["id", *classes]].equals(pd.read_csv(tmp_path / "probs2.csv", dtype=str))

    as_json = server.post("/predict", data=png_bytes(images[0, 0]), headers={"Content-Type": "image/png"}).json()
    row = as_json["predictions"][0]
    assert as_json["provider"] == "CPUExecutionProvider" and row["label"] == out["label"][0]
    assert [f"{row['probabilities'][c]:.6g}" for c in classes] == probs.iloc[0, 1:].tolist()


def test_every_refusal_has_its_status_and_a_one_line_json_message(served, real_slice) -> None:
    server, work = served
    _, images = slice_images(real_slice, 2)
    v2 = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [2, 1, 28, 28],
                      "data": images.ravel().tolist()}]}
    infer = "/v2/models/ensemble/infer"
    assert_json_error(requests.post(server.url + infer, json=v2, timeout=30), 401, "missing bearer token")
    assert_json_error(requests.post(server.url + infer, json=v2, timeout=30,
                                    headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"}), 401,
                      "invalid bearer token")
    assert_json_error(requests.get(server.url + "/metrics", timeout=30, headers={"Authorization": TOKEN}), 401)
    assert server.post(infer, json=v2).status_code == 200
    assert_json_error(server.post("/v2/models/nope/infer", json=v2), 404, "unknown model 'nope'", "'ensemble'")
    assert_json_error(server.get("/v2/models/ensemble/versions/7"), 404, "unknown version '7'")
    wrong = json.loads(json.dumps(v2))
    wrong["inputs"][0]["datatype"] = "FP32"
    assert_json_error(server.post(infer, json=wrong), 422, "datatype FP32", "UINT8")
    wrong = json.loads(json.dumps(v2))
    wrong["inputs"][0]["shape"] = [2, 3, 28, 28]
    assert_json_error(server.post(infer, json=wrong), 422, "shape [2, 3, 28, 28]", "[N, 1, 28, 28]")
    wrong = json.loads(json.dumps(v2))
    wrong["inputs"][0]["data"] = wrong["inputs"][0]["data"][:-1]
    assert_json_error(server.post(infer, json=wrong), 400, "1567 values")
    many = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [65, 1, 28, 28],
                        "data": [0] * (65 * 784)}]}
    assert_json_error(server.post(infer, json=many), 413, "65 images", "--max-images")
    assert_json_error(server.post(infer, data=b"{not json"), 400, "not valid JSON")
    assert_json_error(server.post(infer, data=b"\0" * (1 << 20 | 1)), 413, "above the limit of 1 MiB", "--max-body-mb")

    big = png_bytes(np.zeros((1001, 1001), np.uint8))  # 1,002,001 pixels, a few kB of PNG
    assert_json_error(server.post("/predict", files=[("file", ("big.png", big, "image/png"))]), 413,
                      "big.png", "1,002,001 pixels", "decompression bomb")
    assert_json_error(server.post("/predict", files=[("file", ("notes.txt", b"hello", "text/plain"))]), 415,
                      "notes.txt: not a readable image")
    assert_json_error(server.post("/predict", data=b"x", headers={"Content-Type": "application/zip"}), 415)
    bad = real_slice["test.csv"].iloc[:3].astype(object)
    bad.loc[1, "pixel5"] = "x7"
    assert_json_error(server.post("/predict", files=[("file", ("bad.csv", bad.to_csv(index=False), "text/csv"))]), 422,
                      "bad.csv: row 2 (line 3), column 'pixel5': 'x7' is not an integer 0-255")

    for path, needle in [("../etc/passwd", "without '..'"), ("/etc/passwd", "relative"),
                         ("images/../../token", "without '..'"), ("escape/passwd", "outside the server's --data-root")]:
        assert_json_error(server.post("/jobs", json={"path": path}), 400, needle)
    assert_json_error(server.post("/jobs", json={"path": "missing.csv"}), 404, "not found")
    assert_json_error(server.get("/jobs/0123456789abcdef"), 404, "no job")
    assert_json_error(server.get("/jobs/..%2F..%2Fetc"), 404)
    assert_json_error(server.get("/nowhere"), 404, "no such endpoint")
    assert_json_error(server.post("/jobs", data=b"a,b\n", headers={"Content-Type": "text/csv"}), 415, "?name=")

    log = [json.loads(ln) for ln in server.log.read_text().splitlines() if ln.startswith("{")]
    refused = [r for r in log if r["status"] == 413 and r["path"] == "/predict"]
    assert refused and "decompression bomb" in refused[-1]["error"] and refused[-1]["ms"] >= 0
    assert not any("Traceback" in ln for ln in server.log.read_text().splitlines())


def test_a_path_job_runs_and_its_result_equals_foldwise_predict(served, tiny_onnx: Path, tmp_path: Path) -> None:
    server, work = served
    response = server.post("/jobs", json={"path": "test.csv"})
    assert response.status_code == 202, response.text
    job = response.json()
    deadline = time.monotonic() + 60
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = server.get(f"/jobs/{job['id']}").json()
    assert job["state"] == "done" and job["rows_done"] == job["rows_total"] == 40, job
    predict_file(tiny_onnx, work / "data" / "test.csv", tmp_path / "ref.csv", threads=1)
    assert server.get(f"/jobs/{job['id']}/result").content == (tmp_path / "ref.csv").read_bytes()
    assert any(j["id"] == job["id"] for j in server.get("/jobs").json()["jobs"])
    assert server.delete(f"/jobs/{job['id']}").json()["deleted"] is True
    assert_json_error(server.get(f"/jobs/{job['id']}"), 404)


def test_a_sigkilled_job_resumes_and_ends_byte_identical(tiny_onnx: Path, real_slice, tmp_path: Path) -> None:
    test = real_slice["test.csv"]
    big = pd.concat([test] * 20, ignore_index=True)
    big["id"] = [str(i) for i in range(len(big))]  # 2400 real images
    csv = tmp_path / "big.csv"
    big.to_csv(csv, index=False)
    args = ("--jobs-dir", str(tmp_path / "jobs"), "--job-chunk-rows", "150", "--job-batch-size", "64", "--threads", "1")
    server = Server(tiny_onnx, tmp_path, *args)
    try:
        job = server.post("/jobs?name=big.csv", data=csv.read_bytes(), headers={"Content-Type": "text/csv"}).json()
        state = tmp_path / "jobs" / job["id"] / "result.csv.partial.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = server.get(f"/jobs/{job['id']}").json()
            if seen["rows_done"] >= 450:
                break
            time.sleep(0.02)
        assert seen["state"] == "running" and seen["rows_total"] == 2400 and seen["images_per_second"] > 0, \
            f"{json.dumps(seen)}\n{server.log.read_text()[-3000:]}"
        assert seen["eta_seconds"] is not None
        server.kill()  # SIGKILL: no shutdown handler runs
    finally:
        server.kill() if server.proc.poll() is None else None
    done_before = json.loads(state.read_text())["rows"]
    assert 450 <= done_before < 2400, done_before
    server = Server(tiny_onnx, tmp_path, *args, name="restarted")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # SIGTERM mid-job: graceful, the job is checkpointed and stays queued
        seen = server.get(f"/jobs/{job['id']}").json()
        if seen["rows_done"] > done_before + 150 or seen["state"] == "done":
            break
        time.sleep(0.02)
    assert server.stop() == 0
    on_disk = json.loads((tmp_path / "jobs" / job["id"] / "job.json").read_text())
    assert on_disk["state"] == "queued" and on_disk["rows_done"] < 2400, on_disk
    assert f"job {job['id']} checkpointed for the next start" in server.log.read_text()
    server = Server(tiny_onnx, tmp_path, *args, name="restarted-again")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            seen = server.get(f"/jobs/{job['id']}").json()
            if seen["state"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert seen["state"] == "done" and seen["rows_done"] == 2400, seen
        result = server.get(f"/jobs/{job['id']}/result").content
    finally:
        assert server.stop() == 0
    assert f"resumes after {done_before} rows" in (tmp_path / "restarted.log").read_text()
    predict_file(tiny_onnx, csv, tmp_path / "clean.csv", batch_size=64, chunk_rows=150, threads=1)
    assert result == (tmp_path / "clean.csv").read_bytes()


def test_a_full_queue_answers_429_and_shutdown_finishes_requests_in_flight(tiny_onnx: Path, real_slice,
                                                                             tmp_path: Path) -> None:
    """--max-delay-ms 3000 with --max-batch above --max-queue: the first request waits in the queue
    for 3 s, filling it; the next one is refused at once. SIGTERM then still answers the first.
    One worker: each worker process has its own queue, and either could accept the second request."""
    server = Server(tiny_onnx, tmp_path, "--workers", "1", "--max-queue", "8", "--max-images", "8", "--max-batch",
                    "64", "--max-delay-ms", "3000", "--jobs-dir", str(tmp_path / "jobs"))
    _, images = slice_images(real_slice, 8)
    body = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [8, 1, 28, 28],
                        "data": images.ravel().tolist()}]}
    first: dict = {}
    waiting = threading.Thread(target=lambda: first.update(r=server.post("/v2/models/ensemble/infer", json=body)))
    waiting.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "foldwise_queue_images 8.0" not in server.get("/metrics").text:
        time.sleep(0.02)
    full = server.post("/v2/models/ensemble/infer", json=body)
    assert_json_error(full, 429, "queue full", "--max-queue")
    assert full.headers["retry-after"] == "1"
    assert server.stop() == 0  # SIGTERM, graceful: the queued request is answered before the process ends
    waiting.join()
    assert "Application shutdown complete" in server.log.read_text()
    assert first["r"].status_code == 200 and len(first["r"].json()["outputs"][0]["data"]) == 80


def test_the_default_cpu_server_runs_a_worker_per_core_and_they_stop_when_it_is_killed(tiny_onnx: Path,
                                                                                        tmp_path: Path) -> None:
    server = Server(tiny_onnx, tmp_path, "--jobs-dir", str(tmp_path / "jobs"))
    cores = len(os.sched_getaffinity(0))
    workers = min(cores, AUTO_WORKERS)
    params = server.get("/v2/models/ensemble").json()["parameters"]
    assert (params["workers"], params["threads"]) == (workers, cores)
    assert params["small_batch"] == (SMALL_BATCH if cores > 1 else 0)   # small batches on a 1-thread session
    assert f"{workers} worker(s) x {cores if cores > 1 else 'all'} onnxruntime thread(s)" in server.log.read_text()
    children = process_tree(server.proc.pid)[1:]
    assert len(children) >= (workers if workers > 1 else 0)
    server.proc.kill()  # SIGKILL to the supervisor only: its workers must not serve on as orphans
    server.proc.wait()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and any(map(process_running, children)):
        time.sleep(0.1)
    assert not [pid for pid in children if process_running(pid)]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/v2/health/live", timeout=5)


def test_serve_refuses_a_public_address_without_a_token_and_a_cpu_with_require_gpu(tiny_onnx: Path,
                                                                                     tmp_path: Path) -> None:
    result = run_cli("serve", "--model", str(tiny_onnx), "--host", "0.0.0.0", "--port", "9")
    assert_one_line_error(result, "--host 0.0.0.0", "--token-file")
    result = run_cli("serve", "--model", str(tiny_onnx), "--port", "9", "--require-gpu")
    assert_one_line_error(result, "--require-gpu", "CPUExecutionProvider, not CUDA")
    (tmp_path / "short").write_text("abc")
    result = run_cli("serve", "--model", str(tiny_onnx), "--token-file", str(tmp_path / "short"))
    assert_one_line_error(result, "--token-file", "at least 16 characters")
    result = run_cli("bench", "serve", "--model", str(tiny_onnx), "--url", "http://127.0.0.1:9",
                     "--server-workers", "2")
    assert_one_line_error(result, "--server-workers/--server-threads", "foldwise serve --workers/--threads")


def test_bench_serve_prints_the_comparison(tiny_onnx: Path, tmp_path: Path) -> None:
    result = run_cli("bench", "serve", "--model", str(tiny_onnx), "--threads", "1", "--concurrency", "1",
                     "--concurrency", "8", "--size", "1", "--size", "16", "--images", "32", "--seconds", "5",
                     "--offline-images", "64", "--soak-seconds", "2", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [ln.split() for ln in lines if ln.split()[:2] in (["1", "1"], ["1", "8"], ["16", "1"], ["16", "8"])]
    assert len(rows) == 4 and all(float(r[3]) > 0 and float(r[4]) > 0 and r[5].endswith("x")
                                  for r in rows), result.stdout
    assert any(ln.startswith("offline = `foldwise predict` (.npy, batch 256") for ln in lines)
    assert any(ln.startswith("concurrency 1: p99") for ln in lines)
    assert any(ln.startswith("memory over") and "server RSS start" in ln for ln in lines)
    record = json.loads((tmp_path / "bench" / "serve.json").read_text())  # pipeline/bench/record.py
    assert record["bench"] == "serve" and record["command"].startswith("foldwise bench serve")
    assert "cores" in record["cpu"]
    saved = record["result"]
    assert len(saved["scenarios"]) == 4 and len(saved["offline"]) == 5 and saved["soak"]["requests"] > 0
