"""The ASGI app of `foldwise serve`: Open Inference Protocol, /predict, jobs, metrics (FastAPI).

    foldwise serve --model models/ensemble.onnx --port 8000
    app = create_app(ServeConfig(model="models/ensemble.onnx"))    # what uvicorn runs

Endpoints (all JSON errors `{"error": "..."}`; every one but the health probes needs the bearer
token when --token-file is given):
  GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/{name}[/versions/1][/ready|/config]
  POST /v2/models/{name}[/versions/1]/infer        KServe v2 / Triton inference (JSON or binary tensors;
                                                   serve/http/fastpath.py answers it, ahead of FastAPI)
  POST /predict                                    image files or a pixel CSV -> CSV / JSON
  POST /jobs, GET /jobs, GET|DELETE /jobs/{id}, GET /jobs/{id}/result     batch jobs
  GET  /metrics                                    Prometheus
One onnxruntime session per process, shared by the dynamic batcher and the job runner. At
shutdown (SIGINT/SIGTERM) the server stops taking requests (ready -> 503), answers those in
flight, checkpoints a running job after its current chunk and drains the batcher.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from serve.atomic import sha256_file
from serve.engine import Engine
from serve.http import errors, protocol
from serve.http.batcher import Closed, DynamicBatcher, QueueFull
from serve.http.config import ServeConfig, read_token
from serve.http.errors import ApiError
from serve.http.fastpath import InferFastPath
from serve.http.jobs import JobRunner, JobStore
from serve.http.metrics import AccessLog, Metrics, setup_access_log
from serve.http.security import BearerAuth, BodyLimit, resolve_under
from serve.http.simple import PredictInputs, render
from serve.images import usable_cores
from serve.logs import setup_logging

_logger = logging.getLogger("foldwise.serve")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


class Service:
    """Everything one server process holds: session, batcher, jobs, metrics."""

    def __init__(self, config: ServeConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or Engine(config.model, provider=config.provider, threads=config.threads,
                                       require_gpu=config.require_gpu, spinning=config.spinning,
                                       small_batch=config.small_batch or 0)
        self.name = config.name
        self.metrics = Metrics(self.name, self.engine.provider)
        self.batcher = DynamicBatcher(self.engine.predict, config.max_batch, config.max_delay_ms / 1000,
                                      config.max_queue, on_batch=self.metrics.batch_done,
                                      on_queue=self.metrics.queue_images.set)
        extra = {"max_batch": config.max_batch, "max_delay_ms": config.max_delay_ms, "workers": config.workers or 1,
                 "threads": config.threads or usable_cores(), "small_batch": self.engine.small_batch,
                 "model_sha256": sha256_file(config.model)}
        self.card = protocol.ModelCard.of(self.engine, self.name, config.max_images, extra)
        self.inputs = PredictInputs(self.engine, config.max_images, config.max_pixels)
        self.store = JobStore(Path(config.jobs_dir))
        self.runner = JobRunner(self.store, self.engine, self.batcher, Path(config.model), config.job_chunk_rows,
                                config.job_batch_size, self.metrics)
        self.data_root = Path(config.data_root).resolve() if config.data_root else None
        self.ready = False

    def start(self) -> None:
        self.batcher.start()
        self.runner.start()
        self.ready = True
        c = self.config
        _logger.info("model %s (%s) on %s; max batch %d, max delay %g ms, queue %d images; jobs in %s",
                     self.name, c.model, self.engine.provider, c.max_batch, c.max_delay_ms, c.max_queue, c.jobs_dir)

    def stop(self) -> None:
        self.ready = False
        self.runner.stop()      # a running job checkpoints after its chunk (it needs the batcher until then)
        self.batcher.close()    # queued requests are answered, then the worker ends
        self.inputs.pool.shutdown(wait=False)
        _logger.info("stopped: %d batches, %d images", self.batcher.batches, self.batcher.batched_images)

    async def infer(self, images):
        if not self.ready:
            raise ApiError(503, "the server is shutting down")
        try:
            return await self.batcher.infer(images)
        except QueueFull as exc:
            raise ApiError(429, str(exc), {"Retry-After": "1"}) from None
        except Closed as exc:
            raise ApiError(503, str(exc)) from None


def _v2_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        if not svc.ready:
            raise ApiError(503, "not ready (starting or shutting down)")
        return JSONResponse({"ready": True})

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "foldwise", "version": "0.1.0", "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict:
        protocol.check_model(svc.card, name, version)
        return svc.card.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        protocol.check_model(svc.card, name, version)
        if not svc.ready:
            raise ApiError(503, f"model '{name}' is not ready (starting or shutting down)")
        return JSONResponse({"name": name, "ready": True})

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> dict:
        protocol.check_model(svc.card, name, version)
        meta = svc.card.metadata()
        return {"name": name, "platform": meta["platform"], "max_batch_size": svc.config.max_images,
                "input": meta["inputs"], "output": meta["outputs"],
                "dynamic_batching": {"preferred_batch_size": [svc.config.max_batch],
                                     "max_queue_delay_microseconds": int(svc.config.max_delay_ms * 1000)}}


def _people_routes(app: FastAPI, svc: Service) -> None:
    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Image files (multipart `file` fields, or one image body) or a pixel CSV -> id, label, probabilities."""
        ids, images = await svc.inputs.parse(request)
        request.state.images = len(images)
        probs = await svc.infer(images)
        return render(svc.engine.info, ids, probs, request, svc.name, svc.engine.provider)

    @app.post("/jobs", status_code=202)
    async def create_job(request: Request) -> JSONResponse:
        """A pixel CSV / .npy upload (multipart `file`, or the raw body with ?name=test.csv), or
        JSON {"path": "relative/to/data-root"} (a CSV, .npy or image folder) -> the queued job."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        loop = asyncio.get_running_loop()
        if ctype == "application/json":
            try:
                payload = await request.json()
            except ValueError:
                raise ApiError(400, "body is not valid JSON") from None
            path = payload.get("path") if isinstance(payload, dict) else None
            if not isinstance(path, str):
                raise ApiError(400, 'send {"path": "<file or folder under --data-root>"}')
            if svc.data_root is None:
                raise ApiError(400, "this server has no --data-root: upload the file instead")
            target = await loop.run_in_executor(None, resolve_under, svc.data_root, path)
            job = await loop.run_in_executor(None, svc.store.create_from_path, target, path)
        elif ctype == "multipart/form-data":
            async with request.form(max_files=1, max_fields=4) as form:  # the spooled upload is closed after
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise ApiError(400, "no file: send -F file=@test.csv")
                job = await loop.run_in_executor(None, svc.store.create_from_file, upload.file, upload.filename or "")
        else:
            name = request.query_params.get("name")
            if not name:
                raise ApiError(415, "send multipart/form-data (-F file=@test.csv), JSON {\"path\": ...}, "
                                    "or the raw file with ?name=test.csv")
            job = await svc.store.create_from_stream(request.stream(), name)  # to disk as it arrives
        request.state.job = job["id"]
        svc.runner.wake.set()
        return JSONResponse(job, status_code=202, headers={"Location": f"/jobs/{job['id']}"})

    @app.get("/jobs")
    async def list_jobs() -> dict:
        return {"jobs": svc.store.all()}

    @app.get("/jobs/{job_id}")
    async def job_state(job_id: str) -> dict:
        return svc.store.read(job_id)

    @app.get("/jobs/{job_id}/result")
    async def job_result(job_id: str) -> FileResponse:
        return FileResponse(svc.store.result(job_id), media_type="text/csv", filename=f"{job_id}.csv")

    @app.delete("/jobs/{job_id}")
    async def delete_job(job_id: str) -> dict:
        return svc.store.delete(job_id)

    @app.get("/metrics")
    async def metrics() -> Response:
        content, ctype = svc.metrics.exposition()
        return Response(content, media_type=ctype)


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The app for `config` (opens the model unless `engine` is given); wrapped in auth, limits, logs."""
    svc = Service(config, engine)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        svc.start()
        ticker = asyncio.create_task(_tick(svc))
        try:
            yield
        finally:
            ticker.cancel()
            await asyncio.get_running_loop().run_in_executor(None, svc.stop)

    app = FastAPI(title="foldwise serve", version="0.1.0", lifespan=lifespan,
                  description="Open Inference Protocol (KServe v2) and simple endpoints over a foldwise ONNX ensemble.")
    app.state.service = svc
    errors.install(app)
    _v2_routes(app, svc)
    _people_routes(app, svc)
    # POST .../infer is answered by InferFastPath (innermost: the auth, limits and logs below wrap it)
    max_body = int(config.max_body_mb * 2**20)
    app.add_middleware(InferFastPath, service=svc, body_limit=max_body)
    app.add_middleware(BodyLimit, max_body=max_body,
                       max_upload=int(config.max_upload_mb * 2**20), upload_paths=("/jobs",))
    if config.token_file:
        app.add_middleware(BearerAuth, token=read_token(config.token_file), open_paths=OPEN_PATHS)
    app.add_middleware(AccessLog, metrics=svc.metrics, enabled=config.access_log)
    return app


async def _tick(svc: Service) -> None:
    while True:
        await asyncio.sleep(1.0)
        svc.metrics.tick()


def app_from_env() -> FastAPI:
    """uvicorn's factory in worker processes (`foldwise serve --workers N`)."""
    stop_with_parent()
    config = ServeConfig.from_env()
    setup_logging()  # a spawned worker has none of the CLI's set-up: log like the parent
    setup_access_log(config.access_log)
    return create_app(config)


def stop_with_parent() -> None:
    """Ask Linux for SIGTERM when the supervising process dies (a `kill -9` of `foldwise serve`, the OOM
    killer): the worker then stops gracefully (jobs checkpointed) instead of serving on as an orphan."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        _logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this worker outlives a killed parent",
                        ctypes.get_errno())
    elif os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
