"""`foldwise doctor`: what this machine has for foldwise, each with what to do when it is missing.

    foldwise doctor            # exit 0 when the default pipeline can run here (a GPU is not needed)

Python and the packages against the ranges foldwise supports (pyproject.toml), torch's CUDA build
and the GPUs it sees (name, memory, bf16), onnxruntime's providers and whether its CUDA provider
really loads (a one-node graph is run on it), the CPU's native bf16 and int8 VNNI, DVC and git,
the Kaggle credentials (present or not: never printed), the free disk. A `fail` line stops the
default pipeline; a `warn` line costs speed or a feature (the GPU, Kaggle uploads).
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import versions
from pipeline.distributed.dvcstate import dvc_bin
from pipeline.kaggle.client import NO_CREDENTIALS, credentials_source

REQUIRED = ("torch", "torchvision", "timm", "albumentations", "onnx", "dvc")


@dataclass(frozen=True)
class Check:
    name: str
    status: str        # ok | warn | fail
    detail: str
    fix: str = ""


def _packages() -> list[Check]:
    checks = []
    py = versions.python_problem()
    checks.append(Check("python", "fail" if py else "ok", py or f"{sys.version.split()[0]} "
                        f"(supported {versions.python_range() or 'any'})", "use a supported Python" if py else ""))
    for name in REQUIRED:
        have, problem = versions.installed(name), versions.problem(name)
        if have is None:
            checks.append(Check(name, "fail", "not installed", f"pip install '{name}{versions.supported(name)}'"))
        else:
            checks.append(Check(name, "warn" if problem else "ok", problem or f"{have} (supported "
                                f"{versions.supported(name) or 'any'})", "" if not problem else
                                f"pip install '{name}{versions.supported(name)}'"))
    return checks


def _torch() -> list[Check]:
    import torch

    cuda = torch.version.cuda
    checks = [Check("torch build", "ok", f"CUDA {cuda}" if cuda else "CPU only (no CUDA in this build)",
                    "" if cuda else "for a GPU: install torch's CUDA build (pytorch.org/get-started)")]
    if not torch.cuda.is_available():
        checks.append(Check("gpu", "warn", "no CUDA device visible to torch",
                            "training and inference run on the CPU (slower); check nvidia-smi and the driver"))
        return checks
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        checks.append(Check(f"gpu {i}", "ok", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute {p.major}.{p.minor}"
                            f", bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"))
    return checks


def _tiny_graph() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "doctor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


def _onnxruntime() -> list[Check]:
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return [Check("onnxruntime", "fail", "not installed", "pip install onnxruntime (onnxruntime-gpu on a GPU box)")]
    available = ort.get_available_providers()
    checks = [Check("onnxruntime", "ok", f"{ort.__version__}; providers {', '.join(available)}")]
    if "CUDAExecutionProvider" not in available:
        return [*checks, Check("onnxruntime cuda", "warn", "no CUDA provider in this build",
                               "for GPU inference: pip install onnxruntime-gpu (and not onnxruntime beside it)")]
    loads, why = _cuda_session(ort, np)
    fix = ("no NVIDIA driver here (libcuda.so.1): nothing to do on a CPU machine" if "libcuda.so" in why else
           "install the CUDA and cuDNN libraries onnxruntime-gpu needs: pip install 'onnxruntime-gpu[cuda,cudnn]'")
    return [*checks, Check("onnxruntime cuda", "ok" if loads else "warn",
                           "the CUDA provider loads and runs a graph" if loads else
                           f"the CUDA provider does not load ({why})", "" if loads else fix)]


def _cuda_session(ort, np) -> tuple[bool, str]:
    """Run a one-node graph on the CUDA provider: (it ran there, why not). onnxruntime reports a
    provider that fails to load on the process's stderr (file descriptor 2): read from there."""
    import os
    import tempfile

    with tempfile.TemporaryFile(mode="w+") as err:
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            session = ort.InferenceSession(_tiny_graph(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            session.run(None, {"x": np.zeros((1, 4), np.float32)})
            loads, why = session.get_providers()[0] == "CUDAExecutionProvider", "it fell back to the CPU"
        except Exception as exc:  # noqa: BLE001  (any failure of the provider is the finding)
            loads, why = False, str(exc).splitlines()[0][:160]
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        said = [ln for ln in err.read().splitlines() if "error:" in ln or "Require" in ln]
    if said and not loads:
        why = said[0].rsplit("error:", 1)[-1].strip()[:160] if "error:" in said[0] else said[0][-160:]
    return loads, why


def _cpu() -> list[Check]:
    from pipeline.training.hardware import cpu_precision

    c = cpu_precision()
    return [Check("cpu", "ok", f"{c['model']} ({', '.join(c['simd']) or c['machine']})"),
            Check("cpu bf16", "ok" if c["bf16"] else "warn", "native (" + ", ".join(c["bf16_flags"]) + ")"
                  if c["bf16"] else "no native bf16: CPU training runs fp32 (train.amp: auto)",
                  "" if c["bf16"] else "a CPU with AVX512-BF16 or AMX trains about 2x faster"),
            Check("cpu int8", "ok" if c["vnni"] else "warn", "VNNI (" + ", ".join(c["vnni_flags"]) + ")"
                  if c["vnni"] else "no VNNI: the INT8 graph gains less over FP32")]


def _tools() -> list[Check]:
    dvc, git, ours = shutil.which("dvc"), shutil.which("git"), dvc_bin()   # ours: this venv's, else PATH's
    if dvc:
        dvc_check = Check("dvc on PATH", "ok", dvc)
    elif ours != "dvc":
        dvc_check = Check("dvc on PATH", "warn", f"not on PATH, but in this environment ({ours})",
                          "make run finds it; for dvc by hand: . .venv/bin/activate")
    else:
        dvc_check = Check("dvc on PATH", "fail", "not found", "pip install dvc (or make run, which installs it)")
    checks = [dvc_check,
              Check("git", "ok" if git else "warn", git or "not found", "" if git else
                    "apt-get install git (DVC experiments, foldwise ladder and compare need it)")]
    source = credentials_source()
    checks.append(Check("kaggle credentials", "ok" if source else "warn", f"present ({source})" if source else
                        "none", "" if source else NO_CREDENTIALS + "; needed for download.source: kaggle and uploads"))
    free = shutil.disk_usage(Path.cwd()).free / 2**30
    checks.append(Check("disk", "ok" if free >= 5 else "warn", f"{free:.0f} GiB free here",
                        "" if free >= 5 else "the default run needs about 2 GiB; a GPU recipe's checkpoints more"))
    return checks


def run_checks() -> list[Check]:
    checks = _packages()
    if versions.installed("torch"):
        checks += _torch() + _onnxruntime() + _cpu()
    else:
        from pipeline.core.provenance import machine

        checks += [*_onnxruntime(), Check("cpu", "ok", machine())]
    return checks + _tools()


def lines(checks: list[Check]) -> list[str]:
    out = []
    for c in checks:
        out.append(f"{c.status:<4}  {c.name:<20} {c.detail}")
        if c.fix:
            out.append(f"{'':<26}→ {c.fix}")
    fails = [c.name for c in checks if c.status == "fail"]
    out.append("the default pipeline can run here" if not fails else
               f"the default pipeline cannot run here: fix {', '.join(fails)}")
    return out
