"""`foldwise predict` (any held-out set, one machine or a Ray cluster) and `foldwise serve` (HTTP).

    foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv
    foldwise serve --model models/ensemble.onnx --port 8000
"""
from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.app import app
from serve.errors import UserError

PANEL = "Inference"

@app.command(rich_help_panel=PANEL)
def predict(
    model: Path = typer.Option(..., "--model", "-m", help="ONNX ensemble written by `foldwise export`, or "
                               "models/export.json: the fastest graph within export.predict_tolerance OOF of fp32."),
    input: Path = typer.Option(..., "--input", "-i", help="Pixel CSV (id + pixel columns) or uint8 .npy [N,H,W(,C)]."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV to write: id,label."),
    ids: Path | None = typer.Option(None, help="For .npy input: CSV whose id column names the rows."),
    sample: Path | None = typer.Option(None, help="Sample submission: order rows like it and validate."),
    probs: Path | None = typer.Option(None, help="Also write class probabilities to this CSV."),
    batch_size: int | None = typer.Option(None, help="Images per onnxruntime call \\[default: 256]."),
    provider: str | None = typer.Option(None, help="auto | cpu | cuda \\[default: auto]."),
    threads: int | None = typer.Option(None, help="CPU threads: one single-threaded onnxruntime session each, "
                                                  "running equal slices of every batch \\[default: all cores]."),
    chunk_rows: int = typer.Option(4096, help="Rows read, predicted and written (resumably) at a time."),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="Fail instead of falling back to the CPU."),
    config: Path | None = typer.Option(None, help="Take defaults from this params file's `predict` section."),
    ray: bool = typer.Option(False, "--ray", help="Distributed over a Ray cluster (Ray Data, onnxruntime actors); "
                             "--input may then be a glob or a folder of shards (needs the \\[ray] extra)."),
    address: str | None = typer.Option(None, help="--ray: cluster address \\[default: RAY_ADDRESS, else local]."),
    workers: int | None = typer.Option(None, help="--ray: onnxruntime actors \\[default: one per GPU, else "
                                          "CPUs / threads]."),
    shard_rows: int = typer.Option(4096, help="--ray: images per shard when a folder of images is split."),
) -> None:
    """Predict a held-out set with the ONNX ensemble (onnxruntime only, no torch).

    Streams the input in chunks; if killed, the same command continues where it stopped.
    With --ray, shards of the input are predicted on a Ray cluster, finished shards are kept
    (a run started again skips them), and the output is byte-identical to a one-machine run.

    Examples:
      foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv
      foldwise predict --model models/export.json --input test.csv --output preds.csv   (export's choice of graph)
      foldwise predict --ray --model models/ensemble.onnx --input 'test/*.csv' --output preds.csv
    """
    from pipeline.core.config import build, load_section
    from pipeline.export.params import PredictParams
    from serve.paths import refuse_overwrite
    from serve.predict import PARTIAL_SUFFIXES, predict_file

    if ray:
        _predict_ray(model, str(input), output, ids, sample, probs, batch_size, provider, threads, chunk_rows,
                     require_gpu, config, address, workers, shard_rows)
        return
    refuse_overwrite({"--output": output, "--probs": probs},
                     {"--input": input, "--ids": ids, "--sample": sample, "--model": model, "--config": config},
                     partial_suffixes=PARTIAL_SUFFIXES)
    p = load_section("predict", PredictParams, config) if config else build(PredictParams, {}, "predict")
    chosen = build(PredictParams, {"batch_size": batch_size if batch_size is not None else p.batch_size,
                                   "provider": provider or p.provider,
                                   "threads": threads if threads is not None else p.threads},
                   "predict", "command line")
    result = predict_file(model, input, output, ids_path=ids, sample=sample, batch_size=chosen.batch_size,
                          provider=chosen.provider, threads=chosen.threads, probs_output=probs,
                          chunk_rows=chunk_rows, require_gpu=require_gpu)
    typer.echo(result.summary(output))


def _predict_ray(model: Path, input_spec: str, output: Path, ids: Path | None, sample: Path | None,
                 probs: Path | None, batch_size: int | None, provider: str | None, threads: int | None,
                 chunk_rows: int, require_gpu: bool, config: Path | None, address: str | None,
                 workers: int | None, shard_rows: int) -> None:
    """`foldwise predict --ray`: pipeline/distributed/ray_predict.py."""
    from pipeline.core.config import build, load_section
    from pipeline.distributed.ray_predict import predict_distributed
    from pipeline.export.params import PredictParams

    if ids is not None or require_gpu:
        raise UserError("--ray takes pixel CSVs or image folders (no --ids) and picks GPUs itself (no --require-gpu)")
    p = load_section("predict", PredictParams, config) if config else build(PredictParams, {}, "predict")
    result = predict_distributed(model, input_spec, output, sample=sample, probs_output=probs, address=address,
                                 workers=workers, threads=threads if threads is not None else p.threads,
                                 provider=provider or p.provider,
                                 batch_size=batch_size if batch_size is not None else p.batch_size,
                                 shard_rows=shard_rows, chunk_rows=chunk_rows)
    typer.echo(f"wrote {output}: {result['rows']} rows from {result['shards']} shards ({result['ran']} run now, "
               f"{result['shards'] - result['ran']} already done) on {len(result['nodes'])} Ray node(s) "
               f"in {result['seconds']:.0f} s")


@app.command(rich_help_panel=PANEL)
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="ONNX ensemble written by `foldwise export`."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (any non-loopback one needs --token-file)."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int | None = typer.Option(None, help="Server processes (one onnxruntime session and batcher each) "
                                                  "\\[default: 2 on a CPU of 2 or more cores; with --threads, "
                                                  "cores // threads, at most 4; 1 on a GPU]."),
    max_batch: int = typer.Option(64, help="Images per onnxruntime run formed by the dynamic batcher."),
    max_delay_ms: float = typer.Option(5.0, help="Longest wait for a batch to fill, from its first request."),
    max_queue: int = typer.Option(2048, help="Images waiting for the batcher; a request beyond gets 429."),
    max_images: int = typer.Option(1024, help="Images (or CSV rows) in one request."),
    max_body_mb: float = typer.Option(64.0, help="Request body size limit (MiB), job uploads aside."),
    max_upload_mb: float = typer.Option(4096.0, help="A job's uploaded file size limit (MiB)."),
    max_pixels: int = typer.Option(40_000_000, help="Pixels of one image before decoding (decompression bombs)."),
    token_file: Path | None = typer.Option(None, help="File holding the bearer token clients must send."),
    data_root: Path | None = typer.Option(None, help="Jobs may name server-side files only under this folder."),
    jobs_dir: Path = typer.Option(Path("jobs"), help="Where jobs (inputs, state, results) are kept."),
    job_chunk_rows: int = typer.Option(4096, help="Rows a job predicts and checkpoints at a time."),
    job_batch_size: int = typer.Option(256, help="Images per onnxruntime run inside a job."),
    model_name: str | None = typer.Option(None, help="Model name in /v2/models/<name> \\[default: the file's stem]."),
    provider: str = typer.Option("auto", help="auto | cpu | cuda."),
    threads: int | None = typer.Option(None, help="onnxruntime intra-op threads per worker \\[default: all cores, "
                                                  "or 2 x cores / --workers if that is fewer]."),
    small_batch: int | None = typer.Option(None, help="Batches of fewer images run on a single-threaded second "
                                                      "session (0: off) \\[default: 32 with several multi-threaded "
                                                      "CPU workers, else 0]."),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="Fail instead of falling back to the CPU."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="One JSON line per request on stderr."),
    spinning: bool = typer.Option(False, "--spinning/--no-spinning", help="Let onnxruntime threads spin-wait between "
                                                                         "runs (off: that CPU goes to HTTP work)."),
) -> None:
    """HTTP server over the ONNX ensemble: KServe v2 / Triton protocol, /predict, batch jobs, /metrics.

    Concurrent requests are merged into onnxruntime batches (dynamic batching); jobs survive a
    restart (they continue after their last finished chunk). Stop with Ctrl-C or SIGTERM (graceful).

    Example: foldwise serve --model models/ensemble.onnx --port 8000
             curl -F file=@shoe.png http://127.0.0.1:8000/predict
    """
    from serve.engine import PROVIDERS
    from serve.http.config import ServeConfig
    from serve.http.server import run

    if provider not in PROVIDERS:
        raise UserError(f"--provider {provider!r}: use {', '.join(PROVIDERS[:-1])} or {PROVIDERS[-1]}")
    run(ServeConfig(model=str(model), model_name=model_name, host=host, port=port, workers=workers,
                    provider=provider, threads=threads, small_batch=small_batch, require_gpu=require_gpu,
                    max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue, max_images=max_images,
                    max_body_mb=max_body_mb, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                    token_file=str(token_file) if token_file else None,
                    data_root=str(data_root) if data_root else None, jobs_dir=str(jobs_dir),
                    job_chunk_rows=job_chunk_rows, job_batch_size=job_batch_size, access_log=access_log,
                    spinning=spinning),
        announce=typer.echo)


