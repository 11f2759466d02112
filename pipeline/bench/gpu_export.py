"""Export and inference for `foldwise bench gpu`: the trained model as ONNX (the export stage's
torch.onnx dynamo path and checks), parity against PyTorch on the device, onnxruntime's speed.

    result = export_and_infer(model, meta, prepared, Path("bench/gpu-work/export"), torch.device("cuda"), 256)

onnxruntime runs on its CUDA provider where it loads, with IO binding (input and outputs stay on
the GPU: the copy is not what is timed), in FP32 and FP16 (onnxconverter-common, as the export
stage makes ensemble_fp16.onnx); elsewhere on the CPU provider in FP32, and the result says so.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pipeline.export.graph import export_onnx
from pipeline.export.variants import to_fp16

_logger = logging.getLogger(__name__)


class Probs(nn.Module):
    """uint8 images -> (probs, probs as one fold): the outputs the export stage's graphs have."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.softmax(self.model(images).float(), dim=1)
        return p, p[:, None]


def _session(path: Path, cuda: bool):
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), providers=providers)


def _rate(session, x: np.ndarray, io_binding: bool, seconds: float = 1.0) -> float:
    """images/s of `session` on batch `x`, after two warm-up runs."""
    import onnxruntime as ort

    if io_binding:
        binding = session.io_binding()
        binding.bind_ortvalue_input("images", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for name in ("probs", "fold_probs"):
            binding.bind_output(name, "cuda")

        def once() -> None:
            session.run_with_iobinding(binding)
    else:
        def once() -> None:
            session.run(None, {"images": x})
    once()
    once()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or count < 3:
        once()
        count += 1
    return count * len(x) / (time.perf_counter() - t0)


def export_and_infer(model: nn.Module, meta: dict, prepared: Path, work: Path, device: torch.device,
                     batch: int) -> dict:
    import onnxruntime as ort

    work.mkdir(parents=True, exist_ok=True)
    images = np.load(prepared / "train_images.npy", mmap_mode="r")
    x = np.ascontiguousarray(np.asarray(images[:batch]).transpose(0, 3, 1, 2))
    eager = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    t0 = time.perf_counter()
    fp32 = work / "model.onnx"
    export_onnx(Probs(eager.cpu()), torch.from_numpy(x[:2]), fp32, {"producer": "foldwise bench gpu"})
    export_s = time.perf_counter() - t0
    cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    session = _session(fp32, cuda)
    cuda = cuda and session.get_providers()[0] == "CUDAExecutionProvider"
    with torch.inference_mode():
        ref = Probs(eager.to(device))(torch.from_numpy(x[:64]).to(device))[0].cpu().numpy()
    got = session.run(["probs"], {"images": x[:64]})[0]
    parity = {"rows": int(len(got)), "device": f"PyTorch on {device.type} vs onnxruntime on "
              f"{'CUDA' if cuda else 'CPU'}", "max_abs_diff": float(np.abs(got - ref).max()),
              "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}
    result = {"export_seconds": export_s, "bytes": fp32.stat().st_size, "parity": parity, "batch": batch,
              "provider": "CUDAExecutionProvider" if cuda else "CPUExecutionProvider", "io_binding": cuda,
              "images_per_s": {"fp32": _rate(session, x, cuda)}}
    if cuda:
        fp16 = work / "model_fp16.onnx"
        to_fp16(fp32, fp16)
        half = _session(fp16, True)
        result["fp16_max_abs_diff_vs_fp32"] = float(np.abs(half.run(["probs"], {"images": x[:64]})[0] - got).max())
        result["images_per_s"]["fp16"] = _rate(half, x, True)
    else:
        result["note"] = ("onnxruntime's CUDA provider is not used here (--device cpu, or it is not installed or "
                          "does not load: foldwise doctor says which); FP16 is measured on the CUDA provider only")
    _logger.info("export: parity %.2g, onnxruntime %s %s", parity["max_abs_diff"], result["provider"],
                 {k: round(v) for k, v in result["images_per_s"].items()})
    return result
