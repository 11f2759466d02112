"""What produced a result: the git commit, package versions, the machine. Recorded by train
(config.json), submit (the submission message), the Kaggle package and the report.

    git_commit()                  # 'b88fdcf' (None outside a git checkout)
    versions(["torch", "timm"])   # {'python': '3.11.7', 'torch': '2.14.1', 'timm': '1.0.20'}
    cpu_info()                    # ('AMD EPYC', {'avx2', 'avx512_bf16', ...})

Versions come from the installed distributions' metadata, so nothing here imports torch or timm.
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def git_commit() -> str | None:
    """The short commit of the working directory's git checkout, or None."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def versions(distributions: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Python's version and each installed distribution's ('not installed' when absent)."""
    found = {"python": platform.python_version()}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; ('', empty) where there is none (macOS, Windows)."""
    path = Path("/proc/cpuinfo")
    model, flags = "", frozenset()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def machine() -> str:
    """One line for every timing: CPU model, core count and the SIMD flags that matter for torch and
    onnxruntime (`AMD EPYC (2 cores; avx2 fma avx512f avx512_bf16 avx512_vnni)`)."""
    model, flags = cpu_info()
    simd = [f for f in SIMD_FLAGS if f in flags]
    return (f"{model or platform.processor() or platform.machine()} "
            f"({os.cpu_count()} cores; {' '.join(simd) or 'no AVX2'})")
