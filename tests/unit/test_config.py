"""params.yaml: typed sections, unknown keys and bad values rejected at load with the key named."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import ROOT
from helpers.project import with_train
from pipeline.core.config import load_section
from pipeline.data.download import DownloadParams
from pipeline.data.prepare import PrepareParams
from pipeline.export.params import ExportParams, PredictParams
from pipeline.kaggle.params import SubmitParams
from pipeline.modeling.ensemble import EnsembleParams
from pipeline.training.params import TrainParams
from serve.errors import UserError

SECTIONS = {"download": DownloadParams, "prepare": PrepareParams, "train": TrainParams,
            "ensemble": EnsembleParams, "export": ExportParams, "predict": PredictParams, "submit": SubmitParams}


def test_the_shipped_params_load() -> None:
    for name, cls in SECTIONS.items():
        assert isinstance(load_section(name, cls, ROOT / "params.yaml"), cls)


@pytest.mark.parametrize("changes, needle", [
    ({"lrr": 0.1}, "train.lrr: unknown key"),
    ({"lr": -1.0}, "train.lr: must be > 0, got -1.0"),
    ({"lr": "fast"}, "train.lr: must be a number, got 'fast'"),
    ({"epochs": 0}, "train.epochs: must be at least 1"),
    ({"model": "resnet_does_not_exist"}, "train.model: unknown timm model 'resnet_does_not_exist'"),
    ({"device": "tpu"}, "train.device: must be one of auto, cpu, cuda"),
    ({"optimizer": "nosuchopt"}, "train.optimizer: unknown timm optimizer 'nosuchopt'"),  # our model: timm still asked
    ({"augment": {"transform": {"__class_fullname__": "NoSuchTransform"}}},
     "train.augment: unknown Albumentations transform 'NoSuchTransform'"),
    ({"augment": {"transform": {"__class_fullname__": "HorizontalFlip", "probability": 0.5}}},
     "train.augment: invalid Albumentations spec"),
    ({"augment": {"transform": {"__class_fullname__": "Affine", "scale": "big"}}},
     "train.augment: invalid Albumentations spec"),
    ({"augment": {"transforms": []}}, "train.augment: must be an Albumentations A.to_dict() mapping"),
])
def test_invalid_train_params_fail_at_load_naming_the_key(tmp_path: Path, changes: dict, needle: str) -> None:
    path = with_train(tmp_path, **changes)
    with pytest.raises(UserError) as exc:
        load_section("train", TrainParams, path)
    assert needle in str(exc.value) and str(exc.value).startswith(str(path))
    assert "\n" not in str(exc.value)




def test_floats_are_read_as_yaml_1_2_like_dvc(tmp_path: Path) -> None:
    path = with_train(tmp_path)
    path.write_text(path.read_text().replace("min_lr: 1.0e-05", "min_lr: 1e-05"))
    assert load_section("train", TrainParams, path).min_lr == 1e-05


def test_unknown_section_key_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("prepare:\n  n_fold: 3\n")
    with pytest.raises(UserError, match=r"prepare\.n_fold: unknown key \(known: layout"):
        load_section("prepare", PrepareParams, tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("prepare: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_section("prepare", PrepareParams, tmp_path / "params.yaml")




def test_export_timing_must_be_positive(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("export:\n  speed_seconds: 0\n")
    with pytest.raises(UserError, match=r"export\.speed_seconds: must be > 0, got 0"):
        load_section("export", ExportParams, tmp_path / "params.yaml")
