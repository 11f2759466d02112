"""The report's figures, drawn with matplotlib (Agg) and written atomically as PNGs.

    plot_curves(curves_by_fold, best_epoch_by_fold, Path("reports/curves.png"), dpi=110)
    plot_confusion(conf, names, ...); plot_grid(images, titles, ...); plot_cv_vs_lb(history, ...)
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from serve.atomic import atomic_path


def _plt():
    import matplotlib  # ~1 s: only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def plot_curves(curves: dict[int, pd.DataFrame], best: dict[int, int], path: Path, dpi: int) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for k, df in curves.items():
        color = f"C{k % 10}"
        axes[0].plot(df["epoch"], df["train_loss"], "--", color=color, alpha=0.7)
        axes[0].plot(df["epoch"], df["val_loss"], "-", color=color, label=f"fold {k}")
        axes[1].plot(df["epoch"], df["train_accuracy"], "--", color=color, alpha=0.7)
        axes[1].plot(df["epoch"], df["val_accuracy"], "-", color=color, label=f"fold {k}")
        b = df[df["epoch"] == best.get(k, -1)]
        if len(b):
            axes[1].plot(b["epoch"], b["val_accuracy"], "*", color=color, markersize=13)
            axes[0].plot(b["epoch"], b["val_loss"], "*", color=color, markersize=13)
    for ax, what in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.set_title(f"{what}: validation (solid), train (dashed), best epoch (star)")
    axes[1].legend(loc="lower right")
    _save(fig, path, dpi)


def plot_confusion(conf: np.ndarray, names: list[str], path: Path, dpi: int) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(16, 6.5))
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    for ax, mat, title, fmt in ((axes[0], conf, "counts", "{:d}"),
                                (axes[1], norm, "row-normalised (recall)", "{:.2f}")):
        ax.imshow(mat if mat is norm else np.log1p(mat), cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"OOF confusion matrix, {title}")
        hi = mat.max()
        for i in range(len(names)):
            for j in range(len(names)):
                v = mat[i, j]
                ax.text(j, i, fmt.format(int(v) if fmt == "{:d}" else v), ha="center", va="center", fontsize=7,
                        color="white" if (v > 0.6 * hi) else "black")
    _save(fig, path, dpi)


def plot_grid(images: np.ndarray, titles: list[str], path: Path, dpi: int, cols: int = 8) -> None:
    """Images in a grid with a title above each: one mosaic in one axes (a subplot per image costs
    matplotlib ~0.1 s each); grayscale images keep their own contrast, as imshow would give them."""
    plt = _plt()
    n, (h, w, c) = len(images), (images.shape[1:] if len(images) else (8, 8, 1))
    rows, band, gap = max(-(-n // cols), 1), max(h // 3, 4), max(w // 10, 1)
    cell_h, cell_w = band + h + gap, w + gap
    mosaic = np.full((rows * cell_h, cols * cell_w, c), 255, np.uint8)
    for i, img in enumerate(images):
        img = np.asarray(img, np.float32)
        if c == 1:  # stretch each grayscale image to its own range, as a single imshow would
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(img)
        r, k = divmod(i, cols)
        mosaic[r * cell_h + band:r * cell_h + band + h, k * cell_w:k * cell_w + w] = img.clip(0, 255).astype(np.uint8)
    fig, ax = plt.subplots(figsize=(cols * 1.6, rows * 1.9))
    ax.imshow(mosaic.squeeze(-1) if c == 1 else mosaic, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
              interpolation="nearest", aspect="auto")
    for i, title in enumerate(titles[:n]):
        r, k = divmod(i, cols)
        ax.text(k * cell_w + w / 2, r * cell_h + band - 0.5, title, ha="center", va="bottom", fontsize=6.5)
    ax.axis("off")
    _save(fig, path, dpi)


def plot_cv_vs_lb(history: dict, path: Path, dpi: int) -> int:
    """OOF accuracy (x) against the public (Kaggle) or local score (y) of every file submitted or
    scored from this project; returns how many points were plotted."""
    points = [(h.get("oof_score", h["oof_accuracy"]),
               h["public_score"] if h.get("public_score") is not None else h["local_score"],
               h.get("public_score") is not None)
              for h in history.values() if h.get("oof_accuracy") is not None
              and (h.get("public_score") is not None or h.get("local_score") is not None)]
    if not points:
        return 0
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for kaggle, marker, label in ((True, "o", "Kaggle public score"), (False, "s", "local score (solution file)")):
        pts = [(x, y) for x, y, k in points if k == kaggle]
        if pts:
            ax.scatter([x for x, _ in pts], [y for _, y in pts], marker=marker, label=label)
    lo = min(min(x, y) for x, y, _ in points) - 0.005
    hi = max(max(x, y) for x, y, _ in points) + 0.005
    ax.plot([lo, hi], [lo, hi], "--", color="grey", linewidth=1, label="CV = LB")
    ax.set_xlabel("OOF score (CV)")
    ax.set_ylabel("leaderboard / held-out score")
    ax.set_title("CV against LB, every submission file")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path, dpi)
    return len(points)
