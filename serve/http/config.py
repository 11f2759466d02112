"""The server's settings, checked once: what `foldwise serve` was asked to run.

    config = ServeConfig(model="models/ensemble.onnx", max_batch=64, max_delay_ms=5)
    config.validate()                  # UserError naming the option, before anything starts
    os.environ[ENV] = config.to_json()  # how uvicorn worker processes receive it

Limits default to values a 2-core machine handles; every one is an option of `foldwise serve`.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from serve.errors import UserError
from serve.images import usable_cores

ENV = "FOLDWISE_SERVE_CONFIG"
AUTO_WORKERS = 2       # worker processes of `foldwise serve` on the CPU when neither --workers nor --threads is given
MAX_AUTO_WORKERS = 4   # at most this many when only --threads is given (each worker holds the model)
THREADS_PER_CORE = 2   # onnxruntime threads of all workers together per core, when only --workers is given
SMALL_BATCH = 32       # with several multi-threaded CPU workers: smaller batches run single-threaded


@dataclass
class ServeConfig:
    model: str
    model_name: str | None = None      # the v2 model name (default: the file's stem, e.g. "ensemble")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None         # uvicorn worker processes, one session and batcher each (None: placed())
    provider: str = "auto"
    threads: int | None = None         # onnxruntime intra-op threads per worker (None: placed())
    small_batch: int | None = None     # batches below this many images on a 1-thread session (0: off; None: placed())
    require_gpu: bool = False
    spinning: bool = False             # onnxruntime threads spin-wait between runs (off: CPU left to HTTP)
    max_batch: int = 64                # images per onnxruntime run formed by the dynamic batcher
    max_delay_ms: float = 5.0          # longest wait for a batch to fill, from its first request
    max_queue: int = 2048              # images waiting for the batcher; beyond: 429
    max_images: int = 1024             # images in one request
    max_body_mb: float = 64.0          # request body, except job uploads
    max_upload_mb: float = 4096.0      # a job's uploaded file
    max_pixels: int = 40_000_000       # pixels of one decoded image (decompression bombs)
    token_file: str | None = None      # bearer token; required to bind a non-loopback address
    data_root: str | None = None       # jobs may name server-side files only below this folder
    jobs_dir: str = "jobs"
    job_chunk_rows: int = 4096         # rows a job predicts (and checkpoints) at a time
    job_batch_size: int = 256          # images per onnxruntime run inside a job (as `foldwise predict`)
    access_log: bool = True

    @property
    def name(self) -> str:
        return self.model_name or Path(self.model).stem

    def validate(self) -> None:
        """UserError (naming the option) for a setting that cannot work."""
        given = {"--workers": self.workers, "--threads": self.threads}  # None: placed() decides
        positive = {"--max-batch": self.max_batch, "--max-queue": self.max_queue, "--max-images": self.max_images,
                    "--max-pixels": self.max_pixels, "--job-chunk-rows": self.job_chunk_rows,
                    "--job-batch-size": self.job_batch_size, **{k: v for k, v in given.items() if v is not None}}
        for option, value in positive.items():
            if value < 1:
                raise UserError(f"{option}: must be at least 1, got {value}")
        if self.small_batch is not None and self.small_batch < 0:
            raise UserError(f"--small-batch: must be 0 or more, got {self.small_batch}")
        if self.max_delay_ms < 0:
            raise UserError(f"--max-delay-ms: must be 0 or more, got {self.max_delay_ms:g}")
        if self.max_body_mb <= 0 or self.max_upload_mb <= 0:
            raise UserError("--max-body-mb and --max-upload-mb must be positive")
        if self.max_images > self.max_queue:
            raise UserError(f"--max-images {self.max_images} is above --max-queue {self.max_queue}: "
                            "such a request could never be queued")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port: {self.port} is not a TCP port")
        if not Path(self.model).is_file():
            raise UserError(f"{self.model}: model file not found")
        if self.token_file is None and not is_loopback(self.host):
            raise UserError(f"--host {self.host} is reachable from other machines: give --token-file "
                            "(bearer-token auth) or bind 127.0.0.1")
        if self.token_file is not None:
            read_token(self.token_file)
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise UserError(f"--data-root {self.data_root}: not a folder")
        if not self.name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise UserError(f"--model-name {self.name!r}: use letters, digits, '.', '_' and '-'")

    def placed(self, provider: str, cores: int | None = None) -> ServeConfig:
        """This config with workers and threads decided for `provider` (the session's execution provider) on
        `cores` usable cores (default: this process's); what is given stays.

        On a GPU: one worker (one session owns the device). On the CPU, neither given: AUTO_WORKERS processes,
        each with threads for every core, so one worker's event loop (HTTP, parsing, the batcher) overlaps the
        other's onnxruntime run and a lone large request still gets all cores (measured against 1 x cores and
        cores x 1: docs/results.md, "Serving placement"). --threads T alone: as many workers as fit in the
        cores (at most MAX_AUTO_WORKERS: each holds the model). --workers W alone: threads so that the workers
        together run at most THREADS_PER_CORE threads per core, at most all cores each. Several workers with
        several threads each: batches under SMALL_BATCH images run on a single-threaded second session
        (`Engine(small_batch=...)`), as they would with one thread per worker, while large ones keep every
        thread."""
        cores = cores or usable_cores()
        workers, threads = self.workers, self.threads
        if provider == "CUDAExecutionProvider":
            return replace(self, workers=workers or 1, small_batch=self.small_batch or 0)
        if workers is None:
            workers = min(cores, AUTO_WORKERS) if threads is None else max(1, min(cores // threads, MAX_AUTO_WORKERS))
        if threads is None and workers > 1:
            threads = max(1, min(cores, THREADS_PER_CORE * cores // workers))
        small_batch = self.small_batch
        if small_batch is None:
            small_batch = SMALL_BATCH if workers > 1 and (threads or cores) > 1 else 0
        return replace(self, workers=workers, threads=threads, small_batch=small_batch)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        d = json.loads(text)
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    @classmethod
    def from_env(cls) -> ServeConfig:
        if ENV not in os.environ:
            raise RuntimeError(f"{ENV} is not set (start the server with `foldwise serve`)")
        return cls.from_json(os.environ[ENV])


def read_token(path: str | os.PathLike) -> str:
    """The bearer token in `path` (surrounding whitespace dropped); UserError if missing, empty or short."""
    p = Path(path)
    try:
        token = p.read_text().strip()
    except FileNotFoundError:
        raise UserError(f"--token-file {p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--token-file {p}: cannot read it ({exc.__class__.__name__})") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise UserError(f"--token-file {p}: the token must be one word of at least 16 characters "
                        "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token


def is_loopback(host: str) -> bool:
    """True when `host` (a name or an address) resolves only to loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
