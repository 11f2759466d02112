"""Ready for a GPU box: `foldwise doctor` on this machine, and `foldwise bench gpu`'s steps on the CPU
(`--device cpu --steps 3`) from a source tree with DVC and the kaggle package unimportable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import ROOT, run_cli

pytestmark = pytest.mark.e2e
BLOCKER = '''import sys


class _NoDvcNoKaggle:
    """What a GPU box without DVC or the kaggle package is like: importing either fails."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dvc", "kaggle"):
            raise ImportError(f"{name} is not installed on this machine (the test blocks it)")
        return None


sys.meta_path.insert(0, _NoDvcNoKaggle())
'''
TINY_PRESET = """train:
  model: foldwise_air
  batch_size: 8
  amp: auto
  channels_last: true
  ema: true
  num_workers: 0
  augment:
    transform:
      __class_fullname__: Compose
      p: 1.0
      transforms: [{__class_fullname__: HorizontalFlip, p: 0.5}]
"""


def test_doctor_says_what_the_machine_has_and_never_prints_the_key() -> None:
    result = run_cli("doctor", env={"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": "s3cr3t-kaggle-key"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for name in ("python", "torch", "onnxruntime", "onnxruntime cuda", "cpu bf16", "cpu int8", "dvc on PATH",
                 "kaggle credentials", "disk"):
        assert any(line.split()[1:2] == name.split()[:1] for line in out.splitlines()), (name, out)
    assert "present (environment (KAGGLE_USERNAME/KAGGLE_KEY))" in out
    assert "s3cr3t" not in out + result.stderr
    assert out.splitlines()[-1] == "the default pipeline can run here"


def test_bench_gpu_runs_its_steps_on_the_cpu_without_dvc_or_kaggle(tmp_path: Path) -> None:
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "tiny.yaml").write_text(TINY_PRESET)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'blocker'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    blocked = subprocess.run([sys.executable, "-c", "import dvc"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "the test blocks it" in blocked.stderr
    result = subprocess.run([sys.executable, "-m", "pipeline.bench.gpu", "--device", "cpu", "--steps", "3",
                             "--preset", "tiny.yaml", "--infer-batch", "16", "--out", "out"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r = json.loads((tmp_path / "out/gpu.json").read_text())
    assert r["passed"] and r["device"] == "cpu"
    assert r["matmul"]["tflops_bf16"] > 0 and r["matmul"]["tflops_fp32"] > 0
    (train,) = r["training"]                                          # torch.compile: CUDA only by default
    assert train["images_per_s_loop"] > 0 and train["images_per_s_compute"] > 0 and train["steps"] == 3
    assert 0 < train["fraction_of_matmul_bf16"] and 0 <= train["data_path_share"] < 1
    assert train["flops_per_image_train_step"] > 2 * train["flops_per_image_forward"] > 0
    resume = r["resume"]
    assert resume["resumed"] and not resume["finished_before_kill"] and resume["identical"], resume
    export = r["export"]
    assert export["parity"]["max_abs_diff"] < 1e-4 and export["parity"]["argmax_agreement"] == 1.0
    assert export["provider"] == "CPUExecutionProvider" and export["images_per_s"]["fp32"] > 0
    assert "CUDA provider is not used here" in export["note"]
    assert "kill-and-resume: killed after epoch 1, resumed; weights identical" in result.stdout
    assert "all parts passed" in result.stdout
