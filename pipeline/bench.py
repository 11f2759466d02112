"""Benchmarks that print ratios measured side by side in one run (never asserted in tests).

    foldwise bench train [--steps 40] [--fold 0]
    foldwise bench fold --against presets/cpu-cnn-4ep.yaml
    foldwise bench infer [--batch 1 --batch 64 --batch 512]
    foldwise bench stream [--rows 1000000]

`bench train`: the same model's train step in fp32 and in bf16 autocast on the same batches
(their ratio says what bf16 buys on this machine), the FLOPs of a step (torch.utils.flop_counter)
and the GFLOP/s reached; and the real training loop (DataLoader, Albumentations, the train step)
against the step on pre-made tensors (the same augmented batches, already in memory): their
images/s ratio is the data path's cost. All interleaved in one run.

`bench fold`: one fold's training time projected from the real loop's and validation's images/s
under params.yaml and under another params/preset file, measured interleaved in one run (a speed
claim that survives a shared, loaded machine: the ratio).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.config import TrainParams, load_section
from serve.atomic import atomic_path
from serve.errors import UserError
from pipeline.train import (PREPARED, TrainingSetup, load_prepared, resolve_device, resolve_precision,
                            seed_everything, train_step)

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


def train_flops_per_image(setup: TrainingSetup, x: torch.Tensor, y: torch.Tensor,
                          device: torch.device) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per image of one train step, by torch.utils.flop_counter
    (on a copy of the model, so no weights or optimizer state change)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    model = copy.deepcopy(setup.run.model).train()
    x = x[:16].to(device)
    if setup.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        model(x)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss = nn.functional.cross_entropy(model(x), y[:16].to(device))
        loss.backward()
    return forward / len(x), counter.get_total_flops() / len(x)


def _precision_setups(params: TrainParams, meta: dict, images: np.ndarray, labels: np.ndarray,
                      rows: np.ndarray, device: torch.device) -> dict[str, TrainingSetup]:
    """The same model (same initial weights) in fp32 and in bf16 autocast (and fp16 on CUDA if configured)."""
    amps = {"fp32": "off", "bf16": "bf16"}
    if device.type == "cuda" and resolve_precision(params.amp, device)[0] == torch.float16:
        amps["fp16"] = "fp16"
    setups = {}
    for name, amp in amps.items():
        seed_everything(0)
        setups[name] = TrainingSetup.create(dataclasses.replace(params, amp=amp), meta, images, labels, rows,
                                            device, seed=0)
    return setups


def bench_train(steps: int = 40, fold: int = 0, warmup: int = 3, rounds: int = 2,
                prepared: Path = PREPARED) -> dict:
    """fp32 vs bf16 train steps (same model, same batches), FLOPs and GFLOP/s, and the data path's cost
    (the real loop vs pre-made batches) at the configured precision, measured interleaved in one run."""
    from pipeline.hardware import describe  # noqa: PLC0415

    params = load_section("train", TrainParams)
    meta, images, labels, folds = load_prepared(prepared, fold)
    device = resolve_device(params.device)
    rows = np.flatnonzero(folds != fold)
    dtype, precision = resolve_precision(params.amp, device)
    configured = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    setups = _precision_setups(params, meta, images, labels, rows, device)
    loop_setup = setups[configured]
    loop_setup.sampler.set_epoch(1)
    premade = []
    for batch in loop_setup.loader:  # the same augmented batches, materialised up front
        premade.append(batch)
        if len(premade) == steps:
            break
    fwd_flops, train_flops = train_flops_per_image(loop_setup, *premade[0], device)
    for setup in setups.values():
        _timed_steps(setup, iter(premade[:warmup]), params, device, warmup)
    rates: dict[str, list[float]] = {"loop": [], **{name: [] for name in setups}}
    for r in range(rounds):  # interleave, alternating the order, so drift in load hits every side alike
        loop_setup.sampler.set_epoch(2 + r)
        jobs = [("loop", loop_setup, lambda: iter(loop_setup.loader))]
        jobs += [(name, setup, lambda: iter(premade)) for name, setup in setups.items()]
        for name, setup, batches in (jobs if r % 2 == 0 else jobs[::-1]):
            rates[name].append(_timed_steps(setup, batches(), params, device, steps))
    med = {name: float(np.median(v)) for name, v in rates.items()}
    result = {"model": params.model, "batch_size": params.batch_size, "num_workers": params.num_workers,
              "steps": steps, "rounds": rounds, "threads": torch.get_num_threads(), "device": str(device),
              "cpu": describe(), "configured": configured, "precision": precision,
              "flops_per_image_forward": fwd_flops, "flops_per_image_train_step": train_flops,
              "precisions": {name: {"images_per_s": med[name], "gflops_per_s": med[name] * train_flops / 1e9}
                             for name in setups},
              "bf16_vs_fp32": med["bf16"] / med["fp32"],
              "train_loop_images_per_s": med["loop"], "pure_compute_images_per_s": med[configured]}
    result["ratio"] = result["train_loop_images_per_s"] / result["pure_compute_images_per_s"]
    result["data_path_overhead"] = 1 - result["ratio"]
    return result


def bench_fold(against: Path, steps: int = 40, fold: int = 0, rounds: int = 3, eval_images: int = 2048,
               prepared: Path = PREPARED) -> dict:
    """One fold's projected training time under params.yaml's `train` and under `against`'s (a preset or
    params file; its `train` keys override params.yaml's), measured interleaved in one run: the real
    training loop's images/s and validation's images/s, times each side's epochs and rows."""
    from pipeline.config import build, read_params  # noqa: PLC0415
    from pipeline.train import predict_probs  # noqa: PLC0415

    base = read_params()["train"]
    sides = {"params.yaml": load_section("train", TrainParams),
             str(against): build(TrainParams, {**base, **(read_params(against).get("train") or {})}, "train",
                                 str(against))}
    meta, images, labels, folds = load_prepared(prepared, fold)
    device = resolve_device(sides["params.yaml"].device)
    rows, val = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    setups = {}
    for name, p in sides.items():
        seed_everything(0)
        setups[name] = TrainingSetup.create(p, meta, images, labels, rows, device, seed=0)
        _timed_steps(setups[name], iter(setups[name].loader), p, device, 3)
    train_rates: dict[str, list[float]] = {name: [] for name in sides}
    eval_rates: dict[str, list[float]] = {name: [] for name in sides}
    x_val = images[val[:eval_images]]
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            s, p = setups[name], sides[name]
            s.sampler.set_epoch(r + 1)
            train_rates[name].append(_timed_steps(s, iter(s.loader), p, device, steps))
            t0 = time.perf_counter()
            predict_probs(s.run.model, x_val, device, channels_last=s.channels_last, amp_dtype=s.amp_dtype)
            eval_rates[name].append(len(x_val) / (time.perf_counter() - t0))
    result: dict = {"fold": fold, "threads": torch.get_num_threads(), "rounds": rounds, "steps": steps, "sides": {}}
    for name, p in sides.items():
        tr, ev = float(np.median(train_rates[name])), float(np.median(eval_rates[name]))
        epoch_s = len(rows) / tr + len(val) / ev
        result["sides"][name] = {"model": p.model, "epochs": p.epochs, "batch_size": p.batch_size,
                                 "train_images_per_s": tr, "eval_images_per_s": ev, "epoch_seconds": epoch_s,
                                 "fold_seconds": p.epochs * epoch_s}
    mine, theirs = result["sides"]["params.yaml"], result["sides"][str(against)]
    result["fold_time_ratio"] = mine["fold_seconds"] / theirs["fold_seconds"]
    result["train_speed_ratio"] = mine["train_images_per_s"] / theirs["train_images_per_s"]
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
    x = np.asarray(images[:4096]).transpose(0, 3, 1, 2).copy()  # writable and C-contiguous (torch wants both)
    engines = {"onnx_fp32": Engine(models_dir / "ensemble.onnx", provider="cpu", threads=threads),
               "onnx_int8": Engine(models_dir / "ensemble_int8.onnx", provider="cpu", threads=threads)}

    @torch.inference_mode()
    def eager(batch: np.ndarray) -> None:
        model(torch.from_numpy(batch))

    flops = ensemble_flops_per_image(model, x)
    rows = []
    for bs in batch_sizes:
        min_images = max(bs * 4, 256)
        row = {"batch": bs, "threads": threads, "folds": len(spec["folds"]), "views": len(spec["views"]),
               "flops_per_image": flops, "torch_eager": _rate(eager, x, bs, min_images)}
        for name, engine in engines.items():
            row[name] = _rate(engine.predict, x, bs, min_images)
        for name in ("torch_eager", *engines):
            row[f"{name}_gflops"] = row[name] * flops / 1e9
        row["fp32_vs_eager"] = row["onnx_fp32"] / row["torch_eager"]
        row["int8_vs_eager"] = row["onnx_int8"] / row["torch_eager"]
        row["int8_vs_fp32"] = row["onnx_int8"] / row["onnx_fp32"]
        rows.append(row)
        _logger.info("batch %d: eager %.0f, fp32 %.0f, int8 %.0f images/s", bs, row["torch_eager"],
                     row["onnx_fp32"], row["onnx_int8"])
    return rows


@torch.inference_mode()
def ensemble_flops_per_image(model: torch.nn.Module, images_nchw: np.ndarray) -> float:
    """FLOPs of one image through the whole ensemble (every fold x TTA view), by torch.utils.flop_counter:
    the multiply-adds (x2) of convs and matmuls; the INT8 graph does the same number of operations."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    batch = torch.from_numpy(np.array(images_nchw[:8]))  # a writable copy
    with FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops() / len(batch)


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
