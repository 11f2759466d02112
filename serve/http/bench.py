"""`foldwise bench serve`: the HTTP server under load next to offline `foldwise predict`, in one run.

    foldwise bench serve --model models/ensemble.onnx --soak-seconds 600
    foldwise bench serve --model models/ensemble.onnx --server-workers 1 --server-threads 2   # another placement

Starts `foldwise serve` on a free 127.0.0.1 port with its default placement of worker processes
and threads unless --server-workers/--server-threads say otherwise (or uses --url, loopback only),
then:
  1. for each request size (1 and 256 images) and concurrency (1, 8, 64): a bounded run of v2
     binary-tensor requests (aiohttp): throughput, p50/p95/p99 latency, and from the server's
     /metrics the mean batch the dynamic batcher formed and its onnxruntime seconds, and the CPU
     milliseconds per request of the load generator and (a server it started) of the server's
     event-loop threads (one per worker process) and of all its threads: on one machine HTTP's CPU
     is taken from onnxruntime, so offline x compute / (compute + HTTP) bounds the ratio;
  2. between every two scenarios (and before the first), offline `foldwise predict`
     (serve.predict.predict_file, same model, --threads: all cores by default) on random uint8
     images in a .npy, with onnxruntime's spin-waiting on (predict's default) and off (the
     server's): a scenario's reference is the mean of the runs just before and just after it, in
     the better mode, so a change in the machine's load hits both sides of the ratio alike;
  3. a soak (default 10 minutes at concurrency 64, single images) sampling the server's RSS.
Results are printed and written to bench/serve.json. Nothing here asserts: the numbers are ratios
measured side by side, with the machine's load average beside them (other work shares the CPU).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from serve.http.loadgen import batch_stats, get_json, infer_body, process_tree, rss_mib, run_async, run_load, threads_of

_logger = logging.getLogger(__name__)


def cpu_description() -> str:
    """CPU model and the SIMD flags that matter to onnxruntime, from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
             if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags {' '.join(shown) or '-'}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`foldwise serve` in a subprocess on a free loopback port, its log in `log`."""

    def __init__(self, model: Path, workers: int | None, threads: int | None, max_batch: int, max_delay_ms: float,
                 max_queue: int, max_images: int, workdir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "pipeline.cli", "serve", "--model", str(model), "--port", str(self.port),
                "--max-batch", str(max_batch), "--max-delay-ms", str(max_delay_ms), "--max-queue", str(max_queue),
                "--max-images", str(max_images), "--jobs-dir", str(workdir / "jobs")]
        args += ["--workers", str(workers)] if workers else []
        args += ["--threads", str(threads)] if threads else []
        self.log = open(log, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"foldwise serve exited with {self.proc.returncode}; see {log}")
            try:
                get_json(f"{self.url}/v2/health/ready")
                return
            except Exception:  # noqa: BLE001  (not listening yet)
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"foldwise serve was not ready within 120 s; see {log}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def offline_rate(model: Path, shape: tuple[int, int, int], threads: int | None, n: int, workdir: Path,
                 spinning: bool) -> float:
    """images/s of `foldwise predict` (predict_file, batch 256) over `n` random images in a .npy."""
    from serve.engine import Engine
    from serve.predict import predict_file

    c, h, w = shape
    npy, out = workdir / "offline.npy", workdir / "offline.csv"
    if not npy.exists():
        np.save(npy, np.random.default_rng(0).integers(0, 256, (n, h, w, c), dtype=np.uint8))
    out.unlink(missing_ok=True)
    with Engine(model, threads=threads, spinning=spinning, data_parallel=True) as engine:  # as predict opens it
        return predict_file(model, npy, out, batch_size=256, engine=engine).images_per_second


def offline_pair(model: Path, shape, threads: int | None, n: int, workdir: Path) -> dict[str, float]:
    """Offline images/s with onnxruntime's spin-waiting on (predict's default) and off (the server's)."""
    return {"spinning": offline_rate(model, shape, threads, n, workdir, True),
            "no_spinning": offline_rate(model, shape, threads, n, workdir, False)}


def cpu_seconds(pid: int | None) -> dict[str, float]:
    """CPU seconds so far: this process (the load generator), and where `pid` (the server) is known,
    the main threads of it and its worker processes (uvicorn's event loops: HTTP, parsing, encoding)
    and all their threads (onnxruntime too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"client": usage.ru_utime + usage.ru_stime}
    if pid is not None:
        tick = os.sysconf("SC_CLK_TCK")
        out["server_event_loop"] = out["server_all"] = 0.0
        for process in process_tree(pid):
            for tid in threads_of(process):  # a process that ended meanwhile counts no more
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{process}/task/{tid}/stat").read_text()
                    fields = stat[stat.rindex(")") + 2:].split()
                    seconds = (int(fields[11]) + int(fields[12])) / tick   # utime + stime
                    out["server_all"] += seconds
                    if tid == str(process):
                        out["server_event_loop"] += seconds
    return out


def _scenario(url: str, name: str, input_name: str, shape, size: int, concurrency: int, images_budget: int,
              seconds: float, token: str | None, server_pid: int | None = None) -> dict:
    c, h, w = shape
    images = np.random.default_rng(size).integers(0, 256, (size, c, h, w), dtype=np.uint8)
    body, headers = infer_body(input_name, images)
    run_async(run_load(url, name, body, headers, size, min(concurrency, 4), min(concurrency, 4), 60, token))
    before, cpu_before = batch_stats(url, token), cpu_seconds(server_pid)
    requests = max(concurrency, math.ceil(images_budget / size))
    r = run_async(run_load(url, name, body, headers, size, concurrency, requests, seconds, token))
    cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(server_pid).items()}
    after = batch_stats(url, token)
    batches = after["foldwise_batch_size_count"] - before["foldwise_batch_size_count"]
    batched = after["foldwise_batch_size_sum"] - before["foldwise_batch_size_sum"]
    compute = after["foldwise_batch_seconds_sum"] - before["foldwise_batch_seconds_sum"]
    return {"images_per_request": size, "concurrency": concurrency, "requests": r.requests,
            "seconds": round(r.seconds, 2), "images_per_second": r.images_per_second,
            "p50_ms": r.percentile(50), "p95_ms": r.percentile(95), "p99_ms": r.percentile(99),
            "mean_batch": batched / batches if batches else float("nan"),
            "mean_batch_compute_ms": 1000 * compute / batches if batches else float("nan"),
            "errors": {str(k): v for k, v in r.errors.items()}, "load_average": load_average(),
            # CPU ms per request: what HTTP costs on the machine onnxruntime shares (the batch-time rest)
            **{f"cpu_ms_per_request_{k}": 1000 * v / max(r.requests, 1) for k, v in cpu.items()}}


def _soak(server: ServerProcess, name: str, input_name: str, shape, seconds: float, concurrency: int,
          token: str | None, every: float = 5.0) -> dict:
    c, h, w = shape
    body, headers = infer_body(input_name, np.random.default_rng(7).integers(0, 256, (1, c, h, w), dtype=np.uint8))
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss_mib(server.pid)))
            stop.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    r = run_async(run_load(server.url, name, body, headers, 1, concurrency, 10_000_000, seconds, token))
    stop.set()
    sampler.join()
    samples.append((time.monotonic() - t0, rss_mib(server.pid)))
    rss = [m for _, m in samples]
    warm = [m for t, m in samples if t >= min(60.0, seconds / 4)] or rss
    return {"seconds": round(r.seconds, 1), "requests": r.requests, "images_per_second": r.images_per_second,
            "p99_ms": r.percentile(99), "errors": {str(k): v for k, v in r.errors.items()},
            "rss_start_mib": rss[0], "rss_after_warmup_mib": warm[0], "rss_end_mib": rss[-1], "rss_max_mib": max(rss),
            "growth_after_warmup_mib": rss[-1] - warm[0], "samples": [(round(t, 1), round(m, 1)) for t, m in samples],
            "load_average": load_average()}


def bench_serve(model: Path, threads: int | None = None, server_workers: int | None = None,
                server_threads: int | None = None, max_batch: int = 64, max_delay_ms: float = 5.0,
                concurrencies: tuple[int, ...] = (1, 8, 64), sizes: tuple[int, ...] = (1, 256),
                images_budget: int = 4096, seconds: float = 30.0, offline_images: int = 1024,
                soak_seconds: float = 600.0, soak_concurrency: int = 64, url: str | None = None,
                token: str | None = None, progress=print) -> dict:
    """Run the whole comparison; returns everything measured (see the module docstring)."""
    model = Path(model)
    with tempfile.TemporaryDirectory(prefix="foldwise-bench-serve-") as tmp:
        workdir = Path(tmp)
        server = None
        if url is None:
            max_queue = max(2048, max(concurrencies) * max(sizes))
            server = ServerProcess(model, server_workers, server_threads, max_batch, max_delay_ms, max_queue,
                                   max(sizes), workdir, Path("bench") / "serve-server.log" if Path("bench").is_dir()
                                   else workdir / "server.log")
            url = server.url
        try:
            health = get_json(f"{url}/v2", token)
            name = model.stem
            meta = get_json(f"{url}/v2/models/{name}", token)
            shape = tuple(meta["inputs"][0]["shape"][1:])
            params = meta["parameters"]
            result = {"model": str(model), "server": health["name"], "provider": params["provider"],
                      "threads": threads, "server_workers": params.get("workers"),
                      "server_threads": params.get("threads"), "max_batch": max_batch, "max_delay_ms": max_delay_ms,
                      "cpu": cpu_description(), "load_average_start": load_average(), "scenarios": []}
            progress(f"server {url}: model {name} on {result['provider']}, {result['server_workers']} worker(s) x "
                     f"{result['server_threads']} thread(s); load average {load_average()}")
            # each scenario sits between two offline runs; its reference is their mean (the better
            # onnxruntime mode), so a change in the machine's load hits both sides alike
            previous = offline_pair(model, shape, threads, offline_images, workdir)
            result["offline"] = [previous]
            progress(f"offline: {previous['spinning']:.0f} images/s "
                     f"({previous['no_spinning']:.0f} without spin-waiting)")
            for size in sizes:
                for conc in concurrencies:
                    row = _scenario(url, name, meta["inputs"][0]["name"], shape, size, conc, images_budget, seconds,
                                    token, server.pid if server is not None else None)
                    following = offline_pair(model, shape, threads, offline_images, workdir)
                    result["offline"].append(following)
                    row["offline_images_per_second"] = max((previous[m] + following[m]) / 2 for m in previous)
                    row["vs_offline"] = row["images_per_second"] / row["offline_images_per_second"]
                    result["scenarios"].append(row)
                    progress(f"  {size:>3} image(s) x concurrency {conc:>2}: {row['images_per_second']:.0f} images/s "
                             f"({row['vs_offline']:.2f}x offline {row['offline_images_per_second']:.0f}), p99 "
                             f"{row['p99_ms']:.0f} ms, mean batch {row['mean_batch']:.1f}; CPU ms per request: "
                             + ", ".join(f"{k.removeprefix('cpu_ms_per_request_')} {v:.2f}" for k, v in row.items()
                                         if k.startswith("cpu_ms_per_request_")))
                    previous = following
            if soak_seconds > 0 and server is not None:
                progress(f"soak: {soak_seconds:.0f} s at concurrency {soak_concurrency}, sampling the server's RSS")
                result["soak"] = _soak(server, name, meta["inputs"][0]["name"], shape, soak_seconds,
                                       soak_concurrency, token)
            result["load_average_end"] = load_average()
            return result
        finally:
            if server is not None:
                server.stop()
