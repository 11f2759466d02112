"""Shared fixtures: small slices of the real embedded competition, and a way to run the CLI."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "data/embedded/fashion-mnist"
BIN = Path(sys.executable).parent


# Under pytest-xdist (`make test`: --dist loadfile) each test file runs on one worker, so its module
# fixtures (one project, one cluster) are built once. The longest files start first, so that no
# worker is left with one of them at the end.
LONGEST_FIRST = ["test_layouts.py", "test_distributed.py", "test_e2e.py", "test_experiments.py", "test_kaggle.py",
                 "test_kaggle_code.py", "test_train.py", "test_ddp.py", "test_serve.py", "test_serve_http.py"]


EMULATOR_FILES = {"test_kaggle.py", "test_kaggle_code.py"}  # one Kaggle emulator per machine (port 80)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, except that the files using the port-80 Kaggle emulator are one unit of work
    (the same worker runs them one after the other instead of two workers waiting on its lock)."""
    from xdist.scheduler import LoadFileScheduling

    class FilesSharingTheEmulator(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "kaggle-emulator" if Path(path).name in EMULATOR_FILES else path

    return FilesSharingTheEmulator(config, log) if config.getoption("dist") == "loadfile" else None


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept within


def read_member(name: str, nrows: int | None = None) -> pd.DataFrame:
    with zipfile.ZipFile(EMBEDDED / "fashion-mnist.zip") as zf, zf.open(name) as fh:
        return pd.read_csv(fh, nrows=nrows, dtype={"id": str} if name != "train.csv" else None)


@pytest.fixture(scope="session")
def real_slice() -> dict[str, pd.DataFrame]:
    """The first 400 train rows and 120 test rows of the embedded competition (real images)."""
    train = read_member("train.csv", nrows=400)
    test = read_member("test.csv", nrows=120)
    sample = pd.DataFrame({"id": test["id"], "label": "0"})
    return {"train.csv": train, "test.csv": test, "sample_submission.csv": sample}


def write_zip(path: Path, frames: dict[str, pd.DataFrame | str | bytes]) -> Path:
    """A competition zip from DataFrames (written as CSV) or raw text/bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in frames.items():
            if isinstance(content, pd.DataFrame):
                buf = io.StringIO()
                content.to_csv(buf, index=False)
                content = buf.getvalue()
            zf.writestr(name, content)
    return path


@pytest.fixture
def slice_zip(tmp_path: Path, real_slice) -> Path:
    return write_zip(tmp_path / "slice.zip", real_slice)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `foldwise` console script."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None unsets a variable
    return subprocess.run([str(BIN / "foldwise"), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, one `error:` line on stderr containing every needle."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """An untrained 2-fold x 2-view foldwise ensemble exported the way `foldwise export` does."""
    import json

    import torch

    from pipeline.export.graph import export_onnx
    from pipeline.modeling.classifier import create_classifier
    from pipeline.modeling.ensemble import EnsembleModel

    torch.manual_seed(0)
    members = [create_classifier("foldwise_cnn", 10, 1, 28, [0.29], [0.35], model_kwargs={"widths": [8, 16, 16]}).eval()
               for _ in range(2)]
    model = EnsembleModel(members, ["none", "hflip"], [0.5, 0.5], [0.5, 0.5], "mean_prob").eval()
    path = tmp_path_factory.mktemp("onnx") / "ensemble.onnx"
    meta = {"classes": json.dumps([str(i) for i in range(10)]), "class_names": json.dumps([f"c{i}" for i in range(10)]),
            "image_shape": json.dumps([28, 28, 1]), "id_column": "id", "target_column": "label",
            "folds": json.dumps([0, 1])}
    export_onnx(model, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), path, meta)
    return path
