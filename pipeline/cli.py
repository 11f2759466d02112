"""The `foldwise` command: one subcommand per DVC stage, plus predict and score for any test set.

    foldwise prepare
    foldwise train --fold 0
    foldwise predict --model models/ensemble.onnx --input test.csv --output preds.csv
    foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
    foldwise serve --model models/ensemble.onnx --port 8000

A user's mistake ends in one line `error: ...` and exit code 2; heavy imports (torch, timm)
happen inside the commands that need them.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from serve.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="foldwise: k-fold timm training with DVC and ONNX batch inference for Kaggle image classification.")
_logger = logging.getLogger("foldwise")


@app.callback()
def _setup(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
           verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if quiet:
        os.environ["FOLDWISE_QUIET"] = "1"  # progress bars off too
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in ("torch", "onnxscript", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def init(source: str = typer.Argument(..., help="The competition: a zip, a folder in Kaggle's layout, or a "
                                                 "Kaggle competition slug."),
         params: Path = typer.Option(Path("params.yaml"), help="Params file whose download and prepare sections "
                                                               "are written.")) -> None:
    """Inspect a competition and write params.yaml's `download` and `prepare` sections (comments kept).

    Detects the layout (pixel CSV, labels CSV + image folder, class folders), files, id and target
    columns, classes, image size and channels, submission kind and a metric guess; prints what it
    found and what to confirm. Then: dvc repro.

    Example: foldwise init ~/Downloads/aerial-cactus-identification.zip && dvc repro
    """
    from pipeline.initialize import run as run_init, summary

    found = run_init(source, params)
    for line in summary(found):
        typer.echo(line)
    typer.echo(f"{params}: set {', '.join(found['changed']) or 'nothing new'}; next: dvc repro")


@app.command()
def download() -> None:
    """Stage download: params `download` -> data/raw/competition.zip, data/raw/source.json.

    Example: foldwise download
    """
    from pipeline import sources
    sources.main()


@app.command()
def prepare() -> None:
    """Stage prepare: data/raw/competition.zip -> validated arrays and folds in data/prepared/.

    Example: foldwise prepare
    """
    from pipeline import prepare as stage
    stage.main()


@app.command()
def train(fold: Optional[int] = typer.Option(None, "--fold", "-k", help="Fold index (0-based)."),
          seed: Optional[int] = typer.Option(None, help="Seed [default: this fold's seed in train.folds]."),
          parallel: bool = typer.Option(False, "--parallel", help="Train every stale train@k at once on Ray, "
                                        "then record them in dvc.lock (needs the [ray] extra)."),
          address: Optional[str] = typer.Option(None, help="--parallel: Ray cluster [default: RAY_ADDRESS, "
                                                "else a local Ray on this machine]."),
          cpus_per_fold: Optional[float] = typer.Option(None, help="--parallel: CPUs (= torch threads) per fold "
                                                        "[default: the cluster's CPUs / stale folds]."),
          gpus_per_fold: Optional[float] = typer.Option(None, help="--parallel: GPUs per fold [default: 1 if the "
                                                        "cluster has GPUs, else 0]."),
          dry_run: bool = typer.Option(False, "--dry-run", help="--parallel: list the stale folds, train nothing."),
          sync_bn: bool = typer.Option(False, "--sync-bn", help="Under torchrun: SyncBatchNorm across the "
                                       "processes (CUDA).")) -> None:
    """Stage train@k: train one fold -> models/folds/fold<k>/ (weights, OOF probabilities, metrics).

    Resumes from models/checkpoints/fold<k>/last.pt when it belongs to the same params, seed and data.
    Under torchrun (WORLD_SIZE > 1) the fold is trained with DDP over all processes
    (pipeline/distributed/ddp.py). With --parallel, every stale fold stage is trained at once on Ray
    (pipeline/distributed/parallel_folds.py).

    Examples:
      foldwise train --fold 0 --seed 0
      foldwise train --parallel --cpus-per-fold 1
      torchrun --nproc-per-node 4 --no-python foldwise train --fold 0
    """
    if parallel:
        if fold is not None or seed is not None or sync_bn:
            raise UserError("--parallel trains every stale fold stage: drop --fold, --seed and --sync-bn")
        from pipeline.distributed.parallel_folds import main as parallel_main
        parallel_main(address=address, cpus_per_fold=cpus_per_fold, gpus_per_fold=gpus_per_fold, dry_run=dry_run)
        return
    if fold is None:
        raise UserError("--fold is required (or --parallel for every stale fold)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        from pipeline.distributed.ddp import main as ddp_main
        ddp_main(fold, seed, sync_bn=sync_bn)
        return
    if sync_bn:
        raise UserError("--sync-bn applies to DDP runs under torchrun (WORLD_SIZE > 1)")
    from pipeline import train as stage
    stage.main(fold, seed)


@app.command()
def ensemble() -> None:
    """Stage ensemble: OOF predictions of all folds -> metrics.json, models/ensemble.json.

    Example: foldwise ensemble
    """
    from pipeline import ensemble as stage
    stage.main()


@app.command()
def compare(plot: Optional[Path] = typer.Option(Path("experiments.png"), help="Bar plot of OOF vs public/local "
                                                                              "score per experiment.")) -> None:
    """DVC experiments side by side: changed params, OOF accuracy, public or local score.

    Example: dvc exp run --queue -n mlp -S train.model=foldwise_mlp && dvc queue start && foldwise compare
    """
    from pipeline.compare import main as run_compare
    run_compare(plot)


@app.command()
def report() -> None:
    """Stage report: reports/index.html (self-contained: curves, fold table, confusion matrix, image grids,
    export deltas, throughput, submission, environment) and its PNGs.

    Example: foldwise report && xdg-open reports/index.html
    """
    from pipeline import report as stage
    stage.main()


@app.command()
def export() -> None:
    """Stage export: fold models -> models/ensemble.onnx (one graph), parity-checked with onnxruntime.

    Example: foldwise export
    """
    from pipeline import export as stage
    stage.main()


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", "-m", help="ONNX ensemble written by `foldwise export`, or "
                               "models/export.json: the fastest graph within export.predict_tolerance OOF of fp32."),
    input: Path = typer.Option(..., "--input", "-i", help="Pixel CSV (id + pixel columns) or uint8 .npy [N,H,W(,C)]."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV to write: id,label."),
    ids: Optional[Path] = typer.Option(None, help="For .npy input: CSV whose id column names the rows."),
    sample: Optional[Path] = typer.Option(None, help="Sample submission: order rows like it and validate."),
    probs: Optional[Path] = typer.Option(None, help="Also write class probabilities to this CSV."),
    batch_size: Optional[int] = typer.Option(None, help="Images per onnxruntime call [default 256]."),
    provider: Optional[str] = typer.Option(None, help="auto | cpu | cuda [default auto]."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads [default: all cores]."),
    chunk_rows: int = typer.Option(4096, help="Rows read, predicted and written (resumably) at a time."),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="Fail instead of falling back to the CPU."),
    config: Optional[Path] = typer.Option(None, help="Take defaults from this params file's `predict` section."),
    ray: bool = typer.Option(False, "--ray", help="Distributed over a Ray cluster (Ray Data, onnxruntime actors); "
                             "--input may then be a glob or a folder of shards (needs the [ray] extra)."),
    address: Optional[str] = typer.Option(None, help="--ray: cluster address [default: RAY_ADDRESS, else local]."),
    workers: Optional[int] = typer.Option(None, help="--ray: onnxruntime actors [default: one per GPU, else "
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
    from pipeline.config import PredictParams, build, load_section
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
    resumed = f" (resumed after {result.resumed_rows})" if result.resumed_rows else ""
    typer.echo(f"wrote {output}: {result.rows} rows{resumed}, {result.images_per_second:.0f} images/s "
               f"on {result.provider}" + (f" with {result.model} ({result.why})" if result.why else ""))


def _predict_ray(model: Path, input_spec: str, output: Path, ids: Optional[Path], sample: Optional[Path],
                 probs: Optional[Path], batch_size: Optional[int], provider: Optional[str], threads: Optional[int],
                 chunk_rows: int, require_gpu: bool, config: Optional[Path], address: Optional[str],
                 workers: Optional[int], shard_rows: int) -> None:
    """`foldwise predict --ray`: pipeline/distributed/ray_predict.py."""
    from pipeline.config import PredictParams, build, load_section
    from pipeline.distributed.ray_predict import predict_distributed

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


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", "-m", help="ONNX ensemble written by `foldwise export`."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (any non-loopback one needs --token-file)."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(1, help="Server processes (one onnxruntime session and batcher each)."),
    max_batch: int = typer.Option(64, help="Images per onnxruntime run formed by the dynamic batcher."),
    max_delay_ms: float = typer.Option(5.0, help="Longest wait for a batch to fill, from its first request."),
    max_queue: int = typer.Option(2048, help="Images waiting for the batcher; a request beyond gets 429."),
    max_images: int = typer.Option(1024, help="Images (or CSV rows) in one request."),
    max_body_mb: float = typer.Option(64.0, help="Request body size limit (MiB), job uploads aside."),
    max_upload_mb: float = typer.Option(4096.0, help="A job's uploaded file size limit (MiB)."),
    max_pixels: int = typer.Option(40_000_000, help="Pixels of one image before decoding (decompression bombs)."),
    token_file: Optional[Path] = typer.Option(None, help="File holding the bearer token clients must send."),
    data_root: Optional[Path] = typer.Option(None, help="Jobs may name server-side files only under this folder."),
    jobs_dir: Path = typer.Option(Path("jobs"), help="Where jobs (inputs, state, results) are kept."),
    job_chunk_rows: int = typer.Option(4096, help="Rows a job predicts and checkpoints at a time."),
    job_batch_size: int = typer.Option(256, help="Images per onnxruntime run inside a job."),
    model_name: Optional[str] = typer.Option(None, help="Model name in /v2/models/<name> [default: the file's stem]."),
    provider: str = typer.Option("auto", help="auto | cpu | cuda."),
    threads: Optional[int] = typer.Option(None, help="onnxruntime intra-op threads [default: all cores]."),
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
    from serve.http.config import ServeConfig
    from serve.http.server import run

    if provider not in ("auto", "cpu", "cuda"):
        raise UserError(f"--provider {provider!r}: use auto, cpu or cuda")
    run(ServeConfig(model=str(model), model_name=model_name, host=host, port=port, workers=workers,
                    provider=provider, threads=threads, require_gpu=require_gpu, max_batch=max_batch,
                    max_delay_ms=max_delay_ms, max_queue=max_queue, max_images=max_images, max_body_mb=max_body_mb,
                    max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                    token_file=str(token_file) if token_file else None,
                    data_root=str(data_root) if data_root else None, jobs_dir=str(jobs_dir),
                    job_chunk_rows=job_chunk_rows, job_batch_size=job_batch_size, access_log=access_log,
                    spinning=spinning),
        announce=typer.echo)


@app.command()
def submit(dry_run: bool = typer.Option(False, "--dry-run", help="Validate and look for a duplicate; upload nothing.")) -> None:
    """Stage submit: validate submissions/submission.csv, upload it once (submit.enabled), wait for the score.

    Example: foldwise submit --dry-run
    """
    from pipeline import submit as stage
    stage.main(dry_run=dry_run)


@app.command()
def submissions(competition: Optional[str] = typer.Option(None, help="Kaggle slug (default: submit.competition "
                                                                         "or the slug the data came from)."),
                history: Path = typer.Option(Path("submissions/history.json"), help="Local file hash -> OOF record."),
                public_rows: Optional[int] = typer.Option(None, help="Test rows behind the public score, for its 95% "
                                                                      "CI (default: submit.public_rows).")) -> None:
    """The competition's submissions: public score, its 95% CI and each file's local OOF accuracy side by side.

    Example: foldwise submissions --competition fashion-mnist
    """
    from pipeline.leaderboard import main as run_table
    run_table(competition, history, public_rows)


@app.command()
def score(submission: Path = typer.Argument(..., help="Submission CSV (labels, or probabilities)."),
          solution: Path = typer.Argument(..., help="Solution CSV (id,label[,Usage], or one 0/1 column per class) "
                                                    "for some or all ids."),
          metric: str = typer.Option("auto", help="auto | accuracy | log_loss | roc_auc | f1_macro | qwk (auto: "
                                                  "accuracy for labels, roc_auc for one probability column, log_loss "
                                                  "for one per class)."),
          positive: Optional[str] = typer.Option(None, help="One probability column: the class it is the "
                                                            "probability of [default: the second class]")) -> None:
    """Score a submission on the ids a solution file covers, with the competition's metric.

    Example: foldwise score submissions/submission.csv data/embedded/fashion-mnist/public_solution.csv
    """
    from pipeline.scoring import score_submission

    r = score_submission(submission, solution, metric, positive)
    if r.metric == "accuracy":
        typer.echo(f"accuracy {r.accuracy:.4f} ({r.n_correct}/{r.n_scored} ids of {solution})")
    else:
        typer.echo(f"{r.metric} {r.value:.4f} ({r.n_scored} ids of {solution}; accuracy {r.accuracy:.4f})")


@app.command()
def preset(path: Path = typer.Argument(..., help="A presets/*.yaml file."),
           params: Path = typer.Option(Path("params.yaml"), help="Params file to update.")) -> None:
    """Merge a preset (partial params file) into params.yaml, validating the result first.

    Example: foldwise preset presets/course-mlp.yaml && dvc repro
    """
    from pipeline.presets import apply_preset

    changed = apply_preset(path, params)
    typer.echo(f"{params}: set {', '.join(changed)} from {path}")


kaggle_app = typer.Typer(no_args_is_help=True, help="Code competitions: the model as a Kaggle dataset, an offline "
                                                    "inference notebook, pushed and submitted (params `submit`).")
app.add_typer(kaggle_app, name="kaggle")


def _submit_params():
    from pipeline.config import SubmitParams, load_section
    return load_section("submit", SubmitParams)


@kaggle_app.command("package")
def kaggle_package(dry_run: bool = typer.Option(False, "--dry-run", help="Build kaggle/dataset/ only; upload nothing.")) -> None:
    """Build kaggle/dataset/ (chosen ONNX graph, serve wheel, offline wheels, dataset-metadata.json) and create or
    version the Kaggle dataset, once per content; wait until Kaggle has processed it.

    Example: foldwise kaggle package && foldwise kaggle notebook && foldwise kaggle push
    """
    from pipeline.kaggle.package import run as run_package
    run_package(_submit_params(), dry_run=dry_run)


@kaggle_app.command("notebook")
def kaggle_notebook(output: Optional[Path] = typer.Option(None, "--output", "-o", help="Notebook to write [default: "
                                                                                       "kaggle/kernel/<kernel slug>.ipynb].")) -> None:
    """Write the offline inference notebook: reads the competition's test files under /kaggle/input with the readers
    and resize of `foldwise predict`, writes /kaggle/working/submission.csv (validated), prints the throughput.

    Example: foldwise kaggle notebook && jupyter nbconvert --to html kaggle/kernel/*.ipynb
    """
    from pipeline.kaggle.notebook import write
    from pipeline.kaggle.package import refs
    params = _submit_params()
    write(refs(params), params, output)


@kaggle_app.command("push")
def kaggle_push(notebook: Optional[Path] = typer.Option(None, help="The notebook [default: the one `foldwise kaggle "
                                                                     "notebook` wrote]."),
                dry_run: bool = typer.Option(False, "--dry-run", help="Write kernel-metadata.json and look for a "
                                                                      "duplicate; push and submit nothing.")) -> None:
    """Push the notebook (internet off, GPU as submit.gpu, private), wait for its run, fetch its output and log, submit
    that version to the competition and wait for the score: submissions/receipt.json. Never twice for one notebook.

    Example: foldwise kaggle push && foldwise submissions
    """
    from pipeline.kaggle.code import push_receipt
    push_receipt(_submit_params(), notebook, dry_run=dry_run)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: ratios measured side by side in one run.")
app.add_typer(bench_app, name="bench")


@bench_app.command("train")
def bench_train(steps: int = typer.Option(40, help="Train steps per measurement."),
                fold: int = typer.Option(0, help="Fold whose training rows feed the loader."),
                rounds: int = typer.Option(2, help="Interleaved rounds (the median is printed).")) -> None:
    """fp32 vs bf16 train steps, FLOPs and GFLOP/s, and the data path's cost, side by side in one run.

    Example: foldwise bench train --steps 40
    """
    from pipeline.bench import bench_train as run_bench

    r = run_bench(steps=steps, fold=fold, rounds=rounds)
    typer.echo(f"model {r['model']}, batch {r['batch_size']}, workers {r['num_workers']}, "
               f"{r['threads']} threads, {r['device']}, {r['steps']} steps x {rounds} rounds")
    typer.echo(f"CPU {r['cpu']}")
    typer.echo(f"FLOPs per image: forward {r['flops_per_image_forward'] / 1e6:.1f} M, "
               f"train step (forward + backward) {r['flops_per_image_train_step'] / 1e6:.1f} M")
    typer.echo(f"{'precision':<10} {'images/s':>9} {'GFLOP/s':>8}")
    for name, v in r["precisions"].items():
        typer.echo(f"{name:<10} {v['images_per_s']:>9.0f} {v['gflops_per_s']:>8.1f}")
    typer.echo(f"bf16 / fp32: {r['bf16_vs_fp32']:.2f}x")
    typer.echo(f"train.amp -> {r['precision']}")
    typer.echo(f"training loop ({r['configured']}) {r['train_loop_images_per_s']:8.0f} images/s")
    typer.echo(f"pure compute  ({r['configured']}) {r['pure_compute_images_per_s']:8.0f} images/s")
    typer.echo(f"ratio {r['ratio']:.3f} (data-path overhead {100 * r['data_path_overhead']:.1f}%)")


@bench_app.command("fold")
def bench_fold(against: Path = typer.Option(..., help="Params or preset file whose `train` keys to compare with."),
               steps: int = typer.Option(40, help="Train steps per measurement."),
               rounds: int = typer.Option(3, help="Interleaved rounds (the median is used)."),
               fold: int = typer.Option(0, help="Fold whose rows are trained and validated.")) -> None:
    """One fold's projected training time: params.yaml vs another params file, interleaved in one run.

    Example: foldwise bench fold --against presets/cpu-cnn-4ep.yaml
    """
    import os

    from pipeline.bench import bench_fold as run_bench

    r = run_bench(against, steps=steps, fold=fold, rounds=rounds)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    typer.echo(f"fold {r['fold']}, {r['threads']} threads, {r['steps']} steps x {r['rounds']} rounds, load average {load}")
    typer.echo(f"{'params':<32} {'model':<14} {'epochs':>6} {'train img/s':>12} {'val img/s':>10} {'fold s':>8}")
    for name, v in r["sides"].items():
        typer.echo(f"{name:<32} {v['model']:<14} {v['epochs']:>6} {v['train_images_per_s']:>12.0f} "
                   f"{v['eval_images_per_s']:>10.0f} {v['fold_seconds']:>8.0f}")
    typer.echo(f"fold time ratio {r['fold_time_ratio']:.2f}x (training images/s ratio {r['train_speed_ratio']:.2f}x)")


@bench_app.command("infer")
def bench_infer(batch: list[int] = typer.Option([1, 64, 512], help="Batch sizes (repeat the option)."),
                threads: Optional[int] = typer.Option(None, help="Threads for both torch and onnxruntime.")) -> None:
    """PyTorch eager (folds x TTA views) vs FP32 and INT8 ONNX ensembles: images/s and ratios.

    Example: foldwise bench infer --batch 1 --batch 64 --batch 512

    Also writes bench/infer.json, which the report shows.
    """
    from pipeline.bench import bench_infer as run_bench

    rows = run_bench(tuple(batch), threads)
    from datetime import datetime, timezone

    from serve.atomic import write_json
    write_json(Path("bench/infer.json"), {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                          "rows": rows})
    from pipeline.hardware import describe

    typer.echo(f"{rows[0]['folds']} folds x {rows[0]['views']} views, {rows[0]['threads']} threads, CPU "
               f"{describe()}")
    typer.echo(f"{rows[0]['flops_per_image'] / 1e6:.1f} MFLOPs per image (every fold and view; int8: the same "
               "operations in int8); images/s and GFLOP/s (GOP/s for int8)")
    typer.echo(f"{'batch':>6} {'torch eager':>12} {'onnx fp32':>10} {'onnx int8':>10} {'fp32/eager':>11} "
               f"{'int8/eager':>11} {'int8/fp32':>10} {'GFLOP/s eager':>14} {'fp32':>7} {'int8':>7}")
    for r in rows:
        typer.echo(f"{r['batch']:>6} {r['torch_eager']:>12.0f} {r['onnx_fp32']:>10.0f} {r['onnx_int8']:>10.0f} "
                   f"{r['fp32_vs_eager']:>10.2f}x {r['int8_vs_eager']:>10.2f}x {r['int8_vs_fp32']:>9.2f}x "
                   f"{r['torch_eager_gflops']:>14.1f} {r['onnx_fp32_gflops']:>7.1f} {r['onnx_int8_gflops']:>7.1f}")


@bench_app.command("decode")
def bench_decode(images: int = typer.Option(600, help="Generated JPEGs."),
                 side: int = typer.Option(500, help="Their width (4:3)."),
                 target: int = typer.Option(224, help="The square size they are decoded to.")) -> None:
    """Image decoding for prepare/predict (serve.images): 1 thread vs one thread per core vs one process per core.

    Example: foldwise bench decode --images 600
    """
    from pipeline.bench import bench_decode as run_bench

    r = run_bench(images, side, target)
    typer.echo(f"{r['images']} {r['source']} -> {r['target']}, {r['workers']} cores; images/s (median of rounds)")
    base = r["rates"]["1 thread"]
    for name, rate in r["rates"].items():
        typer.echo(f"{name:>12} {rate:8.0f}  {rate / base:5.2f}x")


@bench_app.command("stream")
def bench_stream(rows: int = typer.Option(1_000_000, help="Images in the generated pixel CSV."),
                 model: Path = typer.Option(Path("models/ensemble_int8.onnx"), help="ONNX ensemble to run."),
                 workdir: Path = typer.Option(Path("bench"), help="Where the CSV is generated (deleted after)."),
                 keep: bool = typer.Option(False, help="Keep the generated CSV and predictions.")) -> None:
    """Peak memory of `foldwise predict` on a generated N-image pixel CSV (streaming check).

    Example: foldwise bench stream --rows 1000000
    """
    from pipeline.bench import bench_stream as run_bench

    r = run_bench(rows, model, workdir, keep=keep)
    typer.echo(f"{r['rows']} images ({r['input_bytes'] / 1e9:.2f} GB CSV) with {r['model']}: "
               f"{r['seconds']:.0f}s, {r['images_per_second']:.0f} images/s, "
               f"peak memory {r['peak_rss_bytes'] / 2**20:.0f} MiB, {r['rows_written']} rows written")


@bench_app.command("parallel")
def bench_parallel(epochs: Optional[int] = typer.Option(1, help="train.epochs on both sides (a shorter run; "
                                                     "params.yaml's own value with --epochs 0)."),
                   workers: int = typer.Option(2, help="Parallel side: single-thread Ray workers; sequential "
                                               "side: torch threads."),
                   rounds: int = typer.Option(1, help="Rounds, alternating which side goes first."),
                   train_rows: Optional[int] = typer.Option(None, help="Only the first N training images "
                                                            "(a shorter run) [default: all]."),
                   keep: bool = typer.Option(False, help="Keep bench/parallel-folds/ (both project copies).")) -> None:
    """Every fold with `foldwise train --parallel` (1-thread Ray workers) vs sequential `dvc repro` of the
    folds (one process, N threads): wall time of each, their ratio, per-fold accuracy.

    Example: foldwise bench parallel --epochs 1
    """
    from pipeline.distributed.bench import bench_parallel as run_bench

    r = run_bench(epochs=epochs or None, workers=workers, rounds=rounds, train_rows=train_rows, keep=keep)
    typer.echo(f"{r['folds']} folds x {r['epochs']} epochs, {r['train_rows']} training images, on {r['cpu']}")
    for run in r["runs"]:
        typer.echo(f"round {run['round']} ({run['first']} first): sequential dvc repro ({workers} threads) "
                   f"{run['sequential']:.0f} s [load {run['sequential_load_before']}], parallel "
                   f"({workers} x 1-thread Ray workers) {run['parallel']:.0f} s [load {run['parallel_load_before']}]: "
                   f"ratio {run['ratio']:.2f}x")
    for side in ("sequential", "parallel"):
        typer.echo(f"{side:>10} val accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in r[f"accuracy_{side}"].items()))
    typer.echo(f"load average after: {r['load_after']} (wrote bench/parallel.json)")


@bench_app.command("serve")
def bench_serve(model: Path = typer.Option(Path("models/ensemble.onnx"), help="ONNX ensemble to serve."),
                threads: Optional[int] = typer.Option(None, help="onnxruntime threads, server and offline alike "
                                                               "[default: all cores]."),
                max_batch: int = typer.Option(64, help="The server's --max-batch."),
                max_delay_ms: float = typer.Option(5.0, help="The server's --max-delay-ms."),
                concurrency: list[int] = typer.Option([1, 8, 64], help="Concurrent clients (repeat the option)."),
                size: list[int] = typer.Option([1, 256], help="Images per request (repeat the option)."),
                images: int = typer.Option(4096, help="Images per scenario (at least one request per client)."),
                seconds: float = typer.Option(30.0, help="No new request after this many seconds of a scenario."),
                offline_images: int = typer.Option(1024, help="Images for each offline `foldwise predict` run."),
                soak_seconds: float = typer.Option(600.0, help="Memory run at --soak-concurrency (0: skip)."),
                soak_concurrency: int = typer.Option(64, help="Clients during the memory run."),
                url: Optional[str] = typer.Option(None, help="Use this running server (loopback only) instead of "
                                                              "starting one (no memory run then)."),
                token_file: Optional[Path] = typer.Option(None, help="Bearer token for --url.")) -> None:
    """The HTTP server under load vs offline `foldwise predict` on the same model and threads, in one run.

    Throughput, p50/p95/p99 latency and the batcher's mean batch at each concurrency and request
    size; then the server's memory sampled over a soak run. Writes bench/serve.json.

    Example: foldwise bench serve --model models/ensemble.onnx --threads 2
    """
    from datetime import datetime, timezone

    from serve.atomic import write_json
    from serve.http.bench import bench_serve as run_bench
    from serve.http.config import read_token

    if not model.is_file():
        raise UserError(f"{model}: model file not found")
    token = read_token(token_file) if token_file else None
    r = run_bench(model, threads, max_batch, max_delay_ms, tuple(concurrency), tuple(size), images, seconds,
                  offline_images, soak_seconds, soak_concurrency, url, token, progress=typer.echo)
    write_json(Path("bench/serve.json"), {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **r})
    typer.echo(f"\n{r['model']} on {r['provider']}, {r['threads'] or 'all'} threads; max batch {r['max_batch']}, "
               f"max delay {r['max_delay_ms']:g} ms")
    typer.echo(f"CPU: {r['cpu']}; load average {r['load_average_start']} (start), {r['load_average_end']} (end)")
    typer.echo("offline = `foldwise predict` (.npy, batch 256, same model and threads) run just before and just "
               "after each row; vs offline = images/s / offline")
    typer.echo(f"{'images/req':>10} {'conc':>5} {'requests':>8} {'images/s':>9} {'offline':>8} {'vs offline':>10} "
               f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean batch':>10} {'batch ms':>9} errors")
    for s in r["scenarios"]:
        typer.echo(f"{s['images_per_request']:>10} {s['concurrency']:>5} {s['requests']:>8} {s['images_per_second']:>9.0f} "
                   f"{s['offline_images_per_second']:>8.0f} {s['vs_offline']:>9.2f}x {s['p50_ms']:>8.1f} "
                   f"{s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['mean_batch']:>10.1f} {s['mean_batch_compute_ms']:>9.1f} "
                   f"{s['errors'] or '-'}")
    single = {s["concurrency"]: s for s in r["scenarios"] if s["images_per_request"] == 1}
    if 1 in single and single:
        full = single[max(single)]
        bound = r["max_delay_ms"] + full["mean_batch_compute_ms"]
        verdict = "within" if single[1]["p99_ms"] <= bound else "ABOVE"
        typer.echo(f"concurrency 1: p99 {single[1]['p99_ms']:.1f} ms {verdict} max delay {r['max_delay_ms']:g} ms + one "
                   f"batch's compute ({full['mean_batch_compute_ms']:.1f} ms, mean batch {full['mean_batch']:.1f} at "
                   f"concurrency {max(single)}) = {bound:.1f} ms; its own batches of "
                   f"{single[1]['mean_batch']:.1f} took {single[1]['mean_batch_compute_ms']:.1f} ms on average "
                   f"(p50 {single[1]['p50_ms']:.1f} ms)")
    if "soak" in r:
        k = r["soak"]
        typer.echo(f"memory over {k['seconds']:.0f} s at concurrency {soak_concurrency} ({k['requests']} requests, "
                   f"{k['images_per_second']:.0f} images/s, errors {k['errors'] or '-'}): server RSS start "
                   f"{k['rss_start_mib']:.0f} MiB, after warm-up {k['rss_after_warmup_mib']:.0f}, end {k['rss_end_mib']:.0f}, "
                   f"max {k['rss_max_mib']:.0f}; growth after warm-up {k['growth_after_warmup_mib']:+.1f} MiB")
        typer.echo("RSS samples (s, MiB): " + " ".join(f"{t:.0f}:{m:.0f}" for t, m in k["samples"]))


def main() -> None:
    """Console entry point: user errors as one line and exit code 2."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
