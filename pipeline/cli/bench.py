"""`foldwise bench ...`: benchmarks that print ratios measured side by side in one run.

    foldwise bench train
    foldwise bench infer --batch 512
    foldwise bench gpu --out bench
"""
from __future__ import annotations

import os
from pathlib import Path

import typer

from pipeline.bench.record import write_record
from pipeline.cli.app import app
from pipeline.core import paths
from serve.errors import UserError

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: ratios measured side by side in one run.")
app.add_typer(bench_app, name="bench", rich_help_panel="Kaggle and benchmarks")


@bench_app.command("train")
def bench_train(steps: int = typer.Option(40, help="Train steps per measurement."),
                fold: int = typer.Option(0, help="Fold whose training rows feed the loader."),
                rounds: int = typer.Option(2, help="Interleaved rounds (the median is printed).")) -> None:
    """fp32 vs bf16 train steps, FLOPs and GFLOP/s, and the data path's cost, side by side in one run.

    Example: foldwise bench train --steps 40
    """
    from pipeline.bench.train import bench_train as run_bench

    r = run_bench(steps=steps, fold=fold, rounds=rounds)
    write_record("train", r)
    typer.echo(f"model {r['model']}, batch {r['batch_size']}, workers {r['num_workers']}, "
               f"{r['threads']} threads, {r['device']}, {r['steps']} steps x {rounds} rounds")
    typer.echo(f"CPU {r['cpu']}")
    typer.echo(f"FLOPs per image: forward {r['flops_per_image_forward'] / 1e6:.1f} M, "
               f"train step (forward + backward) {r['flops_per_image_train_step'] / 1e6:.1f} M")
    typer.echo(f"{'precision':<10} {'images/s':>9} {'GFLOP/s':>8} {'matmul GFLOP/s':>15} {'of matmul':>10}"
               f"   (matmul: {r['matmul_n']}x{r['matmul_n']} in the same rounds)")
    for name, v in r["precisions"].items():
        typer.echo(f"{name:<10} {v['images_per_s']:>9.0f} {v['gflops_per_s']:>8.1f} {v['matmul_gflops_per_s']:>15.1f} "
                   f"{100 * v['fraction_of_matmul']:>9.0f}%")
    typer.echo(f"bf16 / fp32: {r['bf16_vs_fp32']:.2f}x" if r["bf16_vs_fp32"] is not None else
               "bf16: not timed (no native bf16 on this CPU: emulated, ~8x slower than fp32)")
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

    from pipeline.bench.train import bench_fold as run_bench

    r = run_bench(against, steps=steps, fold=fold, rounds=rounds)
    write_record("fold", r)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    typer.echo(f"fold {r['fold']}, {r['threads']} threads, {r['steps']} steps x {r['rounds']} rounds, "
               f"load average {load}")
    typer.echo(f"{'params':<32} {'model':<14} {'epochs':>6} {'train img/s':>12} {'val img/s':>10} {'fold s':>8}")
    for name, v in r["sides"].items():
        typer.echo(f"{name:<32} {v['model']:<14} {v['epochs']:>6} {v['train_images_per_s']:>12.0f} "
                   f"{v['eval_images_per_s']:>10.0f} {v['fold_seconds']:>8.0f}")
    typer.echo(f"fold time ratio {r['fold_time_ratio']:.2f}x (training images/s ratio {r['train_speed_ratio']:.2f}x)")


@bench_app.command("infer")
def bench_infer(batch: list[int] = typer.Option([1, 64, 512], help="Batch sizes (repeat the option)."),
                threads: int | None = typer.Option(None, help="Threads for both torch and onnxruntime."),
                rounds: int = typer.Option(3, help="Interleaved rounds (each side's median counts).")) -> None:
    """PyTorch eager (folds x TTA views) vs FP32 and INT8 ONNX ensembles: images/s and ratios (and the
    distilled student's graphs beside them, when the distill stage made them).

    Example: foldwise bench infer --batch 1 --batch 64 --batch 512

    Writes bench/infer.json, which the report shows (every bench command writes bench/<name>.json).
    """
    from pipeline.bench.infer import bench_infer as run_bench

    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    rows = run_bench(tuple(batch), threads, rounds=rounds)
    write_record("infer", rows)
    from pipeline.training.hardware import describe

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
    if "student_fp32" in rows[0]:
        r0 = rows[0]
        typer.echo(f"distilled student (models/student/) beside the ensemble and one fold model (fold 0, no TTA); MB: "
                   f"ensemble {r0['onnx_fp32_bytes'] / 1e6:.2f}, student {r0['student_fp32_bytes'] / 1e6:.2f} "
                   f"(int8 {r0['student_int8_bytes'] / 1e6:.2f}), one fold {r0['one_fold_bytes'] / 1e6:.2f}")
        typer.echo(f"{'batch':>6} {'student fp32':>13} {'student int8':>13} {'one fold':>9} {'vs ensemble':>12} "
                   f"{'vs one fold':>12}")
        for r in rows:
            typer.echo(f"{r['batch']:>6} {r['student_fp32']:>13.0f} {r['student_int8']:>13.0f} {r['one_fold']:>9.0f} "
                       f"{r['student_vs_ensemble']:>11.2f}x {r['student_vs_one_fold']:>11.2f}x")


@bench_app.command("decode")
def bench_decode(images: int = typer.Option(600, help="Generated JPEGs."),
                 side: int = typer.Option(500, help="Their width (4:3)."),
                 target: int = typer.Option(224, help="The square size they are decoded to.")) -> None:
    """Image decoding for prepare/predict (serve.images): 1 thread vs one thread per core vs one process per core.

    Example: foldwise bench decode --images 600
    """
    from pipeline.bench.decode import bench_decode as run_bench

    r = run_bench(images, side, target)
    write_record("decode", r)
    typer.echo(f"{r['images']} {r['source']} -> {r['target']}, {r['workers']} cores; images/s (median of rounds)")
    base = r["rates"]["1 thread"]
    for name, rate in r["rates"].items():
        typer.echo(f"{name:>12} {rate:8.0f}  {rate / base:5.2f}x")


@bench_app.command("stream")
def bench_stream(rows: int = typer.Option(1_000_000, help="Images in the generated pixel CSV."),
                 model: Path = typer.Option(paths.graph("int8"), help="ONNX ensemble to run."),
                 workdir: Path = typer.Option(paths.BENCH, help="Where the CSV is generated (deleted after)."),
                 keep: bool = typer.Option(False, help="Keep the generated CSV and predictions.")) -> None:
    """Peak memory of `foldwise predict` on a generated N-image pixel CSV (streaming check).

    Example: foldwise bench stream --rows 1000000
    """
    from pipeline.bench.stream import bench_stream as run_bench

    r = run_bench(rows, model, workdir, keep=keep)
    write_record("stream", r)
    typer.echo(f"{r['rows']} images ({r['input_bytes'] / 1e9:.2f} GB CSV) with {r['model']}: "
               f"{r['seconds']:.0f}s, {r['images_per_second']:.0f} images/s, "
               f"peak memory {r['peak_rss_bytes'] / 2**20:.0f} MiB, {r['rows_written']} rows written")


@bench_app.command("parallel")
def bench_parallel(epochs: int | None = typer.Option(1, help="train.epochs on both sides (a shorter run; "
                                                     "params.yaml's own value with --epochs 0)."),
                   workers: int = typer.Option(2, help="Parallel side: single-thread Ray workers; sequential "
                                               "side: torch threads."),
                   rounds: int = typer.Option(1, help="Rounds, alternating which side goes first."),
                   train_rows: int | None = typer.Option(None, help="Only the first N training images "
                                                            "(a shorter run) \\[default: all]."),
                   keep: bool = typer.Option(False, help="Keep bench/parallel-folds/ (both project copies).")) -> None:
    """Every fold with `foldwise train --parallel` (1-thread Ray workers) vs sequential `dvc repro` of the
    folds (one process, N threads): wall time of each, their ratio, per-fold accuracy.

    Example: foldwise bench parallel --epochs 1
    """
    from pipeline.bench.parallel import bench_parallel as run_bench

    r = run_bench(epochs=epochs or None, workers=workers, rounds=rounds, train_rows=train_rows, keep=keep)
    typer.echo(f"{r['folds']} folds x {r['epochs']} epochs, {r['train_rows']} training images, on {r['cpu']}")
    for run in r["runs"]:
        typer.echo(f"round {run['round']} ({run['first']} first): sequential dvc repro ({workers} threads) "
                   f"{run['sequential']:.0f} s [load {run['sequential_load_before']}], parallel "
                   f"({workers} x 1-thread Ray workers) {run['parallel']:.0f} s [load {run['parallel_load_before']}]: "
                   f"ratio {run['ratio']:.2f}x")
    for side in ("sequential", "parallel"):
        typer.echo(f"{side:>10} val accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in r[f"accuracy_{side}"].items()))
    write_record("parallel", r)
    typer.echo(f"load average after: {r['load_after']} (wrote {paths.BENCH_PARALLEL})")


@bench_app.command("export")
def bench_export(size: int = typer.Option(64, help="Image size of the generated RGB competition (px)."),
                 rows: int = typer.Option(8000, help="Its training images (from the embedded Fashion-MNIST)."),
                 threads: int = typer.Option(2, help="OMP_NUM_THREADS of every stage."),
                 keep: bool = typer.Option(False, help="Keep bench/export-cost/ (the project copy).")) -> None:
    """The export stage's time as a fraction of training's, on a generated RGB competition (labels.csv +
    zips of PNGs; `foldwise init` fits its recipe): folds, ensemble and export timed in one run.

    Example: foldwise bench export --size 64 --rows 8000
    """
    from pipeline.bench.export_cost import bench_export as run_bench

    r = run_bench(size=size, rows=rows, threads=threads, keep=keep)
    s = r["seconds"]
    typer.echo(f"{r['train_rows']} training images, {r['size']} px x {r['channels']} channels (trained at "
               f"{'x'.join(map(str, r['trained_size']))}), {r['folds']} folds x "
               f"{'/'.join(map(str, r['epochs_run']))} epochs (train.steps {r['steps']}), {threads} threads, on "
               f"{r['cpu']}")
    typer.echo(f"train {s['train']:.0f} s [load {s['train_load_before']}], ensemble {s['ensemble']:.0f} s, "
               f"export {s['export']:.0f} s [load {s['export_load_before']}]: export / train "
               f"{r['export_vs_train']:.3f}")
    typer.echo("export's steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["export_steps"].items()))
    typer.echo("OOF " + ", ".join(f"{g} {v:.4f}" for g, v in r["oof_score"].items() if v is not None)
               + f"; predict uses {r['predict_graph']['file']}")
    path = write_record("export", r)
    typer.echo(f"load average after: {r['load_after']} (wrote {path})")


@bench_app.command("serve")
def bench_serve(model: Path = typer.Option(paths.graph("fp32"), help="ONNX ensemble to serve."),
                threads: int | None = typer.Option(None, help="onnxruntime threads of offline `foldwise predict` "
                                                               "\\[default: all cores]."),
                server_workers: int | None = typer.Option(None, min=1, help="The server's --workers \\[default: "
                                                                           "foldwise serve's]."),
                server_threads: int | None = typer.Option(None, min=1, help="The server's --threads \\[default: "
                                                                           "foldwise serve's]."),
                max_batch: int = typer.Option(64, help="The server's --max-batch."),
                max_delay_ms: float = typer.Option(5.0, help="The server's --max-delay-ms."),
                concurrency: list[int] = typer.Option([1, 8, 64], help="Concurrent clients (repeat the option)."),
                size: list[int] = typer.Option([1, 256], help="Images per request (repeat the option)."),
                images: int = typer.Option(4096, help="Images per scenario (at least one request per client)."),
                seconds: float = typer.Option(30.0, help="No new request after this many seconds of a scenario."),
                offline_images: int = typer.Option(1024, help="Images for each offline `foldwise predict` run."),
                soak_seconds: float = typer.Option(600.0, help="Memory run at --soak-concurrency (0: skip)."),
                soak_concurrency: int = typer.Option(64, help="Clients during the memory run."),
                url: str | None = typer.Option(None, help="Use this running server (loopback only) instead of "
                                                              "starting one (no memory run then)."),
                token_file: Path | None = typer.Option(None, help="Bearer token for --url.")) -> None:
    """The HTTP server under load vs offline `foldwise predict` on the same model and cores, in one run.

    Throughput, p50/p95/p99 latency and the batcher's mean batch at each concurrency and request
    size; then the server's memory sampled over a soak run. Writes bench/serve.json.

    Example: foldwise bench serve --model models/ensemble.onnx
    """
    from serve.http.bench import bench_serve as run_bench
    from serve.http.config import read_token

    if not model.is_file():
        raise UserError(f"{model}: model file not found")
    token = read_token(token_file) if token_file else None
    if url and (server_workers or server_threads):
        raise UserError("--server-workers/--server-threads set up the server this bench starts: start the one at "
                        "--url with `foldwise serve --workers/--threads`")
    r = run_bench(model, threads, server_workers, server_threads, max_batch, max_delay_ms, tuple(concurrency),
                  tuple(size), images, seconds, offline_images, soak_seconds, soak_concurrency, url, token,
                  progress=typer.echo)
    write_record("serve", r)
    typer.echo(f"\n{r['model']} on {r['provider']}: server {r['server_workers']} worker(s) x {r['server_threads']} "
               f"thread(s), offline {r['threads'] or 'all'} threads; max batch {r['max_batch']}, "
               f"max delay {r['max_delay_ms']:g} ms")
    typer.echo(f"CPU: {r['cpu']}; load average {r['load_average_start']} (start), {r['load_average_end']} (end)")
    typer.echo("offline = `foldwise predict` (.npy, batch 256, same model) run just before and just "
               "after each row; vs offline = images/s / offline")
    typer.echo(f"{'images/req':>10} {'conc':>5} {'requests':>8} {'images/s':>9} {'offline':>8} {'vs offline':>10} "
               f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean batch':>10} {'batch ms':>9} {'loop cpu':>8} "
               f"{'client cpu':>10} errors")
    for s in r["scenarios"]:
        loop_cpu = s.get("cpu_ms_per_request_server_event_loop", float("nan"))  # nan: a --url server
        typer.echo(f"{s['images_per_request']:>10} {s['concurrency']:>5} {s['requests']:>8} "
                   f"{s['images_per_second']:>9.0f} "
                   f"{s['offline_images_per_second']:>8.0f} {s['vs_offline']:>9.2f}x {s['p50_ms']:>8.1f} "
                   f"{s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['mean_batch']:>10.1f} "
                   f"{s['mean_batch_compute_ms']:>9.1f} {loop_cpu:>8.2f} "
                   f"{s['cpu_ms_per_request_client']:>10.2f} {s['errors'] or '-'}")
    typer.echo("loop cpu, client cpu: CPU ms per request of the server's event-loop threads (HTTP, parsing, "
               "encoding) and of this load generator, both taken from the cores onnxruntime runs on")
    single = {s["concurrency"]: s for s in r["scenarios"] if s["images_per_request"] == 1}
    if 1 in single and single:
        full = single[max(single)]
        bound = r["max_delay_ms"] + full["mean_batch_compute_ms"]
        verdict = "within" if single[1]["p99_ms"] <= bound else "ABOVE"
        typer.echo(f"concurrency 1: p99 {single[1]['p99_ms']:.1f} ms {verdict} max delay {r['max_delay_ms']:g} ms "
                   "+ one "
                   f"batch's compute ({full['mean_batch_compute_ms']:.1f} ms, mean batch {full['mean_batch']:.1f} at "
                   f"concurrency {max(single)}) = {bound:.1f} ms; its own batches of "
                   f"{single[1]['mean_batch']:.1f} took {single[1]['mean_batch_compute_ms']:.1f} ms on average "
                   f"(p50 {single[1]['p50_ms']:.1f} ms)")
    if "soak" in r:
        k = r["soak"]
        typer.echo(f"memory over {k['seconds']:.0f} s at concurrency {soak_concurrency} ({k['requests']} requests, "
                   f"{k['images_per_second']:.0f} images/s, errors {k['errors'] or '-'}): server RSS start "
                   f"{k['rss_start_mib']:.0f} MiB, after warm-up {k['rss_after_warmup_mib']:.0f}, "
                   f"end {k['rss_end_mib']:.0f}, "
                   f"max {k['rss_max_mib']:.0f}; growth after warm-up {k['growth_after_warmup_mib']:+.1f} MiB")
        typer.echo("RSS samples (s, MiB): " + " ".join(f"{t:.0f}:{m:.0f}" for t, m in k["samples"]))


@bench_app.command("gpu")
def bench_gpu(device: str = typer.Option("cuda", help="cuda (the check) or cpu (the same steps, smaller)."),
              steps: int = typer.Option(200, min=1, help="Train steps measured per setting."),
              batch_size: int | None = typer.Option(None, min=1, help="Train batch \\[default: the preset's]."),
              infer_batch: int = typer.Option(256, min=1, help="onnxruntime's batch."),
              out: Path = typer.Option(paths.BENCH, help="Folder of gpu.json (and gpu-work/)."),
              preset: Path = typer.Option(Path("presets/full.yaml"), help="Preset whose `train` is measured."),
              compile_: bool | None = typer.Option(None, "--compile/--no-compile",
                                                   help="Also measure torch.compile "
                                                        "\\[default: on CUDA only].")) -> None:
    """Training, kill-and-resume, export and inference on CUDA against the device's bf16 matmul rate: one JSON.

    Needs no DVC, kaggle package or network; `python -m pipeline.bench.gpu` runs it from a source tree.

    Example: foldwise bench gpu --out bench
    """
    from pipeline.bench.gpu import run, table

    result = run(device, steps, batch_size, out, preset, compile_, infer_batch)
    for line in table(result):
        typer.echo(line)
    typer.echo(f"wrote {out / 'gpu.json'}")
    if not result["passed"]:
        raise typer.Exit(1)


@bench_app.command("results")
def bench_results(check: bool = typer.Option(False, "--check", help="Only say whether docs/results.md is up to "
                                                                    "date (exit 2 when it is not).")) -> None:
    """Write docs/results.md's benchmark section from the records kept in docs/results/*.json.

    Example: cp bench/infer.json docs/results/infer-2026-12-01.json && foldwise bench results
    """
    from pipeline.bench.results import RESULTS_MD
    from pipeline.bench.results import main as run_results

    fresh = run_results(check=check)
    typer.echo(f"{RESULTS_MD}: " + ("up to date" if fresh else "rewrote its benchmark section"))
