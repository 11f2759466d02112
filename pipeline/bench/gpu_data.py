"""Synthetic data for `foldwise bench gpu`: a prepared folder (the layout `prepare` writes) of
learnable 28x28 grey images, so the check needs no download, no DVC and no Kaggle.

    write_prepared(Path("bench/gpu-work/prepared"), train_rows=2560, classes=10)

Each class is a fixed random pattern plus noise: a model learns it within a few steps, which is all
kill-and-resume and export parity need; the throughput does not depend on the pixels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import paths

SHAPE = (28, 28, 1)


def write_prepared(root: Path, train_rows: int, classes: int = 10, seed: int = 0) -> Path:
    """Two folds of `train_rows` images each (fold 0 trains on fold 1's rows and is validated on its own)."""
    rng = np.random.default_rng(seed)
    n = 2 * train_rows
    protos = rng.integers(0, 256, (classes, *SHAPE)).astype(np.float32)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = np.clip(protos[labels] * 0.6 + rng.normal(0, 40, (n, *SHAPE)), 0, 255).astype(np.uint8)
    files = paths.Prepared(root)
    root.mkdir(parents=True, exist_ok=True)
    np.save(files.train_images, images)
    np.save(files.train_labels, labels.astype(np.int64))
    np.save(files.test_images, images[:64])
    pd.DataFrame({"row": np.arange(n), "label": labels, "fold": np.arange(n) % 2}).to_csv(files.folds, index=False)
    pd.DataFrame({"id": np.arange(64)}).to_csv(files.test_ids, index=False)
    names = [str(c) for c in range(classes)]
    pixels = images.astype(np.float32) / 255
    meta = {"layout": "synthetic", "id_column": "id", "target_column": "label", "classes": names,
            "class_names": names, "metric": {"name": "accuracy", "higher_is_better": True}, "positive": None,
            "image_shape": list(SHAPE), "n_train": n, "n_test": 64, "n_folds": 2,
            "class_counts": np.bincount(labels, minlength=classes).tolist(),
            "mean": [float(pixels.mean())], "std": [float(pixels.std())], "notes": ["foldwise bench gpu: synthetic"]}
    files.meta.write_text(json.dumps(meta, indent=2))
    return root
