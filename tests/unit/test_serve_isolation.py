"""serve/ is the inference half: it must run with onnxruntime and numpy alone, never torch or timm."""
from __future__ import annotations

import subprocess
import sys

from helpers.cli import ROOT


def test_serve_imports_neither_torch_nor_timm() -> None:
    code = ("import sys, pkgutil, importlib, serve\n"
            "mods = [m.name for m in pkgutil.walk_packages(serve.__path__, 'serve.')]\n"
            "for m in mods: importlib.import_module(m)\n"
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'timm', 'torchvision'))\n"
            "print(len(mods), bad)\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    n_modules = int(result.stdout.split()[0])
    assert n_modules >= 18  # serve/ and serve/http/


def test_distributed_inference_imports_neither_torch_nor_timm() -> None:
    """The Ray inference driver and actors (pipeline/distributed/ray_predict.py) run on onnxruntime alone."""
    code = ("import sys, pipeline.distributed.ray_predict, pipeline.distributed.cluster\n"
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'timm', 'torchvision'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
