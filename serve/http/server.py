"""Starting `foldwise serve`: check everything, open the model, run uvicorn.

    foldwise serve --model models/ensemble.onnx --host 127.0.0.1 --port 8000 --max-batch 64 --max-delay-ms 5

Mistakes (a missing model, a non-loopback --host without --token-file, --require-gpu on a CPU)
end as one `error:` line before anything listens. Workers and threads not given are placed by
`ServeConfig.placed` (on the CPU two workers, each with threads for every core; on a GPU one).
One worker: the app runs in this process on the session opened here. N workers: uvicorn starts N
processes, each with its own session and batcher (config passed through the environment;
Prometheus multiprocess mode for /metrics).
"""
from __future__ import annotations

import logging
import os
import signal
import tempfile

from serve.engine import Engine, choose_providers
from serve.http.app import create_app
from serve.http.config import ENV, ServeConfig
from serve.http.metrics import setup_access_log

_logger = logging.getLogger(__name__)


def _exit_after_graceful_stop(signum: int, frame) -> None:
    raise SystemExit(0)


def run(config: ServeConfig, announce=print) -> None:
    """Serve until SIGINT/SIGTERM (graceful), raising UserError for a bad setup."""
    import uvicorn

    config.validate()
    setup_access_log(config.access_log)
    config = config.placed(choose_providers(config.provider)[0])
    # with several workers this session only checks the model here (each worker opens its own):
    # no small-batch session for it
    engine = Engine(config.model, provider=config.provider, threads=config.threads, require_gpu=config.require_gpu,
                    spinning=config.spinning, small_batch=config.small_batch if config.workers == 1 else 0)
    auth = "bearer token required" if config.token_file else "no auth (loopback only)"
    announce(f"foldwise serve: model '{config.name}' ({config.model}) on {engine.provider}, "
             f"http://{config.host}:{config.port}, {config.workers} worker(s) x {config.threads or 'all'} onnxruntime "
             f"thread(s)"
             + (f" (batches under {config.small_batch} images on 1 thread)" if config.small_batch else "")
             + f", max batch {config.max_batch}, max delay {config.max_delay_ms:g} ms, {auth}")
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it found: make that
    # handler end the process normally (exit 0, `finally` blocks run) rather than die by the signal
    signal.signal(signal.SIGTERM, _exit_after_graceful_stop)
    common = dict(host=config.host, port=config.port, log_config=None, access_log=False,
                  timeout_graceful_shutdown=30, server_header=False, lifespan="on")
    if config.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(config, engine), **common)).run()
        return
    del engine  # each worker opens its own session
    os.environ[ENV] = config.to_json()
    with tempfile.TemporaryDirectory(prefix="foldwise-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # workers' metrics summed by /metrics
        uvicorn.run("serve.http.app:app_from_env", factory=True, workers=config.workers, **common)
