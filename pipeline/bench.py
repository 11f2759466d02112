"""Benchmarks that print ratios measured side by side in one run (never asserted in tests).

    foldwise bench train [--steps 60] [--fold 0]

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
    for r in range(rounds):  # interleave so drift in machine load hits both alike
        setup.sampler.set_epoch(2 + r)
        loop.append(_timed_steps(setup, iter(setup.loader), params, device, steps))
        compute.append(_timed_steps(setup, iter(premade), params, device, steps))
    result = {"model": params.model, "batch_size": params.batch_size, "num_workers": params.num_workers,
              "steps": steps, "threads": torch.get_num_threads(), "device": str(device),
              "train_loop_images_per_s": float(np.median(loop)),
              "pure_compute_images_per_s": float(np.median(compute))}
    result["ratio"] = result["train_loop_images_per_s"] / result["pure_compute_images_per_s"]
    result["data_path_overhead"] = 1 - result["ratio"]
    return result
