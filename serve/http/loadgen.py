"""A bounded async load generator for the v2 infer endpoint (aiohttp), and the server's own numbers.

    body, headers = infer_body("images", images)                 # binary tensor extension
    result = run_async(run_load(url, "ensemble", body, headers, images=1, concurrency=64,
                                  max_requests=3000, max_seconds=20))
    result.images_per_second, result.percentile(99)

Every run is bounded in requests and in time (no request is sent after `max_seconds`; those in
flight are awaited) and only loopback addresses are accepted as targets.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import uvloop
from prometheus_client.parser import text_string_to_metric_families

HEADER_LENGTH = "Inference-Header-Content-Length"


def run_async(coro):
    """asyncio.run on uvloop (uvicorn[standard] installs it; the server runs on it too): the client's
    CPU per request is ~10% lower, and on one machine it competes with the server it measures."""
    return uvloop.run(coro)


def check_loopback(url: str) -> None:
    """ValueError unless `url`'s host resolves only to loopback addresses."""
    host = urlsplit(url).hostname or ""
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"{url}: load tests target this machine only (127.0.0.1, localhost, ::1)")


def infer_body(input_name: str, images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A v2 infer request as tritonclient sends it: JSON header, then the raw uint8 tensor."""
    head = json.dumps({"inputs": [{"name": input_name, "shape": list(images.shape), "datatype": "UINT8",
                                   "parameters": {"binary_data_size": images.nbytes}}],
                       "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}).encode()
    return head + np.ascontiguousarray(images).tobytes(), {HEADER_LENGTH: str(len(head)),
                                                           "Content-Type": "application/octet-stream"}


@dataclass
class LoadResult:
    concurrency: int
    images_per_request: int
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.requests * self.images_per_request / max(self.seconds, 1e-9)

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


async def run_load(url: str, model: str, body: bytes, headers: dict[str, str], images: int, concurrency: int,
                   max_requests: int, max_seconds: float, token: str | None = None,
                   on_tick=None) -> LoadResult:
    """`concurrency` clients each sending the same request until `max_requests` or `max_seconds`."""
    check_loopback(url)
    headers = dict(headers)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    endpoint = f"{url.rstrip('/')}/v2/models/{model}/infer"
    result = LoadResult(concurrency, images)
    issued = 0
    timeout = aiohttp.ClientTimeout(total=max(600.0, max_seconds * 4))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    start = time.perf_counter()
    deadline = start + max_seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            async with session.post(endpoint, data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    result.latencies.append(time.perf_counter() - t0)
                    result.requests += 1
                else:
                    result.errors[response.status] = result.errors.get(response.status, 0) + 1
            if on_tick is not None:
                on_tick(result)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


async def _get(url: str, token: str | None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(url, headers=headers) as response:
            response.raise_for_status()
            return await response.text()


def get_json(url: str, token: str | None = None) -> dict:
    check_loopback(url)
    return json.loads(run_async(_get(url, token)))


def batch_stats(url: str, token: str | None = None) -> dict[str, float]:
    """The server's batch histograms: sums and counts of foldwise_batch_size / foldwise_batch_seconds."""
    check_loopback(url)
    text = run_async(_get(f"{url.rstrip('/')}/metrics", token))
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("foldwise_batch_size", "foldwise_batch_seconds"):
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    out[sample.name] = sample.value
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a multi-worker server's uvicorn workers), from /proc; parents first."""
    tree, i = [pid], 0
    while i < len(tree):
        for tid in threads_of(tree[i]):
            with contextlib.suppress(OSError):
                tree += [int(c) for c in Path(f"/proc/{tree[i]}/task/{tid}/children").read_text().split()]
        i += 1
    return tree


def threads_of(pid: int) -> list[str]:
    """The thread ids of process `pid` (/proc/<pid>/task); none once it has ended."""
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:  # the process ended meanwhile
        return []


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` and its descendants in MiB (Linux /proc)."""
    total, found = 0.0, False
    for p in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total, found = total + int(line.split()[1]) / 1024, True
    if not found:
        raise ProcessLookupError(pid)
    return total
