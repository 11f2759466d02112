"""Benchmarks that print ratios measured side by side in one run (never asserted in tests).

    foldwise bench train [--steps 60] [--fold 0]
    foldwise bench infer [--batch 1 --batch 64 --batch 512]
    foldwise bench stream [--rows 1000000]

`bench train`: the real training loop (DataLoader, Albumentations, the train step) for a fixed
number of steps and, in the same run, the same model's step on pre-made tensors (the same
augmented batches, already in memory). Their images/s ratio is the data path's cost.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import TrainParams, load_section
from serve.atomic import atomic_path
from serve.errors import UserError
from pipeline.train import PREPARED, TrainingSetup, load_prepared, resolve_device, seed_everything, train_step

_logger = logging.getLogger(__name__)


def _timed_steps(setup: TrainingSetup, batches, params: TrainParams, device: torch.device, steps: int) -> float:
    """images/s of `steps` train steps over `batches` (an iterable of (x, y))."""
    setup.net.train()
    images, t0 = 0, time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if i == steps:
            break
        train_step(setup.run, setup.net, x, y, params, device, setup.channels_last, setup.amp_dtype,
                   setup.scaler, setup.criterion, setup.mixup)
        images += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0)


def bench_train(steps: int = 60, fold: int = 0, warmup: int = 5, rounds: int = 2,
                prepared: Path = PREPARED) -> dict:
    params = load_section("train", TrainParams)
    meta, images, labels, folds = load_prepared(prepared, fold)
    device = resolve_device(params.device)
    seed_everything(0)
    setup = TrainingSetup.create(params, meta, images, labels, np.flatnonzero(folds != fold), device, seed=0)
    setup.sampler.set_epoch(1)
    premade = []
    for i, batch in enumerate(setup.loader):  # the same augmented batches, materialised up front
        premade.append(batch)
        if len(premade) == steps:
            break
    _timed_steps(setup, iter(premade[:warmup]), params, device, warmup)
    loop, compute = [], []
    for r in range(rounds):  # interleave, alternating which goes first, so drift in load hits both alike
        setup.sampler.set_epoch(2 + r)
        pair = [(loop, lambda: iter(setup.loader)), (compute, lambda: iter(premade))]
        for out, batches in (pair if r % 2 == 0 else pair[::-1]):
            out.append(_timed_steps(setup, batches(), params, device, steps))
    result = {"model": params.model, "batch_size": params.batch_size, "num_workers": params.num_workers,
              "steps": steps, "threads": torch.get_num_threads(), "device": str(device),
              "train_loop_images_per_s": float(np.median(loop)),
              "pure_compute_images_per_s": float(np.median(compute))}
    result["ratio"] = result["train_loop_images_per_s"] / result["pure_compute_images_per_s"]
    result["data_path_overhead"] = 1 - result["ratio"]
    return result


def _rate(fn, images: np.ndarray, batch: int, min_images: int, min_seconds: float = 1.0) -> float:
    """images/s of `fn` over consecutive batches of `images`, after one warm-up call."""
    fn(images[:batch])
    done, i, t0 = 0, 0, time.perf_counter()
    while done < min_images or time.perf_counter() - t0 < min_seconds:
        start = (i * batch) % max(len(images) - batch, 1)
        fn(images[start:start + batch])
        done += batch
        i += 1
    return done / (time.perf_counter() - t0)


def bench_infer(batch_sizes: tuple[int, ...] = (1, 64, 512), threads: int | None = None,
                prepared: Path = PREPARED, models_dir: Path = Path("models")) -> list[dict]:
    """PyTorch eager (fold models x TTA views) vs the FP32 and INT8 ONNX ensembles, same threads."""
    from pipeline.export import load_ensemble  # noqa: PLC0415
    from serve.engine import Engine  # noqa: PLC0415

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    model, spec = load_ensemble(models_dir / "ensemble.json")
    images = np.load(prepared / "train_images.npy", mmap_mode="r")
    x = np.ascontiguousarray(np.asarray(images[:4096]).transpose(0, 3, 1, 2))
    engines = {"onnx_fp32": Engine(models_dir / "ensemble.onnx", provider="cpu", threads=threads),
               "onnx_int8": Engine(models_dir / "ensemble_int8.onnx", provider="cpu", threads=threads)}

    @torch.inference_mode()
    def eager(batch: np.ndarray) -> None:
        model(torch.from_numpy(batch))

    rows = []
    for bs in batch_sizes:
        min_images = max(bs * 4, 256)
        row = {"batch": bs, "threads": threads, "folds": len(spec["folds"]), "views": len(spec["views"]),
               "torch_eager": _rate(eager, x, bs, min_images)}
        for name, engine in engines.items():
            row[name] = _rate(engine.predict, x, bs, min_images)
        row["fp32_vs_eager"] = row["onnx_fp32"] / row["torch_eager"]
        row["int8_vs_eager"] = row["onnx_int8"] / row["torch_eager"]
        rows.append(row)
        _logger.info("batch %d: eager %.0f, fp32 %.0f, int8 %.0f images/s", bs, row["torch_eager"],
                     row["onnx_fp32"], row["onnx_int8"])
    return rows


def write_big_csv(path: Path, rows: int, source_csv: Path) -> int:
    """A pixel CSV of `rows` real test images (the source's rows repeated under new ids); bytes written."""
    with open(source_csv) as fh:
        header = fh.readline()
        pixels = [line.split(",", 1)[1] for line in fh if line.strip()]
    with atomic_path(path) as tmp, open(tmp, "w") as out:
        out.write(header)
        for start in range(0, rows, len(pixels)):
            n = min(len(pixels), rows - start)
            out.write("".join(f"{start + i},{pixels[i]}" for i in range(n)))
    return path.stat().st_size


def bench_stream(rows: int = 1_000_000, model: Path = Path("models/ensemble_int8.onnx"),
                 workdir: Path = Path("bench"), source_csv: Path | None = None, keep: bool = False) -> dict:
    """Generate a `rows`-image pixel CSV, run `foldwise predict` on it in a child process and
    report the child's peak resident memory (getrusage) next to the input's size."""
    import resource  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    workdir.mkdir(parents=True, exist_ok=True)
    big = workdir / f"stream_{rows}.csv"
    out = workdir / f"stream_{rows}_preds.csv"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if source_csv is None:
            from pipeline.archive import CompetitionArchive  # noqa: PLC0415
            source_csv = Path(tmp) / "test.csv"
            with CompetitionArchive("data/raw/competition.zip").open("test.csv") as src, open(source_csv, "wb") as dst:
                shutil.copyfileobj(src, dst)
        t0 = time.perf_counter()
        size = write_big_csv(big, rows, source_csv)
        gen_s = time.perf_counter() - t0
    _logger.info("wrote %s: %d rows, %.2f GB in %.0fs", big, rows, size / 1e9, gen_s)
    for p in (out, out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")):
        p.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).parent / "foldwise"), "predict", "--model", str(model), "--input", str(big),
           "--output", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise UserError(f"bench stream: foldwise predict failed: {proc.stderr.strip().splitlines()[-1:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out) as fh:
        written = sum(1 for _ in fh) - 1
    result = {"rows": rows, "input_bytes": size, "model": str(model), "seconds": seconds,
              "images_per_second": rows / seconds, "peak_rss_bytes": peak_kib * 1024, "rows_written": written}
    if not keep:
        big.unlink()
        out.unlink()
    return result


def bench_decode(images: int = 600, side: int = 500, target: int = 224, rounds: int = 2,
                 workdir: Path | None = None) -> dict:
    """images/s of serve.images.load_images on generated photo-sized JPEGs: 1 thread vs one per
    core, and one process per core (concurrent.futures), side by side, alternating the order."""
    import tempfile  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    from serve.images import ImageSpec, default_workers, load_images  # noqa: PLC0415

    spec = ImageSpec(target, target, 3)
    workers = default_workers()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        paths = []
        base = rng.integers(0, 256, (side * 3 // 4 // 8, side // 8, 3), dtype=np.uint8)
        for i in range(images):
            im = Image.fromarray(np.roll(base, i, axis=1)).resize((side, side * 3 // 4), Image.Resampling.BILINEAR)
            paths.append(Path(tmp) / f"{i}.jpg")
            im.save(paths[-1], quality=90)

        def threads(n: int) -> float:
            t0 = time.perf_counter()
            load_images(paths, spec, workers=n)
            return images / (time.perf_counter() - t0)

        def processes() -> float:
            t0 = time.perf_counter()
            chunks = [paths[i::workers] for i in range(workers)]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(pool.map(load_images, chunks, [spec] * workers, [1] * workers))
            return images / (time.perf_counter() - t0)

        runs: dict[str, list[float]] = {"1 thread": [], f"{workers} threads": [], f"{workers} processes": []}
        for r in range(rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                runs[name].append(threads(1) if name == "1 thread" else processes() if "process" in name
                                  else threads(workers))
    rates = {k: float(np.median(v)) for k, v in runs.items()}
    return {"images": images, "source": f"{side}x{side * 3 // 4} JPEG", "target": f"{target}x{target}x3",
            "workers": workers, "rates": rates}
