"""Fixtures every test may use (the helpers they call are in tests/helpers/), and the xdist schedule.

    real_slice   the first 400 train / 120 test rows of the embedded competition (real images)
    slice_zip    that slice as a competition zip
    tiny_onnx    an untrained 2-fold x 2-view foldwise ensemble, exported as `foldwise export` does
    kaggle_emulator   the local Kaggle API on port 80 (the real `kaggle` client talks to it)
    one_torch_thread  torch's intra-op threads set to one for the test (tiny models)
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # as pipeline/data/augment.py: no PyPI request per import

from helpers import data
from helpers.kaggle_emulator import KaggleEmulator, running_emulator

# Under pytest-xdist (`make test`: --dist loadfile) each test file runs on one worker, so its module
# fixtures (one project, one cluster) are built once. xdist hands out files by their number of tests
# (most first); files with as many tests go in the order below. (Handing out the longest files first
# instead, --no-loadscope-reorder, ran the heavy end-to-end files side by side: 516 s of pytest here
# against 349 s.)
LONGEST_FIRST = ["test_layouts_repro.py", "test_kaggle.py", "test_kaggle_code.py", "test_distributed.py",
                 "test_repro.py", "test_experiments.py", "test_train_resume.py", "test_predict_cli.py",
                 "test_serve_http.py", "test_ddp.py", "test_bad_inputs.py", "test_cli.py"]
EMULATOR_FILES = {"test_kaggle.py", "test_kaggle_code.py", "test_repro.py"}  # one Kaggle emulator per machine (port 80)


@pytest.hookimpl(optionalhook=True)  # pytest without pytest-xdist (`pytest tests/unit` in a bare venv) runs too
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


@pytest.fixture(scope="session")
def real_slice() -> dict[str, pd.DataFrame]:
    return data.real_slice()


@pytest.fixture
def slice_zip(tmp_path: Path, real_slice) -> Path:
    return data.write_zip(tmp_path / "slice.zip", real_slice)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """An untrained 2-fold x 2-view foldwise ensemble exported the way `foldwise export` does."""
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


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is fastest (and does not fight other test processes for cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def kaggle_emulator() -> Iterator[KaggleEmulator]:
    """The local Kaggle API on port 80 (as Kaggle's client expects for LOCALHOST), stopped after."""
    with contextlib.ExitStack() as stack:
        try:
            emulator = stack.enter_context(running_emulator())
        except OSError as exc:
            pytest.fail(f"the Kaggle emulator could not bind port 80 ({exc}); these tests need root "
                        "(CI runs as root) because the kaggle client's LOCALHOST endpoint is http://localhost:80")
        yield emulator
