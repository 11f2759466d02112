"""The device and precision a run uses, and what this CPU can do natively: bf16 math for training,
int8 dot products (VNNI) for inference.

    from pipeline.training.hardware import cpu_precision
    cpu_precision()   # {'model': 'AMD EPYC', 'bf16': False, 'vnni': False, 'flags': [...], ...}

bf16 autocast on a CPU is only faster than float32 where the CPU multiplies bf16 in hardware
(x86 `avx512_bf16` or `amx_bf16`, Arm `bf16`); elsewhere PyTorch emulates it and it is slower.
int8 inference gets its large speed-up from VNNI (`avx512_vnni`, `avx_vnni`, AMX int8, Arm `i8mm`
/ `asimddp`); with AVX2 alone onnxruntime's int8 kernels gain much less and need 7-bit weights.
The flags come from torch's own CPU probe (`torch.cpu.get_capabilities`, x86) and, on Linux, from
/proc/cpuinfo (Arm and as a cross-check).
"""
from __future__ import annotations

import ctypes
import functools
import logging
import platform

import torch

from pipeline.core.provenance import cpu_info
from serve.errors import UserError

_logger = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 << 20   # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit): blocks below it come from the heap
TRIM_THRESHOLD = 1 << 30    # free heap kept before glibc gives memory back to the system

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")           # x86 AVX-512 BF16 / AMX; Arm FEAT_BF16
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "i8mm", "asimddp")


@functools.lru_cache(maxsize=1)
def cpu_precision() -> dict:
    """The CPU's model, whether it has native bf16 and int8 dot products, and the flags that say so."""
    model, found = cpu_info()
    flags = set(found)
    try:
        caps = torch.cpu.get_capabilities()
        flags |= {k for k, v in caps.items() if v is True}
        model = model or str(caps.get("cpu_name", ""))
    except (AttributeError, RuntimeError) as exc:  # an older torch: /proc/cpuinfo alone
        _logger.debug("torch CPU capabilities unavailable (%s)", exc)
    bf16 = sorted(f for f in BF16_FLAGS if f in flags)
    vnni = sorted(f for f in VNNI_FLAGS if f in flags)
    simd = [f for f in ("avx512f", "avx512_f", "avx2", "fma", "fma3", "asimd", "sve") if f in flags]
    return {"model": model or platform.processor() or platform.machine(), "machine": platform.machine(),
            "bf16": bool(bf16), "bf16_flags": bf16, "vnni": bool(vnni), "vnni_flags": vnni, "simd": simd}


def describe() -> str:
    """One line for logs: model, SIMD, bf16 and VNNI."""
    c = cpu_precision()
    bf16 = f"native bf16 ({', '.join(c['bf16_flags'])})" if c["bf16"] else "no native bf16"
    vnni = f"int8 VNNI ({', '.join(c['vnni_flags'])})" if c["vnni"] else "no VNNI"
    return f"{c['model']} [{', '.join(c['simd']) or c['machine']}; {bf16}; {vnni}]"


def resolve_device(request: str) -> torch.device:
    if request == "cuda" and not torch.cuda.is_available():
        raise UserError("params.yaml: train.device: cuda requested but torch sees no CUDA GPU")
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(request)


def resolve_precision(amp: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """(autocast dtype or None for float32, why): `auto` takes bf16 on a CPU only where it is native."""
    if amp == "off":
        return None, "fp32 (train.amp: off)"
    if device.type == "cuda":
        if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16, "bf16 autocast (CUDA)"
        return torch.float16, "fp16 autocast (CUDA)"
    cpu = cpu_precision()
    if amp == "fp16":
        return None, "fp32 (train.amp: fp16 applies on CUDA only)"
    if amp == "bf16":
        native = (f"native: {', '.join(cpu['bf16_flags'])}" if cpu["bf16"]
                  else "this CPU has no native bf16, so it is emulated and slower than fp32")
        return torch.bfloat16, f"bf16 autocast (train.amp: bf16; {native})"
    if cpu["bf16"]:
        return torch.bfloat16, f"bf16 autocast (train.amp: auto; CPU has native bf16: {', '.join(cpu['bf16_flags'])})"
    return None, "fp32 (train.amp: auto; CPU has no native bf16 (avx512_bf16/amx_bf16): bf16 would be emulated)"


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    return resolve_precision(amp, device)[0]


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed tensor buffers for reuse (True where it could).

    By default glibc serves each block above its mmap threshold (dynamic, a few MB) with a fresh
    mapping and unmaps it when freed, and trims the heap's free top, so every training step's
    activations and gradients fault their pages in again on first touch: on 2 Zen 4 cores the
    zero-fill of one max-pool's gradient (128 x 32 x 28 x 28) took 10 ms of a ~50 ms bf16 step.
    With the thresholds raised the buffers stay mapped: the real bf16 training loop ran +16-18% there
    (docs/results.md, issue 25). Process-wide, once; a no-op where the C library has no `mallopt` (macOS, musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    done = bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
    _logger.debug("malloc keeps freed buffers: %s", done)
    return done
