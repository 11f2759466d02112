"""The `train` recipe and `tune` space `foldwise init` writes for what it found in a competition.

    train, tune, size, why = recipe(n_train=2_000, height=300, width=300, channels=3, calibrates=False)

The shipped params.yaml is Fashion-MNIST's recipe (48,000 training glyphs of 28 px: 6 epochs). A
new competition gets a recipe for its own size and kind instead:
- a budget in optimizer steps, not epochs: about STEPS_PER_RUN updates (20 passes over a small
  set, at least MIN_STEPS, at most MAX_STEPS), so 200 images get the updates they need and 50,000
  do not take hours;
- an image side that fits the time: photos are prepared at most MAX_PHOTO_SIDE px, smaller where
  steps x batch x pixels would pass PIXEL_BUDGET (about 10 minutes per fold on 2 CPU cores for
  our nets; the default fold is a quarter of it);
- augmentation for the kind: photos (colour, or larger than GLYPH_SIDE) get random resized crops
  and flips; glyphs (small grayscale: digits, letters, clothes) small shifts, scales and rotations,
  never a flip (a flipped digit is another glyph);
- label smoothing 0 where the metric scores probabilities (smoothing caps every probability);
- a `tune` space around that recipe (lr, weight decay, smoothing, steps, augmentation with and
  without flips; for photos also a smaller input size), for `foldwise tune` to settle by OOF.
"""
from __future__ import annotations

import math

STEPS_PER_RUN, MIN_STEPS, MAX_STEPS = 20, 300, 3000   # passes over the set; bounds on the updates
PIXEL_BUDGET = 1.0e9          # steps x batch x H x W per fold (the default fold: 2.3e8, 2.4 min on 2 cores)
MAX_PHOTO_SIDE, MIN_SIDE, GLYPH_SIDE = 96, 48, 64


def _compose(*transforms: dict) -> dict:
    return {"transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": list(transforms)}} \
        if transforms else {}


HFLIP = {"__class_fullname__": "HorizontalFlip", "p": 0.5}
SHIFT = {"__class_fullname__": "Affine", "p": 0.7, "scale": [0.9, 1.1], "translate_percent": [-0.08, 0.08],
         "rotate": [-10, 10]}


def _crop(side: int) -> dict:
    return {"__class_fullname__": "RandomResizedCrop", "p": 1.0, "size": [side, side], "scale": [0.6, 1.0],
            "ratio": [0.75, 1.3333]}


def _steps(n_train: int, batch: int) -> int:
    return int(min(MAX_STEPS, max(MIN_STEPS, STEPS_PER_RUN * math.ceil(n_train / batch))))


def recipe(n_train: int, height: int, width: int, channels: int, calibrates: bool,
           n_folds: int = 5) -> tuple[dict, dict, tuple[int, int], list[str]]:
    """(train keys, tune section, prepared image size, reasons) for a competition of `n_train` labelled images."""
    fold_train = max(1, n_train - n_train // n_folds)  # a fold's training rows
    batch = int(min(128, max(16, 2 ** int(math.log2(max(16, fold_train // 8))))))
    photo = channels == 3 or min(height, width) > GLYPH_SIDE
    h, w = height, width
    if photo and min(h, w) > MAX_PHOTO_SIDE:
        h = w = MAX_PHOTO_SIDE
    steps = _steps(fold_train, batch)
    while steps * batch * h * w > PIXEL_BUDGET and min(h, w) > MIN_SIDE:
        h = w = max(MIN_SIDE, int(min(h, w) * 0.75) // 8 * 8)
    steps = int(max(MIN_STEPS // 2, min(steps, PIXEL_BUDGET // (batch * h * w))))
    why = [f"{'photos' if photo else 'glyphs'}: {n_train} labelled images of {height}x{width}x{channels}; "
           f"batch {batch}, {steps} optimizer steps (about {steps * batch / fold_train:.0f} passes over a fold)"]
    if (h, w) != (height, width):
        why.append(f"images prepared at {h}x{w} (steps x batch x pixels within {PIXEL_BUDGET:.0e} per fold)")
    if photo:
        main, alternatives = _compose(_crop(h), HFLIP), {"crop": _compose(_crop(h)), "none": {}}
    else:
        main, alternatives = _compose(SHIFT), {"shift_hflip": _compose(SHIFT, HFLIP), "none": {}}
    smoothing = 0.0 if calibrates else 0.1
    if calibrates:
        why.append("label smoothing 0: the metric scores probabilities (the ensemble also fits a temperature)")
    train = {"model": "foldwise_air", "model_kwargs": {}, "img_size": None,
             "steps": steps, "batch_size": batch, "lr": 0.003, "weight_decay": 0.05, "warmup_epochs": 1.0,
             "label_smoothing": smoothing, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "augment": main}
    space = {"train.lr": {"log_float": [0.001, 0.01]}, "train.weight_decay": {"log_float": [0.005, 0.2]},
             "train.label_smoothing": {"float": [0.0, 0.05 if calibrates else 0.15]},
             "train.steps": {"int": [max(1, steps // 2), steps * 2]},
             "train.augment": {"categorical": {("crop_hflip" if photo else "shift"): main, **alternatives}}}
    if photo and min(h, w) >= 2 * MIN_SIDE // 1.5:
        smaller = sorted({max(16, int(min(h, w) * f) // 8 * 8) for f in (0.5, 0.75)})
        space["train.img_size"] = {"categorical": [None, *smaller]}
    tune = {"space": space, "sampler": "tpe", "n_trials": 20, "timeout": None, "pruner": "median", "folds": [0],
            "confirm_folds": None}
    return train, tune, (h, w), why
