"""Artifact paths (pipeline/core/paths.py): data/prepared/ and fold files, the per-fold paths, the exported
graphs, and trained_folds (which fold<k> folders count, and the one-line errors)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import paths
from pipeline.core.paths import FoldFiles, Prepared, checkpoint, curves_csv, fold_dir, graph, trained_folds
from serve.errors import UserError


def test_prepared_files_live_under_data_prepared_by_default() -> None:
    p = Prepared()
    assert p.root == Path("data/prepared") == paths.PREPARED
    assert p.train_images == Path("data/prepared/train_images.npy")
    assert p.train_labels == Path("data/prepared/train_labels.npy")
    assert p.test_images == Path("data/prepared/test_images.npy")
    assert p.test_ids == Path("data/prepared/test_ids.csv")
    assert p.folds == Path("data/prepared/folds.csv")
    assert p.sample_submission == Path("data/prepared/sample_submission.csv")
    assert p.meta == Path("data/prepared/meta.json")


def test_prepared_of_another_root_keeps_the_file_names(tmp_path: Path) -> None:
    p = Prepared(tmp_path / "staging")
    assert p.meta == tmp_path / "staging" / "meta.json"
    assert p.train_images.parent == tmp_path / "staging"
    assert p.folds.name == Prepared().folds.name


def test_fold_files_are_inside_the_fold_folder(tmp_path: Path) -> None:
    f = FoldFiles(tmp_path / "fold3")
    assert f.model == tmp_path / "fold3" / "model.pt"
    assert f.oof_probs == tmp_path / "fold3" / "oof_probs.npy"
    assert f.oof_rows == tmp_path / "fold3" / "oof_rows.npy"
    assert f.metrics == tmp_path / "fold3" / "metrics.json"
    assert f.config == tmp_path / "fold3" / "config.json"
    assert FoldFiles(fold_dir(0)).model == Path("models/folds/fold0/model.pt")  # the module docstring's example


def test_per_fold_paths_default_to_the_models_folder_and_follow_another_one(tmp_path: Path) -> None:
    assert fold_dir(2) == Path("models/folds/fold2")
    assert checkpoint(2) == Path("models/checkpoints/fold2/last.pt")
    assert curves_csv(2) == Path("models/curves/fold2.csv")
    assert fold_dir(11, tmp_path) == tmp_path / "fold11"
    assert checkpoint(11, tmp_path) == tmp_path / "fold11" / "last.pt"
    assert curves_csv(11, tmp_path) == tmp_path / "fold11.csv"


def test_graph_names_each_exported_variant() -> None:
    assert graph("fp32") == Path("models/ensemble.onnx")
    assert graph("int8") == Path("models/ensemble_int8.onnx")
    assert graph("fp16") == Path("models/ensemble_fp16.onnx")
    assert graph("int8", Path("pkg")) == Path("pkg/ensemble_int8.onnx")
    assert len(set(paths.GRAPH_FILES.values())) == len(paths.GRAPH_FILES)  # no two variants share a file


def _make(folds: Path, *names: str, files: tuple[str, ...] = ()) -> None:
    for name in names:
        (folds / name).mkdir(parents=True)
    for name in files:
        folds.mkdir(parents=True, exist_ok=True)
        (folds / name).write_text("x")


def test_trained_folds_finds_the_fold_folders_by_number(tmp_path: Path) -> None:
    folds = tmp_path / "folds"
    _make(folds, "fold0", "fold2", "fold10")
    assert trained_folds(folds, 12) == {0: folds / "fold0", 2: folds / "fold2", 10: folds / "fold10"}


def test_trained_folds_ignores_other_names_and_files(tmp_path: Path) -> None:
    folds = tmp_path / "folds"
    _make(folds, "fold1", "fold1_old", "foldx", "fold-2", "fold", "other", files=("fold3", "fold4.csv"))
    assert trained_folds(folds, 5) == {1: folds / "fold1"}


def test_a_fold_beyond_n_folds_is_refused_naming_its_folder(tmp_path: Path) -> None:
    folds = tmp_path / "folds"
    _make(folds, "fold0", "fold1", "fold5")
    with pytest.raises(UserError) as exc:
        trained_folds(folds, 5)
    message = str(exc.value)
    assert message == (f"{folds / 'fold5'}: fold 5 is not a fold of data/prepared/folds.csv (5 folds); remove it")
    assert "\n" not in message
    assert trained_folds(folds, 6).keys() == {0, 1, 5}


def test_a_folder_without_trained_folds_is_refused(tmp_path: Path) -> None:
    folds = tmp_path / "folds"
    folds.mkdir()
    with pytest.raises(UserError) as exc:
        trained_folds(folds, 5)
    assert str(exc.value) == f"{folds}: no trained folds (run the train stages first)"
    _make(folds, "fold_old", files=("fold0",))  # nothing that counts
    with pytest.raises(UserError, match="no trained folds"):
        trained_folds(folds, 5)
    with pytest.raises(UserError, match="no trained folds"):
        trained_folds(tmp_path / "missing", 5)
