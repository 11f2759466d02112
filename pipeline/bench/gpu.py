"""`foldwise bench gpu`: one short check that training, kill-and-resume, export and inference work on
CUDA, with what each reaches against the device's own bf16 matrix-product rate; one JSON file.

    foldwise bench gpu --out bench                             # a CUDA machine: a few minutes, no network
    PYTHONPATH=/path/to/foldwise python -m pipeline.bench.gpu --out /tmp/gpu   # a source tree, no pip install
    foldwise bench gpu --device cpu --steps 3 --batch-size 8 --out /tmp/gpu  # what the tests run

1. matmul: the device's achievable bf16 (and fp32) TFLOP/s, a square torch.matmul: the denominator.
2. training: `--preset` (presets/full.yaml: WRN-28-10, bf16 autocast, channels_last) for `--steps`
   steps with torch.compile off and on: images/s of the real loop (DataLoader + Albumentations) and
   of the same batches already in memory (their ratio is the data path's share of a step), TFLOP/s
   from the model's FLOPs (torch.utils.flop_counter) and their fraction of (1), peak GPU memory.
3. kill-and-resume: a fold trained in a subprocess is SIGKILLed after its first epoch's
   checkpoint, resumed, and compared weight by weight with an uninterrupted run of the same epochs
   in deterministic mode (torch.use_deterministic_algorithms; on CUDA a tolerance is stated).
4. export: the trained model to ONNX; its parity against PyTorch on the device; onnxruntime (the
   CUDA provider where it loads, with IO binding; else the CPU provider, and it says so) images/s
   in FP32 and FP16 at `--infer-batch`.
5. every figure printed as a table and written to `--out`/gpu.json.

Data: synthetic 28x28 images in the prepared layout (pipeline/bench/gpu_data.py). Imports neither
DVC nor the kaggle package: torch, torchvision, timm, albumentations, numpy, pandas, onnx,
onnxruntime, onnxscript, onnxconverter-common and ruamel.yaml are all it needs (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from pipeline.bench.gpu_data import write_prepared
from pipeline.bench.gpu_export import export_and_infer
from pipeline.bench.gpu_resume import kill_and_resume
from pipeline.bench.train import matmul_tflops, timed_steps, train_flops_per_image
from pipeline.core.config import build
from pipeline.core.provenance import machine, versions
from pipeline.data.batches import load_prepared, seed_everything
from pipeline.training.loop import TrainingSetup
from pipeline.training.params import TrainParams
from serve.atomic import write_text
from serve.errors import UserError

_logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]   # the source tree (presets/ beside pipeline/)


def preset_params(preset: Path, device: torch.device, batch_size: int | None, **changes) -> TrainParams:
    """`train` of the preset over TrainParams' defaults (params.yaml is not read: this runs anywhere)."""
    from ruamel.yaml import YAML

    try:
        train = (YAML(typ="safe").load(preset.read_text()) or {}).get("train") or {}
    except FileNotFoundError:
        raise UserError(f"--preset: {preset}: not found") from None
    values = {**train, "device": device.type, "folds": [{"fold": 0, "seed": 0}], "epochs": 1, "steps": None,
              "num_workers": min(int(train.get("num_workers", 0)), 4), **changes}
    if batch_size:
        values["batch_size"] = batch_size
    return build(TrainParams, values, "train", str(preset))


def measure_training(params: TrainParams, prepared: Path, device: torch.device, steps: int, warmup: int,
                     peak: float) -> tuple[dict, torch.nn.Module]:
    """The real loop and pre-made batches, `steps` each after `warmup` (compilation happens there)."""
    meta, images, labels, folds = load_prepared(prepared, 0)
    seed_everything(0)
    rows = np.flatnonzero(folds != 0)
    setup = TrainingSetup.create(params, meta, images, labels, rows, device, seed=0)
    setup.sampler.set_epoch(1)
    premade = [batch for _, batch in zip(range(steps), setup.loader)]
    t0 = time.perf_counter()
    timed_steps(setup, iter(premade[:warmup] or premade), params, device, warmup)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    setup.sampler.set_epoch(2)
    loop = timed_steps(setup, iter(setup.loader), params, device, steps)
    pure = timed_steps(setup, iter(premade), params, device, steps)
    fwd, train_flops = train_flops_per_image(setup, *premade[0], device)
    tflops = pure * train_flops / 1e12
    return {"compile": params.compile, "precision": setup.precision, "channels_last": setup.channels_last,
            "batch_size": params.batch_size, "steps": steps, "warmup_steps": warmup, "warmup_seconds": warm_s,
            "images_per_s_loop": loop, "images_per_s_compute": pure,
            "data_path_share": max(0.0, 1 - loop / pure), "flops_per_image_train_step": train_flops,
            "flops_per_image_forward": fwd, "tflops": tflops, "fraction_of_matmul_bf16": tflops / peak,
            "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
            }, setup.run.model


def _guarded(part: str, fn):
    """(what `fn` returns, None), or (None, the error in one line): a failed part is recorded and the
    others still run, so one short GPU session comes back with everything it could measure."""
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001  (any failure of a part is its finding, reported, not raised)
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        _logger.error("bench gpu: %s failed: %s", part, error)
        return None, error


def run(device: str, steps: int, batch_size: int | None, out: Path, preset: Path, compile_: bool | None,
        infer_batch: int) -> dict:
    """Steps 1-5 of the module docstring; writes `out`/gpu.json and returns what it holds."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device (foldwise doctor says why); --device cpu runs "
                        "the same check on the CPU")
    work = out / "gpu-work"
    compiles = [False, True] if (compile_ if compile_ is not None else device.type == "cuda") else [False]
    result: dict = {"time": datetime.now().isoformat(timespec="seconds"), "device": str(device),
                    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else machine(),
                    "cpu": machine(), "versions": versions(("torch", "timm", "onnxruntime", "onnxruntime-gpu",
                                                            "onnx", "albumentations")),
                    "cuda": torch.version.cuda, "preset": str(preset)}
    n = 8192 if device.type == "cuda" else 1024
    result["matmul"] = {"n": n, "tflops_bf16": matmul_tflops(device, torch.bfloat16, n),
                        "tflops_fp32": matmul_tflops(device, torch.float32, n)}
    _logger.info("matmul %d: bf16 %.1f, fp32 %.1f TFLOP/s", n, result["matmul"]["tflops_bf16"],
                 result["matmul"]["tflops_fp32"])
    base = preset_params(preset, device, batch_size)
    warmup = max(2, steps // 10)
    prepared = write_prepared(work / "prepared", (steps + warmup) * base.batch_size)
    result["training"], model = [], None
    for on in compiles:
        got, error = _guarded(f"training (compile {on})", lambda on=on: measure_training(
            dataclasses.replace(base, compile=on), prepared, device, steps, warmup, result["matmul"]["tflops_bf16"]))
        if error:
            result["training"].append({"compile": on, "error": error})
            continue
        row, trained = got
        result["training"].append(row)
        model = trained if not on else model   # the eager model is exported
        _logger.info("training, compile %s: %.0f images/s (%.1f%% of the bf16 matmul rate), data path %.0f%%",
                     on, row["images_per_s_loop"], 100 * row["fraction_of_matmul_bf16"], 100 * row["data_path_share"])
    resume, error = _guarded("resume", lambda: kill_and_resume(
        dataclasses.replace(base, deterministic=True, compile=False, epochs=2), work / "resume", min(steps, 10)))
    result["resume"] = resume or {"error": error}
    if model is None:
        result["export"] = {"error": "no trained model to export (training failed)"}
    else:
        meta = json.loads((prepared / "meta.json").read_text())
        exported, error = _guarded("export", lambda: export_and_infer(model, meta, prepared, work / "export",
                                                                       device, infer_batch))
        result["export"] = exported or {"error": error}
    parts = (*result["training"], result["resume"], result["export"])
    result["passed"] = bool(result["resume"].get("passed")) and not any("error" in r for r in parts)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "gpu.json", json.dumps(result, indent=2, default=str))
    return result


def table(r: dict) -> list[str]:
    lines = [f"device {r['device_name']} ({r['device']}), torch {r['versions']['torch']}, CUDA {r['cuda']}",
             f"matmul {r['matmul']['n']}: bf16 {r['matmul']['tflops_bf16']:.1f} TFLOP/s, "
             f"fp32 {r['matmul']['tflops_fp32']:.1f} TFLOP/s (the denominator)",
             f"{'training':<22} {'images/s':>9} {'compute':>9} {'TFLOP/s':>8} {'of bf16':>8} {'data':>6} {'GiB':>6}"]
    for t in r["training"]:
        name = "compile " + ("on" if t["compile"] else "off")
        if "error" in t:
            lines.append(f"{name:<22} failed: {t['error']}")
            continue
        mem = f"{t['peak_memory_gib']:.2f}" if t["peak_memory_gib"] is not None else "-"
        lines.append(f"{name:<22} {t['images_per_s_loop']:>9.0f} {t['images_per_s_compute']:>9.0f} "
                     f"{t['tflops']:>8.2f} {100 * t['fraction_of_matmul_bf16']:>7.1f}% "
                     f"{100 * t['data_path_share']:>5.0f}% {mem:>6}")
    s = r["resume"]
    lines.append(f"kill-and-resume: failed: {s['error']}" if "error" in s else
                 f"kill-and-resume: killed after epoch {s['killed_after_epoch']}, resumed; weights "
                 f"{'identical' if s['identical'] else 'differ'} (max |Δ| {s['max_abs_diff']:.3g}, tolerance "
                 f"{s['tolerance']}): {'pass' if s['passed'] else 'FAIL'}")
    e = r["export"]
    if "error" in e:
        return [*lines, f"export: failed: {e['error']}"]
    lines.append(f"export: parity max |Δprob| {e['parity']['max_abs_diff']:.3g} ({e['parity']['device']}), "
                 f"onnxruntime {e['provider']}{' (IO binding)' if e['io_binding'] else ''}"
                 + (f"; {e['note']}" if e.get("note") else ""))
    lines += [f"  onnxruntime {name:<5} batch {e['batch']}: {v:>9.0f} images/s"
              for name, v in e["images_per_s"].items()]
    return [*lines, "all parts passed" if r["passed"] else "some part FAILED (gpu.json says which)"]


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.bench.gpu`: the same options as `foldwise bench gpu`."""
    from pipeline.core.console import configure, run_or_exit

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--preset", type=Path, default=ROOT / "presets" / "full.yaml")
    parser.add_argument("--compile", dest="compile_", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    configure()
    result: dict = {}
    run_or_exit(lambda: result.update(run(**vars(args))))
    print("\n".join(table(result)))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
