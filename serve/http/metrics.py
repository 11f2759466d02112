"""Prometheus metrics (prometheus-client) and one JSON access-log line per request.

    metrics = Metrics("ensemble", "CPUExecutionProvider")
    app = AccessLog(app, metrics)          # outermost middleware: sees every answer, 401s included
    GET /metrics                           # text exposition, e.g.
      foldwise_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"} 812
      foldwise_batch_size_bucket{le="64.0"} 130

What is measured: requests by route and status, request latency (histogram), the batch sizes the
dynamic batcher formed and their onnxruntime seconds (histograms), queue depth in images,
images predicted (counter) and images/s over the last 10 s, the provider (an info gauge).
With several worker processes prometheus-client's multiprocess mode sums them
(PROMETHEUS_MULTIPROC_DIR, set by `foldwise serve --workers N`).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACCESS_LOGGER = "foldwise.access"
_access = logging.getLogger(ACCESS_LOGGER)
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def setup_access_log(enabled: bool) -> None:
    """Access lines are JSON objects, one per line on stderr, without the usual log prefix."""
    log = logging.getLogger(ACCESS_LOGGER)
    log.handlers.clear()
    log.propagate = False
    if enabled:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    else:
        log.setLevel(logging.CRITICAL + 1)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class RateWindow:
    """Events per second over the last `seconds` (thread-safe)."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self.events: deque[tuple[float, int]] = deque()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.events.append((time.monotonic(), n))

    def rate(self) -> float:
        now = time.monotonic()
        with self.lock:
            while self.events and self.events[0][0] < now - self.seconds:
                self.events.popleft()
            return sum(n for _, n in self.events) / self.seconds


class Metrics:
    """The server's metrics, in a registry of their own (several apps may live in one process)."""

    def __init__(self, model: str, provider: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("foldwise_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=r)
        self.latency = Histogram("foldwise_request_seconds", "Time from request to response", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("foldwise_batch_size", "Images per onnxruntime run formed by the batcher",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("foldwise_batch_seconds", "onnxruntime seconds per batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_images = Gauge("foldwise_queue_images", "Images waiting for the batcher", registry=r,
                                  multiprocess_mode="livesum")
        self.images = Counter("foldwise_images", "Images predicted (requests and jobs)", registry=r)
        self.images_per_second = Gauge("foldwise_images_per_second", "Images predicted per second, last 10 s",
                                       registry=r, multiprocess_mode="livesum")
        self.provider = Gauge("foldwise_provider_info", "The onnxruntime execution provider in use",
                              ["model", "provider"], registry=r, multiprocess_mode="max")
        self.provider.labels(model=model, provider=provider).set(1)
        self.jobs = Counter("foldwise_jobs", "Batch jobs by how they ended", ["state"], registry=r)
        self.window = RateWindow()

    def batch_done(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.batch_seconds.observe(seconds)
        self.images.inc(images)
        self.window.add(images)
        self.images_per_second.set(self.window.rate())

    def tick(self) -> None:
        """Refresh the images/s gauge (called every second, so it falls to 0 when idle)."""
        self.images_per_second.set(self.window.rate())

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _client(scope: dict) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class AccessLog:
    """ASGI middleware: metrics for every request, and a JSON line on the `foldwise.access` logger."""

    def __init__(self, app, metrics: Metrics, enabled: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, sent, received = 500, 0, 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def capture(message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        scope.setdefault("state", {})
        try:
            await self.app(scope, counting_receive, capture)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(seconds)
            if self.enabled and _access.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                          "client": _client(scope), "method": scope["method"], "path": scope["path"],
                          "route": route, "status": status, "ms": round(seconds * 1000, 2),
                          "bytes_in": received, "bytes_out": sent}
                for key in ("images", "job", "error"):
                    if key in state:
                        record[key] = state[key]
                _access.info(json.dumps(record, separators=(",", ":")))
