"""`foldwise init`'s recipe: a step budget for the data's size, a size that fits the time, augmentation
for the kind of image, smoothing for the metric, and a tune space that validates."""
from __future__ import annotations

import pytest

from pipeline.core.config import build
from pipeline.tools.recipe import MAX_STEPS, MIN_STEPS, PIXEL_BUDGET, recipe
from pipeline.training.params import TrainParams
from pipeline.training.search_space import SearchSpace, TuneParams


def _classes(train: dict) -> list[str]:
    return [t["__class_fullname__"] for t in train["augment"].get("transform", {}).get("transforms", [])]


@pytest.mark.parametrize("n, h, c", [(200, 300, 3), (2_000, 300, 3), (20_000, 128, 3), (60_000, 28, 1), (300, 28, 1)])
def test_every_recipe_validates_and_fits_the_budget(n: int, h: int, c: int) -> None:
    train, tune, (ph, pw), _ = recipe(n, h, h, c, calibrates=False)
    params = build(TrainParams, train, "train")
    assert MIN_STEPS // 2 <= params.steps <= MAX_STEPS
    assert params.steps * params.batch_size * ph * pw <= PIXEL_BUDGET * 1.01
    space = SearchSpace.parse(build(TuneParams, tune, "tune").space, train, "params.yaml")
    assert "train.augment" in {d.path for d in space.dists}


def test_a_small_set_gets_many_passes_and_a_large_one_fewer() -> None:
    small, _, _, _ = recipe(200, 300, 300, 3, False)
    large, _, _, _ = recipe(60_000, 28, 28, 1, False)
    fold_small, fold_large = 160, 48_000
    assert small["steps"] * small["batch_size"] / fold_small >= 20
    assert large["steps"] * large["batch_size"] / fold_large < 10


def test_photos_are_cropped_and_flipped_glyphs_never_flipped() -> None:
    photo, _, size, _ = recipe(2_000, 300, 300, 3, False)
    glyph, gtune, gsize, _ = recipe(5_000, 28, 28, 1, False)
    assert max(size) <= 96 and _classes(photo) == ["RandomResizedCrop", "HorizontalFlip"]
    assert gsize == (28, 28) and "HorizontalFlip" not in _classes(glyph)
    choices = gtune["space"]["train.augment"]["categorical"]
    assert any("HorizontalFlip" in _classes({"augment": v}) for v in choices.values())  # tune may try flips


def test_a_probability_metric_gets_no_label_smoothing() -> None:
    assert recipe(1_000, 32, 32, 3, calibrates=True)[0]["label_smoothing"] == 0.0
    assert recipe(1_000, 32, 32, 3, calibrates=False)[0]["label_smoothing"] == 0.1
