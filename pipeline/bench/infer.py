"""`foldwise bench infer`: PyTorch eager (folds x TTA views) against the FP32 and INT8 ONNX
ensembles, on the same images and threads, side by side in one run (images/s, GFLOP/s, ratios);
with a distilled student (models/student/), its FP32 and INT8 graphs and one fold model's graph
(fold 0 alone, no TTA, exported here) beside them, with their sizes.

    foldwise bench infer [--batch 1 --batch 64 --batch 512]     # also writes bench/infer.json
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core import paths
from pipeline.export.student import export_one_model, read_student
from pipeline.modeling.ensemble import load_ensemble
from serve.engine import Engine

_logger = logging.getLogger(__name__)


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
                prepared: Path = paths.PREPARED, models_dir: Path = paths.MODELS, rounds: int = 3) -> list[dict]:
    """PyTorch eager (fold models x TTA views) vs the FP32 and INT8 ONNX ensembles, same threads:
    each side's images/s is the median of `rounds` interleaved runs."""
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    model, spec = load_ensemble(models_dir / paths.ENSEMBLE_JSON.name)
    images = np.load(paths.Prepared(prepared).train_images, mmap_mode="r")
    x = np.asarray(images[:4096]).transpose(0, 3, 1, 2).copy()  # writable and C-contiguous (torch wants both)
    engines = {name: Engine(paths.graph(graph, models_dir), provider="cpu", threads=threads, data_parallel=True)
               for name, graph in (("onnx_fp32", "fp32"), ("onnx_int8", "int8"))}  # as `foldwise predict` runs them
    sizes = {"onnx_fp32": paths.graph("fp32", models_dir).stat().st_size}
    tmp = tempfile.TemporaryDirectory(prefix="foldwise-bench-")
    if read_student(models_dir / paths.STUDENT.name) is not None:
        one_fold = Path(tmp.name) / "one_fold.onnx"
        meta = json.loads(paths.Prepared(prepared).meta.read_text())
        export_one_model(paths.FoldFiles(Path(spec["fold_dirs"][0])).model, meta, one_fold, x, "bench", "one fold")
        for name, path in (("student_fp32", paths.graph("student", models_dir)),
                           ("student_int8", paths.graph("student_int8", models_dir)), ("one_fold", one_fold)):
            engines[name] = Engine(path, provider="cpu", threads=threads, data_parallel=True)
            sizes[name] = path.stat().st_size

    @torch.inference_mode()
    def eager(batch: np.ndarray) -> None:
        model(torch.from_numpy(batch))

    flops = ensemble_flops_per_image(model, x)
    runners = {"torch_eager": eager, **{name: engine.predict for name, engine in engines.items()}}
    rows = []
    for bs in batch_sizes:
        min_images = max(bs * 4, 256)
        row = {"batch": bs, "threads": threads, "folds": len(spec["folds"]), "views": len(spec["views"]),
               "flops_per_image": flops, "rounds": rounds}
        rates: dict[str, list[float]] = {name: [] for name in runners}
        for r in range(rounds):  # interleaved, the order reversed every other round: drift hits every side
            for name in (list(runners) if r % 2 == 0 else list(runners)[::-1]):
                rates[name].append(_rate(runners[name], x, bs, min_images))
        row.update({name: float(np.median(v)) for name, v in rates.items()})
        for name in ("torch_eager", *engines):
            row[f"{name}_gflops"] = row[name] * flops / 1e9
        row["fp32_vs_eager"] = row["onnx_fp32"] / row["torch_eager"]
        row["int8_vs_eager"] = row["onnx_int8"] / row["torch_eager"]
        row["int8_vs_fp32"] = row["onnx_int8"] / row["onnx_fp32"]
        if "student_fp32" in row:
            row["student_vs_ensemble"] = row["student_fp32"] / row["onnx_fp32"]
            row["student_vs_one_fold"] = row["student_fp32"] / row["one_fold"]
            row.update({f"{name}_bytes": size for name, size in sizes.items()})
        rows.append(row)
        _logger.info("batch %d: eager %.0f, fp32 %.0f, int8 %.0f images/s", bs, row["torch_eager"],
                     row["onnx_fp32"], row["onnx_int8"])
    for engine in engines.values():
        engine.close()
    tmp.cleanup()
    return rows


@torch.inference_mode()
def ensemble_flops_per_image(model: torch.nn.Module, images_nchw: np.ndarray) -> float:
    """FLOPs of one image through the whole ensemble (every fold x TTA view), by torch.utils.flop_counter:
    the multiply-adds (x2) of convs and matmuls; the INT8 graph does the same number of operations."""
    batch = torch.from_numpy(np.array(images_nchw[:8]))  # a writable copy
    with FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops() / len(batch)
