"""`foldwise bench train` and `foldwise bench fold`: training speed, measured side by side in one run.

    foldwise bench train [--steps 40] [--fold 0]
    foldwise bench fold --against presets/cpu-cnn-4ep.yaml

`bench train`: the same model's train step in fp32 and in bf16 autocast on the same batches
(their ratio says what bf16 buys on this machine; bf16 only where it is native, on CUDA, or asked
for by train.amp: `bf16_measured`), the FLOPs of a step (torch.utils.flop_counter)
and the GFLOP/s reached; and the real training loop (DataLoader, Albumentations, the train step)
against the step on pre-made tensors (the same augmented batches, already in memory): their
images/s ratio is the data path's cost; and the denominator: a plain 2048 x 2048 matrix product in
each precision, measured in the same rounds, with each precision's training GFLOP/s as a fraction
of it. All interleaved in one run.

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
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core import paths
from pipeline.core.config import build, load_section, read_params
from pipeline.data.batches import load_prepared, seed_everything
from pipeline.modeling.inference import predict_probs
from pipeline.training.hardware import cpu_precision, describe, resolve_device, resolve_precision
from pipeline.training.loop import TrainingSetup, train_step
from pipeline.training.params import TrainParams

MATMUL_N = 2048  # the denominator's matrix size (`foldwise bench train`): n x n @ n x n, 2 n^3 FLOPs

_logger = logging.getLogger(__name__)


def timed_steps(setup: TrainingSetup, batches, params: TrainParams, device: torch.device, steps: int) -> float:
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


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 0.5) -> float:
    """Achievable TFLOP/s of an n x n matrix product (2 n^3 FLOPs each), timed after a warm-up."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ b
        count += 10
        sync()
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e12


def train_flops_per_image(setup: TrainingSetup, x: torch.Tensor, y: torch.Tensor,
                          device: torch.device) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per image of one train step, by torch.utils.flop_counter
    (on a copy of the model, so no weights or optimizer state change)."""
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


def bf16_measured(params: TrainParams, device: torch.device) -> bool:
    """bf16 is timed on CUDA, on CPUs with native bf16, and where train.amp asks for it. Elsewhere
    oneDNN emulates it about 8x slower than fp32 (measured on an AVX2-only EPYC: one 32 -> 64 conv,
    batch 128), so timing it would take most of the run to say what train.amp: auto already avoids."""
    return device.type == "cuda" or bool(cpu_precision()["bf16"]) or params.amp == "bf16"


def _precision_setups(params: TrainParams, meta: dict, images: np.ndarray, labels: np.ndarray,
                      rows: np.ndarray, device: torch.device) -> dict[str, TrainingSetup]:
    """The same model (same initial weights) in fp32 and in bf16 autocast (and fp16 on CUDA if configured)."""
    amps = {"fp32": "off"}
    if bf16_measured(params, device):
        amps["bf16"] = "bf16"
    if device.type == "cuda" and resolve_precision(params.amp, device)[0] == torch.float16:
        amps["fp16"] = "fp16"
    setups = {}
    for name, amp in amps.items():
        seed_everything(0)
        setups[name] = TrainingSetup.create(dataclasses.replace(params, amp=amp), meta, images, labels, rows,
                                            device, seed=0)
    return setups


def bench_train(steps: int = 40, fold: int = 0, warmup: int = 3, rounds: int = 2,
                prepared: Path = paths.PREPARED) -> dict:
    """fp32 vs bf16 train steps (same model, same batches), FLOPs and GFLOP/s, and the data path's cost
    (the real loop vs pre-made batches) at the configured precision, measured interleaved in one run."""
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
        timed_steps(setup, iter(premade[:warmup]), params, device, warmup)
    rates: dict[str, list[float]] = {"loop": [], **{name: [] for name in setups}}
    matmul = {name: [] for name in setups}  # the denominator: a plain n x n product, in the same rounds
    for r in range(rounds):  # interleave, alternating the order, so drift in load hits every side alike
        for name in setups:
            matmul[name].append(1e3 * matmul_tflops(device, {"fp32": torch.float32, "bf16": torch.bfloat16,
                                                             "fp16": torch.float16}[name], MATMUL_N, 0.3))
        loop_setup.sampler.set_epoch(2 + r)
        jobs = [("loop", loop_setup, lambda: iter(loop_setup.loader))]
        jobs += [(name, setup, lambda: iter(premade)) for name, setup in setups.items()]
        for name, setup, batches in (jobs if r % 2 == 0 else jobs[::-1]):
            rates[name].append(timed_steps(setup, batches(), params, device, steps))
    med = {name: float(np.median(v)) for name, v in rates.items()}
    result = {"model": params.model, "batch_size": params.batch_size, "num_workers": params.num_workers,
              "steps": steps, "rounds": rounds, "threads": torch.get_num_threads(), "device": str(device),
              "cpu": describe(), "configured": configured, "precision": precision,
              "flops_per_image_forward": fwd_flops, "flops_per_image_train_step": train_flops,
              "precisions": {name: {"images_per_s": med[name], "gflops_per_s": med[name] * train_flops / 1e9}
                             for name in setups},
              "bf16_vs_fp32": med["bf16"] / med["fp32"] if "bf16" in med else None,
              "train_loop_images_per_s": med["loop"], "pure_compute_images_per_s": med[configured]}
    result["matmul_n"] = MATMUL_N
    for name in setups:
        mm = float(np.median(matmul[name]))
        result["precisions"][name].update(matmul_gflops_per_s=mm,
                                          fraction_of_matmul=result["precisions"][name]["gflops_per_s"] / mm)
    result["ratio"] = result["train_loop_images_per_s"] / result["pure_compute_images_per_s"]
    result["data_path_overhead"] = 1 - result["ratio"]
    return result


def bench_fold(against: Path, steps: int = 40, fold: int = 0, rounds: int = 3, eval_images: int = 2048,
               prepared: Path = paths.PREPARED) -> dict:
    """One fold's projected training time under params.yaml's `train` and under `against`'s (a preset or
    params file; its `train` keys override params.yaml's), measured interleaved in one run: the real
    training loop's images/s and validation's images/s, times each side's epochs and rows."""
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
        timed_steps(setups[name], iter(setups[name].loader), p, device, 3)
    train_rates: dict[str, list[float]] = {name: [] for name in sides}
    eval_rates: dict[str, list[float]] = {name: [] for name in sides}
    x_val = images[val[:eval_images]]
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            s, p = setups[name], sides[name]
            s.sampler.set_epoch(r + 1)
            train_rates[name].append(timed_steps(s, iter(s.loader), p, device, steps))
            t0 = time.perf_counter()
            predict_probs(s.run.model, x_val, device, channels_last=s.channels_last, amp_dtype=s.amp_dtype)
            eval_rates[name].append(len(x_val) / (time.perf_counter() - t0))
    result: dict = {"fold": fold, "threads": torch.get_num_threads(), "rounds": rounds, "steps": steps, "sides": {}}
    for name, p in sides.items():
        tr, ev = float(np.median(train_rates[name])), float(np.median(eval_rates[name]))
        epoch_s = len(rows) / tr + len(val) / ev
        epochs = p.for_rows(len(rows)).epochs  # train.steps, where set, decides the epochs
        result["sides"][name] = {"model": p.model, "epochs": epochs, "batch_size": p.batch_size,
                                 "train_images_per_s": tr, "eval_images_per_s": ev, "epoch_seconds": epoch_s,
                                 "fold_seconds": epochs * epoch_s}
    mine, theirs = result["sides"]["params.yaml"], result["sides"][str(against)]
    result["fold_time_ratio"] = mine["fold_seconds"] / theirs["fold_seconds"]
    result["train_speed_ratio"] = mine["train_images_per_s"] / theirs["train_images_per_s"]
    return result
