"""pipeline/data/batches.py and augment.py: EpochBatches (each row once, seeded by (seed, epoch)),
AugmentedBatches (uint8 [B, C, H, W], the same batch for the same batch seed), derive_seed, load_prepared's
errors, data_fingerprint, and build_augment (Albumentations' dict form, errors naming train.augment)."""
from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core import paths
from pipeline.data.augment import build_augment
from pipeline.data.batches import AugmentedBatches, EpochBatches, data_fingerprint, derive_seed, load_prepared
from serve.errors import UserError

ROWS = np.arange(100, 137)  # 37 rows that are not 0..N-1: a fold's training rows


def batches(sampler: EpochBatches, epoch: int) -> list[tuple[list[int], int]]:
    sampler.set_epoch(epoch)
    return [(rows.tolist(), seed) for rows, seed in sampler]


def test_every_row_appears_once_per_epoch() -> None:
    sampler = EpochBatches(ROWS, 8, seed=1, drop_last=False)
    for epoch in range(3):
        got = batches(sampler, epoch)
        assert len(got) == len(sampler) == 5
        assert [len(rows) for rows, _ in got] == [8, 8, 8, 8, 5]
        assert sorted(r for rows, _ in got for r in rows) == ROWS.tolist()


def test_drop_last_leaves_out_the_short_batch() -> None:
    sampler = EpochBatches(ROWS, 8, seed=1, drop_last=True)
    got = batches(sampler, 0)
    assert len(sampler) == len(got) == 4 and all(len(rows) == 8 for rows, _ in got)
    seen = [r for rows, _ in got for r in rows]
    assert len(set(seen)) == 32 and set(seen) <= set(ROWS.tolist())
    assert len(EpochBatches(np.arange(16), 8, 0, drop_last=True)) == len(EpochBatches(np.arange(16), 8, 0, False)) == 2


def test_the_order_depends_on_seed_and_epoch_only() -> None:
    a, b = EpochBatches(ROWS, 8, seed=5, drop_last=False), EpochBatches(ROWS, 8, seed=5, drop_last=False)
    first = batches(a, 2)
    batches(b, 0)  # another history before epoch 2 (as after a resume)
    assert batches(b, 2) == first == batches(a, 2)
    assert batches(a, 3) != first
    assert batches(EpochBatches(ROWS, 8, seed=6, drop_last=False), 2) != first
    assert [seed for _, seed in first] == [derive_seed(5, 2, b) for b in range(5)]


def test_derive_seed_is_stable_and_31_bit() -> None:
    assert derive_seed(42) == 1587279681  # fixed forever: resumed runs on any machine rely on it
    assert derive_seed(42, 0, 3) == 1493070691
    assert derive_seed(42, 0) != derive_seed(0, 42)  # order matters
    assert all(0 <= derive_seed(s, e) < 2**31 for s in range(5) for e in range(5))


def flip_and_noise() -> A.Compose:
    return A.Compose([A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=1.0)])


def images(n: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)


def test_without_augmentation_a_batch_is_the_rows_channels_first() -> None:
    imgs, labels = images(), np.arange(12, dtype=np.int32) % 3
    x, y = AugmentedBatches(imgs, labels)[(np.array([4, 2, 6]), 0)]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 3, 6, 5)
    assert np.array_equal(x.numpy(), imgs[[4, 2, 6]].transpose(0, 3, 1, 2))
    assert y.dtype == torch.int64 and y.tolist() == [1, 2, 0]
    assert len(AugmentedBatches(imgs, labels)) == 12


def test_augmented_batches_are_uint8_channels_first_with_int64_labels() -> None:
    imgs = images()
    gray = imgs[..., :1]
    x, y = AugmentedBatches(gray, np.arange(12), flip_and_noise())[(np.arange(5), 9)]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (5, 1, 6, 5)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3, 4]


def test_the_same_batch_seed_gives_the_same_batch_whatever_the_order() -> None:
    imgs, labels = images(), np.arange(12)
    one = AugmentedBatches(imgs, labels, flip_and_noise())
    rows_a, rows_b = np.array([0, 3, 5, 8]), np.array([1, 2, 9, 11])
    a1 = one[(rows_a, 11)][0]
    b1 = one[(rows_b, 12)][0]
    other = AugmentedBatches(imgs, labels, flip_and_noise())  # another worker, batches taken the other way round
    b2 = other[(rows_b, 12)][0]
    a2 = other[(rows_a, 11)][0]
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert torch.equal(one[(rows_a, 11)][0], a1)
    assert not torch.equal(one[(rows_a, 13)][0], a1), "another seed, another augmentation"
    assert not torch.equal(a1, torch.from_numpy(imgs[rows_a].transpose(0, 3, 1, 2).copy())), "it augments"


def write_prepared(root: Path, n_folds: int = 2) -> paths.Prepared:
    files = paths.Prepared(root)
    root.mkdir(parents=True, exist_ok=True)
    files.meta.write_text(json.dumps({"n_folds": n_folds, "classes": ["a", "b"]}))
    pd.DataFrame({"row": range(6), "label": [0, 1] * 3, "fold": [0, 1, 0, 1, 0, 1]}).to_csv(files.folds, index=False)
    np.save(files.train_images, np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4, 1))
    np.save(files.train_labels, np.array([0, 1] * 3, dtype=np.int64))
    return files


def test_load_prepared_returns_meta_images_labels_and_folds(tmp_path: Path) -> None:
    write_prepared(tmp_path / "prepared")
    meta, imgs, labels, folds = load_prepared(tmp_path / "prepared", fold=1)
    assert meta["n_folds"] == 2 and imgs.shape == (6, 4, 4, 1) and imgs.dtype == np.uint8
    assert labels.tolist() == [0, 1] * 3 and folds.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("missing", ["meta", "folds", "train_images", "train_labels"])
def test_load_prepared_names_a_missing_file(tmp_path: Path, missing: str) -> None:
    files = write_prepared(tmp_path / "prepared")
    getattr(files, missing).unlink()
    with pytest.raises(UserError) as exc:
        load_prepared(tmp_path / "prepared", fold=0)
    assert str(exc.value) == f"{getattr(files, missing)}: not found (run the prepare stage first)"


@pytest.mark.parametrize("fold", [2, -1])
def test_load_prepared_refuses_a_fold_outside_n_folds(tmp_path: Path, fold: int) -> None:
    files = write_prepared(tmp_path / "prepared")
    with pytest.raises(UserError) as exc:
        load_prepared(tmp_path / "prepared", fold=fold)
    message = str(exc.value)
    assert message.startswith(f"fold {fold}: {files.folds} has folds 0-1") and "train.folds" in message
    assert "\n" not in message


def test_data_fingerprint_follows_the_contents(tmp_path: Path) -> None:
    write_prepared(tmp_path / "a")
    write_prepared(tmp_path / "b")
    fp = data_fingerprint(tmp_path / "a")
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert data_fingerprint(tmp_path / "b") == fp  # the same files elsewhere: the same data
    for name in ("meta", "folds", "train_labels", "train_images"):
        files = write_prepared(tmp_path / name)
        path = getattr(files, name)
        path.write_bytes(path.read_bytes() + b"\0")
        assert data_fingerprint(tmp_path / name) != fp, name


def test_build_augment_of_an_empty_spec_is_none() -> None:
    assert build_augment({}) is None


def test_build_augment_round_trips_an_albumentations_dict() -> None:
    spec = A.to_dict(flip_and_noise())
    pipeline = build_augment(spec)
    assert isinstance(pipeline, A.Compose)
    assert A.to_dict(pipeline) == spec
    without_version = {"transform": spec["transform"]}
    assert A.to_dict(build_augment(without_version)) == spec
    out = pipeline(image=images(1)[0])["image"]
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)


@pytest.mark.parametrize(("transform", "needle"), [
    ({"__class_fullname__": "NoSuchTransform"}, "unknown Albumentations transform 'NoSuchTransform'"),
    ({"__class_fullname__": "HorizontalFlip", "p": 0.5, "flip_code": 1}, "invalid Albumentations spec"),
    ({"__class_fullname__": "HorizontalFlip", "p": "often"}, "invalid Albumentations spec"),
    ({"__class_fullname__": "Compose", "transforms": [{"__class_fullname__": "RandomCrop", "height": -1, "width": 3}]},
     "invalid Albumentations spec"),
    ({"transforms": []}, "must be an Albumentations A.to_dict() mapping"),
])
def test_build_augment_bad_specs_are_errors_naming_train_augment(transform: dict, needle: str) -> None:
    with pytest.raises(UserError) as exc:
        build_augment({"transform": transform})
    message = str(exc.value)
    assert message.startswith("train.augment: ") and needle in message and "\n" not in message


def test_build_augment_errors_go_through_the_callers_prefix() -> None:
    def err(msg: str, key: str | None = None) -> UserError:
        return UserError(f"params.yaml: train.{key}: {msg}")

    with pytest.raises(UserError, match=r"^params\.yaml: train\.augment: unknown Albumentations transform"):
        build_augment({"transform": {"__class_fullname__": "Nope"}}, err)
